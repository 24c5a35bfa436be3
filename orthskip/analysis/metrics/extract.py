"""extract_metrics: every per-layer metric of a ResidualNet on a probe batch, as a long table.

Each metric family is one :class:`MetricFamily` in :data:`FAMILIES`: its name, the sites it
measures (``scope``), the function that adds its rows there and the config options it reads
(keys of the config's ``metrics`` section, written into the schema from here). Adding a
family is one :func:`register_family` call; the schema's family choices
(``orthskip.config.schema``) and the metrics stage's options (:func:`family_options`) read
the registry.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

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
from orthskip.config.options import Option, Table, check_options, defaults
from orthskip.nn.models.base import ResidualBlock
from orthskip.results import METRIC_COLUMNS

# The sites a family can measure, visited in this order: per block its block-level families
# then, per skip matrix of that block, the skip families; then the whole net; then every
# Conv2d / Linear weight (stem, blocks, head).
SCOPES = ("block", "skip", "net", "weight")


@dataclass(frozen=True)
class Layer:
    index: int  # block index; -1 for the stem (and anything outside blocks/head), L for the head
    name: str  # block.name, "stem", "head"


@dataclass(frozen=True)
class Site:
    """Where a family's rows go: the layer, the row's ``layer_kind`` and ``param``, and what
    is measured there (the block and its index; the skip matrix; the weight's module)."""

    layer: Layer
    kind: str  # "block" / "transition", "skip", "skip_path", "conv" / "linear"
    param: str
    index: int = -1  # the block's index (block and skip sites)
    module: nn.Module | None = None  # the block (block sites), the Conv2d / Linear (weights)
    tensor: Tensor | None = None  # the skip matrix (skip sites), the weight (weight sites)


@dataclass
class Probe:
    """What every family sees: the model in eval mode, the probe batch, each block's input
    and output (``acts[i]``, ``acts[i + 1]``, detached), the spatial size each convolution
    saw, the skips' first snapshot (None: not given), the resolved options, and what the
    families' ``prepare`` hooks returned (by family name)."""

    model: nn.Module
    x: Tensor
    y: Tensor
    acts: list[Tensor]
    input_sizes: dict[str, tuple[int, int]]
    initial_skips: Mapping[str, Tensor] | None
    options: Mapping[str, Any]
    prepared: dict[str, Any] = field(default_factory=dict)


class Rows:
    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def add(
        self,
        site: Site,
        metric: str,
        stats: Mapping[str, float],
        exact: bool = True,
        shape: tuple[int, ...] = (),
        method: str = "direct",
        param: str | None = None,
    ) -> None:
        dims = "x".join(str(d) for d in shape)
        layer, param = site.layer, site.param if param is None else param
        for stat, value in stats.items():
            self.rows.append(
                (layer.index, layer.name, site.kind, param, dims, metric, stat, float(value),
                 bool(exact), method)
            )  # fmt: skip

    def frame(self) -> pd.DataFrame:
        df = pd.DataFrame(self.rows, columns=list(METRIC_COLUMNS))
        return df.astype({"layer_index": "int64", "value": "float64", "exact": "bool"})


Compute = Callable[[Probe, Site, Rows], None]


@dataclass(frozen=True)
class MetricFamily:
    """One metric family. ``compute(probe, site, rows)`` adds its rows for one site of
    ``scope`` (a site it does not apply to gets none); ``options`` are its keys of the
    config's ``metrics`` section; ``prepare(probe, acts, logits)``, if set, runs while the
    probe forward's autograd graph exists (``acts`` and ``logits`` attached) and its result
    is ``probe.prepared[name]``."""

    name: str
    scope: str | tuple[str, ...]  # one of SCOPES, or several (sv_reshaped: skips and weights)
    compute: Compute
    options: Table = field(default_factory=dict)
    prepare: Callable[[Probe, list[Tensor], Tensor], Any] | None = None

    def __post_init__(self) -> None:
        bad = set(self.scopes) - set(SCOPES)
        if bad:
            raise ValueError(f"family {self.name}: scope {sorted(bad)} is not in {SCOPES}")

    @property
    def scopes(self) -> tuple[str, ...]:
        return (self.scope,) if isinstance(self.scope, str) else tuple(self.scope)


# Every family, in the order its rows appear within a site (docs/metrics.md).
FAMILIES: dict[str, MetricFamily] = {}


def register_family(family: MetricFamily) -> MetricFamily:
    """Add ``family`` to :data:`FAMILIES` (its options must not clash with another's)."""
    if family.name in FAMILIES:
        raise ValueError(f"metric family {family.name!r} is registered already")
    clash = set(family.options) & set(family_option_table())
    if clash:
        raise ValueError(f"family {family.name}: options {sorted(clash)} belong to another")
    FAMILIES[family.name] = family
    return family


def family_option_table(families: Collection[str] | None = None) -> dict[str, Option]:
    """The options of ``families`` (all registered ones by default), as one table."""
    names = FAMILIES if families is None else families
    return {key: opt for name in names for key, opt in FAMILIES[name].options.items()}


def family_options(mcfg: Mapping[str, Any]) -> dict[str, Any]:
    """The families' options as a cell's ``metrics`` section sets them."""
    return {key: mcfg[key] for key in family_option_table()}


# ---- the families -----------------------------------------------------------------------


def _block_shape(probe: Probe, site: Site) -> tuple[int, ...]:
    return tuple(probe.acts[site.index + 1].shape[1:])  # one sample's block output


def _grad_norm_ratio(probe: Probe, site: Site, rows: Rows) -> None:
    ratio = probe.prepared["grad_norm_ratio"][site.index]
    rows.add(site, "grad_norm_ratio", {"value": ratio}, shape=_block_shape(probe, site))


def _repr_condition(probe: Probe, site: Site, rows: Rows) -> None:
    stats = repr_condition(probe.acts[site.index + 1])
    rows.add(site, "repr_condition", stats, shape=_block_shape(probe, site))


JACOBIAN_STEPS = 24  # Lanczos steps where the block Jacobian is too large to form


def _jacobian_sv(probe: Probe, site: Site, rows: Rows) -> None:
    x = probe.acts[site.index][: probe.options["jacobian_samples"]]
    stats, exact = jacobian_sv(site.module, x, steps=JACOBIAN_STEPS, seed=site.index)
    method = "dense_jacobian" if exact else "lanczos"
    rows.add(site, "jacobian_sv", stats, exact, _block_shape(probe, site), method)


def _branch_lipschitz(probe: Probe, site: Site, rows: Rows) -> None:
    """Lower bound on Lip(F_i) (never exact); no row for a block without a branch."""
    opts, x = probe.options, probe.acts[site.index]
    found = branch_lipschitz(site.module, x[: opts["lipschitz_samples"]],
                             segments=opts["lipschitz_segments"],
                             steps=opts["lipschitz_steps"], seed=site.index)  # fmt: skip
    if found is None:  # orth_jacobian: the skip is the whole block
        return
    stats, method = found
    shape = tuple(x.shape[1:])  # the branch's input, one sample
    rows.add(site, "branch_lipschitz", stats, False, shape, method,
             param=f"{site.param}.branch")  # fmt: skip


def _orth_defect(probe: Probe, site: Site, rows: Rows) -> None:
    q = as_matrix(site.tensor)
    rows.add(site, "orth_defect", {"value": orth_defect(q)}, shape=tuple(q.shape))


def _dist_identity(probe: Probe, site: Site, rows: Rows) -> None:
    q = as_matrix(site.tensor)
    if q.shape[0] == q.shape[1]:
        rows.add(site, "dist_identity", dist_identity(q), shape=tuple(q.shape))


def _sv_reshaped(probe: Probe, site: Site, rows: Rows) -> None:
    w = as_matrix(site.tensor) if site.kind == "skip" else site.tensor
    rows.add(site, "sv_reshaped", sv_reshaped(w), shape=tuple(w.shape))


def _dist_init(probe: Probe, site: Site, rows: Rows) -> None:
    """‖Q − Q₀‖ from the cell's first snapshot; NaN for a param it lacks; no rows at all
    without a first snapshot (``initial_skips`` None)."""
    if probe.initial_skips is None:
        return
    d = dist_init(site.tensor, probe.initial_skips.get(site.param))
    rows.add(site, "dist_init", d, shape=tuple(as_matrix(site.tensor).shape))


def _skip_product(probe: Probe, site: Site, rows: Rows) -> None:
    """One row for the whole net: the rotation of its skips' product beside that of the probe
    targets' best linear fit (``fit_*``, only for a regression onto the input space)."""
    model = probe.model
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
    if probe.y.is_floating_point():
        fit = linear_fit_rotation(probe.x, probe.y)
        stats.update({f"fit_{k}": v for k, v in fit.items() if not math.isnan(v)})
    rows.add(site, "skip_product", stats, shape=tuple(product.shape))


def _sv_hosvd(probe: Probe, site: Site, rows: Rows) -> None:
    if site.kind == "conv":
        rows.add(site, "sv_hosvd", sv_hosvd(site.tensor), shape=tuple(site.tensor.shape))


_NAN_SV = {"max": math.nan, "min": math.nan, "cond": math.nan}


def _sv_operator(probe: Probe, site: Site, rows: Rows) -> None:
    """The operator at the layer's real padding: FFT (circular), dense SVD or LOBPCG."""
    if site.kind != "conv":
        return
    conv, dims = site.module, tuple(site.tensor.shape)
    size = probe.input_sizes.get(_module_name(site))
    if size is None:  # never called on the probe batch: no input size to evaluate at
        rows.add(site, "sv_operator", _NAN_SV, False, dims, "none")
        return
    try:
        stats, exact, method = sv_operator(
            conv, size, dense_max_dim=probe.options["operator_dense_max_dim"],
            iterative=probe.options["operator_iterative"],
        )  # fmt: skip
    except ValueError:  # a padding mode the operator matrix does not cover
        stats, exact, method = _NAN_SV, False, "none"
    # the operator acts on C_in x H x W inputs: record the size it was evaluated at
    rows.add(site, "sv_operator", stats, exact, (*dims, *size), method)


def _sv_operator_circular(probe: Probe, site: Site, rows: Rows) -> None:
    """The circular surrogate on the torus (FFT); exact only where it is the layer itself."""
    if site.kind != "conv":
        return
    dims = tuple(site.tensor.shape)
    size = probe.input_sizes.get(_module_name(site))
    if size is None:
        rows.add(site, "sv_operator_circular", _NAN_SV, False, dims, "none")
        return
    try:
        stats, exact = sv_circular(site.module, size)
    except ValueError:  # padding mode / size the FFT method does not cover
        stats, exact = _NAN_SV, False
    rows.add(site, "sv_operator_circular", stats, exact, (*dims, *size), "fft_circular")


def _module_name(site: Site) -> str:
    return site.param.removesuffix(".weight")


for _family in (
    MetricFamily(
        "grad_norm_ratio", "block", _grad_norm_ratio,
        prepare=lambda probe, acts, logits: grad_norm_ratios(acts, logits, probe.y),
    ),
    MetricFamily("repr_condition", "block", _repr_condition),
    MetricFamily("jacobian_sv", "block", _jacobian_sv, {
        "jacobian_samples": Option(
            "integer", 8, "probe samples whose block Jacobians are estimated (jacobian_sv)",
            minimum=1),
    }),
    MetricFamily("branch_lipschitz", "block", _branch_lipschitz, {
        "lipschitz_samples": Option(
            "integer", 32,
            "probe samples at which branch_lipschitz takes σ_max of the branch Jacobian",
            minimum=1),
        "lipschitz_segments": Option(
            "integer", 32,
            "random points on segments between probe pairs, also evaluated (0 = none)",
            minimum=0),
        "lipschitz_steps": Option(
            "integer", 30, "power-iteration steps per point above the dense-Jacobian size",
            minimum=1),
    }),
    MetricFamily("orth_defect", "skip", _orth_defect),
    MetricFamily("dist_identity", "skip", _dist_identity),
    MetricFamily("sv_reshaped", ("skip", "weight"), _sv_reshaped),
    MetricFamily("dist_init", "skip", _dist_init),
    MetricFamily("skip_product", "net", _skip_product),
    MetricFamily("sv_hosvd", "weight", _sv_hosvd),
    MetricFamily("sv_operator", "weight", _sv_operator, {
        "operator_dense_max_dim": Option(
            "integer", 4096,
            "sv_operator of a conv is computed exactly (dense SVD of the operator at its real "
            "padding) when its input and output have at most this many entries", minimum=1),
        "operator_iterative": Option(
            "boolean", False,
            "above operator_dense_max_dim, estimate sv_operator by LOBPCG (slow: ~20 s per "
            "16x32x32 layer on one CPU core; recorded as inexact); false records NaN"),
    }),
    MetricFamily("sv_operator_circular", "weight", _sv_operator_circular),
):  # fmt: skip
    register_family(_family)


# ---- extraction ---------------------------------------------------------------------------


def _layer_of(module_name: str, model: nn.Module) -> Layer:
    parts = module_name.split(".")
    n_blocks = len(model.blocks)
    if parts[0] == "blocks" and len(parts) > 1:
        i = int(parts[1])
        return Layer(i, str(model.blocks[i].name))
    if parts[0] == "head":
        return Layer(n_blocks, "head")
    return Layer(-1, parts[0])


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
    initial_skips: Mapping[str, Tensor] | None = None,
    **options: Any,
) -> pd.DataFrame:
    """All per-layer metrics of `model` (ResidualNet contract) on the probe batch.

    `families` restricts which metric families (names in :data:`FAMILIES`) are computed.
    `options`: the families' options (:func:`family_option_table`: ``jacobian_samples``,
    ``operator_dense_max_dim`` / ``operator_iterative`` (see :func:`sv_operator`),
    ``lipschitz_samples`` / ``lipschitz_segments`` / ``lipschitz_steps`` of
    ``branch_lipschitz``: the first samples probe inputs of each block, segments points
    between random pairs of them, steps power-iteration steps
    (:func:`orthskip.analysis.metrics.lipschitz.branch_lipschitz`)); the rest take their
    defaults. `initial_skips` maps skip params (``blocks.3.skip.Q``) to the same matrices at
    the cell's first snapshot: with it, family ``dist_init`` records ‖Q − Q₀‖ (NaN for a param
    it lacks, e.g. when epoch 0 was not saved); without it (None) that family is skipped.
    Runs in eval mode (running BatchNorm statistics, no buffer updates) and restores the mode.
    Returns the long table of docs/metrics.md: columns METRIC_COLUMNS, one row per
    (layer, metric, stat). Block-level metrics (grad_norm_ratio, jacobian_sv, repr_condition)
    use the block index as layer_index and kind "transition" or "block"; weights inside
    block i carry index i, the stem −1, the head len(blocks).
    """
    want = list(FAMILIES) if families is None else list(families)
    unknown = sorted(set(want) - set(FAMILIES))
    if unknown:
        raise ValueError(f"unknown metric families {unknown}; allowed: {list(FAMILIES)}")
    table = family_option_table()
    check_options(table, options, "metrics")
    opts = {**defaults(table), **options}
    chosen = [fam for name, fam in FAMILIES.items() if name in want]
    device = next(model.parameters()).device
    probe_x, probe_y = probe_x.to(device), probe_y.to(device)
    was_training = model.training
    model.eval()
    rows = Rows()
    # parametrized weights (orthogonal skips) are computed once, not at every access
    with parametrize.cached():
        try:
            _extract(model, probe_x, probe_y, chosen, rows, initial_skips, opts)
        finally:
            model.train(was_training)
    return rows.frame()


def _extract(
    model: nn.Module,
    probe_x: Tensor,
    probe_y: Tensor,
    chosen: list[MetricFamily],
    rows: Rows,
    initial_skips: Mapping[str, Tensor] | None,
    options: Mapping[str, Any],
) -> None:
    """Fill `rows` with the `chosen` families at every site; the model is in eval mode."""
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
    probe = Probe(model, probe_x, probe_y, [], input_sizes, initial_skips, options)
    try:
        with torch.enable_grad():
            acts, logits = block_activations(model, probe_x)
            for fam in chosen:
                if fam.prepare is not None:
                    probe.prepared[fam.name] = fam.prepare(probe, acts, logits)
    finally:
        for h in hooks:
            h.remove()
    probe.acts = [a.detach() for a in acts]
    by_scope = {s: [f for f in chosen if s in f.scopes] for s in SCOPES}

    def visit(scope: str, site: Site) -> None:
        for fam in by_scope[scope]:
            fam.compute(probe, site, rows)

    for i, block in enumerate(model.blocks):
        layer = Layer(i, str(block.name))
        kind = "transition" if bool(block.transition) else "block"
        visit("block", Site(layer, kind, f"blocks.{i}", i, block))
        for key, mat in block.skip_matrices().items():
            visit("skip", Site(layer, "skip", f"blocks.{i}.{key}", i, tensor=mat))
    visit("net", Site(Layer(-1, "skip_product"), "skip_path", "blocks.*.skip"))
    for name, mod in weights:
        kind = "conv" if isinstance(mod, nn.Conv2d) else "linear"
        site = Site(_layer_of(name, model), kind, f"{name}.weight", module=mod,
                    tensor=mod.weight.detach())  # fmt: skip
        visit("weight", site)
