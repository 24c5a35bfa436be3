"""Each skip kind's options (``config["skip_options"][kind]``) and constraints, torch-free.

The config checks (``orthskip.config.grid``) and the schema generator read them from here
without importing torch; each ``Skip`` class (``orthskip.nn.skips``) reads its
``options_table`` and ``constraints`` from its kind's entry (``KIND_OPTIONS``), so the
table is stated once. The kinds' names and presentation are the ``SkipKind`` registry
(``orthskip.nn.skip_kinds``), kept apart so that the plot jobs, which read it, do not rerun
when an option's text changes. A kind without an entry here has no options.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from orthskip.config.constraints import Constraint
from orthskip.config.options import (
    Option,
    RegistryView,
    Table,
    check_options,
    defaults,
    unknown,
)
from orthskip.nn.skip_kinds import KINDS


@dataclass(frozen=True)
class KindOptions:
    """A skip kind's options (type, default, allowed values, description of each) and what
    it needs of them and the data beyond the table (enforced by ``build_model`` and by the
    config check for every cell; ``orthskip.config.constraints``)."""

    options: Table = field(default_factory=dict)
    constraints: tuple[Constraint, ...] = ()


#: Every kind's options and constraints, by kind name (``register_options`` adds one).
KIND_OPTIONS: dict[str, KindOptions] = {}
NO_OPTIONS = KindOptions()


def register_options(kind: str, entry: KindOptions) -> KindOptions:
    if kind in KIND_OPTIONS:
        raise ValueError(f"skip kind {kind!r} has its options registered already")
    KIND_OPTIONS[kind] = entry
    return entry


def kind_options(kind: str) -> KindOptions:
    """``kind``'s entry (``NO_OPTIONS`` for a kind without options)."""
    return KIND_OPTIONS.get(kind, NO_OPTIONS)


# The kinds whose skip is a matrix (Q = I, 0, W, frozen, parametrized, manifold): the ones the
# hand-batched engine trains on the mlp (``orthskip.training.handmlp``), so the ones that
# pack across kinds (``orthskip.config.grid.kinds_signature``).
MATRIX_KINDS = ("identity", "none", "linear", "orth_fixed", "orth_learned", "orth_manifold")

# The relative singular-value floor of the manifold step's direction (see
# ``orthskip.nn.orth.msign_floored``): components of WᵀG − GᵀW below 1e-3 of its largest are
# damped, not lifted to unit steps. orth_manifold's default ``msign_floor``.
MSIGN_FLOOR = 1e-3


def init_option(default: str, choices: tuple[str, ...], text: str = "") -> Option:
    return Option("string", default, text or "initial map", choices=choices)


NEG_DET = Option("boolean", False, "Haar samples in O(n) (det = ±1), not only SO(n)")
MAP = Option("string", "matrix_exp", "skew A -> orthogonal map: base·exp(A) or Cayley(A)",
             choices=("matrix_exp", "cayley"))  # fmt: skip
ORTH_INIT = ("identity", "haar")

# What each option does is documented with the kind's class (orthskip.nn.skips and its
# modules basic, orthogonal, procrustes, jacobian).
for _kind, _entry in {
    "linear": KindOptions({
        "init": init_option("identity", ("identity", "orthogonal", "kaiming")),
    }),
    "orth_fixed": KindOptions({
        "init": init_option("haar", ("haar",), "the frozen map: Haar"),
        "allow_negative_det": NEG_DET,
    }),
    "orth_learned": KindOptions({
        "map": MAP,
        "init": init_option("identity", ORTH_INIT),
        "allow_negative_det": NEG_DET,
    }),
    "orth_manifold": KindOptions({
        "init": init_option("identity", ORTH_INIT),
        "allow_negative_det": NEG_DET,
        "lr_scale": Option("number", 1.0, "Riemannian step = lr x lr_scale", exclusive_minimum=0),
        "msign_floor": Option(
            "number",
            MSIGN_FLOOR,
            "relative singular-value floor of the step direction's msign: components of"
            " WtG - GtW below floor x its largest singular value are damped, not lifted to"
            " unit steps (0 = the exact, discontinuous sign)",
            minimum=0,
            maximum=1,
        ),
        "ns_tol": Option(
            "number", 1e-7, "Newton-Schulz tolerance of the retraction", exclusive_minimum=0
        ),
        "ns_max_iter": Option("integer", 100, "Newton-Schulz iteration cap", minimum=1),
    }),
    "procrustes": KindOptions({
        "every": Option(
            "integer", 1, "project the transition convs every this many steps", minimum=1
        ),
        "scale": Option(
            "number", 1.0, "the operator's nonzero singular values", exclusive_minimum=0
        ),
        "kernel_size": Option(
            "integer", 1, "transition conv kernel (k > 1: circular, images)", minimum=1
        ),
    }),
    "orth_jacobian": KindOptions({
        "map": MAP,
        "init": init_option("haar", ORTH_INIT, "base of B: identity or Haar SO(C)"),
        "allow_negative_det": NEG_DET,
        "kernel_size": Option(
            "integer", 3, "B's centred kernel on images (1: channel-wise)", minimum=1, odd=True
        ),
        "layers": Option("integer", 2, "layers y = x - 2Bᵀρ(Bx + b) per block", minimum=1),
    }),
}.items():  # fmt: skip
    register_options(_kind, _entry)


# Every kind's options (config["skip_options"][kind]), their defaults and its constraints.
# (over ``orthskip.nn.skip_kinds.KINDS``: a kind without an entry here has no options)
SKIP_SPECS: Mapping[str, Table] = RegistryView(KINDS, lambda n: kind_options(n).options)
SKIP_OPTIONS: Mapping[str, dict[str, Any]] = RegistryView(
    KINDS, lambda n: defaults(kind_options(n).options)
)
SKIP_CONSTRAINTS: Mapping[str, tuple[Constraint, ...]] = RegistryView(
    KINDS, lambda n: kind_options(n).constraints
)


def validate_skip_options(skip_cfg: dict | None) -> None:
    """Raise ConfigError for an unknown kind, an unknown key or a bad value in skip_options."""
    for kind, opts in (skip_cfg or {}).items():
        if kind not in SKIP_SPECS:
            raise unknown(f"skip_options.{kind}", kind, SKIP_SPECS, "skip kind")
        if opts is not None:
            check_options(SKIP_SPECS[kind], opts, f"skip_options.{kind}")


def skip_options(kind: str, skip_cfg: dict | None) -> dict[str, Any]:
    """Defaults of ``kind`` overridden by ``skip_cfg[kind]``. The values are checked once,
    where a config or a call enters: ``config.grid.prepare_config`` (the pipeline) and
    ``nn.models.build_model`` (the library), not again by every skip built from them."""
    if kind not in KINDS:
        raise unknown("skip", kind, KINDS, "skip kind")
    return {**SKIP_OPTIONS[kind], **((skip_cfg or {}).get(kind) or {})}
