"""The paper's tables as LaTeX (booktabs) and Markdown, from the aggregated Parquet files.

``make_table(name, metrics_dir, out_md, out_tex)`` is what the tables rule calls.
Each table is first computed as a DataFrame of numbers (``*_frame`` functions, tested
against the fixture) and then rendered; both renderers are small and hand-written
because pandas' Markdown export needs ``tabulate``, which is not a dependency.
Accuracies are fractions in the Parquet files and shown in percent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from orthskip import results as D
from orthskip.analysis.stats import (
    RATE_MODEL_LABELS,
    RATE_MODELS,
    compare_rate_models,
    holm,
    log_m_over_m_slope,
    loglog_slope,
    mean_ci,
    paired_compare,
    paired_vs_reference,
)
from orthskip.errors import ConfigError
from orthskip.figures.style import ordered_variants
from orthskip.io import write_text

ROW_KEYS = ["dataset", "arch", "depth"]


@dataclass
class TextTable:
    """A rendered-to-strings table: header, body rows, and which cells are bold."""

    header: list[str]
    rows: list[list[str]]
    bold: set[tuple[int, int]] = field(default_factory=set)
    note: str = ""
    align: str = ""  # one LaTeX column letter per column; default l for keys, r for numbers


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
# Symbols we produce ourselves, replaced after escaping.
_LATEX_SYMBOLS = {
    "±": r"$\pm$",
    "−": "$-$",
    "‖": r"$\|$",
    "≤": r"$\leq$",
    "Δ": r"$\Delta$",
    "₂": r"$_2$",
    "≥": r"$\geq$",
    "√": r"$\surd$",
    "·": r"$\cdot$",
    "₀": r"$_0$",
    "²": r"$^2$",
}
# Comments are not typeset, but keep them ASCII so that any engine reads the file.
_ASCII = {"±": "+/-", "−": "-", "‖": "||", "≤": "<=", "Δ": "Delta", "₂": "_2", "≥": ">=",
          "√": "sqrt", "·": "*", "₀": "_0", "²": "^2"}  # fmt: skip


def _ascii(text: str) -> str:
    for sym, plain in _ASCII.items():
        text = text.replace(sym, plain)
    return text


def latex_escape(text: str) -> str:
    out = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))
    for sym, tex in _LATEX_SYMBOLS.items():
        out = out.replace(sym, tex)
    return out


def render_latex(t: TextTable) -> str:
    """A booktabs tabular (pandas' Styler), cells escaped by :func:`latex_escape`, bold cells
    in \\textbf, the note as leading comments."""
    styler = (
        pd.DataFrame(t.rows, columns=range(len(t.header)))
        .style.hide(axis="index")
        .relabel_index([latex_escape(h) for h in t.header], axis="columns")
        .format(latex_escape)
    )
    if t.bold:
        styler = styler.apply(lambda d: _css(d, t.bold, "textbf:--rwrap;"), axis=None)
    body = styler.to_latex(hrules=True, column_format=t.align or "l" * len(t.header))
    note = "".join(f"% {_ascii(line)}\n" for line in t.note.splitlines())
    return note + body


def _css(frame: pd.DataFrame, cells: set[tuple[int, int]], props: str) -> pd.DataFrame:
    """Styler's per-cell properties: ``props`` at the (row, column) positions in ``cells``."""
    return pd.DataFrame(
        [[props if (r, k) in cells else "" for k in range(frame.shape[1])]
         for r in range(frame.shape[0])],
        index=frame.index, columns=frame.columns,
    )  # fmt: skip


def _md_cell(text: str) -> str:
    return str(text).replace("|", r"\|")


def render_markdown(t: TextTable) -> str:
    """A pipe table, one line per row, cells as written (a compact form the findings and the
    tests read line by line; pandas' to_markdown pads every cell), bold cells in **."""
    align = t.align or "l" * len(t.header)
    rule = ["---:" if a == "r" else (":---:" if a == "c" else ":---") for a in align]
    lines = ["| " + " | ".join(_md_cell(h) for h in t.header) + " |"]
    lines.append("| " + " | ".join(rule) + " |")
    for r, row in enumerate(t.rows):
        cells = [
            f"**{_md_cell(c)}**" if (r, k) in t.bold and c else _md_cell(c)
            for k, c in enumerate(row)
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if t.note:
        lines += ["", t.note]
    return "\n".join(lines) + "\n"


def _no_data(title: str) -> TextTable:
    return TextTable([title], [["no data for this table in this run"]])


# ---------------------------------------------------------------- accuracy


def _variant_order(df: pd.DataFrame) -> dict[str, int]:
    return {v: k for k, v in enumerate(ordered_variants(D.variant_kinds(df)))}


def accuracy_frame(cells: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, arch, depth, variant): the test score at the last epoch (accuracy in %,
    or R² for regression sets), over the seeds that did not diverge (nothing is selected on
    the test set).

    Columns: skip (the variant's kind), mean, std (ddof=1), n (seeds that count), n_diverged,
    n_total, and mean_at_best_val: the mean score at each seed's best-validation epoch
    (NaN where the results have no ``test_acc_at_best_val``).
    """
    cells = D.with_variant(cells)
    at_val = "test_acc_at_best_val" in cells.columns
    cells = cells.assign(
        _div=D.diverged(cells),
        _score=D.test_score(cells),
        _best=D.test_score(cells, "_at_best_val") if at_val else np.nan,
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


def accuracy_table(metrics_dir: Path) -> TextTable:
    cells = D.read_table(metrics_dir, "cells")
    if cells.empty:
        return _no_data("test accuracy")
    f = accuracy_frame(cells)
    variants = ordered_variants(D.variant_kinds(f))
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
    note = (
        "Test accuracy (%; R² for regression sets) at the last epoch: mean ± std over seeds "
        "(n seeds that count; "
        "diverged runs, excluded from the mean). Best mean per row in bold. One column per "
        "variant (a skip kind with config overrides; a bare kind is its own variant). No "
        "epoch or model is selected on the test set."
    )
    return TextTable(header, rows, bold, note, "llr" + "r" * len(variants))


# ---------------------------------------------------------------- paired vs identity


def paired_frame(cells: pd.DataFrame) -> pd.DataFrame:
    """Differences in the last-epoch test score (accuracy in percentage points, or R²) of each
    variant against its (dataset, arch)'s reference variant (``D.reference_variants``: identity),
    paired by seed; columns ``reference`` and ``skip`` (each variant's kind)."""
    cells = D.with_variant(cells)
    c = cells.assign(_score=D.test_score(cells).where(~D.diverged(cells)))
    frames = []
    for (ds, arch), ref in D.reference_variants(cells).items():
        g = c[(c["dataset"] == ds) & (c["arch"] == arch)]
        f = paired_vs_reference(g, "_score", ref, ROW_KEYS, group="variant")
        frames.append(f.assign(reference=ref))
    if not frames:
        cols = [*ROW_KEYS, "variant", "skip", "reference", "mean_diff", "ci_lo", "ci_hi",
                "p_value", "n_pairs", "n_diverged"]  # fmt: skip
        return pd.DataFrame(columns=cols)
    f = pd.concat(frames, ignore_index=True)
    f.insert(f.columns.get_loc("variant") + 1, "skip", f["variant"].map(D.variant_kinds(cells)))
    return f


def _p_text(p: float) -> str:
    if not np.isfinite(p):
        return "–"
    return "<0.001" if p < 1e-3 else f"{p:.3f}"


def paired_table(metrics_dir: Path) -> TextTable:
    cells = D.read_table(metrics_dir, "cells")
    if cells.empty or not D.reference_variants(cells):
        return _no_data("paired comparison against identity")
    f = paired_frame(cells)
    f = f.assign(_o=f["variant"].map(_variant_order(f)))
    f = f.sort_values([*ROW_KEYS, "_o"])
    header = ["dataset", "arch", "depth", "variant", "vs", "Δ score", "95 % CI", "p", "pairs",
              "diverged"]  # fmt: skip
    rows = []
    for _, r in f.iterrows():
        ci = f"[{r['ci_lo']:.2f}, {r['ci_hi']:.2f}]" if np.isfinite(r["ci_lo"]) else "–"
        diff = f"{r['mean_diff']:+.2f}" if np.isfinite(r["mean_diff"]) else "–"
        rows.append([str(r["dataset"]), str(r["arch"]), str(int(r["depth"])), str(r["variant"]),
                     str(r["reference"]), diff, ci, _p_text(r["p_value"]), str(int(r["n_pairs"])),
                     str(int(r["n_diverged"]))])  # fmt: skip
    note = (
        "Last-epoch test score of each variant minus that of the identity variant of its "
        "dataset and arch (column vs): accuracy in percentage points, R² as it is for "
        "regression sets; paired on seed within dataset and depth; 95 % t-interval and "
        "two-sided paired t-test p-value. "
        "Pairs with a diverged run are left out (count in the last column)."
    )
    return TextTable(header, rows, set(), note, "llrllrrrrr")


# ---------------------------------------------------------------- identity rate


# what the rate table fits: (family, stat, label) per quantity
RATE_QUANTITIES: dict[str, tuple[str, str, str]] = {
    "dist_identity": ("dist_identity", D.DIST_STAT, "‖Q − I‖_F/√n"),
    "branch_lipschitz": ("branch_lipschitz", "max", "Lip(F) ≥"),
}


def rate_per_cell(layers: pd.DataFrame, quantity: str = "dist_identity") -> pd.DataFrame:
    """One point per cell: mean over its non-transition blocks of the quantity at the last
    snapshot, for the variants whose kind is in ``D.RATE_KINDS``."""
    family, stat, _ = RATE_QUANTITIES[quantity]
    pc = D.dist_identity_per_cell(layers, stat=stat, metric_name=family)
    return pc[pc["skip"].isin(D.RATE_KINDS)]


def identity_rate_frame(
    layers: pd.DataFrame, quantity: str = "dist_identity", criterion: str = "aic"
) -> pd.DataFrame:
    """Rate of a per-cell quantity vs blocks m per (dataset, arch, variant), for the variants
    whose kind is in ``D.RATE_KINDS`` only (orth_learned, orth_manifold: the learned skips the
    O(log m / m) question is about; linear: the unconstrained control).

    ``quantity``: ``dist_identity`` (mean ‖Q − I‖_F/√n) or ``branch_lipschitz`` (mean of the
    lower bound on Lip(F_i)). One point per cell (mean over its blocks at the last snapshot),
    seeds as replicates. Columns: the single log–log ``slope`` with its t-interval (all m > 0)
    and ``predicted``, the slope of log m / m over the same m; then the model comparison of
    :func:`orthskip.analysis.stats.compare_rate_models` on m ≥ 2: ``<criterion>_<model>``
    and ``c_<model>`` per model of ``RATE_MODELS``, ``best``, ``margin`` (criterion of the
    runner-up minus the best's), ``exponent`` a of C·m^(−a) with its seed-bootstrap interval
    ``exponent_lo`` / ``exponent_hi``, ``m_min`` / ``m_max`` (the range fitted), ``n_seeds``.
    """
    models = [f"{criterion}_{k}" for k in RATE_MODELS] + [f"c_{k}" for k in RATE_MODELS]
    cols = ["dataset", "arch", "variant", "skip", "quantity", "slope", "ci_lo", "ci_hi",
            "n_points", "depths", "predicted", *models, "best", "margin", "exponent",
            "exponent_lo", "exponent_hi", "m_min", "m_max", "n_seeds"]  # fmt: skip
    if layers.empty:
        return pd.DataFrame(columns=cols)
    pc = rate_per_cell(layers, quantity)
    rows = []
    for (dataset, arch, variant, skip), g in pc.groupby(
        ["dataset", "arch", "variant", "skip"], sort=True
    ):
        fit = loglog_slope(g["m"], g["value"])
        ms = sorted(int(v) for v in g["m"].unique())
        cmp = compare_rate_models(g["m"], g["value"], g["seed"], criterion=criterion)
        scores = [getattr(cmp.fits[k], criterion) for k in RATE_MODELS]
        consts = [cmp.fits[k].c for k in RATE_MODELS]
        rows.append((dataset, arch, variant, skip, quantity, fit.slope, fit.lo, fit.hi, fit.n,
                     ",".join(map(str, ms)), log_m_over_m_slope(ms), *scores, *consts,
                     cmp.best, cmp.margin, cmp.exponent, cmp.exponent_lo, cmp.exponent_hi,
                     cmp.m_min, cmp.m_max, cmp.n_seeds))  # fmt: skip
    return pd.DataFrame(rows, columns=cols)


def _num(v: float, fmt: str = ".2f") -> str:
    return f"{v:{fmt}}" if np.isfinite(v) else "–"


def identity_rate_table(metrics_dir: Path) -> TextTable:
    layers = D.read_table(metrics_dir, "layers")
    frames = [identity_rate_frame(layers, q) for q in RATE_QUANTITIES]
    f = (
        pd.concat([x for x in frames if not x.empty], ignore_index=True)
        if any(not x.empty for x in frames)
        else pd.DataFrame()
    )
    if f.empty:
        return _no_data("rate of ‖Q − I‖ vs depth")
    f = f.assign(_o=f["variant"].map(_variant_order(f)),
                 _q=f["quantity"].map({q: k for k, q in enumerate(RATE_QUANTITIES)}))  # fmt: skip
    f = f.sort_values(["dataset", "arch", "_q", "_o"])
    labels = [RATE_MODEL_LABELS[k] for k in RATE_MODELS]
    header = ["dataset", "arch", "quantity", "variant", "role", "m", *[f"ΔAIC {x}" for x in labels],
              "best", "margin", "a [95 % CI]", "points"]  # fmt: skip
    rows, bold = [], set()
    for r_i, (_, r) in enumerate(f.iterrows()):
        scores = np.array([r[f"aic_{k}"] for k in RATE_MODELS], dtype=float)
        low = np.nanmin(scores) if np.isfinite(scores).any() else np.nan
        deltas = [_num(v - low, ".1f") for v in scores]
        for k, name in enumerate(RATE_MODELS):
            if name == r["best"]:
                bold.add((r_i, 6 + k))
        a = _num(r["exponent"])
        if np.isfinite(r["exponent_lo"]):
            a += f" [{r['exponent_lo']:.2f}, {r['exponent_hi']:.2f}]"
        role = "control" if r["skip"] == "linear" else "learned orth."
        m_range = f"{int(r['m_min'])}–{int(r['m_max'])}" if r["m_max"] else "–"
        best = RATE_MODEL_LABELS.get(r["best"], "–")
        rows.append([str(r["dataset"]), str(r["arch"]), RATE_QUANTITIES[r["quantity"]][2],
                     str(r["variant"]), role, m_range, *deltas, best, _num(r["margin"], ".1f"),
                     a, str(int(r["n_points"]))])  # fmt: skip
    note = (
        "Rate of the mean over non-transition blocks (one point per cell at its last "
        "snapshot, seeds as replicates) of ‖Q − I‖_F/√n and of the lower bound on Lip(F_i) "
        "(branch_lipschitz, max) vs the number of residual blocks m. Each model y = C·g(m) "
        "is fitted by least squares on log y over m ≥ 2 (column m: the range used); "
        "ΔAIC is each model's AIC minus the best's (Gaussian likelihood on the log scale; "
        "best in bold), margin the runner-up's ΔAIC. a: exponent of C·m^(−a) with a 95 % "
        "percentile bootstrap interval over seeds (whole seeds resampled). Only the learned "
        "orthogonal skips (orth_learned, orth_manifold and their variants) and the "
        "unconstrained linear control are fitted: orth_fixed is frozen and the theory says "
        "nothing about the others."
    )
    return TextTable(header, rows, bold, note, "lllllr" + "r" * len(labels) + "lrrr")


# ---------------------------------------------------------------- findings

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
    layers = D.with_variant(layers)
    cell = D.CELL_COLUMNS
    first = layers.groupby(cell)["epoch"].transform("min")
    last = layers.groupby(cell)["epoch"].transform("max")
    at_start = layers[(layers["epoch"] == first) & (layers["epoch"] < last)]
    start = D.dist_identity_per_cell(at_start).rename(columns={"value": "start"})
    end = D.dist_identity_per_cell(layers).rename(columns={"value": "end"})
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
        pe = D.dist_per_epoch(layers, metric_name=fam)
        if pe.empty:
            continue
        cell = [*D.CELL_COLUMNS, "m"]
        first = pe.groupby(D.CELL_COLUMNS)["epoch"].transform("min")
        last = pe.groupby(D.CELL_COLUMNS)["epoch"].transform("max")
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


def _pm(mean: float, std: float, fmt: str = ".3f") -> str:
    if not np.isfinite(mean):
        return "–"
    return f"{mean:{fmt}}" + (f" ± {std:{fmt}}" if np.isfinite(std) else "")


def start_end_distance_table(metrics_dir: Path) -> TextTable:
    f = start_end_distance_frame(D.read_table(metrics_dir, "layers"))
    if f.empty:
        return _no_data("start vs end distance of the skips")
    f = f.assign(_o=f["variant"].map(_variant_order(f)))
    f = f.sort_values(["dataset", "arch", "_o", "depth"])
    header = ["dataset", "arch", "variant", "start", "depth", "m", "‖Q − I‖ start",
              "‖Q − I‖ end", "Δ (p)", "‖Q − Q₀‖ end", "seeds"]  # fmt: skip
    rows = []
    for _, r in f.iterrows():
        di, d0 = "dist_identity", "dist_init"
        delta = (f"{r['diff']:+.3f} ({_p_text(r['p_value'])})"
                 if np.isfinite(r["diff"]) else "–")  # fmt: skip
        rows.append([str(r["dataset"]), str(r["arch"]), str(r["variant"]),
                     "far (Haar)" if r["far_start"] else "near I", str(int(r["depth"])),
                     str(int(r["m"])), _pm(r[f"{di}_start_mean"], r[f"{di}_start_std"]),
                     _pm(r[f"{di}_end_mean"], r[f"{di}_end_std"]), delta,
                     _pm(r[f"{d0}_end_mean"], r[f"{d0}_end_std"]),
                     str(int(r["n_seeds"]))])  # fmt: skip
    note = (
        "Distance of the skip matrices to the identity, ‖Q − I‖_F/√n, at each cell's first "
        "snapshot (start) and last (end), and how far they moved from their start, "
        "‖Q − Q₀‖_F/√n at the end (0 at the start by definition); each is the mean over the "
        "cell's square skip matrices (transition blocks left out), then mean ± std over "
        f"seeds. start: far (Haar) when the mean start exceeds {FAR_START} (a Haar start is "
        "≈ √2 on average), else near I. Δ: end − start of ‖Q − I‖ paired by seed, two-sided "
        "paired t-test p. orth_fixed is frozen: its ‖Q − Q₀‖ is 0."
    )
    return TextTable(header, rows, set(), note, "llllrrrrrrr")


# ---------------------------------------------------------------- orthogonal approximation

APPROX_PHASES = ("before", "swapped", "finetuned")


def orthogonal_approximation_frame(approx: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, arch, depth, kind, correction, phase): mean and std (ddof=1) over seeds of
    the test ``score`` (accuracy in %, R² as it is), of the mean ‖W_i − I‖_F/√n
    (``dist_identity``) and of the mean lower bound on Lip(F′_i) (``branch_lipschitz``);
    ``n`` seeds with a finite score, ``n_total`` seeds, ``n_diverged`` seeds whose fine-tuning
    diverged (status ``diverged``) and ``n_source_diverged`` seeds whose trained cell had
    (``source_*``)."""
    keys = ["dataset", "arch", "depth", "kind", "correction", "phase"]
    vals = ["score", "dist_identity", "branch_lipschitz"]
    cols = [*keys, "score_name", *[f"{v}_{s}" for v in vals for s in ("mean", "std")], "n",
            "n_total", "n_diverged", "n_source_diverged"]  # fmt: skip
    if approx.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for key, g in approx.groupby(keys, sort=True):
        name = str(g["score_name"].iloc[0])
        scale = 100.0 if name == "acc" else 1.0
        out = []
        for v in vals:
            s = mean_ci(g[v].to_numpy(dtype=float) * (scale if v == "score" else 1.0))
            out += [s.mean, s.std]
        n = int(np.isfinite(g["score"].to_numpy(dtype=float)).sum())
        status = g["status"].astype(str)
        rows.append((*key, name, *out, n, len(g), int((status == "diverged").sum()),
                     int(status.str.startswith("source_").sum())))  # fmt: skip
    f = pd.DataFrame(rows, columns=cols)
    return f.assign(_p=f["phase"].map({p: k for k, p in enumerate(APPROX_PHASES)})).sort_values(
        [*keys[:5], "_p"]).drop(columns="_p").reset_index(drop=True)  # fmt: skip


def orthogonal_approximation_table(metrics_dir: Path) -> TextTable:
    f = orthogonal_approximation_frame(D.read_table(metrics_dir, "approx"))
    if f.empty:
        return _no_data("orthogonal approximation of identity nets")
    header = ["dataset", "arch", "depth", "kind", "corr.", "score", *APPROX_PHASES,
              "‖W − I‖ swapped", "‖W − I‖ fine-tuned", "Lip(F) ≥ before", "Lip(F) ≥ swapped",
              "Lip(F) ≥ fine-tuned", "seeds"]  # fmt: skip
    rows = []
    keys = ["dataset", "arch", "depth", "kind", "correction"]
    for key, g in f.groupby(keys, sort=True):
        g = g.set_index("phase")

        def at(phase: str, col: str, fmt: str = ".3f", g=g) -> str:
            if phase not in g.index:
                return "–"
            r = g.loc[phase]
            lost = int(r["n_diverged"]) + int(r["n_source_diverged"])
            if lost and int(r["n"]) == 0:
                return f"diverged ({lost})"
            text = _pm(r[f"{col}_mean"], r[f"{col}_std"], fmt)
            return text + (f" ({lost} div.)" if lost and col == "score" else "")

        name = str(g["score_name"].iloc[0])
        fmt = ".2f" if name == "acc" else ".3f"
        rows.append([str(key[0]), str(key[1]), str(int(key[2])), str(key[3]),
                     "yes" if key[4] else "no", "acc (%)" if name == "acc" else "R²",
                     *[at(p, "score", fmt) for p in APPROX_PHASES],
                     at("swapped", "dist_identity"), at("finetuned", "dist_identity"),
                     at("before", "branch_lipschitz"), at("swapped", "branch_lipschitz"),
                     at("finetuned", "branch_lipschitz"),
                     str(int(g["n_total"].max()))])  # fmt: skip
    note = (
        "The seed codebase's open experiment: nets trained with identity skips, each "
        "non-transition block's skip replaced by the orthogonal W_i closest to the block on the "
        "metrics probe (orthogonal Procrustes, det +1), frozen (orth_fixed) or learnable "
        "(orth_learned); corr.: the branch gets a parallel linear layer initialised to I − W_i "
        "so that the swapped net computes the same function. Test score (accuracy in %, or R²) "
        "before the swap, right after it, and after fine-tuning with the cell's own recipe; "
        "‖W − I‖_F/√n and the lower bound on Lip(F′_i) (branch_lipschitz, max), each the mean "
        "over swapped blocks; mean ± std over seeds that did not diverge (k div.: k seeds "
        "whose fine-tuning, or the trained cell, diverged; diverged (k): all of them)."
    )
    return TextTable(header, rows, set(), note, "llrlll" + "r" * 9)


TABLES: dict[str, Callable[[Path], TextTable]] = {
    "accuracy": accuracy_table,
    "paired_vs_identity": paired_table,
    "identity_rate": identity_rate_table,
    "start_end_distance": start_end_distance_table,
    "orthogonal_approximation": orthogonal_approximation_table,
}


def make_table(name: str, metrics_dir: Path, out_md: Path, out_tex: Path) -> None:
    """Compute table ``name`` from ``metrics_dir/*.parquet``; write Markdown and LaTeX."""
    if name not in TABLES:
        raise ConfigError(f"table {name!r} is unknown; allowed: {', '.join(TABLES)}")
    table = TABLES[name](Path(metrics_dir))
    write_text(out_md, render_markdown(table))
    write_text(out_tex, render_latex(table))


def _fmt_p(p: float) -> str:
    return _p_text(p) if np.isfinite(p) else "n/a"


def _rate_lines(layers: pd.DataFrame, ds: str, arch: str) -> list[str]:
    lines = []
    for quantity, (_, _, label) in RATE_QUANTITIES.items():
        f = identity_rate_frame(layers, quantity)
        f = f[(f["dataset"] == ds) & (f["arch"] == arch)]
        for _, r in f.iterrows():
            if not r["best"]:
                lines.append(f"- {label}, {r['variant']}: too few depths (m ≥ 2) to compare")
                continue
            ci = (f" [{r['exponent_lo']:.2f}, {r['exponent_hi']:.2f}]"
                  if np.isfinite(r["exponent_lo"]) else " (no CI: one seed)")  # fmt: skip
            lines.append(
                f"- {label}, {r['variant']}: best {RATE_MODEL_LABELS[r['best']]} "
                f"(ΔAIC to the runner-up {r['margin']:.1f}); a = {r['exponent']:.2f}{ci}; "
                f"m = {int(r['m_min'])}–{int(r['m_max'])}, {int(r['n_seeds'])} seeds"
            )
    return lines or ["- no learned orthogonal or linear skips in this setting"]


def _p_eq(p: float) -> str:
    text = _fmt_p(p)
    return f"p < {text[1:]}" if text.startswith("<") else f"p = {text}"


def _start_lines(layers: pd.DataFrame, ds: str, arch: str) -> list[str]:
    """Learned kinds only (D.RATE_KINDS): a frozen orth_fixed cannot move."""
    f = start_end_frame(layers)
    f = f[(f["dataset"] == ds) & (f["arch"] == arch) & f["far_start"]
          & f["skip"].isin(D.RATE_KINDS)]  # fmt: skip
    if f.empty:
        return ["- no learned skip starts far from I (no Haar start) in this setting"]
    lines = []
    for variant, g in f.groupby("variant", sort=True):
        parts, moved = [], 0
        for _, r in g.iterrows():
            toward = bool(r["diff"] < 0 and np.isfinite(r["p_value"]) and r["p_value"] < 0.05)
            moved += toward
            verdict = "toward I" if toward else "no significant move toward I"
            parts.append(f"m = {int(r['m'])}: {r['start']:.3f} → {r['end']:.3f} "
                         f"({_p_eq(r['p_value'])}, {verdict})")  # fmt: skip
        lines.append(f"- {variant}: moves toward I at {moved} of {len(parts)} depths; "
                     + "; ".join(parts))  # fmt: skip
    return lines


def _diverged_counts(cells: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, arch, depth, variant): seeds that diverged (``div``) and seeds (``n``)."""
    c = D.with_variant(cells).assign(_div=D.diverged(cells))
    return c.groupby([*ROW_KEYS, "variant"]).agg(div=("_div", "sum"), n=("_div", "size"))


def _accuracy_lines(cells: pd.DataFrame, ds: str, arch: str) -> list[str]:
    """Significant / not significant among the comparisons with a test (≥ 2 seed pairs, Holm
    over those); the rest "not tested", with why: divergence of either side, or too few
    seeds. A diverged run has no accuracy, so "not significant" would claim a test that
    was never made."""
    ref = D.reference_variants(cells).get((ds, arch))
    if cells.empty or ref is None:
        return ["- no identity variant to compare with"]
    f = paired_frame(cells)
    f = f[(f["dataset"] == ds) & (f["arch"] == arch)].copy()
    if f.empty:
        return ["- no paired comparisons"]
    counts = _diverged_counts(cells)
    regression = bool(D.is_regression(cells[cells["dataset"] == ds]).any())
    unit, prec = ("R²", 3) if regression else ("pp", 2)
    f["p_holm"] = holm(f["p_value"].to_numpy(dtype=float))  # NaN (no test) is not counted
    f = f.assign(_o=f["variant"].map(_variant_order(f))).sort_values(["_o", "depth"])
    tested = np.isfinite(f["p_value"].to_numpy(dtype=float))
    sig = f[tested & (f["p_holm"] < 0.05).to_numpy()]
    rest = f[tested & ~(f["p_holm"] < 0.05).to_numpy()]
    untested = f[~tested]

    def diverged(r: pd.Series) -> list[str]:
        out = []
        for variant in (r["variant"], ref):
            key = (r["dataset"], r["arch"], r["depth"], variant)
            if key in counts.index and counts.loc[key, "div"]:
                div, n = (int(counts.loc[key, c]) for c in ("div", "n"))
                out.append(f"{variant} {div} of {n} seed{'s' if n > 1 else ''}")
        return out

    def item(r: pd.Series) -> str:
        lost = diverged(r)
        left_out = f"; diverged, left out: {', '.join(lost)}" if lost else ""
        return (f"{r['variant']} at depth {int(r['depth'])}: {r['mean_diff']:+.{prec}f} {unit} "
                f"(Holm {_p_eq(r['p_holm'])}, {int(r['n_pairs'])} pairs{left_out})")  # fmt: skip

    def why_not(r: pd.Series) -> str:
        lost = diverged(r)
        if lost:
            return f"{r['variant']} at depth {int(r['depth'])} (diverged: {', '.join(lost)})"
        n = int(r["n_pairs"])
        return f"{r['variant']} at depth {int(r['depth'])} ({n} seed pair{'s' * (n != 1)}: no test)"

    lines = [f"- significant ({len(sig)} of {int(tested.sum())}): "
             + ("; ".join(item(r) for _, r in sig.iterrows()) or "none")]  # fmt: skip
    lines.append(f"- not significant ({len(rest)}): "
                 + ("; ".join(item(r) for _, r in rest.iterrows()) or "none"))  # fmt: skip
    if len(untested):
        lines.append(f"- not tested ({len(untested)}): "
                     + "; ".join(why_not(r) for _, r in untested.iterrows()))  # fmt: skip
    return lines


def _approx_lines(approx: pd.DataFrame, ds: str, arch: str) -> list[str]:
    """The orthogonal_approximation headline per (kind, correction): the test score before
    the swap → right after → after fine-tuning, and mean ‖W_i − I‖_F/√n at the swap → after
    fine-tuning, per depth; then how ‖W − I‖ at the swap scales with the swapped blocks m."""
    if approx.empty:
        return []
    a = approx[(approx["dataset"] == ds) & (approx["arch"] == arch)]
    f = orthogonal_approximation_frame(a)
    if f.empty:
        return []
    lines = []
    for (kind, corr), g in f.groupby(["kind", "correction"], sort=True):
        name = str(g["score_name"].iloc[0])
        label, fmt = ("acc (%)", ".2f") if name == "acc" else ("R²", ".3f")
        rows = a[(a["kind"] == kind) & (a["correction"] == corr)]
        epochs = sorted(set(rows.loc[rows["phase"] == "finetuned", "finetune_epochs"]))
        parts = []
        for depth, h in g.groupby("depth", sort=True):
            h = h.set_index("phase")

            def val(phase: str, col: str, f: str, h=h) -> str:
                return _num(h.loc[phase, f"{col}_mean"], f) if phase in h.index else "–"

            scores = " → ".join(val(p, "score", fmt) for p in APPROX_PHASES)
            notes = []
            for p in APPROX_PHASES:
                if p not in h.index:
                    continue
                r, n = h.loc[p], int(h.loc[p, "n_total"])
                if r["n_source_diverged"] and p == "before":
                    notes.append(f"the trained cell diverged in {int(r['n_source_diverged'])} "
                                 f"of {n} seeds")  # fmt: skip
                if r["n_diverged"]:
                    notes.append(f"fine-tuning diverged in {int(r['n_diverged'])} of {n} seeds")
            note = f" ({'; '.join(notes)})" if notes else ""
            parts.append(f"depth {int(depth)}: {label} {scores}; ‖W − I‖ "
                         f"{val('swapped', 'dist_identity', '.3f')} → "
                         f"{val('finetuned', 'dist_identity', '.3f')}{note}")  # fmt: skip
        how = "with" if corr else "without"
        lines.append(f"- {kind}, {how} branch correction, {'/'.join(map(str, epochs)) or '–'} "
                     "fine-tuning epochs: " + "; ".join(parts))  # fmt: skip
    swapped = a[(a["phase"] == "swapped") & (a["status"] == "ok")]
    swapped = swapped.drop_duplicates(["depth", "seed", "correction"])  # W_i: the same per kind
    fit = loglog_slope(swapped["n_swapped"], swapped["dist_identity"])
    if np.isfinite(fit.slope):
        ci = f" [{fit.lo:.2f}, {fit.hi:.2f}]" if np.isfinite(fit.lo) else ""
        ms = sorted(int(m) for m in swapped["n_swapped"].unique())
        lines.append(f"- mean ‖W − I‖_F/√n at the swap vs m (swapped blocks, m = {ms[0]}–"
                     f"{ms[-1]}, {fit.n} cells): log–log slope {fit.slope:.2f}{ci} "
                     f"(log m / m over these m: {log_m_over_m_slope(ms):.2f})")  # fmt: skip
    return lines


def findings_markdown(metrics_dir: Path) -> str:
    """results/tables/findings.md: per setting (dataset, arch) the best rate model with its
    margin and the exponent's interval, whether starts far from I (Haar) move toward I, and
    which test-accuracy differences vs identity are significant after Holm's correction
    (the family: every paired comparison of the setting that has a test; those without one,
    e.g. because a side diverged, are listed as not tested), and the orthogonal
    approximation's headline numbers where approx.parquet has rows for the setting."""
    metrics_dir = Path(metrics_dir)
    layers = D.read_table(metrics_dir, "layers")
    cells = D.read_table(metrics_dir, "cells")
    approx = D.read_table(metrics_dir, "approx")
    keys = set()
    for df in (layers, cells, approx):
        if not df.empty:
            keys |= set(map(tuple, df[["dataset", "arch"]].drop_duplicates().to_numpy()))
    out = ["# Findings", "",
           "Regenerated from the aggregated results (results/metrics/*.parquet) by the "
           "findings rule; every number below comes from the tables identity_rate, "
           "paired_vs_identity and orthogonal_approximation and the start/end distances of "
           "layers.parquet.", ""]  # fmt: skip
    if not keys:
        return "\n".join([*out, "No results in this run.", ""])
    for ds, arch in sorted(keys):
        out += [f"## {ds} / {arch}", "", "Rate vs blocks m (least squares on log values, AIC):"]
        out += _rate_lines(layers, ds, arch) if not layers.empty else ["- no layer metrics"]
        out += ["", f"Starts far from I (epoch-0 ‖Q − I‖_F/√n > {FAR_START}; Haar: ≈ √2), "
                "start → end, paired t-test over seeds:"]  # fmt: skip
        out += _start_lines(layers, ds, arch) if not layers.empty else ["- no layer metrics"]
        score = D.score_name(cells[cells["dataset"] == ds]) if not cells.empty else "test score"
        out += ["", f"Last-epoch {score} vs identity (paired on seed, Holm-corrected "
                "within the setting, α = 0.05):"]  # fmt: skip
        out += _accuracy_lines(cells, ds, arch)
        lines = _approx_lines(approx, ds, arch)
        if lines:
            out += ["", "Orthogonal approximation of the identity nets (test score before the "
                    "swap → right after → after fine-tuning, mean over seeds; mean ‖W_i − I‖_F/√n "
                    "at the swap → after fine-tuning):"]  # fmt: skip
            out += lines
        out.append("")
    return "\n".join(out)


def write_findings(metrics_dir: Path, out: Path) -> None:
    write_text(out, findings_markdown(Path(metrics_dir)))


__all__ = [
    "TABLES",
    "TextTable",
    "findings_markdown",
    "make_table",
    "render_latex",
    "render_markdown",
    "write_findings",
]
