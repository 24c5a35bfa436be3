"""Small text summaries of the aggregated results for `dvc metrics show` / `dvc plots show`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from orthskip.io import atomic_path, write_json

KEYS = ["dataset", "arch", "variant", "depth"]


def accuracy_by_depth(cells: pd.DataFrame) -> pd.DataFrame:
    """Mean final test accuracy over seeds per (dataset, arch, variant, depth); diverged = NaN."""
    grouped = cells.groupby(KEYS, sort=True)
    return pd.DataFrame(
        {
            "test_acc_mean": grouped["test_acc"].mean(),
            "n_seeds": grouped["seed"].count(),
            "n_diverged": grouped["status"].agg(lambda s: int((s == "diverged").sum())),
        }
    ).reset_index()


def write_summary(cells_path: Path, json_path: Path, csv_path: Path) -> None:
    table = accuracy_by_depth(pd.read_parquet(cells_path))
    nested: dict = {}
    for row in table.itertuples(index=False):
        leaf = nested.setdefault(row.dataset, {}).setdefault(row.arch, {})
        leaf.setdefault(row.variant, {})[f"d{row.depth}"] = {
            "test_acc_mean": None if pd.isna(row.test_acc_mean) else float(row.test_acc_mean),
            "n_seeds": int(row.n_seeds),
            "n_diverged": int(row.n_diverged),
        }
    write_json(json_path, nested)
    with atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=False)
