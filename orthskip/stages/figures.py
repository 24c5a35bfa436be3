"""The figures stage: each of the paper's figures, drawn from the aggregated Parquet files
alone (read through :mod:`orthskip.results`).

``make_figure(name, metrics_dir, out_pdf, out_png, setting=None)`` is what the figure rules
call; ``FIGURES`` maps each name to a function ``metrics_dir -> matplotlib Figure`` of
:mod:`orthskip.figures`. Names in ``PAPER_FIGURES`` are sized for print (column or page
width); those in ``PER_SETTING`` are report figures that the workflow draws once per
(dataset, arch) ``setting``, so that none grows with the grid beyond a page.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from orthskip import results
from orthskip.errors import ConfigError
from orthskip.figures import paper, style
from orthskip.figures.accuracy import accuracy_vs_depth, training_curves
from orthskip.figures.blockwise import grad_norm_ratio, jacobian_spread
from orthskip.figures.conditioning import repr_condition, weight_condition
from orthskip.figures.decision import decision_regions
from orthskip.figures.orthogonality import dist_identity
from orthskip.figures.trajectories import dist_identity_epochs

PAPER_FIGURES: dict[str, Callable[[Path], Figure]] = {
    "paper_rate": paper.rate,
    "paper_rate_by_epoch": paper.rate_by_epoch,
    "paper_accuracy_depth": paper.accuracy_depth,
    "paper_start_end": paper.start_end,
    "paper_approximation": paper.approximation,
    "paper_grad_ratio": paper.grad_ratio,
    "paper_conditioning": paper.conditioning,
}
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
    **PAPER_FIGURES,
}
# One panel (or row of panels) per variant or per setting: one file per setting. Each with
# the metric families it draws (None: history or warp grids, always there), so that the
# workflow skips a setting whose cells measure none of them (e.g. the rate recipe's).
SETTING_FAMILIES: dict[str, frozenset[str] | None] = {
    "training_curves": None,
    "decision_regions": None,
    "dist_identity": frozenset({"dist_identity"}),
    "dist_identity_epochs": frozenset({"dist_identity"}),
    "grad_norm_ratio": frozenset({"grad_norm_ratio"}),
    "weight_condition": frozenset({"sv_reshaped", "sv_operator"}),
    "repr_condition": frozenset({"repr_condition"}),
    "jacobian_spread": frozenset({"jacobian_sv"}),
}
PER_SETTING: frozenset[str] = frozenset(SETTING_FAMILIES)


def setting_draws(name: str, measured: list[frozenset[str] | None]) -> bool:
    """Whether per-setting figure ``name`` has anything to draw for a setting whose cells
    measure these metric families (None: every family)."""
    need = SETTING_FAMILIES[name]
    return need is None or any(m is None or need & m for m in measured)


def _check_name(name: str) -> None:
    if name not in FIGURES:
        raise ConfigError(f"figure {name!r} is unknown; allowed: {', '.join(FIGURES)}")


def _one_setting(metrics_dir: Path, setting: tuple[str, str], out: Path) -> Path:
    """Copies of the result tables that keep only the rows of one (dataset, arch)."""
    dataset, arch = setting
    for name in results.RESULT_FILES:
        src = Path(metrics_dir) / f"{name}.parquet"
        if not src.exists():
            continue
        df = pd.read_parquet(src)
        if {"dataset", "arch"} <= set(df.columns):
            df = df[(df["dataset"] == dataset) & (df["arch"] == arch)]
        df.to_parquet(out / f"{name}.parquet", index=False)
    return out


def draw_figure(name: str, metrics_dir: Path, setting: tuple[str, str] | None = None) -> Figure:
    """Figure ``name`` from ``metrics_dir/*.parquet``, of one (dataset, arch) when ``setting``
    is given (call inside ``style.style()``)."""
    _check_name(name)
    if setting is None:
        return FIGURES[name](Path(metrics_dir))
    with tempfile.TemporaryDirectory(prefix="orthskip-figure-") as tmp:
        # the figure functions read everything they draw before they return
        return FIGURES[name](_one_setting(Path(metrics_dir), setting, Path(tmp)))


def make_figure(
    name: str,
    metrics_dir: Path,
    out_pdf: Path,
    out_png: Path,
    setting: tuple[str, str] | None = None,
) -> None:
    """Draw figure ``name`` (of one setting, if given); write PDF and PNG atomically."""
    _check_name(name)
    with style.style():
        fig = draw_figure(name, metrics_dir, setting)
        style.save_figure(fig, Path(out_pdf), Path(out_png))
