"""The figures stage: each of the paper's figures, drawn from the aggregated Parquet files
alone (read through :mod:`orthskip.results`).

``make_figure(name, metrics_dir, out_pdf, out_png)`` is what the figure rule calls;
``FIGURES`` maps each name to a function ``metrics_dir -> matplotlib Figure`` of
:mod:`orthskip.figures`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from matplotlib.figure import Figure

from orthskip.errors import ConfigError
from orthskip.figures import style
from orthskip.figures.accuracy import accuracy_vs_depth, training_curves
from orthskip.figures.blockwise import grad_norm_ratio, jacobian_spread
from orthskip.figures.conditioning import repr_condition, weight_condition
from orthskip.figures.decision import decision_regions
from orthskip.figures.orthogonality import dist_identity
from orthskip.figures.trajectories import dist_identity_epochs

FIGURES: dict[str, Callable[[Path], Figure]] = {
    "accuracy_vs_depth": accuracy_vs_depth,
    "training_curves": training_curves,
    "dist_identity": dist_identity,
    "dist_identity_epochs": dist_identity_epochs,
    "grad_norm_ratio": grad_norm_ratio,
    "weight_condition": weight_condition,
    "repr_condition": repr_condition,
    "jacobian_spread": jacobian_spread,
    "decision_regions": decision_regions,
}


def make_figure(name: str, metrics_dir: Path, out_pdf: Path, out_png: Path) -> None:
    """Draw figure ``name`` from ``metrics_dir/*.parquet``; write PDF and PNG atomically."""
    if name not in FIGURES:
        raise ConfigError(f"figure {name!r} is unknown; allowed: {', '.join(FIGURES)}")
    with style.style():
        fig = FIGURES[name](Path(metrics_dir))
        style.save_figure(fig, Path(out_pdf), Path(out_png))
