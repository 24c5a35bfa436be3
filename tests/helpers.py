"""Helpers only tests use: ways to build or compare what the library computes, kept out of it.

Each is written on the library's own function where there is one (``probe_indices``,
``to_table``, ``loglog_slope``), so a test through it still checks production code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from orthskip.analysis.stats import loglog_slope
from orthskip.io import write_parquet
from orthskip.results import COLUMNS, to_table
from orthskip.stages.metrics import probe_indices


def select_probe(x: Tensor, y: Tensor, size: int, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """The rows of the metrics stage's probe batch (``probe_indices``): (x, y, indices)."""
    idx = probe_indices(len(x), size, seed)
    return x[idx], y[idx], idx


def with_cell_columns(
    metrics: pd.DataFrame,
    *,
    dataset: str,
    arch: str,
    skip: str,
    depth: int,
    seed: int,
    epoch: int,
    config_hash: str,
    code_version: str,
    torch_version: str,
    device: str,
    variant: str | None = None,
) -> pd.DataFrame:
    """extract_metrics' table with the cell's wildcards, the snapshot epoch and provenance, as
    the metrics stage (``cell_metrics``) writes it. ``variant`` defaults to the skip kind (a
    bare kind is the variant of its own name)."""
    consts: dict[str, Any] = {
        "dataset": str(dataset),
        "arch": str(arch),
        "variant": str(skip if variant is None else variant),
        "skip": str(skip),
        "depth": int(depth),
        "seed": int(seed),
        "epoch": int(epoch),
        "config_hash": str(config_hash),
        "code_version": str(code_version),
        "torch_version": str(torch_version),
        "device": str(device),
    }
    out = metrics.copy()
    for col, val in consts.items():
        out[col] = pd.Series(
            [val] * len(out), index=out.index, dtype="int64" if isinstance(val, int) else None
        )
    return out[list(COLUMNS)]


def write_cell_metrics(path: str | Path, df: pd.DataFrame) -> None:
    """Validate against SCHEMA and write the per-cell Parquet file, as ``cell_metrics`` does."""
    write_parquet(path, to_table(df))


def output_gap(a: nn.Module, b: nn.Module, x: Tensor) -> float:
    """max |a(x) − b(x)| over the batch, both in eval mode (modes restored)."""
    modes = (a.training, b.training)
    a.eval()
    b.eval()
    try:
        with torch.no_grad():
            return float((a(x) - b(x)).abs().max())
    finally:
        a.train(modes[0])
        b.train(modes[1])


def power_exponent(m, y) -> float:
    """a of the least-squares fit log y = log C − a log m on the points with m ≥ 2 (where the
    rate models are fitted); NaN with fewer than two depths."""
    m, y = np.asarray(m, dtype=float), np.asarray(y, dtype=float)
    keep = m >= 2
    return -loglog_slope(m[keep], y[keep]).slope
