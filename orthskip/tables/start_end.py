"""Where the skips start and end: ‖Q − I‖ at each cell's first and last snapshot, how far Q
moved from its start, and whether a start far from I (Haar) moves toward I."""

from __future__ import annotations

import numpy as np
import pandas as pd

from orthskip import results
from orthskip.analysis.stats import mean_ci, paired_compare
from orthskip.tables.formats import p_value, pm
from orthskip.tables.keys import variant_order
from orthskip.tables.render import Table, no_data

FAR_START = 0.5  # mean epoch-0 ‖Q − I‖_F/√n above which a start counts as far from I (Haar: √2)


def start_end_frame(layers: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, arch, variant, m): mean ‖Q − I‖_F/√n over blocks at the first and the last
    snapshot of each cell, then over seeds; ``diff`` = end − start paired by seed with its
    two-sided paired t-test ``p_value``; ``far_start`` when the mean start exceeds FAR_START
    (a Haar start: √2 on average; an identity start: 0)."""
    cols = ["dataset", "arch", "variant", "skip", "m", "start", "end", "diff", "p_value",
            "n_seeds", "far_start"]  # fmt: skip
    if layers.empty:
        return pd.DataFrame(columns=cols)
    layers = results.with_variant(layers)
    cell = results.CELL_COLUMNS
    first = layers.groupby(cell)["epoch"].transform("min")
    last = layers.groupby(cell)["epoch"].transform("max")
    at_start = layers[(layers["epoch"] == first) & (layers["epoch"] < last)]
    start = results.dist_identity_per_cell(at_start).rename(columns={"value": "start"})
    end = results.dist_identity_per_cell(layers).rename(columns={"value": "end"})
    if start.empty or end.empty:
        return pd.DataFrame(columns=cols)
    both = start[[*cell, "start"]].merge(end[[*cell, "m", "end"]], on=cell)
    rows = []
    for (ds, arch, variant, skip, m), g in both.groupby(
        ["dataset", "arch", "variant", "skip", "m"], sort=True
    ):
        res = paired_compare(g["end"].to_numpy(), g["start"].to_numpy())
        s0 = float(g["start"].mean())
        rows.append((ds, arch, variant, skip, int(m), s0, float(g["end"].mean()), res.mean_diff,
                     res.p_value, res.n_pairs, s0 > FAR_START))  # fmt: skip
    return pd.DataFrame(rows, columns=cols)


def far_start_variants(layers: pd.DataFrame) -> set[tuple[str, str, str]]:
    """(dataset, arch, variant) whose mean start is far from I at some depth (start_end_frame's
    ``far_start``): how a Haar start is told from an identity start without an init column."""
    f = start_end_frame(layers)
    f = f[f["far_start"].astype(bool)]
    return set(map(tuple, f[["dataset", "arch", "variant"]].astype(str).to_numpy()))


# the two distances of the start/end table: (family, label)
START_END_METRICS = {"dist_identity": "‖Q − I‖", "dist_init": "‖Q − Q₀‖"}


def start_end_distance_frame(layers: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, arch, variant, depth): the cell's mean over square skip matrices of
    ‖Q − I‖_F/√n and ‖Q − Q₀‖_F/√n (``fro_rel``) at its first and its last snapshot, then
    mean and std (ddof=1) over seeds: ``<family>_<start|end>_<mean|std>``; plus m, n_seeds,
    ``far_start`` and the paired end − start test of ‖Q − I‖ (``diff``, ``p_value``) from
    :func:`start_end_frame`. Cells with a single snapshot have no start."""
    keys = ["dataset", "arch", "variant", "skip", "depth"]
    stats_cols = [f"{fam}_{when}_{s}" for fam in START_END_METRICS for when in ("start", "end")
                  for s in ("mean", "std")]  # fmt: skip
    cols = [*keys, "m", *stats_cols, "n_seeds", "far_start", "diff", "p_value"]
    if layers.empty:
        return pd.DataFrame(columns=cols)
    per_cell = []
    for fam in START_END_METRICS:
        pe = results.dist_per_epoch(layers, metric_name=fam)
        if pe.empty:
            continue
        cell = [*results.CELL_COLUMNS, "m"]
        first = pe.groupby(results.CELL_COLUMNS)["epoch"].transform("min")
        last = pe.groupby(results.CELL_COLUMNS)["epoch"].transform("max")
        start = pe[(pe["epoch"] == first) & (first < last)].set_index(cell)["value"]
        end = pe[pe["epoch"] == last].set_index(cell)["value"]
        per_cell += [start.rename(f"{fam}_start"), end.rename(f"{fam}_end")]
    if not per_cell:
        return pd.DataFrame(columns=cols)
    both = pd.concat(per_cell, axis=1).reset_index()
    se = start_end_frame(layers).set_index(["dataset", "arch", "variant", "skip", "m"])
    rows = []
    for key, g in both.groupby(keys, sort=True):
        vals = []
        for fam in START_END_METRICS:
            for when in ("start", "end"):
                s = mean_ci(g.get(f"{fam}_{when}", pd.Series(dtype=float)).to_numpy(dtype=float))
                vals += [s.mean, s.std]
        m = int(g["m"].iloc[0])
        r = se.loc[(*key[:4], m)] if (*key[:4], m) in se.index else None
        rows.append((*key, m, *vals, int(g["seed"].nunique()),
                     bool(r["far_start"]) if r is not None else False,
                     float(r["diff"]) if r is not None else np.nan,
                     float(r["p_value"]) if r is not None else np.nan))  # fmt: skip
    return pd.DataFrame(rows, columns=cols)


NOTE = (
    "Distance of the skip matrices to the identity, ‖Q − I‖_F/√n, at each cell's first "
    "snapshot (start) and last (end), and how far they moved from their start, "
    "‖Q − Q₀‖_F/√n at the end (0 at the start by definition); each is the mean over the "
    "cell's square skip matrices (transition blocks left out), then mean ± std over "
    f"seeds. start: far (Haar) when the mean start exceeds {FAR_START} (a Haar start is "
    "≈ √2 on average), else near I. Δ: end − start of ‖Q − I‖ paired by seed, two-sided "
    "paired t-test p. orth_fixed is frozen: its ‖Q − Q₀‖ is 0."
)


def start_end_distance_table(layers: pd.DataFrame) -> Table:
    f = start_end_distance_frame(layers)
    if f.empty:
        return no_data("start vs end distance of the skips")
    f = f.assign(_o=f["variant"].map(variant_order(f)))
    f = f.sort_values(["dataset", "arch", "_o", "depth"])
    header = ["dataset", "arch", "variant", "start", "depth", "m", "‖Q − I‖ start",
              "‖Q − I‖ end", "Δ (p)", "‖Q − Q₀‖ end", "seeds"]  # fmt: skip
    rows = []
    for _, r in f.iterrows():
        di, d0 = "dist_identity", "dist_init"
        delta = (f"{r['diff']:+.3f} ({p_value(r['p_value'])})"
                 if np.isfinite(r["diff"]) else "–")  # fmt: skip
        rows.append([str(r["dataset"]), str(r["arch"]), str(r["variant"]),
                     "far (Haar)" if r["far_start"] else "near I", str(int(r["depth"])),
                     str(int(r["m"])), pm(r[f"{di}_start_mean"], r[f"{di}_start_std"]),
                     pm(r[f"{di}_end_mean"], r[f"{di}_end_std"]), delta,
                     pm(r[f"{d0}_end_mean"], r[f"{d0}_end_std"]),
                     str(int(r["n_seeds"]))])  # fmt: skip
    return Table.of_rows(header, rows, note=NOTE, align="llllrrrrrrr")
