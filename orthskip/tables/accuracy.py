"""Test accuracy per (dataset, arch, depth), one column per variant."""

from __future__ import annotations

import numpy as np
import pandas as pd

from orthskip import results
from orthskip.analysis.stats import mean_ci
from orthskip.figures.style import ordered_variants
from orthskip.tables.keys import ROW_KEYS
from orthskip.tables.render import Table, no_data


def accuracy_frame(cells: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, arch, depth, variant): the test score at the last epoch (accuracy in %,
    or R² for regression sets), over the seeds that did not diverge (nothing is selected on
    the test set).

    Columns: skip (the variant's kind), mean, std (ddof=1), n (seeds that count), n_diverged,
    n_total, and mean_at_best_val: the mean score at each seed's best-validation epoch
    (NaN where the results have no ``test_acc_at_best_val``).
    """
    cells = results.with_variant(cells)
    at_val = "test_acc_at_best_val" in cells.columns
    cells = cells.assign(
        _div=results.diverged(cells),
        _score=results.test_score(cells),
        _best=results.test_score(cells, "_at_best_val") if at_val else np.nan,
    )
    rows = []
    for (*key, variant, skip), g in cells.groupby([*ROW_KEYS, "variant", "skip"], sort=True):
        s = mean_ci(g.loc[~g["_div"], "_score"].to_numpy(dtype=float))
        bv = mean_ci(g.loc[~g["_div"], "_best"].to_numpy(dtype=float))
        rows.append((*key, variant, skip, s.mean, s.std, s.n, int(g["_div"].sum()), len(g),
                     bv.mean if at_val else np.nan))  # fmt: skip
    return pd.DataFrame(rows, columns=[*ROW_KEYS, "variant", "skip", "mean", "std", "n",
                                       "n_diverged", "n_total", "mean_at_best_val"])  # fmt: skip


def _acc_text(r: pd.Series) -> str:
    if r["n"] == 0:
        return f"diverged ({int(r['n_diverged'])})"
    text = f"{r['mean']:.2f}" + (f" ± {r['std']:.2f}" if r["n"] > 1 else "")
    extra = f"; {int(r['n_diverged'])} div." if r["n_diverged"] else ""
    return f"{text} ({int(r['n'])}{extra})"


NOTE = (
    "Test accuracy (%; R² for regression sets) at the last epoch: mean ± std over seeds "
    "(n seeds that count; "
    "diverged runs, excluded from the mean). Best mean per row in bold. One column per "
    "variant (a skip kind with config overrides; a bare kind is its own variant). No "
    "epoch or model is selected on the test set."
)


def accuracy_table(cells: pd.DataFrame) -> Table:
    if cells.empty:
        return no_data("test accuracy")
    f = accuracy_frame(cells)
    variants = ordered_variants(results.variant_kinds(f))
    header = ["dataset", "arch", "depth", *variants]
    rows, bold = [], set()
    for r, (key, g) in enumerate(f.groupby(ROW_KEYS, sort=True)):
        g = g.set_index("variant")
        row = [str(key[0]), str(key[1]), str(int(key[2]))]
        best = g["mean"].max()
        for k, variant in enumerate(variants):
            if variant not in g.index:
                row.append("")
                continue
            row.append(_acc_text(g.loc[variant]))
            if np.isfinite(best) and g.loc[variant, "mean"] == best:
                bold.add((r, 3 + k))
        rows.append(row)
    return Table.of_rows(header, rows, bold=bold, note=NOTE, align="llr" + "r" * len(variants))
