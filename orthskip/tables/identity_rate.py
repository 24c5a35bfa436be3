"""How the learned skips' distance to I (and the branches' Lipschitz bound) falls with the
number of blocks m: the competing rate models compared by AIC, and the exponent a of
C·m^(−a) with its seed-bootstrap interval."""

from __future__ import annotations

import numpy as np
import pandas as pd

from orthskip import results
from orthskip.analysis.stats import (
    RATE_MODEL_LABELS,
    RATE_MODELS,
    compare_rate_models,
    log_m_over_m_slope,
    loglog_slope,
)
from orthskip.tables.formats import num
from orthskip.tables.keys import variant_order
from orthskip.tables.render import Table, no_data

# what the rate table fits: (family, stat, label) per quantity
RATE_QUANTITIES: dict[str, tuple[str, str, str]] = {
    "dist_identity": ("dist_identity", results.DIST_STAT, "‖Q − I‖_F/√n"),
    "branch_lipschitz": ("branch_lipschitz", "max", "Lip(F) ≥"),
}


def rate_per_cell(
    layers: pd.DataFrame, cells: pd.DataFrame, quantity: str = "dist_identity"
) -> pd.DataFrame:
    """One point per cell: mean over its non-transition blocks of the quantity at the last
    snapshot, for the variants whose kind is in ``results.RATE_KINDS``, with the cell's
    ``converged`` and ``stalled`` flags (cells.parquet; False for a cell without a status row
    or a result written before the flag)."""
    family, stat, _ = RATE_QUANTITIES[quantity]
    pc = results.dist_identity_per_cell(layers, stat=stat, metric_name=family)
    return results.with_run_flags(pc[pc["skip"].isin(results.RATE_KINDS)], cells)


def identity_rate_frame(
    layers: pd.DataFrame,
    cells: pd.DataFrame,
    quantity: str = "dist_identity",
    criterion: str = "aic",
) -> pd.DataFrame:
    """Rate of a per-cell quantity vs blocks m per (dataset, arch, variant), for the variants
    whose kind is in ``results.RATE_KINDS`` only (orth_learned, orth_manifold: the learned skips the
    O(log m / m) question is about; linear: the unconstrained control).

    ``quantity``: ``dist_identity`` (mean ‖Q − I‖_F/√n) or ``branch_lipschitz`` (mean of the
    lower bound on Lip(F_i)). One point per cell (mean over its blocks at the last snapshot),
    seeds as replicates. Converged cells (the stopping rule fired) and the others (the epoch
    cap) are fitted apart, never mixed: ``converged`` tells which; stalled cells (a plateau
    above the loss at init: the net did not learn) are left out of both and counted in
    ``n_stalled`` (per variant). Columns: the single log–log
    ``slope`` with its t-interval (all m > 0)
    and ``predicted``, the slope of log m / m over the same m; then the model comparison of
    :func:`orthskip.analysis.stats.compare_rate_models` on m ≥ 2: ``<criterion>_<model>``
    and ``c_<model>`` per model of ``RATE_MODELS``, ``best``, ``margin`` (criterion of the
    runner-up minus the best's), ``exponent`` a of C·m^(−a) with its seed-bootstrap interval
    ``exponent_lo`` / ``exponent_hi``, ``m_min`` / ``m_max`` (the range fitted), ``n_seeds``.
    """
    models = [f"{criterion}_{k}" for k in RATE_MODELS] + [f"c_{k}" for k in RATE_MODELS]
    cols = ["dataset", "arch", "variant", "skip", "converged", "quantity", "slope", "ci_lo",
            "ci_hi", "n_points", "depths", "predicted", *models, "best", "margin", "exponent",
            "exponent_lo", "exponent_hi", "m_min", "m_max", "n_seeds", "n_stalled"]  # fmt: skip
    if layers.empty:
        return pd.DataFrame(columns=cols)
    pc = rate_per_cell(layers, cells, quantity)
    stalled = pc[pc["stalled"]].groupby(["dataset", "arch", "variant"]).size()
    pc = pc[~pc["stalled"]]
    rows = []
    for (dataset, arch, variant, skip, converged), g in pc.groupby(
        ["dataset", "arch", "variant", "skip", "converged"], sort=True
    ):
        fit = loglog_slope(g["m"], g["value"])
        ms = sorted(int(v) for v in g["m"].unique())
        cmp = compare_rate_models(g["m"], g["value"], g["seed"], criterion=criterion)
        scores = [getattr(cmp.fits[k], criterion) for k in RATE_MODELS]
        consts = [cmp.fits[k].c for k in RATE_MODELS]
        rows.append((dataset, arch, variant, skip, bool(converged), quantity, fit.slope, fit.lo,
                     fit.hi, fit.n,
                     ",".join(map(str, ms)), log_m_over_m_slope(ms), *scores, *consts,
                     cmp.best, cmp.margin, cmp.exponent, cmp.exponent_lo, cmp.exponent_hi,
                     cmp.m_min, cmp.m_max, cmp.n_seeds,
                     int(stalled.get((dataset, arch, variant), 0))))  # fmt: skip
    return pd.DataFrame(rows, columns=cols)


def all_quantities_frame(layers: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """:func:`identity_rate_frame` of every quantity of ``RATE_QUANTITIES``, one after the
    other."""
    frames = [identity_rate_frame(layers, cells, q) for q in RATE_QUANTITIES]
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


NOTE = (
    "Rate of the mean over non-transition blocks (one point per cell at its last "
    "snapshot, seeds as replicates) of ‖Q − I‖_F/√n and of the lower bound on Lip(F_i) "
    "(branch_lipschitz, max) vs the number of residual blocks m. Each model y = C·g(m) "
    "is fitted by least squares on log y over m ≥ 2 (column m: the range used); "
    "ΔAIC is each model's AIC minus the best's (Gaussian likelihood on the log scale; "
    "best in bold), margin the runner-up's ΔAIC. a: exponent of C·m^(−a) with a 95 % "
    "percentile bootstrap interval over seeds (whole seeds resampled). Only the learned "
    "orthogonal skips (orth_learned, orth_manifold and their variants) and the "
    "unconstrained linear control are fitted: orth_fixed is frozen and the theory says "
    "nothing about the others. Cells that converged (the stopping rule fired) and cells "
    "stopped by the epoch cap are fitted apart (trained to): an exponent fitted at a cap "
    "describes that budget. Stalled cells (the rule fired on a plateau above the loss at "
    "init: the net did not learn) are in neither fit."
)


def identity_rate_table(layers: pd.DataFrame, cells: pd.DataFrame) -> Table:
    f = all_quantities_frame(layers, cells)
    if f.empty:
        return no_data("rate of ‖Q − I‖ vs depth")
    f = f.assign(_o=f["variant"].map(variant_order(f)),
                 _q=f["quantity"].map({q: k for k, q in enumerate(RATE_QUANTITIES)}))  # fmt: skip
    f = f.sort_values(["dataset", "arch", "_q", "_o", "converged"], ascending=[1, 1, 1, 1, 0])
    labels = [RATE_MODEL_LABELS[k] for k in RATE_MODELS]
    header = ["dataset", "arch", "quantity", "variant", "role", "trained to", "m",
              *[f"ΔAIC {x}" for x in labels],
              "best", "margin", "a [95 % CI]", "points"]  # fmt: skip
    rows, bold = [], set()
    for r_i, (_, r) in enumerate(f.iterrows()):
        scores = np.array([r[f"aic_{k}"] for k in RATE_MODELS], dtype=float)
        low = np.nanmin(scores) if np.isfinite(scores).any() else np.nan
        deltas = [num(v - low, ".1f") for v in scores]
        for k, name in enumerate(RATE_MODELS):
            if name == r["best"]:
                bold.add((r_i, 7 + k))
        a = num(r["exponent"])
        if np.isfinite(r["exponent_lo"]):
            a += f" [{r['exponent_lo']:.2f}, {r['exponent_hi']:.2f}]"
        role = "control" if r["skip"] == "linear" else "learned orth."
        m_range = f"{int(r['m_min'])}–{int(r['m_max'])}" if r["m_max"] else "–"
        best = RATE_MODEL_LABELS.get(r["best"], "–")
        rows.append([str(r["dataset"]), str(r["arch"]), RATE_QUANTITIES[r["quantity"]][2],
                     str(r["variant"]), role, "convergence" if r["converged"] else "epoch cap",
                     m_range, *deltas, best, num(r["margin"], ".1f"),
                     a, str(int(r["n_points"]))])  # fmt: skip
    return Table.of_rows(header, rows, bold=bold, note=NOTE,
                         align="llllllr" + "r" * len(labels) + "lrrr")  # fmt: skip
