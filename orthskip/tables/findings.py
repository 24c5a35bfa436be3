"""What the results say, one row per test or fit: the numbers behind findings.md (and, for
a paper, behind any macro that quotes them).

Each ``*_findings`` function is a pure function of the aggregated result DataFrames and
returns numbers, never text; :mod:`orthskip.tables.findings_text` renders them. A row holds
its setting (dataset, arch), the variant and depth it is about, the statistic with its
interval, and for a test its p-value and whether it counts as significant.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from orthskip import results
from orthskip.analysis.stats import holm, log_m_over_m_slope, loglog_slope
from orthskip.tables.approximation import orthogonal_approximation_frame
from orthskip.tables.identity_rate import all_quantities_frame
from orthskip.tables.keys import ROW_KEYS, variant_order
from orthskip.tables.paired import COLUMNS as PAIRED_COLUMNS
from orthskip.tables.paired import paired_frame
from orthskip.tables.rate_by_epoch import rate_by_epoch_frame
from orthskip.tables.skip_rotation import skip_rotation_frame
from orthskip.tables.start_end import start_end_frame

ALPHA = 0.05
SETTING = ["dataset", "arch"]


def rate_findings(layers: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """One row per (setting, quantity, learned or control variant, converged or at the epoch
    cap — never mixed): the best rate model by
    AIC (``best``: empty where fewer than two depths m ≥ 2 leave nothing to compare), the
    runner-up's ΔAIC (``margin``) and the exponent a of C·m^(−a) with its seed-bootstrap
    interval; ``n_stalled``: the variant's cells left out of every fit (stalled); ``recipe``
    and ``skip_init``: the variant's training recipe and skip start (cells.parquet)."""
    cols = [*SETTING, "quantity", "variant", "skip", "converged", "best", "margin", "exponent",
            "exponent_lo", "exponent_hi", "m_min", "m_max", "n_seeds", "n_points",
            "n_stalled", "recipe", "skip_init"]  # fmt: skip
    f = all_quantities_frame(layers, cells)
    if f.empty:
        return pd.DataFrame(columns=cols)
    keys = [*SETTING, "variant"]
    have = [c for c in ("recipe", "skip_init") if c in cells]
    per = cells[keys + have].drop_duplicates(keys) if not cells.empty else pd.DataFrame()
    f = f.merge(per, on=keys, how="left") if not per.empty else f
    for c in ("recipe", "skip_init"):
        f[c] = f[c].fillna("").astype(str) if c in f else ""
    return f[cols].reset_index(drop=True)


def convergence_findings(cells: pd.DataFrame, rate: pd.DataFrame) -> pd.DataFrame:
    """Per setting where a stopping rule ended any run: of the cells of the variants the rate
    fits cover (``fitted``: True) and of the setting's other variants (False: controls
    without a fitted skip, e.g. identity), how many ``converged`` of ``n``, how many ran to
    the epoch cap (``capped``: no stopping reason, not diverged; the rest of ``n`` stalled or
    diverged), and the other variants' names (``variants``)."""
    cols = [*SETTING, "fitted", "converged", "n", "capped", "variants"]
    if cells.empty or rate.empty or "converged" not in cells:
        return pd.DataFrame(columns=cols)
    fitted = set(map(tuple, rate[[*SETTING, "variant"]].astype(str).to_numpy()))
    c = results.with_variant(cells)
    conv = c["converged"].fillna(False).astype(bool)
    key = zip(
        c["dataset"].astype(str), c["arch"].astype(str), c["variant"].astype(str), strict=True
    )
    c = c.assign(_conv=conv, _fit=[k in fitted for k in key], _cap=_ran_to_cap(c, conv))
    rows = []
    for setting, g in c.groupby(SETTING, sort=True):
        if not g["_conv"].any() or not g["_fit"].any():
            continue
        for fit, h in g.groupby("_fit", sort=False):
            names = ", ".join(dict.fromkeys(h["variant"].astype(str)))
            rows.append((*setting, bool(fit), int(h["_conv"].sum()), len(h),
                         int(h["_cap"].sum()), names))  # fmt: skip
    f = pd.DataFrame(rows, columns=cols)
    return f.sort_values([*SETTING, "fitted"], ascending=[1, 1, 0]).reset_index(drop=True)


def _ran_to_cap(cells: pd.DataFrame, converged: pd.Series) -> pd.Series:
    """Cells that trained to the epoch cap: not ``converged``, no stopping reason
    (``stopped``, or without it ``stalled``) and not diverged (where cells have a
    ``status``)."""
    if "stopped" in cells:
        ended = cells["stopped"].fillna("").astype(str) != ""
    else:
        stalled = cells["stalled"] if "stalled" in cells else pd.Series(False, index=cells.index)
        ended = stalled.fillna(False).astype(bool)
    ok = ~results.diverged(cells) if "status" in cells else True
    return ~converged & ~ended & ok


def rate_budget_findings(layers: pd.DataFrame) -> pd.DataFrame:
    """Per (setting, variant): the exponent a at the first and the last snapshot epoch > 0
    that was fitted, and its range over all of them — how much the training state moves a
    under one recipe (``rate_by_epoch.md`` has every epoch)."""
    cols = [*SETTING, "variant", "skip", "first_epoch", "a_first", "last_epoch", "a_last",
            "a_min", "a_max", "n_epochs"]  # fmt: skip
    f = rate_by_epoch_frame(layers)
    f = f[np.isfinite(f["exponent"].to_numpy(dtype=float))]
    rows = []
    for (dataset, arch, variant, skip), g in f.groupby([*SETTING, "variant", "skip"], sort=True):
        g = g.sort_values("epoch")
        a = g["exponent"].to_numpy(dtype=float)
        rows.append((dataset, arch, variant, skip, int(g["epoch"].iloc[0]), a[0],
                     int(g["epoch"].iloc[-1]), a[-1], a.min(), a.max(), len(g)))  # fmt: skip
    return pd.DataFrame(rows, columns=cols)


def rotation_findings(layers: pd.DataFrame) -> pd.DataFrame:
    """Per (setting, variant) with a skips' product: at the shallowest and the deepest m, the
    product's mean angle, its share of the target's best linear fit's angle and the mean
    ‖Q − I‖_F/√n — whether the skips together take up h's rotation while each stays near I,
    or a Haar start's product carries it while each stays far (``skip_rotation.md``)."""
    cols = [*SETTING, "variant", "skip", "m_min", "m_max", "share_min", "share_max",
            "angle_max", "dist_min", "dist_max"]  # fmt: skip
    f = skip_rotation_frame(layers)
    rows = []
    for (dataset, arch, variant, skip), g in f.groupby([*SETTING, "variant", "skip"], sort=True):
        g = g.sort_values("m")
        lo, hi = g.iloc[0], g.iloc[-1]
        rows.append((dataset, arch, variant, skip, int(lo["m"]), int(hi["m"]), lo["share"],
                     hi["share"], hi["angle"], lo["dist"], hi["dist"]))  # fmt: skip
    return pd.DataFrame(rows, columns=cols)


def start_findings(layers: pd.DataFrame) -> pd.DataFrame:
    """One row per (setting, variant, m) of a learned skip (``results.RATE_KINDS``: a frozen
    orth_fixed cannot move) whose mean start is far from I: mean ‖Q − I‖_F/√n at the start
    and the end, ``diff`` = end − start paired on seed with its two-sided t-test ``p_value``
    (uncorrected); ``significant`` at ALPHA, ``toward_identity`` when significant and the
    distance fell."""
    f = start_end_frame(layers)
    f = f[f["far_start"].astype(bool) & f["skip"].isin(results.RATE_KINDS)].copy()
    p = f["p_value"].to_numpy(dtype=float)
    f["significant"] = np.isfinite(p) & (p < ALPHA)
    f["toward_identity"] = f["significant"] & (f["diff"].to_numpy(dtype=float) < 0)
    return f.drop(columns="far_start").reset_index(drop=True)


def _side_counts(cells: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, arch, depth, variant): seeds that diverged (``div``), seeds (``n``), the
    median epochs its compared runs (those that did not diverge) trained (``epochs``; NaN
    where cells.parquet has no ``epochs``) and its runs' recipe (``recipe``: the most common
    one; '' where cells.parquet has none)."""
    c = results.with_variant(cells)
    div = results.diverged(c)
    raw = c["epochs"] if "epochs" in c else pd.Series(np.nan, index=c.index)
    recipe = c["recipe"].fillna("").astype(str) if "recipe" in c else pd.Series("", index=c.index)
    c = c.assign(_div=div, _e=pd.to_numeric(raw, errors="coerce").where(~div), _r=recipe)
    return c.groupby([*ROW_KEYS, "variant"]).agg(
        div=("_div", "sum"), n=("_div", "size"), epochs=("_e", "median"),
        recipe=("_r", lambda s: s.mode().iloc[0]),
    )  # fmt: skip


def accuracy_findings(cells: pd.DataFrame, history: pd.DataFrame | None = None) -> pd.DataFrame:
    """:func:`orthskip.tables.paired.paired_frame` with Holm's correction over each setting's
    tested comparisons (≥ 2 seed pairs): ``p_holm``, ``tested``, ``significant`` (at ALPHA
    after Holm), ``regression`` (R² rather than accuracy in pp), and per side the seeds that
    diverged and were left out (``variant_diverged`` / ``reference_diverged`` of
    ``variant_seeds`` / ``reference_seeds``), the median epochs its runs trained
    (``variant_epochs`` / ``reference_epochs``: they differ where a stopping rule ended the
    runs; the pairs are then compared at equal epochs, see :func:`paired_frame`) and its
    recipe (``variant_recipe`` / ``reference_recipe``: where they differ, the difference in
    score includes the recipe). A diverged run has no
    score, so a comparison without a test is "not tested", never "not significant"."""
    extra = ["regression", "p_holm", "tested", "significant", "variant_diverged",
             "variant_seeds", "reference_diverged", "reference_seeds", "variant_epochs",
             "reference_epochs", "variant_recipe", "reference_recipe"]  # fmt: skip
    f = paired_frame(cells, history) if not cells.empty else pd.DataFrame(columns=PAIRED_COLUMNS)
    if f.empty:
        return pd.DataFrame(columns=[*f.columns, *extra])
    counts = _side_counts(cells)
    regression = cells.assign(_r=results.is_regression(cells)).groupby("dataset")["_r"].any()
    f["regression"] = f["dataset"].map(regression).astype(bool)
    f["p_holm"] = np.nan
    for _, idx in f.groupby(SETTING).groups.items():
        f.loc[idx, "p_holm"] = holm(f.loc[idx, "p_value"].to_numpy(dtype=float))
    p = f["p_value"].to_numpy(dtype=float)
    f["tested"] = np.isfinite(p)
    f["significant"] = f["tested"] & (f["p_holm"].to_numpy(dtype=float) < ALPHA)
    for side, col in (("variant", "variant"), ("reference", "reference")):
        keys = list(zip(f["dataset"], f["arch"], f["depth"], f[col], strict=True))
        f[f"{side}_diverged"] = [int(counts["div"].get(k, 0)) for k in keys]
        f[f"{side}_seeds"] = [int(counts["n"].get(k, 0)) for k in keys]
        f[f"{side}_epochs"] = [float(counts["epochs"].get(k, np.nan)) for k in keys]
        f[f"{side}_recipe"] = [str(counts["recipe"].get(k, "")) for k in keys]
    f = f.assign(_o=f["variant"].map(variant_order(f)))
    return f.sort_values([*SETTING, "_o", "depth"]).drop(columns="_o").reset_index(drop=True)


def matched_budgets(acc: pd.DataFrame) -> pd.Series:
    """Per row of :func:`accuracy_findings`: whether a stopping rule ended a side's runs
    first and its pairs were compared at equal epochs (a score read before its run's end)."""
    if acc.empty or "n_matched" not in acc:
        return pd.Series(False, index=acc.index, dtype=bool)
    return acc["n_matched"].fillna(0).astype(int) > 0


def other_recipes(acc: pd.DataFrame) -> pd.Series:
    """Per row of :func:`accuracy_findings`: whether the variant trained with another recipe
    than its reference (e.g. a second recipe's variants against the one identity control),
    so that the difference includes the recipe as well as the skip."""
    if acc.empty or "variant_recipe" not in acc:
        return pd.Series(False, index=acc.index, dtype=bool)
    v, r = acc["variant_recipe"].astype(str), acc["reference_recipe"].astype(str)
    return (v != "") & (r != "") & (v != r)


def unequal_budgets(acc: pd.DataFrame) -> pd.Series:
    """Per row of :func:`accuracy_findings`: whether the two sides' runs trained for other
    median epochs (a stopping rule ended them) and could not be compared at equal epochs (no
    history.parquet), so that the difference includes the budget."""
    if acc.empty or "variant_epochs" not in acc:
        return pd.Series(False, index=acc.index, dtype=bool)
    v, r = acc["variant_epochs"].astype(float), acc["reference_epochs"].astype(float)
    return v.notna() & r.notna() & (v != r) & ~matched_budgets(acc)


def approximation_findings(approx: pd.DataFrame) -> pd.DataFrame:
    """One row per (setting, kind, correction, depth): the mean test score (accuracy in % or
    R², ``score_name``) before the swap, right after it and after fine-tuning, the mean
    ‖W_i − I‖_F/√n at the swap and after fine-tuning, the fine-tuning epochs, and the seeds
    lost: ``n_source_diverged`` (the trained cell diverged) and ``n_diverged`` (fine-tuning
    did), of ``n_total``."""
    keys = [*SETTING, "kind", "correction", "depth"]
    scores = [f"score_{p}" for p in results.APPROX_PHASES]
    cols = [*keys, "score_name", *scores, "dist_swapped", "dist_finetuned", "epochs",
            "n_source_diverged", "n_diverged", "n_total"]  # fmt: skip
    f = orthogonal_approximation_frame(approx)
    if f.empty:
        return pd.DataFrame(columns=cols)
    tuned = approx[approx["phase"] == "finetuned"].groupby(keys)["finetune_epochs"]
    epochs = tuned.agg(lambda e: "/".join(str(int(v)) for v in sorted(set(e))))
    rows = []
    for key, g in f.groupby(keys, sort=True):
        g = g.set_index("phase")

        def at(phase: str, col: str, g=g) -> float:
            return float(g.loc[phase, col]) if phase in g.index else np.nan

        phases = {"n_source_diverged": "before", "n_diverged": "finetuned"}
        lost = {c: int(g.loc[p, c]) if p in g.index else 0 for c, p in phases.items()}
        rows.append((*key, str(g["score_name"].iloc[0]),
                     *[at(p, "score_mean") for p in results.APPROX_PHASES],
                     at("swapped", "dist_identity_mean"), at("finetuned", "dist_identity_mean"),
                     epochs.get(key, ""), lost["n_source_diverged"], lost["n_diverged"],
                     int(g["n_total"].max())))  # fmt: skip
    return pd.DataFrame(rows, columns=cols)


def approximation_rate_findings(approx: pd.DataFrame) -> pd.DataFrame:
    """Per setting: the log–log slope of ‖W_i − I‖_F/√n at the swap against the number m of
    swapped blocks (one point per cell; W_i is the same for every kind swapped in) with its
    t-interval, and the slope of log m / m over the same m."""
    cols = [*SETTING, "slope", "slope_lo", "slope_hi", "n_cells", "m_min", "m_max", "predicted"]
    rows = []
    if approx.empty:
        return pd.DataFrame(columns=cols)
    swapped = approx[(approx["phase"] == "swapped") & (approx["status"] == "ok")]
    swapped = swapped.drop_duplicates([*SETTING, "depth", "seed", "correction"])
    for key, g in swapped.groupby(SETTING, sort=True):
        fit = loglog_slope(g["n_swapped"], g["dist_identity"])
        if not np.isfinite(fit.slope):
            continue
        ms = sorted(int(m) for m in g["n_swapped"].unique())
        rows.append((*key, fit.slope, fit.lo, fit.hi, fit.n, ms[0], ms[-1],
                     log_m_over_m_slope(ms)))  # fmt: skip
    return pd.DataFrame(rows, columns=cols)


def findings_frames(
    layers: pd.DataFrame,
    cells: pd.DataFrame,
    approx: pd.DataFrame,
    history: pd.DataFrame | None = None,
) -> dict[str, pd.DataFrame]:
    """Every section of findings.md as its frame of numbers, in the order it prints them
    (``history``: the per-epoch scores the score comparisons read at equal epochs)."""
    rate = rate_findings(layers, cells)
    return {
        "rate": rate,
        "convergence": convergence_findings(cells, rate),
        "rate_budget": rate_budget_findings(layers),
        "rotation": rotation_findings(layers),
        "starts": start_findings(layers),
        "accuracy": accuracy_findings(cells, history),
        "approximation": approximation_findings(approx),
        "approximation_rate": approximation_rate_findings(approx),
    }  # fmt: skip
