"""The tables stage: each of the paper's tables, and findings.md, computed from the
aggregated Parquet files alone (read through :mod:`orthskip.results`).

``make_table(name, metrics_dir, out_md, out_tex)`` is what the table rule calls (it writes
the longtable beside ``out_tex``, :func:`longtable_path`) and
``write_findings(metrics_dir, out)`` the findings rule; ``TABLES`` maps each table's name to
the result files it reads and the function of :mod:`orthskip.tables` that makes it from
them, resolved from :mod:`orthskip.stages.catalog`. A new table is one module there and one
entry in the catalog.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from orthskip import results
from orthskip.errors import ConfigError
from orthskip.io import write_text
from orthskip.stages.catalog import TABLE_SOURCES
from orthskip.tables.findings_text import findings_markdown
from orthskip.tables.render import Table, render_latex, render_longtable, render_markdown


@dataclass(frozen=True)
class TableSpec:
    """A table's inputs (names of ``results/metrics/<name>.parquet``, passed in this order)
    and the function that makes it from their DataFrames."""

    reads: tuple[str, ...]
    make: Callable[..., Table]


def _function(source: str) -> Callable[..., Table]:
    """``"module.function"`` of orthskip.tables (orthskip.stages.catalog)."""
    module, _, name = source.rpartition(".")
    return getattr(importlib.import_module(f"orthskip.tables.{module}"), name)


TABLES: dict[str, TableSpec] = {
    name: TableSpec(reads, _function(source)) for name, (reads, source) in TABLE_SOURCES.items()
}


def _read(metrics_dir: Path, names: tuple[str, ...]) -> list[pd.DataFrame]:
    return [results.read_table(Path(metrics_dir), name) for name in names]


def longtable_path(out_tex: Path) -> Path:
    """Where :func:`make_table` writes the longtable of the tabular ``out_tex``:
    ``<name>.long.tex`` beside it."""
    out_tex = Path(out_tex)
    return out_tex.with_name(f"{out_tex.stem}.long.tex")


def make_table(name: str, metrics_dir: Path, out_md: Path, out_tex: Path) -> None:
    """Compute table ``name`` from ``metrics_dir/*.parquet``; write Markdown, a LaTeX tabular
    (``out_tex``) and the same as a longtable (:func:`longtable_path` of ``out_tex``)."""
    if name not in TABLES:
        raise ConfigError(f"table {name!r} is unknown; allowed: {', '.join(TABLES)}")
    spec = TABLES[name]
    table = spec.make(*_read(metrics_dir, spec.reads))
    write_text(out_md, render_markdown(table))
    write_text(out_tex, render_latex(table))
    write_text(longtable_path(out_tex), render_longtable(table))


def write_findings(metrics_dir: Path, out: Path) -> None:
    """results/tables/findings.md from ``metrics_dir/{layers,cells,approx,history}.parquet``."""
    names = ("layers", "cells", "approx", "history")
    write_text(out, findings_markdown(*_read(metrics_dir, names)))


__all__ = ["TABLES", "TableSpec", "longtable_path", "make_table", "write_findings"]
