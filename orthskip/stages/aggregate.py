"""Merge every cell's outputs into the tables that figures and tables read."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from orthskip.io import write_parquet
from orthskip.results import APPROX_COLUMNS, concat_parquet, empty_table, read_status


def aggregate(
    status: Sequence[Path],
    history: Sequence[Path],
    metrics: Sequence[Path],
    warp: Sequence[Path],
    out_dir: Path,
) -> None:
    out_dir = Path(out_dir)
    write_parquet(out_dir / "cells.parquet", read_status(status))
    write_parquet(out_dir / "history.parquet", concat_parquet(history))
    write_parquet(out_dir / "layers.parquet", concat_parquet(metrics))
    write_parquet(out_dir / "warp.parquet", concat_parquet(warp))


def aggregate_approx(paths: Sequence[Path], out: Path) -> int:
    """results/metrics/approx.parquet: the approximation stage's per-cell rows, concatenated;
    with no cells (approx.enabled false, no identity cell) an empty table with its columns,
    so that the table and findings rules always have their input. Returns the row count."""
    if paths:
        table = concat_parquet(paths)
    else:
        table = empty_table(APPROX_COLUMNS)
    write_parquet(out, table)
    return table.num_rows
