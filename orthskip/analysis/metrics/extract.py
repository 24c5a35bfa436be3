"""extract_metrics: every per-layer metric of a ResidualNet on a probe batch, as a long table."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from orthskip.analysis.metrics.gradflow import block_activations, grad_norm_ratios
from orthskip.analysis.metrics.jacobian import jacobian_sv
from orthskip.analysis.metrics.lipschitz import branch_lipschitz
from orthskip.analysis.metrics.orthogonality import (
    as_matrix,
    dist_identity,
    dist_init,
    linear_fit_rotation,
    orth_defect,
    rotation_angle,
    skip_product,
)
from orthskip.analysis.metrics.representation import repr_condition
from orthskip.analysis.metrics.spectra import sv_circular, sv_hosvd, sv_operator, sv_reshaped
from orthskip.nn.models.base import ResidualBlock
from orthskip.results import METRIC_COLUMNS

FAMILIES = (
    "orth_defect",
    "dist_identity",
    "dist_init",
    "sv_reshaped",
    "sv_operator",
    "sv_operator_circular",
    "sv_hosvd",
    "grad_norm_ratio",
    "jacobian_sv",
    "repr_condition",
    "branch_lipschitz",
    "skip_product",
)


@dataclass(frozen=True)
class _Layer:
    index: int  # block index; -1 for the stem (and anything outside blocks/head), L for the head
    name: str  # block.name, "stem", "head"


class _Rows:
    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def add(
        self,
        layer: _Layer,
        kind: str,
        param: str,
        metric: str,
        stats: dict[str, float],
        exact: bool = True,
        shape: tuple[int, ...] = (),
        method: str = "direct",
    ) -> None:
        dims = "x".join(str(d) for d in shape)
        for stat, value in stats.items():
            self.rows.append(
                (layer.index, layer.name, kind, param, dims, metric, stat, float(value),
                 bool(exact), method)
            )  # fmt: skip

    def frame(self) -> pd.DataFrame:
        df = pd.DataFrame(self.rows, columns=list(METRIC_COLUMNS))
        return df.astype({"layer_index": "int64", "value": "float64", "exact": "bool"})


def _layer_of(module_name: str, model: nn.Module) -> _Layer:
    parts = module_name.split(".")
    n_blocks = len(model.blocks)
    if parts[0] == "blocks" and len(parts) > 1:
        i = int(parts[1])
        return _Layer(i, str(model.blocks[i].name))
    if parts[0] == "head":
        return _Layer(n_blocks, "head")
    return _Layer(-1, parts[0])


def _weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every Conv2d / Linear module, by qualified name (parametrized weights included)."""
    return [
        (name, mod)
        for name, mod in model.named_modules()
        if isinstance(mod, nn.Conv2d | nn.Linear) and getattr(mod, "weight", None) is not None
    ]


def extract_metrics(
    model: nn.Module,
    probe_x: Tensor,
    probe_y: Tensor,
    *,
    families: Collection[str] | None = None,
    jacobian_samples: int = 8,
    jacobian_steps: int = 24,
    initial_skips: Mapping[str, Tensor] | None = None,
    operator_dense_max_dim: int = 4096,
    operator_iterative: bool = False,
    lipschitz: tuple[int, int, int] = (32, 32, 30),
) -> pd.DataFrame:
    """All per-layer metrics of `model` (ResidualNet contract) on the probe batch.

    `operator_dense_max_dim` / `operator_iterative`: see :func:`sv_operator`.
    `lipschitz` = (samples, segments, steps) of family ``branch_lipschitz``: the first
    `samples` probe inputs of each block, `segments` points between random pairs of them,
    `steps` power-iteration steps (:func:`orthskip.analysis.metrics.lipschitz.branch_lipschitz`).
    `initial_skips` maps skip params (``blocks.3.skip.Q``) to the same matrices at the cell's
    first snapshot: with it, family ``dist_init`` records ‖Q − Q₀‖ (NaN for a param it lacks,
    e.g. when epoch 0 was not saved); without it (None) that family is skipped.
    Runs in eval mode (running BatchNorm statistics, no buffer updates) and restores the mode.
    Returns the long table of docs/metrics.md: columns METRIC_COLUMNS, one row per
    (layer, metric, stat). `families` restricts which metric families are computed.
    Block-level metrics (grad_norm_ratio, jacobian_sv, repr_condition) use the block index
    as layer_index and kind "transition" or "block"; weights inside block i carry index i,
    the stem −1, the head len(blocks).
    """
    want = set(FAMILIES if families is None else families)
    unknown = want - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown metric families {sorted(unknown)}; allowed: {FAMILIES}")
    device = next(model.parameters()).device
    probe_x, probe_y = probe_x.to(device), probe_y.to(device)
    was_training = model.training
    model.eval()
    rows = _Rows()
    # parametrized weights (orthogonal skips) are computed once, not at every access
    with parametrize.cached():
        try:
            _extract(
                model, probe_x, probe_y, want, rows, jacobian_samples, jacobian_steps,
                initial_skips, (operator_dense_max_dim, operator_iterative), lipschitz,
            )  # fmt: skip
        finally:
            model.train(was_training)
    return rows.frame()


def _extract(
    model: nn.Module,
    probe_x: Tensor,
    probe_y: Tensor,
    want: set[str],
    rows: _Rows,
    jacobian_samples: int,
    jacobian_steps: int,
    initial_skips: Mapping[str, Tensor] | None,
    operator: tuple[int, bool] = (4096, False),
    lipschitz: tuple[int, int, int] = (32, 32, 30),
) -> None:
    """Fill `rows`; the model is in eval mode."""
    weights = _weight_layers(model)
    # the spatial size each convolution really sees, recorded on the probe forward
    input_sizes: dict[str, tuple[int, int]] = {}

    def record(name: str):
        def hook(module: nn.Module, args: tuple) -> None:  # returns None: input unchanged
            input_sizes.setdefault(name, tuple(args[0].shape[-2:]))

        return hook

    hooks = [
        mod.register_forward_pre_hook(record(name))
        for name, mod in weights
        if isinstance(mod, nn.Conv2d)
    ]
    try:
        with torch.enable_grad():
            acts, logits = block_activations(model, probe_x)
            ratios = grad_norm_ratios(acts, logits, probe_y) if "grad_norm_ratio" in want else []
    finally:
        for h in hooks:
            h.remove()
    acts = [a.detach() for a in acts]

    for i, block in enumerate(model.blocks):
        layer = _Layer(i, str(block.name))
        block_kind = "transition" if bool(block.transition) else "block"
        out_shape = tuple(acts[i + 1].shape[1:])  # one sample's block output
        if ratios:
            rows.add(
                layer, block_kind, f"blocks.{i}", "grad_norm_ratio", {"value": ratios[i]},
                shape=out_shape,
            )  # fmt: skip
        if "repr_condition" in want:
            rows.add(
                layer, block_kind, f"blocks.{i}", "repr_condition", repr_condition(acts[i + 1]),
                shape=out_shape,
            )  # fmt: skip
        if "jacobian_sv" in want:
            stats, exact = jacobian_sv(
                block, acts[i][:jacobian_samples], steps=jacobian_steps, seed=i
            )
            method = "dense_jacobian" if exact else "lanczos"
            rows.add(
                layer, block_kind, f"blocks.{i}", "jacobian_sv", stats, exact, out_shape, method
            )
        if "branch_lipschitz" in want:
            _lipschitz_rows(rows, layer, block_kind, i, block, acts[i], lipschitz)
        for key, mat in block.skip_matrices().items():
            param = f"blocks.{i}.{key}"
            _skip_rows(rows, layer, param, mat, want)
            if "dist_init" in want and initial_skips is not None:
                q0 = initial_skips.get(param)
                d = dist_init(mat, q0)
                rows.add(layer, "skip", param, "dist_init", d, shape=tuple(as_matrix(mat).shape))

    if "skip_product" in want:
        _product_rows(rows, model, probe_x, probe_y)

    for name, mod in weights:
        layer = _layer_of(name, model)
        kind = "conv" if isinstance(mod, nn.Conv2d) else "linear"
        param = f"{name}.weight"
        w = mod.weight.detach()
        if "sv_reshaped" in want:
            rows.add(layer, kind, param, "sv_reshaped", sv_reshaped(w), shape=tuple(w.shape))
        if kind == "conv" and "sv_hosvd" in want:
            rows.add(layer, kind, param, "sv_hosvd", sv_hosvd(w), shape=tuple(w.shape))
        if kind == "conv" and "sv_operator" in want:
            _operator_rows(
                rows, layer, param, mod, input_sizes.get(name), *operator
            )  # fmt: skip
        if kind == "conv" and "sv_operator_circular" in want:
            _circular_rows(rows, layer, param, mod, input_sizes.get(name))


def _lipschitz_rows(
    rows: _Rows,
    layer: _Layer,
    block_kind: str,
    i: int,
    block: nn.Module,
    x: Tensor,
    lipschitz: tuple[int, int, int],
) -> None:
    """Lower bound on Lip(F_i) (never exact); no row for a block without a branch."""
    samples, segments, steps = lipschitz
    found = branch_lipschitz(block, x[:samples], segments=segments, steps=steps, seed=i)
    if found is None:  # orth_jacobian: the skip is the whole block
        return
    stats, method = found
    shape = tuple(x.shape[1:])  # the branch's input, one sample
    rows.add(
        layer, block_kind, f"blocks.{i}.branch", "branch_lipschitz", stats, False, shape,
        method,
    )  # fmt: skip


def _product_rows(rows: _Rows, model: nn.Module, probe_x: Tensor, probe_y: Tensor) -> None:
    """One row for the whole net: the rotation of its skips' product beside that of the probe
    targets' best linear fit (``fit_*``, only for a regression onto the input space)."""
    # only where each block is S(x) + F(x) with S one matrix: orth_jacobian's B matrices
    # (the block is x − 2Bᵀρ(Bx + b)) and procrustes' pre-maps are no skip path
    if not all(isinstance(b, ResidualBlock) and not b.transition for b in model.blocks):
        return
    mats = [q for block in model.blocks for q in block.skip_matrices().values()]
    if len(mats) != len(model.blocks):
        return
    product = skip_product(mats)
    if product is None:
        return
    stats = rotation_angle(product)
    if probe_y.is_floating_point():
        fit = linear_fit_rotation(probe_x, probe_y)
        stats.update({f"fit_{k}": v for k, v in fit.items() if not math.isnan(v)})
    layer = _Layer(-1, "skip_product")
    rows.add(layer, "skip_path", "blocks.*.skip", "skip_product", stats, shape=tuple(product.shape))


def _skip_rows(rows: _Rows, layer: _Layer, param: str, mat: Tensor, want: set[str]) -> None:
    q = as_matrix(mat)
    dims = tuple(q.shape)
    if "orth_defect" in want:
        rows.add(layer, "skip", param, "orth_defect", {"value": orth_defect(q)}, shape=dims)
    if "dist_identity" in want and q.shape[0] == q.shape[1]:
        rows.add(layer, "skip", param, "dist_identity", dist_identity(q), shape=dims)
    if "sv_reshaped" in want:
        rows.add(layer, "skip", param, "sv_reshaped", sv_reshaped(q), shape=dims)


_NAN_SV = {"max": math.nan, "min": math.nan, "cond": math.nan}


def _operator_rows(
    rows: _Rows,
    layer: _Layer,
    param: str,
    conv: nn.Conv2d,
    size: tuple[int, int] | None,
    dense_max_dim: int,
    iterative: bool,
) -> None:
    """The operator at the layer's real padding: FFT (circular), dense SVD or LOBPCG."""
    dims = tuple(conv.weight.shape)
    if size is None:  # never called on the probe batch: no input size to evaluate at
        rows.add(layer, "conv", param, "sv_operator", _NAN_SV, False, dims, "none")
        return
    try:
        stats, exact, method = sv_operator(
            conv, size, dense_max_dim=dense_max_dim, iterative=iterative
        )
    except ValueError:  # a padding mode the operator matrix does not cover
        stats, exact, method = _NAN_SV, False, "none"
    # the operator acts on C_in x H x W inputs: record the size it was evaluated at
    rows.add(layer, "conv", param, "sv_operator", stats, exact, (*dims, *size), method)


def _circular_rows(
    rows: _Rows, layer: _Layer, param: str, conv: nn.Conv2d, size: tuple[int, int] | None
) -> None:
    """The circular surrogate on the torus (FFT); exact only where it is the layer itself."""
    dims = tuple(conv.weight.shape)
    if size is None:
        rows.add(layer, "conv", param, "sv_operator_circular", _NAN_SV, False, dims, "none")
        return
    try:
        stats, exact = sv_circular(conv, size)
    except ValueError:  # padding mode / size the FFT method does not cover
        stats, exact = _NAN_SV, False
    rows.add(
        layer, "conv", param, "sv_operator_circular", stats, exact, (*dims, *size), "fft_circular"
    )
