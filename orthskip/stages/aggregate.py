"""Merge every cell's outputs into the tables that figures and tables read."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from orthskip.io import write_parquet

CELL_COLUMNS = ["dataset", "arch", "variant", "depth", "seed"]
FLOAT_COLUMNS = [
    "train_loss",
    "train_acc",
    "train_r2",
    "val_loss",
    "val_acc",
    "val_r2",
    "test_loss",
    "test_acc",
    "test_r2",
    "test_acc_at_best_val",
    "test_r2_at_best_val",
    "clipped_frac",
]
STATUS_COLUMNS = [
    "skip",
    "task",
    "status",
    "epochs",
    "diverged_epoch",
    "diverged_step",
    "stopped",
    *FLOAT_COLUMNS,
    "best_val_epoch",
    "wall_time_s",
    "n_params",
    "n_skip_params",
    "config_hash",
    "code_version",
    "torch_version",
    "device",
]


def read_status(paths: Sequence[Path]) -> pd.DataFrame:
    rows = []
    for path in paths:
        with open(path) as fh:
            status = json.load(fh)
        rows.append({k: status.get(k) for k in CELL_COLUMNS + STATUS_COLUMNS})
    df = pd.DataFrame(rows, columns=CELL_COLUMNS + STATUS_COLUMNS)
    for col in ("depth", "seed", "epochs", "n_params", "n_skip_params"):
        df[col] = df[col].astype("int64")
    for col in ("diverged_epoch", "diverged_step", "best_val_epoch"):  # None where not set
        df[col] = df[col].astype("Int64")
    for col in FLOAT_COLUMNS:
        df[col] = df[col].astype("float64")
    return df.sort_values(CELL_COLUMNS, ignore_index=True)


def concat_parquet(paths: Sequence[Path]) -> pa.Table:
    """Concatenate per-cell Parquet files (schemas must agree)."""
    tables = [pq.read_table(p) for p in paths]
    nonempty = [t for t in tables if t.num_rows] or tables[:1]
    return pa.concat_tables(nonempty, promote_options="default")


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
        from orthskip.stages.approx import COLUMNS  # torch's import cost only in this case

        table = pa.Table.from_pandas(pd.DataFrame(columns=COLUMNS), preserve_index=False)
    write_parquet(out, table)
    return table.num_rows
