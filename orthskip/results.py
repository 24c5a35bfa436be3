"""The pipeline's result tables: their schemas, the writers and the one reader.

Per cell, the train stage writes ``status.json`` and ``history.parquet`` (one row per epoch:
the cell's keys and the history row of ``orthskip.training.solo``), the metrics stage
``metrics.parquet`` (``SCHEMA``, enforced by ``to_table``) and ``warp.parquet``
(``WARP_COLUMNS``), the approximation stage ``approx.parquet`` (``APPROX_COLUMNS``); the
aggregate stage merges the cells into ``results/metrics/{cells,history,layers,warp,approx}
.parquet`` (cells: ``STATUS_COLUMNS``, read by ``read_status``) and figures, tables and
findings read them with ``read_table`` and the selections below.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from orthskip.errors import DatasetError

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
# (a list: pandas takes it as column keys for indexing, groupby and merge)
CELL_COLUMNS: list[str] = ["dataset", "arch", "variant", "skip", "depth", "seed"]
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


# cells.parquet: one row per cell from its status.json
SCORE_COLUMNS: tuple[str, ...] = (
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
)
STATUS_COLUMNS: tuple[str, ...] = (
    *CELL_COLUMNS,
    "task",
    "status",
    "epochs",
    "diverged_epoch",
    "diverged_step",
    "stopped",
    "converged",
    "stalled",
    "recipe",
    "skip_init",
    *SCORE_COLUMNS,
    "best_val_epoch",
    "wall_time_s",
    "n_params",
    "n_skip_params",
    *PROVENANCE_COLUMNS,
)
# warp.parquet: the decision-boundary grids of the metrics stage (pandas dtypes)
WARP_COLUMNS: dict[str, str] = {
    **{c: "int64" if c in ("depth", "seed") else "str" for c in CELL_COLUMNS},
    "grid": "str",
    "block": "int64",
    "i": "int64",
    "j": "int64",
    "x": "float64",
    "y": "float64",
    "pred": "int64",
}
# approx.parquet: per cell, kind of the approximation stage and phase, one row; the phases:
# the identity net, right after its skips are swapped, after fine-tuning
APPROX_PHASES: tuple[str, ...] = ("before", "swapped", "finetuned")
APPROX_COLUMNS: tuple[str, ...] = (*CELL_COLUMNS, "kind", "correction", "phase",
    "finetune_epochs", "source_epoch", "status", "score_name", "score", "loss", "n_swapped",
    "dist_identity", "branch_lipschitz", "correction_norm", "gram_err_max")  # fmt: skip


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


# The stopping rule's reason for a plateau above the loss at init (runstate.plateau).
STALLED = "train_loss stalled"
# history.parquet's per-epoch mean ‖Q − I‖_F/√n over a net's matrix skips (NaN without any)
SKIP_GAP = "skip_dist_identity"


def is_converged(status: str, stopped: str | None) -> bool:
    """A cell converged when it ended ``ok`` because the stopping rule (``train.stop``) fired
    below its initial training loss: not at the epoch cap, not diverged, not stalled (a
    plateau above the loss at init: :func:`is_stalled`). Rate fits use converged cells and
    report the others apart (DESIGN §6): a fixed budget otherwise decides the exponent."""
    return status == "ok" and bool(stopped) and not is_stalled(stopped)


def is_stalled(stopped: str | None) -> bool:
    """The stopping rule fired on a plateau not below the loss at init: the net did not
    learn (its skips' distances say nothing about fitting h; rate fits leave it out)."""
    return bool(stopped) and str(stopped).startswith(STALLED)


def with_run_flags(points: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """Per-cell ``points`` with cells.parquet's ``converged`` and ``stalled`` (False for a cell
    without a status row, or a result written before the flag): what the rate fits and the
    rate figure split on."""
    keys = list(CELL_COLUMNS)
    flags = with_variant(cells) if not cells.empty else pd.DataFrame(columns=keys)
    for col in ("converged", "stalled"):
        if col not in flags:
            flags = flags.assign(**{col: False})
    pc = points.merge(flags[[*keys, "converged", "stalled"]], on=keys, how="left")
    return pc.assign(converged=pc["converged"].fillna(False).astype(bool),
                     stalled=pc["stalled"].fillna(False).astype(bool))  # fmt: skip


def recipe(train: dict[str, object]) -> str:
    """A cell's training recipe in a few words (optimizer, lr, the skips' step, schedule,
    what the stopping rule watches, epoch cap), from its config's train section: what a fitted
    exponent depends on besides depth. Empty for a status.json without its config."""
    opt = train.get("optimizer") or {}
    if not opt:
        return ""
    parts = [f"{opt.get('name', '?')} lr {float(opt.get('lr', float('nan'))):g}"]
    if opt.get("main_lr") == "times_blocks":
        parts.append("branch step lr·m")
    if opt.get("skip_lr") == "per_block":
        parts.append("skip step lr/m")
    sched = (train.get("schedule") or {}).get("name")
    if sched and sched != "constant":
        parts.append(str(sched))
    stop = train.get("stop") or {}
    if int(stop.get("patience", 0)) > 0 and stop.get("watch") == "skips":
        parts.append("stop when the skips stop moving")
    if "epochs" in train:
        parts.append(f"cap {int(train['epochs'])} epochs")
    return ", ".join(parts)


def read_status(paths: Sequence[Path]) -> pd.DataFrame:
    """The cells table (STATUS_COLUMNS) from the cells' status.json files, sorted by cell."""
    rows = []
    for path in paths:
        with open(path) as fh:
            status = json.load(fh)
        row = {k: status.get(k) for k in STATUS_COLUMNS}
        # from its definition, so status.json files written before the flag read the same
        row["converged"] = is_converged(status["status"], status.get("stopped"))
        row["stalled"] = is_stalled(status.get("stopped"))
        cfg = status.get("cell_config") or {}
        row["recipe"] = recipe(cfg.get("train") or {})
        row["skip_init"] = str((cfg.get("skip_options") or {}).get("init") or "")
        rows.append(row)
    df = pd.DataFrame(rows, columns=list(STATUS_COLUMNS))
    df["converged"] = df["converged"].astype(bool)
    df["stalled"] = df["stalled"].astype(bool)
    for col in ("depth", "seed", "epochs", "n_params", "n_skip_params"):
        df[col] = df[col].astype("int64")
    for col in ("diverged_epoch", "diverged_step", "best_val_epoch"):  # None where not set
        df[col] = df[col].astype("Int64")
    for col in SCORE_COLUMNS:
        df[col] = df[col].astype("float64")
    return df.sort_values(CELL_COLUMNS, ignore_index=True)


def concat_parquet(paths: Sequence[Path]) -> pa.Table:
    """Concatenate per-cell Parquet files (schemas must agree)."""
    tables = [pq.read_table(p) for p in paths]
    nonempty = [t for t in tables if t.num_rows] or tables[:1]
    return pa.concat_tables(nonempty, promote_options="default")


def empty_table(columns: Sequence[str]) -> pa.Table:
    """A table with these columns and no rows (a stage that produced none)."""
    return pa.Table.from_pandas(pd.DataFrame(columns=list(columns)), preserve_index=False)


# approx: the orthogonal-approximation stage (orthskip.stages.approx), aggregated
RESULT_FILES = ("cells", "history", "layers", "warp", "approx")
PANEL_KEYS = ("dataset", "arch")
_BLOCK_RE = re.compile(r"(?:^|\.)blocks\.(\d+)(?:\.|$)")


def read_table(metrics_dir: Path, name: str) -> pd.DataFrame:
    """``metrics_dir/<name>.parquet``; an empty frame when the file is absent.

    warp.parquet exists only for 2-D data, so absence is a normal case; a file that
    exists but cannot be read is an error the user has to fix.
    """
    if name not in RESULT_FILES:
        raise ValueError(f"unknown result table {name!r}; expected one of {RESULT_FILES}")
    path = Path(metrics_dir) / f"{name}.parquet"
    if not path.exists():
        return pd.DataFrame()
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise DatasetError(
            f"{path}: cannot read the aggregated results ({exc}); rerun the aggregate rule"
        ) from exc
    return with_variant(df)


def with_variant(df: pd.DataFrame) -> pd.DataFrame:
    """Results without a ``variant`` column (older runs): every run is its bare kind's variant."""
    if df.empty or "variant" in df.columns or "skip" not in df.columns:
        return df
    out = df.copy()
    out.insert(list(out.columns).index("skip"), "variant", out["skip"].astype(str))
    return out


def variant_kinds(df: pd.DataFrame) -> dict[str, str]:
    """variant → skip kind, for every variant in ``df`` (which must have both columns)."""
    df = with_variant(df)
    if df.empty:
        return {}
    pairs = df[["variant", "skip"]].drop_duplicates()
    return dict(zip(pairs["variant"].astype(str), pairs["skip"].astype(str), strict=True))


def is_regression(cells: pd.DataFrame) -> pd.Series:
    """Rows of regression cells (column ``task``; results without it are classification)."""
    if "task" not in cells.columns:
        return pd.Series(False, index=cells.index)
    return cells["task"].astype(str) == "regression"


def test_score(cells: pd.DataFrame, at: str = "") -> pd.Series:
    """The test score of each cell: accuracy in % (classification) or R² (regression), at the
    last epoch (``at=""``) or at the best-validation epoch (``at="_at_best_val"``)."""
    acc = pd.to_numeric(cells.get(f"test_acc{at}", np.nan), errors="coerce") * 100.0
    if f"test_r2{at}" not in cells.columns:
        return pd.Series(acc, index=cells.index, dtype=float)
    r2 = pd.to_numeric(cells[f"test_r2{at}"], errors="coerce")
    return pd.Series(np.where(is_regression(cells), r2, acc), index=cells.index, dtype=float)


def score_key(task: str) -> str:
    """A task's score as the result columns name it (``test_acc``, ``val_r2``; approx.parquet's
    ``score_name``): ``r2`` for a regression, ``acc`` for a classification."""
    return "r2" if task == "regression" else "acc"


SCORE_LABELS = {"r2": "test R²", "acc": "test accuracy (%)"}


def score_name(cells: pd.DataFrame) -> str:
    """ "test R²", "test accuracy (%)", or both joined, for the rows given."""
    tasks = ["regression" if r else "classification" for r in set(is_regression(cells))]
    return " / ".join(SCORE_LABELS[score_key(t)] for t in sorted(tasks, reverse=True))


def diverged(cells: pd.DataFrame) -> pd.Series:
    """A cell counts as diverged when its status says so or its test score is not finite."""
    return (cells["status"] != "ok") | ~np.isfinite(test_score(cells))


def reference_variants(cells: pd.DataFrame) -> dict[tuple[str, str], str]:
    """The variant that every other is compared with, per (dataset, arch): ``identity`` where
    present, else the one variant of kind identity there (e.g. a recipe's ``rate_identity``)."""
    cells = with_variant(cells)
    out = {}
    for (ds, arch), g in cells.groupby(list(PANEL_KEYS), sort=True):
        names = set(g["variant"].astype(str))
        kinds = sorted(set(g.loc[g["skip"] == "identity", "variant"].astype(str)))
        if "identity" in names:
            out[(str(ds), str(arch))] = "identity"
        elif len(kinds) == 1:
            out[(str(ds), str(arch))] = kinds[0]
    return out


def panels(df: pd.DataFrame) -> Iterator[tuple[str, pd.DataFrame]]:
    """One (title, rows) per (dataset, arch); the arch is named only when a dataset has several."""
    if df.empty:
        return
    archs_per_ds = df.groupby("dataset")["arch"].nunique()
    for (dataset, arch), g in df.groupby(list(PANEL_KEYS), sort=True):
        title = str(dataset) if archs_per_ds[dataset] == 1 else f"{dataset} / {arch}"
        yield title, g


def deepest(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of the deepest depth present (per panel: call on one panel's rows)."""
    return df[df["depth"] == df["depth"].max()]


def last_epoch(layers: pd.DataFrame) -> pd.DataFrame:
    """Rows at each cell's last snapshot epoch."""
    if layers.empty:
        return layers
    layers = with_variant(layers)
    last = layers.groupby(CELL_COLUMNS)["epoch"].transform("max")
    return layers[layers["epoch"] == last]


def block_index(layers: pd.DataFrame) -> pd.Series:
    """Block number of each row: from ``blocks.<k>`` in param or layer_name, else layer_index."""
    out = pd.Series(layers["layer_index"].to_numpy(dtype=float), index=layers.index)
    for col in ("layer_name", "param"):
        if col in layers:
            found = layers[col].astype(str).str.extract(_BLOCK_RE, expand=False)
            has = found.notna()
            out[has] = found[has].astype(float)
    return out


def transition_blocks(layers: pd.DataFrame) -> set[int]:
    """Block numbers whose rows are of layer_kind ``transition``."""
    rows = layers[layers["layer_kind"] == "transition"]
    return {int(b) for b in block_index(rows).dropna().unique()} if len(rows) else set()


def metric(layers: pd.DataFrame, family: str, stat: str | None = None) -> pd.DataFrame:
    if layers.empty:
        return layers
    sel = layers["metric"] == family
    if stat is not None:
        sel &= layers["stat"] == stat
    return layers[sel]


def geo_mean(values: np.ndarray) -> float:
    """Geometric mean of positive finite values (condition numbers span decades)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    return float(np.exp(np.log(v).mean())) if v.size else np.nan


def blocks_per_cell(layers: pd.DataFrame) -> pd.DataFrame:
    """Number of residual blocks m of each cell (rows of kind block or transition).

    the Orthogonal Skip Connections paper states its rate in the number of blocks m, not the
    layer count in a name
    such as ResNet-110; cells without block rows fall back to their depth.
    """
    layers = with_variant(layers)
    cells = layers[CELL_COLUMNS].drop_duplicates()
    blocks = layers[layers["layer_kind"].isin(["block", "transition"])]
    m = blocks.assign(_b=block_index(blocks)).groupby(CELL_COLUMNS)["_b"].nunique().rename("m")
    out = cells.merge(m.reset_index(), on=CELL_COLUMNS, how="left")
    out["m"] = out["m"].fillna(out["depth"]).astype("int64")
    return out


# The learned skips the O(log m / m) question is about, and `linear` as the unconstrained
# control; orth_fixed is frozen (cannot move) and the theory says nothing about the others.
RATE_KINDS: tuple[str, ...] = ("linear", "orth_learned", "orth_manifold")
DIST_STAT = "fro_rel"  # ‖Q − I‖_F/√n: does not saturate at 2 like ‖Q − I‖₂ for Haar-like Q


def dist_identity_per_cell(
    layers: pd.DataFrame, stat: str = DIST_STAT, metric_name: str = "dist_identity"
) -> pd.DataFrame:
    """Mean over a cell's square skip matrices of ‖Q − I‖ (``stat``) at its last snapshot.

    Transition blocks are left out: their skip maps change the width, so Q − I is not
    the distance to anything the theory talks about. Columns: cell columns, m, value,
    n_blocks (how many matrices entered the mean).
    """
    layers = with_variant(layers)
    rows = _square_skip_rows(last_epoch(layers), metric_name, stat)
    if rows.empty:
        return pd.DataFrame(columns=[*CELL_COLUMNS, "m", "value", "n_blocks"])
    agg = rows.groupby(CELL_COLUMNS)["value"].agg(value="mean", n_blocks="size").reset_index()
    return agg.merge(blocks_per_cell(layers), on=CELL_COLUMNS, how="left")


def dist_per_epoch(
    layers: pd.DataFrame, stat: str = DIST_STAT, metric_name: str = "dist_identity"
) -> pd.DataFrame:
    """Like :func:`dist_identity_per_cell` at every snapshot epoch of every cell, not only the
    last: the trajectory of the mean distance. Columns: cell columns, epoch, m, value,
    n_blocks."""
    cols = [*CELL_COLUMNS, "epoch", "m", "value", "n_blocks"]
    if layers.empty:
        return pd.DataFrame(columns=cols)
    layers = with_variant(layers)
    rows = _square_skip_rows(layers, metric_name, stat)
    if rows.empty:
        return pd.DataFrame(columns=cols)
    by = [*CELL_COLUMNS, "epoch"]
    agg = rows.groupby(by)["value"].agg(value="mean", n_blocks="size").reset_index()
    return agg.merge(blocks_per_cell(layers), on=CELL_COLUMNS, how="left")[cols]


def _square_skip_rows(layers: pd.DataFrame, metric_name: str, stat: str) -> pd.DataFrame:
    """Finite rows of (metric_name, stat) outside transition blocks (``layers`` with variant)."""
    rows = metric(layers, metric_name, stat)
    if rows.empty:
        return rows
    trans = (
        layers[layers["layer_kind"] == "transition"]
        .assign(_b=lambda d: block_index(d))
        .loc[:, [*CELL_COLUMNS, "_b"]]
        .drop_duplicates()
        .assign(_t=True)
    )
    rows = rows.assign(_b=block_index(rows)).merge(trans, on=[*CELL_COLUMNS, "_b"], how="left")
    rows = rows[rows["_t"].isna()]
    return rows[np.isfinite(rows["value"].to_numpy(dtype=float))]
