"""Each variant's test score minus its setting's identity variant's, paired on seed, both
read after the same number of epochs."""

from __future__ import annotations

import numpy as np
import pandas as pd

from orthskip import results
from orthskip.analysis.stats import paired_compare
from orthskip.tables.formats import interval, p_value
from orthskip.tables.keys import ROW_KEYS, variant_order
from orthskip.tables.render import Table, no_data

COLUMNS = [*ROW_KEYS, "variant", "skip", "reference", "mean_diff", "ci_lo", "ci_hi", "p_value",
           "n_pairs", "n_diverged", "budget", "n_matched"]  # fmt: skip
PAIR_KEYS = [*ROW_KEYS, "seed"]


def _history_scores(history: pd.DataFrame, want: pd.DataFrame) -> np.ndarray:
    """The test score (accuracy in %, or R² where ``want._reg``) that history.parquet records
    for each row of ``want`` (cell keys, ``variant`` and ``epoch``); NaN where it has none."""
    keys = [*PAIR_KEYS, "variant", "epoch"]
    h = history.set_index(keys)
    h = h[~h.index.duplicated(keep="last")]
    idx = pd.MultiIndex.from_frame(want[keys])
    acc = pd.to_numeric(h.get("test_acc", pd.Series(np.nan, index=h.index)), errors="coerce")
    r2 = pd.to_numeric(h.get("test_r2", pd.Series(np.nan, index=h.index)), errors="coerce")
    acc, r2 = acc.reindex(idx).to_numpy() * 100.0, r2.reindex(idx).to_numpy()
    return np.where(want["_reg"].to_numpy(dtype=bool), r2, acc)


def _at_equal_epochs(pairs: pd.DataFrame, history: pd.DataFrame | None) -> pd.DataFrame:
    """Each seed pair's two scores after the same training: where a stopping rule ended one
    run before the other, the longer run's score is read from ``history`` at the shorter
    run's last epoch (``_at``; ``_read``: a score was read before its run's end). Without a
    history (or epoch counts) the last-epoch scores stay, budgets as they were."""
    p = pairs.assign(_at=np.fmin(pairs["_e"], pairs["_e_ref"]), _read=False)
    if history is None or history.empty or "epoch" not in history:
        return p
    for sfx, name in (("", "variant"), ("_ref", "reference")):
        read = p[f"_score{sfx}"].notna() & p["_at"].notna() & (p[f"_e{sfx}"] > p["_at"])
        if not read.any():
            continue
        want = p.loc[read, [*PAIR_KEYS, "_reg"]].assign(
            variant=p.loc[read, name], epoch=p.loc[read, "_at"].astype(int)
        )
        p.loc[read, f"_score{sfx}"] = _history_scores(history, want)
        p.loc[read, "_read"] = True
    return p


def paired_frame(cells: pd.DataFrame, history: pd.DataFrame | None = None) -> pd.DataFrame:
    """Differences in test score (accuracy in percentage points, or R²) of each variant
    against its (dataset, arch)'s reference variant (``results.reference_variants``:
    identity), paired by seed, both runs' scores after the same number of epochs: the last
    epoch where they trained alike, else the shorter run's last epoch, the longer run's score
    there read from ``history`` (history.parquet). ``budget``: the median epoch the compared
    pairs are read at; ``n_matched``: the pairs where a run's score was read before its end
    (0 where budgets were equal, or no history was given); ``n_diverged``: the variant's
    seeds without a score."""
    cells = results.with_variant(cells)
    raw = cells["epochs"] if "epochs" in cells else pd.Series(np.nan, index=cells.index)
    c = cells.assign(
        _score=results.test_score(cells).where(~results.diverged(cells)),
        _e=pd.to_numeric(raw, errors="coerce"),
        _reg=results.is_regression(cells),
    )
    frames = []
    for (ds, arch), ref in results.reference_variants(cells).items():
        g = c[(c["dataset"] == ds) & (c["arch"] == arch)]
        r = g.loc[g["variant"] == ref, [*PAIR_KEYS, "_score", "_e"]]
        v = g.loc[g["variant"] != ref, [*PAIR_KEYS, "variant", "_score", "_e", "_reg"]]
        frames.append(v.merge(r, on=PAIR_KEYS, how="left", suffixes=("", "_ref")).assign(
            reference=ref))  # fmt: skip
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    pairs = pd.concat(frames, ignore_index=True)
    lost = pairs["_score"].isna()
    p = _at_equal_epochs(pairs, history)
    rows = []
    for (*key, variant, ref), g in p.groupby([*ROW_KEYS, "variant", "reference"], sort=True):
        res = paired_compare(g["_score"].to_numpy(), g["_score_ref"].to_numpy())
        both = np.isfinite(g["_score"].to_numpy(dtype=float)) & np.isfinite(
            g["_score_ref"].to_numpy(dtype=float)
        )
        at = g.loc[both, "_at"]
        rows.append((*key, variant, ref, res.mean_diff, res.lo, res.hi, res.p_value, res.n_pairs,
                     int(lost[g.index].sum()), float(at.median()) if len(at) else np.nan,
                     int(g.loc[both, "_read"].sum())))  # fmt: skip
    cols = [c for c in COLUMNS if c != "skip"]
    f = pd.DataFrame(rows, columns=cols)
    f.insert(
        f.columns.get_loc("variant") + 1, "skip", f["variant"].map(results.variant_kinds(cells))
    )
    return f


NOTE = (
    "Test score of each variant minus that of the identity variant of its dataset and arch "
    "(column vs): accuracy in percentage points, R² as it is for regression sets; paired on "
    "seed within dataset and depth, both runs of a pair after the same number of epochs "
    "(column epochs: the median; where a stopping rule ended one run first, the other's score "
    "is read from history.parquet at that epoch); 95 % t-interval and two-sided paired t-test "
    "p-value. Pairs with a diverged run are left out (count in the last column)."
)


def paired_table(cells: pd.DataFrame, history: pd.DataFrame) -> Table:
    if cells.empty or not results.reference_variants(cells):
        return no_data("paired comparison against identity")
    f = paired_frame(cells, history)
    f = f.assign(_o=f["variant"].map(variant_order(f)))
    f = f.sort_values([*ROW_KEYS, "_o"])
    header = ["dataset", "arch", "depth", "variant", "vs", "epochs", "Δ score", "95 % CI", "p",
              "pairs", "diverged"]  # fmt: skip
    rows = []
    for _, r in f.iterrows():
        diff = f"{r['mean_diff']:+.2f}" if np.isfinite(r["mean_diff"]) else "–"
        at = f"{r['budget']:.0f}" if np.isfinite(r["budget"]) else "–"
        rows.append([str(r["dataset"]), str(r["arch"]), str(int(r["depth"])), str(r["variant"]),
                     str(r["reference"]), at, diff, interval(r["ci_lo"], r["ci_hi"]),
                     p_value(r["p_value"]), str(int(r["n_pairs"])),
                     str(int(r["n_diverged"]))])  # fmt: skip
    return Table.of_rows(header, rows, note=NOTE, align="llrllrrrrrr")
