"""Each variant's last-epoch test score minus its setting's identity variant's, paired on
seed."""

from __future__ import annotations

import numpy as np
import pandas as pd

from orthskip import results
from orthskip.analysis.stats import paired_vs_reference
from orthskip.tables.formats import interval, p_value
from orthskip.tables.keys import ROW_KEYS, variant_order
from orthskip.tables.render import Table, no_data

COLUMNS = [*ROW_KEYS, "variant", "skip", "reference", "mean_diff", "ci_lo", "ci_hi", "p_value",
           "n_pairs", "n_diverged"]  # fmt: skip


def paired_frame(cells: pd.DataFrame) -> pd.DataFrame:
    """Differences in the last-epoch test score (accuracy in percentage points, or R²) of each
    variant against its (dataset, arch)'s reference variant
    (``results.reference_variants``: identity), paired by seed; columns ``reference`` and
    ``skip`` (each variant's kind)."""
    cells = results.with_variant(cells)
    c = cells.assign(_score=results.test_score(cells).where(~results.diverged(cells)))
    frames = []
    for (ds, arch), ref in results.reference_variants(cells).items():
        g = c[(c["dataset"] == ds) & (c["arch"] == arch)]
        f = paired_vs_reference(g, "_score", ref, ROW_KEYS, group="variant")
        frames.append(f.assign(reference=ref))
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    f = pd.concat(frames, ignore_index=True)
    f.insert(
        f.columns.get_loc("variant") + 1, "skip", f["variant"].map(results.variant_kinds(cells))
    )
    return f


NOTE = (
    "Last-epoch test score of each variant minus that of the identity variant of its "
    "dataset and arch (column vs): accuracy in percentage points, R² as it is for "
    "regression sets; paired on seed within dataset and depth; 95 % t-interval and "
    "two-sided paired t-test p-value. "
    "Pairs with a diverged run are left out (count in the last column)."
)


def paired_table(cells: pd.DataFrame) -> Table:
    if cells.empty or not results.reference_variants(cells):
        return no_data("paired comparison against identity")
    f = paired_frame(cells)
    f = f.assign(_o=f["variant"].map(variant_order(f)))
    f = f.sort_values([*ROW_KEYS, "_o"])
    header = ["dataset", "arch", "depth", "variant", "vs", "Δ score", "95 % CI", "p", "pairs",
              "diverged"]  # fmt: skip
    rows = []
    for _, r in f.iterrows():
        diff = f"{r['mean_diff']:+.2f}" if np.isfinite(r["mean_diff"]) else "–"
        rows.append([str(r["dataset"]), str(r["arch"]), str(int(r["depth"])), str(r["variant"]),
                     str(r["reference"]), diff, interval(r["ci_lo"], r["ci_hi"]),
                     p_value(r["p_value"]), str(int(r["n_pairs"])),
                     str(int(r["n_diverged"]))])  # fmt: skip
    return Table.of_rows(header, rows, note=NOTE, align="llrllrrrrr")
