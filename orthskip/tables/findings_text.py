"""findings.md from the frames of :mod:`orthskip.tables.findings`: per section one generated
sentence that counts what the rows say, then the rows as tables (significant and not
significant apart)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from orthskip import results
from orthskip.analysis.stats import RATE_MODEL_LABELS, RATE_MODELS
from orthskip.tables.findings import (
    ALPHA,
    SETTING,
    findings_frames,
    matched_budgets,
    other_recipes,
    unequal_budgets,
)
from orthskip.tables.formats import MISSING, interval, num, p_value, span
from orthskip.tables.identity_rate import RATE_QUANTITIES
from orthskip.tables.render import Table, render_markdown
from orthskip.tables.start_end import FAR_START


def _setting(r: pd.Series) -> str:
    return f"{r['dataset']} / {r['arch']}"


def _table(f: pd.DataFrame, columns: dict[str, Callable[[pd.Series], str]], align: str) -> str:
    """``f``'s rows as a Markdown table, one column per (header, cell text function)."""
    if f.empty:
        return "none\n"
    rows = [[cell(r) for cell in columns.values()] for _, r in f.iterrows()]
    return render_markdown(Table.of_rows(list(columns), rows, align=align))


def _counts(f: pd.DataFrame, hits: pd.Series, of: pd.Series) -> str:
    """``k of n`` per setting, in setting order: k rows of ``hits`` among n of ``of``."""
    both = pd.DataFrame({"hit": hits & of, "of": of})
    parts = [f"{k[0]} / {k[1]} {int(g['hit'].sum())} of {int(g['of'].sum())}"
             for k, g in both.groupby([f["dataset"], f["arch"]], sort=True)]  # fmt: skip
    return ", ".join(parts)


def _stalled_text(f: pd.DataFrame) -> str:
    """How many cells stalled (left out of every fit), from one quantity's rows per variant."""
    if "n_stalled" not in f:
        return ""
    per = f.drop_duplicates(["dataset", "arch", "variant"]).set_index("variant")["n_stalled"]
    per = per[per > 0]
    if per.empty:
        return ""
    which = ", ".join(f"{int(n)} of {v}" for v, n in per.items())
    return (
        f" Left out of every fit: {int(per.sum())} stalled cells ({which}): the stopping "
        "rule fired on a plateau above their loss at init, so the net did not learn."
    )


def _convergence_text(f: pd.DataFrame) -> str:
    """How many cells the stopping rule ended, per setting that has one: the fitted
    variants' cells, then the controls'."""
    parts = []
    for _, g in f.groupby(SETTING, sort=True):
        said = []
        for _, r in g.iterrows():
            share = (
                f"{int(r['converged'])} of {int(r['n'])} ({100 * r['converged'] / r['n']:.1f} %)"
            )
            said.append(f"{share} of the fitted variants' cells" if r["fitted"] else
                        f"{share} of the other variants' ({r['variants']}: no skip in the "
                        "fits; their score is compared at equal epochs)")  # fmt: skip
        parts.append(f"{_setting(g.iloc[0])} {' and '.join(said)}")
    return (
        f" Converged (the stopping rule fired), per setting with a rule: {'; '.join(parts)}."
        if parts
        else ""
    )


def rate_section(f: pd.DataFrame, convergence: pd.DataFrame | None = None) -> list[str]:
    out = ["## Rate vs blocks m", ""]
    if f.empty:
        return [*out, "No learned orthogonal or linear skips in this run.", ""]
    best = f["best"].value_counts()
    wins = ", ".join(f"{RATE_MODEL_LABELS[k]} in {best[k]}" for k in RATE_MODELS if k in best)
    few = int((~f["best"].astype(bool)).sum())
    conv = f["converged"].astype(bool)
    out += [
        f"{len(f)} fits (one per setting, quantity and variant; learned orthogonal skips and "
        f"the linear control). Best model by AIC: {wins or 'none'}"
        + (f"; {few} with too few depths (m ≥ 2) to compare." if few else ".")
        + f" Models {', '.join(RATE_MODEL_LABELS[k] for k in RATE_MODELS)}, each fitted by "
        "least squares on log y over m ≥ 2; a: exponent of C·m^(−a), 95 % bootstrap interval "
        "over seeds (identity_rate.md has every model's ΔAIC). Cells that converged (the "
        "stopping rule fired) and cells stopped by the epoch cap are fitted apart: "
        f"{int(f.loc[conv, 'n_points'].sum())} converged cell-points, "
        f"{int(f.loc[~conv, 'n_points'].sum())} at the cap. An exponent fitted at the cap "
        "describes that budget."
        + _convergence_text(convergence if convergence is not None else pd.DataFrame())
        + _stalled_text(f),
        "",
    ]

    def best_text(r: pd.Series) -> str:
        return RATE_MODEL_LABELS[r["best"]] if r["best"] else "too few depths to compare"

    def ci(r: pd.Series) -> str:
        if not np.isfinite(r["exponent_lo"]):
            return "– (one seed)" if r["best"] else MISSING
        return interval(r["exponent_lo"], r["exponent_hi"])

    cols = {
        "setting": _setting,
        "quantity": lambda r: RATE_QUANTITIES[r["quantity"]][2],
        "variant": lambda r: str(r["variant"]),
        "recipe": lambda r: str(r["recipe"]) or MISSING,
        "trained to": lambda r: "convergence" if r["converged"] else "epoch cap",
        "m": lambda r: f"{int(r['m_min'])}–{int(r['m_max'])}" if r["best"] else MISSING,
        "best model": best_text,
        "ΔAIC to runner-up": lambda r: num(r["margin"], ".1f"),
        "a": lambda r: num(r["exponent"]),
        "95 % CI of a": ci,
        "seeds": lambda r: str(int(r["n_seeds"])),
    }
    return [*out, _table(f, cols, "llllllllrrr"), *_recipe_text(f)]


def _recipe_text(f: pd.DataFrame) -> list[str]:
    """How much the recipe moves a: per setting, kind and skip start with fits of ‖Q − I‖
    under two or more recipes, their exponents side by side. The intervals cover seeds under
    one recipe; the spread between recipes is not in them."""
    if "recipe" not in f:
        return []
    q = f[(f["quantity"] == "dist_identity") & f["best"].astype(bool)]
    q = q[np.isfinite(q["exponent"].to_numpy(dtype=float)) & (q["recipe"] != "")]
    lines = []
    keys = ["dataset", "arch", "skip", "skip_init"]
    for (ds, arch, skip, start), g in q.groupby(keys, sort=True):
        if g["recipe"].nunique() < 2:
            continue
        # recipes are compared on converged fits where two recipes have them: a fit of the
        # cells a cap stopped covers other depths and another training state
        conv = g[g["converged"].astype(bool)]
        compared = conv if conv["recipe"].nunique() >= 2 else g
        rest = g.drop(compared.index)
        each = "; ".join(_recipe_fit(r) for r in compared.sort_values("exponent").itertuples())
        spread = float(compared["exponent"].max() - compared["exponent"].min())
        begin = f" from {start}" if start else ""
        text = f"- {ds} / {arch}, {skip}{begin}: {each}. The recipe moves a by {spread:.2f}."
        if len(rest):
            text += (" Not compared, the cells that reached the cap: "
                     + "; ".join(_recipe_fit(r) for r in rest.itertuples()) + ".")  # fmt: skip
        lines.append(text)
    if not lines:
        return []
    return ["**a per recipe** (‖Q − I‖_F/√n; each interval covers seed noise under one recipe, "
            "not the recipe):", "", *lines, ""]  # fmt: skip


def _recipe_fit(r: Any) -> str:
    state = "converged" if r.converged else "at the cap"
    return (f"a = {r.exponent:.2f} {interval(r.exponent_lo, r.exponent_hi)} with {r.recipe} "
            f"({r.variant}, {state}, m = {int(r.m_min)}–{int(r.m_max)})")  # fmt: skip


def rate_budget_section(f: pd.DataFrame) -> list[str]:
    if f.empty:
        return []
    spread = f["a_max"] - f["a_min"]
    out = [
        "## The exponent against training state",
        "",
        f"The fit above repeated at every snapshot epoch, one recipe per variant: over the "
        f"{int(f['n_epochs'].max())} snapshots fitted, a moves by up to "
        f"{num(float(spread.max()))} (rate_by_epoch.md has every epoch). An exponent is a "
        "property of the training state it was fitted at, not of depth alone.",
        "",
    ]
    cols = {
        "setting": _setting,
        "variant": lambda r: str(r["variant"]),
        "a at first epoch": lambda r: f"{num(r['a_first'])} (epoch {int(r['first_epoch'])})",
        "a at last epoch": lambda r: f"{num(r['a_last'])} (epoch {int(r['last_epoch'])})",
        "range of a": lambda r: f"{num(r['a_min'])} – {num(r['a_max'])}",
        "epochs": lambda r: str(int(r["n_epochs"])),
    }
    return [*out, _table(f, cols, "llrrrr")]


def rotation_section(f: pd.DataFrame) -> list[str]:
    if f.empty:
        return []
    out = [
        "## Where the rotation goes",
        "",
        "The angle ‖log P‖_F/√2 of the skips' product P = Q_m ⋯ Q_1, as a share of the angle "
        "of the target's best linear fit (its orthogonal factor), beside the mean per-skip "
        "‖Q − I‖_F/√n, at the shallowest and the deepest m; seed means at each cell's last "
        "snapshot (skip_rotation.md has every m).",
        "",
    ]
    cols = {
        "setting": _setting,
        "variant": lambda r: str(r["variant"]),
        "m": lambda r: f"{int(r['m_min'])} → {int(r['m_max'])}",
        "share of h's angle": lambda r: f"{num(r['share_min'])} → {num(r['share_max'])}",
        "angle at deepest (rad)": lambda r: num(r["angle_max"], ".3f"),
        "‖Q − I‖_F/√n": lambda r: f"{num(r['dist_min'], '.4f')} → {num(r['dist_max'], '.4f')}",
    }
    return [*out, _table(f, cols, "llrrrr")]


def starts_section(f: pd.DataFrame) -> list[str]:
    out = ["## Starts far from I: does Q move toward I?", ""]
    if f.empty:
        return [*out, "No learned skip starts far from I (no Haar start) in this run.", ""]
    toward = f.groupby(["dataset", "arch", "variant"], sort=True)["toward_identity"]
    per = "; ".join(f"{v} ({ds} / {a}) at {int(g.sum())} of {len(g)} depths"
                    for (ds, a, v), g in toward)  # fmt: skip
    out += [
        f"Learned skips whose mean epoch-0 ‖Q − I‖_F/√n exceeds {FAR_START} (a Haar start: "
        "≈ √2); end − start paired on seed, two-sided t-test, uncorrected, α = "
        f"{ALPHA}. Moves toward I: {per}.",
        "",
    ]
    cols = {
        "setting": _setting,
        "variant": lambda r: str(r["variant"]),
        "m": lambda r: str(int(r["m"])),
        "‖Q − I‖_F/√n start → end": lambda r: f"{r['start']:.3f} → {r['end']:.3f}",
        "end − start": lambda r: num(r["diff"], "+.3f"),
        "p": lambda r: p_value(r["p_value"]),
        "direction": lambda r: "toward I" if r["diff"] < 0 else "away from I",
        "seeds": lambda r: str(int(r["n_seeds"])),
    }
    sig = f["significant"].astype(bool)
    return [*out, f"### Significant (p < {ALPHA})", "", _table(f[sig], cols, "llrrrrlr"),
            "### Not significant", "", _table(f[~sig], cols, "llrrrrlr")]  # fmt: skip


def _lost(r: pd.Series) -> str:
    parts = [f"{r[col]} {int(r[f'{side}_diverged'])} of {int(r[f'{side}_seeds'])} "
             f"seed{'s' * (int(r[f'{side}_seeds']) != 1)}"
             for side, col in (("variant", "variant"), ("reference", "reference"))
             if r[f"{side}_diverged"]]  # fmt: skip
    return ", ".join(parts)


def _confound_text(f: pd.DataFrame) -> list[str]:
    """Per setting whose compared runs trained for other numbers of epochs than their
    reference (a stopping rule ended them): how they were compared at equal epochs, or, where
    they could not be (no history), the confound: the difference includes the budget; and
    the variants trained with another recipe than the reference: that confound too."""
    out = []
    matched_all, apart_all = matched_budgets(f), unequal_budgets(f)
    for _, g in f.groupby(SETTING, sort=True):
        ref = g["reference"].iloc[0]
        for rows, how in (
            (matched_all[g.index], "each seed pair is compared at the shorter run's last "
             "epoch (the longer run's test score at that epoch, from history.parquet), so "
             "that the difference is one after equal training, not at each run's end"),
            (apart_all[g.index], "a difference there includes the budget as well as the "
             "skip"),
        ):  # fmt: skip
            if not rows.any():
                continue
            v, r = g.loc[rows, "variant_epochs"], g.loc[rows, "reference_epochs"]
            word = "matched" if how.startswith("each") else "differ"
            out.append(
                f"Budgets {word} in {_setting(g.iloc[0])}: the stopping rule ended runs at "
                f"other epochs than {ref}'s in {int(rows.sum())} of {len(g)} comparisons "
                f"(median epochs per variant and depth: {span(v)}, against {span(r)} for "
                f"{ref}); {how}."
            )
        recipes = g[other_recipes(g)]
        if not recipes.empty:
            which = "; ".join(
                f"{', '.join(dict.fromkeys(h['variant'].astype(str)))} with “{recipe}”"
                for recipe, h in recipes.groupby("variant_recipe", sort=True)
            )
            out.append(
                f"Recipes differ in {_setting(g.iloc[0])}: {which}, against {ref}'s "
                f"“{g['reference_recipe'].iloc[0]}” ({len(recipes)} of {len(g)} comparisons); "
                "a difference there includes the recipe as well as the skip."
            )
    return [" ".join(out), ""] if out else []


def accuracy_section(f: pd.DataFrame, score: str) -> list[str]:
    out = [f"## Test score vs identity ({score})", ""]
    if f.empty:
        return [*out, "No identity variant to compare with in this run.", ""]
    tested = f["tested"].astype(bool)
    sig = f["significant"].astype(bool)
    out += [
        "Each variant's test score minus its setting's identity variant's (accuracy in pp, "
        "R² as it is), paired on seed, both after the same number of epochs (column "
        "epochs: the median); 95 % t-interval; two-sided paired "
        f"t-test, Holm-corrected over each setting's tested comparisons, α = {ALPHA}. "
        f"Significant (of those tested): {_counts(f, sig, tested)}"
        + (f"; {int((~tested).sum())} not tested (a side diverged, or one seed pair)."
           if (~tested).any() else "."),
        "",
        *_confound_text(f),
    ]  # fmt: skip

    def prec(r: pd.Series) -> str:
        return ".3f" if r["regression"] else ".2f"

    cols = {
        "setting": _setting,
        "variant": lambda r: str(r["variant"]),
        "depth": lambda r: str(int(r["depth"])),
        "comparison": lambda r: f"{r['variant']} − {r['reference']}",
        "epochs": lambda r: num(r["budget"], ".0f"),
        "statistic": lambda r: "Δ test R²" if r["regression"] else "Δ test acc (pp)",
        "value": lambda r: num(r["mean_diff"], "+" + prec(r)),
        "95 % CI": lambda r: interval(r["ci_lo"], r["ci_hi"], prec(r)),
        "p (Holm)": lambda r: p_value(r["p_holm"]),
        "pairs": lambda r: str(int(r["n_pairs"])),
        "diverged, left out": lambda r: _lost(r) or MISSING,
    }
    align = "llrlrlrrrrl"

    def why_not(r: pd.Series) -> str:
        lost = _lost(r)
        if lost:
            return f"diverged: {lost}"
        n = int(r["n_pairs"])
        return f"{n} seed pair{'s' * (n != 1)}: no test"

    untested = {k: cols[k] for k in ("setting", "variant", "depth", "comparison")}
    untested["why"] = why_not
    return [*out, f"### Significant after Holm (α = {ALPHA})", "", _table(f[sig], cols, align),
            "### Not significant", "", _table(f[tested & ~sig], cols, align),
            "### Not tested", "", _table(f[~tested], untested, "llrll")]  # fmt: skip


def approximation_section(f: pd.DataFrame, rate: pd.DataFrame) -> list[str]:
    if f.empty:
        return []
    out = [
        "## Orthogonal approximation of the identity nets",
        "",
        "Identity nets with each block's skip swapped for the orthogonal W_i closest to the "
        "block, frozen (orth_fixed) or learnable (orth_learned), with or without the branch "
        "correction I − W_i, then fine-tuned: test score before the swap → right after → "
        "after fine-tuning and mean ‖W_i − I‖_F/√n at the swap → after fine-tuning, means "
        "over seeds (orthogonal_approximation.md has the spreads).",
        "",
    ]

    def score(r: pd.Series) -> str:
        fmt = ".2f" if r["score_name"] == "acc" else ".3f"
        return " → ".join(num(r[f"score_{p}"], fmt) for p in results.APPROX_PHASES)

    def lost(r: pd.Series) -> str:
        n, notes = int(r["n_total"]), []
        if r["n_source_diverged"]:
            notes.append(f"the trained cell diverged in {int(r['n_source_diverged'])} of {n} seeds")
        if r["n_diverged"]:
            notes.append(f"fine-tuning diverged in {int(r['n_diverged'])} of {n} seeds")
        return "; ".join(notes) or MISSING

    cols = {
        "setting": _setting,
        "kind": lambda r: str(r["kind"]),
        "correction": lambda r: "with" if r["correction"] else "without",
        "epochs": lambda r: r["epochs"] or MISSING,
        "depth": lambda r: str(int(r["depth"])),
        "score": lambda r: "acc (%)" if r["score_name"] == "acc" else "R²",
        "before → swapped → fine-tuned": score,
        "‖W − I‖ swapped → fine-tuned": lambda r: (f"{num(r['dist_swapped'], '.3f')} → "
                                                   f"{num(r['dist_finetuned'], '.3f')}"),
        "seeds lost": lost,
    }  # fmt: skip
    out.append(_table(f, cols, "lllrrlrrl"))
    if not rate.empty:
        out += [
            "Mean ‖W_i − I‖_F/√n at the swap vs the number m of swapped blocks, one point per "
            "cell: log–log slope with its 95 % t-interval, beside the slope of log m / m over "
            "the same m.",
            "",
            _table(rate, {
                "setting": _setting,
                "m": lambda r: f"{int(r['m_min'])}–{int(r['m_max'])}",
                "cells": lambda r: str(int(r["n_cells"])),
                "log–log slope": lambda r: num(r["slope"]),
                "95 % CI": lambda r: interval(r["slope_lo"], r["slope_hi"]),
                "log m / m": lambda r: num(r["predicted"]),
            }, "llrrrr"),
        ]  # fmt: skip
    return out


def findings_markdown(
    layers: pd.DataFrame,
    cells: pd.DataFrame,
    approx: pd.DataFrame,
    history: pd.DataFrame | None = None,
) -> str:
    """results/tables/findings.md: the rate fits, the far starts' moves, the paired score
    differences against identity and the orthogonal approximation, each a section of tables
    with one row per test or fit."""
    out = ["# Findings", "",
           "Regenerated from the aggregated results (results/metrics/*.parquet) by the "
           "findings rule: one row per test or fit, from the computations of the tables "
           "identity_rate, rate_by_epoch, skip_rotation, start_end_distance, "
           "paired_vs_identity and orthogonal_approximation.", ""]  # fmt: skip
    if all(df.empty for df in (layers, cells, approx)):
        return "\n".join([*out, "No results in this run.", ""])
    f = findings_frames(layers, cells, approx, history)
    score = results.score_name(cells) if not cells.empty else "test score"
    out += rate_section(f["rate"], f["convergence"])
    out += rate_budget_section(f["rate_budget"])
    out += rotation_section(f["rotation"])
    out += starts_section(f["starts"])
    out += accuracy_section(f["accuracy"], score)
    out += approximation_section(f["approximation"], f["approximation_rate"])
    return "\n".join(out).rstrip("\n") + "\n"
