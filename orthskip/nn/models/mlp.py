"""Residual MLP for vector data (any input shape is flattened; digits arrive as (1, 8, 8)).

stem = Flatten → Linear(D, width); ``depth`` blocks y = S(x) + F(x) on ``width`` features
with F(x) = Linear(act(norm(Linear(x)))) through ``hidden`` inner units (0: = width); head =
Linear(width, classes). No activation after the addition, so the trunk is a composition of
maps near S (the Orthogonal Skip Connections paper's setting). All blocks keep the width, so
an MLP has no transition blocks (``procrustes``, which only acts at transitions, is then the
identity skip).
Initialisation (``init``): ``orthskip.nn.models.init``.

``width: 0`` is the input dimension. ``stem: identity`` / ``head: identity`` (options) drop
the input / output linear map, so the blocks *are* the map being learned (the theorem setting
of the Orthogonal Skip Connections paper: a map R^d → R^d written as m residual blocks on
R^d itself); they need width = input dimension / = output dimension.
``branch_scale`` multiplies every branch's output by 1, 1/depth or 1/√depth (a fixed factor,
not a parameter): a depth-dependent step size, so its effect on depth trends can be shown.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor, nn

from orthskip.nn.models.base import ResidualNet, make_block
from orthskip.nn.models.init import activation_gain, init_mlp, normal_fill_
from orthskip.nn.skips import SKIPS, skip_options

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


class Scale(nn.Module):
    """Multiplies by a fixed factor (no parameter)."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: Tensor) -> Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor:.4g}"


def _norm(kind: str, width: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm1d(width)
    if kind == "layer":
        return nn.LayerNorm(width)
    return nn.Identity()


def branch_scale(cfg: Mapping[str, Any], depth: int) -> float:
    """The fixed factor on every branch's output (``branch_scale``)."""
    return {"none": 1.0, "inv_depth": 1.0 / depth, "inv_sqrt_depth": depth**-0.5}[
        cfg["branch_scale"]
    ]


def build_mlp(
    depth: int, skip: str, input_shape: tuple[int, ...], num_classes: int, cfg: dict, skip_cfg
) -> ResidualNet:
    d_in = math.prod(input_shape)
    width = int(cfg["width"]) or d_in
    hidden = int(cfg["hidden"]) or width
    scale = branch_scale(cfg, depth)

    def branch(c_in: int, c_out: int, stride: int) -> nn.Module:
        layers = [
            nn.Linear(c_in, hidden),
            _norm(cfg["norm"], hidden),
            ACTIVATIONS[cfg["activation"]](),
            nn.Linear(hidden, c_out),
        ]
        return nn.Sequential(*layers, *([Scale(scale)] if scale != 1.0 else []))

    stem_map = nn.Identity() if cfg["stem"] == "identity" else nn.Linear(d_in, width)
    stem = nn.Sequential(nn.Flatten(), stem_map)
    blocks = [
        make_block(f"block{i}", skip, width, width, 1, branch, skip_cfg) for i in range(depth)
    ]
    head = nn.Identity() if cfg["head"] == "identity" else nn.Linear(width, num_classes)
    net = ResidualNet("mlp", skip, stem, blocks, head)
    if cfg["init"] == "kaiming":
        init_mlp(net, cfg["activation"])
    return net


def initial_state(
    depth: int, skip: str, input_shape: tuple[int, ...], num_classes: int, cfg: dict, skip_cfg
) -> dict[str, Tensor]:
    """The state dict of ``build_mlp``'s model (same arguments) without building it.

    Every tensor comes from the same draws of torch's global RNG in ``build_mlp``'s order:
    the stem's nn.Linear, per block its skip (``Skip.initial_state``) and its branch's two
    nn.Linear, the head, then ``init``'s redraws (stem, head, each branch) — the default
    draws are made even where ``kaiming`` replaces them, since they move the RNG. So the
    result equals the built model's state dict, bit for bit and key for key
    (tests/test_models.py). The packed trainer draws its members this way: building a deep
    member's modules cost more than training it.
    """
    d_in = math.prod(input_shape)
    width = int(cfg["width"]) or d_in
    hidden = int(cfg["hidden"]) or width
    kind = SKIPS[skip]
    opts = skip_options(skip, skip_cfg)
    norm = _norm(cfg["norm"], hidden).state_dict()  # ones and zeros: no draws

    def linear(prefix: str, c_in: int, c_out: int) -> dict[str, Tensor]:
        w, b = torch.empty(c_out, c_in), torch.empty(c_out)
        nn.Linear.reset_parameters(SimpleNamespace(weight=w, bias=b))  # nn.Linear's own init
        return {f"{prefix}.weight": w, f"{prefix}.bias": b}

    stem = {} if cfg["stem"] == "identity" else linear("stem.1", d_in, width)
    blocks: dict[str, Tensor] = {}
    branches: list[tuple[dict[str, Tensor], dict[str, Tensor]]] = []
    for i in range(depth):
        at = f"blocks.{i}."
        skip_state = kind.initial_state(width, width, 1, opts)
        blocks.update({f"{at}skip.{k}": v for k, v in skip_state.items()})
        if kind.block == "jacobian":  # the skip is the whole block (make_block)
            continue
        first = linear(f"{at}branch.0", width, hidden)
        last = linear(f"{at}branch.3", hidden, width)
        blocks.update(first)
        blocks.update({f"{at}branch.1.{k}": v.clone() for k, v in norm.items()})
        blocks.update(last)
        branches.append((first, last))
    head = {} if cfg["head"] == "identity" else linear("head", width, num_classes)
    if cfg["init"] == "kaiming":  # init_mlp's order
        for layer in (stem, head):
            if layer:
                normal_fill_(*layer.values(), 1.0)
        gain = activation_gain(cfg["activation"])
        for first, last in branches:
            normal_fill_(*first.values(), gain)
            normal_fill_(*last.values(), 1.0)
    return {**stem, **blocks, **head}
