"""The skip kinds' registry: one :class:`SkipKind` per kind, in the order of the config's
kinds, the figures' legends and the tables.

An entry names the kind, its class (``orthskip.nn.skips`` imports it: ``SKIPS``) and how
every figure draws it. This module imports neither torch nor the classes, so that the plot
jobs (``orthskip.figures.style`` reads the presentation from here) stay torch-free and do not
rerun when a skip's code changes. Adding a kind is its class (a ``Skip`` subclass, usually a
module of ``orthskip.nn.skips``), one :func:`register_kind` call and, if it has options or
constraints, one ``orthskip.nn.skip_specs.register_options`` call (kept apart, so that the
plot jobs do not rerun when an option changes); the config schema is generated from these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SkipKind:
    """A skip kind: ``cls`` is its ``Skip`` subclass, or ``"module.Class"`` of a module of
    ``orthskip.nn.skips`` (imported only where a model is built); ``label``, ``color``,
    ``marker`` and ``linestyle`` (a matplotlib style: a name or (offset, (on, off, …)) in
    points) draw the bare kind in every figure, so that it looks the same everywhere."""

    name: str
    cls: str | type[Any]
    label: str
    color: str
    marker: str
    linestyle: str | tuple[Any, ...]


KINDS: dict[str, SkipKind] = {}


def register_kind(kind: SkipKind) -> SkipKind:
    """Append ``kind`` to the registry. A colour, marker or line style is never reused for
    another kind (the colour tells the kinds apart, marker and line style in grey-scale)."""
    if kind.name in KINDS:
        raise ValueError(f"skip kind {kind.name!r} is registered already")
    for attr in ("color", "marker", "linestyle"):
        value = getattr(kind, attr)
        owner = next((k.name for k in KINDS.values() if getattr(k, attr) == value), None)
        if owner is not None:
            raise ValueError(f"skip kind {kind.name}: {attr} {value!r} is {owner}'s already")
    KINDS[kind.name] = kind
    return kind


# Baselines first, then the orthogonal kinds. Colours: the Okabe–Ito colour-blind-safe palette
# plus black; markers as a second cue for grey-scale prints; line styles as a third.
for _kind in (
    SkipKind("identity", "basic.IdentitySkip", "identity", "#000000", "o", "-"),
    SkipKind("none", "basic.NoneSkip", "none (plain)", "#999999", "s", (0, (1, 1))),
    SkipKind("linear", "basic.LinearSkip", "linear", "#E69F00", "D", "--"),
    SkipKind("orth_fixed", "orthogonal.OrthFixedSkip", "orth. fixed", "#56B4E9", "v",
             (0, (5, 1, 1, 1))),
    SkipKind("orth_learned", "orthogonal.OrthLearnedSkip", "orth. learned", "#009E73", "^",
             "-."),
    SkipKind("orth_manifold", "orthogonal.OrthManifoldSkip", "orth. manifold", "#0072B2", "<",
             (0, (3, 1, 1, 1, 1, 1))),
    SkipKind("procrustes", "procrustes.ProcrustesSkip", "Procrustes", "#D55E00", ">",
             (0, (6, 2))),
    SkipKind("orth_jacobian", "jacobian.OrthJacobianSkip", "orth. Jacobian", "#CC79A7", "P",
             ":"),
):  # fmt: skip
    register_kind(_kind)
