"""The pyarrow schema of the per-cell metrics file, enforced on write.

One row per (cell, snapshot epoch, layer, metric, stat) — long format, so that adding a
metric or stat never changes the schema and every figure is one filter + groupby away.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from orthskip.io import write_parquet

# columns of extract_metrics' result, in order
METRIC_COLUMNS: tuple[str, ...] = (
    "layer_index",
    "layer_name",
    "layer_kind",
    "param",
    "shape",
    "metric",
    "stat",
    "value",
    "exact",
    "method",
)
# variant: a named skip kind + config overrides; a bare kind is the variant of its own name
CELL_COLUMNS: tuple[str, ...] = ("dataset", "arch", "variant", "skip", "depth", "seed")
PROVENANCE_COLUMNS: tuple[str, ...] = ("config_hash", "code_version", "torch_version", "device")

_TYPES: dict[str, pa.DataType] = {
    "dataset": pa.string(),
    "arch": pa.string(),
    "variant": pa.string(),
    "skip": pa.string(),
    "depth": pa.int64(),
    "seed": pa.int64(),
    "epoch": pa.int64(),
    "layer_index": pa.int64(),
    "layer_name": pa.string(),
    "layer_kind": pa.string(),
    "param": pa.string(),
    "shape": pa.string(),  # "AxBx…": weight/matrix shape, or one sample's block output
    "metric": pa.string(),
    "stat": pa.string(),
    "value": pa.float64(),  # ±inf and NaN are values, never nulls
    "exact": pa.bool_(),
    "method": pa.string(),  # how `value` was computed (docs/metrics.md), e.g. dense_svd, lobpcg
    "config_hash": pa.string(),
    "code_version": pa.string(),
    "torch_version": pa.string(),
    "device": pa.string(),
}
COLUMNS: tuple[str, ...] = (*CELL_COLUMNS, "epoch", *METRIC_COLUMNS, *PROVENANCE_COLUMNS)
SCHEMA: pa.Schema = pa.schema([pa.field(c, _TYPES[c], nullable=False) for c in COLUMNS])


class SchemaError(ValueError):
    """A metrics table does not match SCHEMA (missing, extra, mistyped or null columns)."""


def _check_column(name: str, series: pd.Series, typ: pa.DataType) -> None:
    dtype = series.dtype
    if pa.types.is_int64(typ):
        ok = pd.api.types.is_integer_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
        expected = "integer"
    elif pa.types.is_float64(typ):
        ok = pd.api.types.is_float_dtype(dtype)
        expected = "float"
    elif pa.types.is_boolean(typ):
        ok = pd.api.types.is_bool_dtype(dtype)
        expected = "bool"
    else:
        ok = len(series) == 0 or pd.api.types.infer_dtype(series, skipna=False) == "string"
        expected = "string"
    if not ok:
        raise SchemaError(f"column {name!r}: expected {expected} values, got dtype {dtype}")
    if not pa.types.is_float64(typ) and bool(series.isna().any()):
        raise SchemaError(f"column {name!r}: null values are not allowed")


def to_table(df: pd.DataFrame) -> pa.Table:
    """A validated pyarrow Table (SCHEMA, column order fixed) from a per-cell metrics DataFrame.

    Raises SchemaError naming the offending column when a column is missing, extra, of the
    wrong type, or (other than `value`) holds nulls. NaN/inf in `value` are kept as floats.
    """
    missing = [c for c in COLUMNS if c not in df.columns]
    extra = [c for c in df.columns if c not in _TYPES]
    if missing or extra:
        raise SchemaError(f"metrics table: missing columns {missing}, unexpected columns {extra}")
    arrays = []
    for field in SCHEMA:
        series = df[field.name]
        _check_column(field.name, series, field.type)
        values = series.to_numpy(dtype=object if pa.types.is_string(field.type) else None)
        arrays.append(pa.array(values, type=field.type, from_pandas=False))
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


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
    """extract_metrics' table with the cell's wildcards, the snapshot epoch and provenance.

    ``variant`` defaults to the skip kind (a bare kind is the variant of its own name).
    """
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
    """Validate against SCHEMA and write the per-cell Parquet file atomically."""
    write_parquet(path, to_table(df))
