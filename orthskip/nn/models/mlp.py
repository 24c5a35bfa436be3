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
from typing import Any

from torch import Tensor, nn

from orthskip.config.constraints import Constraint, DataShape
from orthskip.nn.models.base import ResidualNet, make_block
from orthskip.nn.models.init import init_mlp

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


def _identity_map(key: str) -> Constraint:
    """``stem``/``head: identity`` maps nothing: the width must be the data's input/output
    dimension (``width: 0`` is the input dimension)."""
    side = "input" if key == "stem" else "output"

    def test(cfg: Mapping[str, Any], data: DataShape | None) -> str | None:
        if data is None or cfg[key] != "identity":
            return None
        d_in = math.prod(data.input_shape)
        dim = d_in if key == "stem" else data.n_outputs
        width = int(cfg["width"]) or d_in
        if width != dim:
            return (
                f"identity needs model.mlp.width = {dim} (the data's {side} dimension"
                f"{', or 0' if key == 'stem' else ''}); width is {width}"
            )
        return None

    return Constraint(f"{key}_identity_width", key, f"{key} identity: width = {side} dim", test)


# What build_mlp needs of its options and the data (enforced by build_model and by the
# config check before any job).
CONSTRAINTS: tuple[Constraint, ...] = (_identity_map("stem"), _identity_map("head"))


def build_mlp(
    depth: int, skip: str, input_shape: tuple[int, ...], num_classes: int, cfg: dict, skip_cfg
) -> ResidualNet:
    d_in = math.prod(input_shape)
    width = int(cfg["width"]) or d_in
    hidden = int(cfg["hidden"]) or width

    scale = {"none": 1.0, "inv_depth": 1.0 / depth, "inv_sqrt_depth": depth**-0.5}[
        cfg["branch_scale"]
    ]

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
