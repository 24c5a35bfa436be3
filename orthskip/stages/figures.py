"""The figures stage: each of the paper's figures, drawn from the aggregated Parquet files
alone (read through :mod:`orthskip.results`).

``make_figure(name, metrics_dir, out_pdf, out_png, setting=None)`` is what the figure rules
call; ``FIGURES`` maps each name to a function ``metrics_dir -> matplotlib Figure`` of
:mod:`orthskip.figures`, resolved from :mod:`orthskip.stages.catalog` (which planning
reads). Names in ``PAPER_FIGURES`` are sized for print (column or page width); those in
``PER_SETTING`` are report figures that the workflow draws once per (dataset, arch)
``setting``, so that none grows with the grid beyond a page.
"""

from __future__ import annotations

import importlib
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from orthskip import results
from orthskip.errors import ConfigError
from orthskip.figures import style
from orthskip.stages.catalog import (
    FIGURE_SOURCES,
    PAPER_FIGURE_SOURCES,
    PER_SETTING,
    SETTING_FAMILIES,
    setting_draws,
)


def _function(source: str) -> Callable[[Path], Figure]:
    """``"module.function"`` of orthskip.figures (orthskip.stages.catalog)."""
    module, _, name = source.rpartition(".")
    return getattr(importlib.import_module(f"orthskip.figures.{module}"), name)


PAPER_FIGURES: dict[str, Callable[[Path], Figure]] = {
    name: _function(source) for name, source in PAPER_FIGURE_SOURCES.items()
}
FIGURES: dict[str, Callable[[Path], Figure]] = {
    name: _function(source) for name, source in FIGURE_SOURCES.items()
}


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


__all__ = [
    "FIGURES",
    "PAPER_FIGURES",
    "PER_SETTING",
    "SETTING_FAMILIES",
    "draw_figure",
    "make_figure",
    "setting_draws",
]
