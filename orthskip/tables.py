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

from orthskip.errors import ConfigError
from orthskip.figures import data as D
from orthskip.figures.style import ordered_variants
from orthskip.io import write_text
from orthskip.stats import log_m_over_m_slope, loglog_slope, mean_ci, paired_vs_reference

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
}
# Comments are not typeset, but keep them ASCII so that any engine reads the file.
_ASCII = {"±": "+/-", "−": "-", "‖": "||", "≤": "<=", "Δ": "Delta", "₂": "_2"}


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
    ncol = len(t.header)
    align = t.align or "l" * ncol
    lines = []
    if t.note:
        lines += [f"% {_ascii(line)}" for line in t.note.splitlines()]
    lines += [rf"\begin{{tabular}}{{{align}}}", r"\toprule"]
    lines.append(" & ".join(latex_escape(h) for h in t.header) + r" \\")
    lines.append(r"\midrule")
    for r, row in enumerate(t.rows):
        cells = [
            rf"\textbf{{{latex_escape(c)}}}" if (r, k) in t.bold else latex_escape(c)
            for k, c in enumerate(row)
        ]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines)


def _md_cell(text: str) -> str:
    return str(text).replace("|", r"\|")


def render_markdown(t: TextTable) -> str:
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


def _diverged(cells: pd.DataFrame) -> np.ndarray:
    acc = pd.to_numeric(cells["test_acc"], errors="coerce").to_numpy(dtype=float)
    return (cells["status"] != "ok").to_numpy() | ~np.isfinite(acc)


def _variant_order(df: pd.DataFrame) -> dict[str, int]:
    return {v: k for k, v in enumerate(ordered_variants(D.variant_kinds(df)))}


def accuracy_frame(cells: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, arch, depth, variant): test accuracy in % at the last epoch, over the seeds
    that did not diverge (nothing is selected on the test set).

    Columns: skip (the variant's kind), mean, std (ddof=1), n (seeds that count), n_diverged,
    n_total, and mean_at_best_val: mean test accuracy at each seed's best-validation epoch
    (NaN where the results have no ``test_acc_at_best_val``).
    """
    cells = D.with_variant(cells).assign(_div=_diverged(cells))
    at_val = "test_acc_at_best_val" in cells.columns
    rows = []
    for (*key, variant, skip), g in cells.groupby([*ROW_KEYS, "variant", "skip"], sort=True):
        ok = g.loc[~g["_div"], "test_acc"].to_numpy(dtype=float) * 100.0
        s = mean_ci(ok)
        bv = mean_ci(g.loc[~g["_div"], "test_acc_at_best_val"].to_numpy(dtype=float) * 100.0)
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
        "Test accuracy (%) at the last epoch: mean ± std over seeds (n seeds that count; "
        "diverged runs, excluded from the mean). Best mean per row in bold. One column per "
        "variant (a skip kind with config overrides; a bare kind is its own variant). No "
        "epoch or model is selected on the test set."
    )
    return TextTable(header, rows, bold, note, "llr" + "r" * len(variants))


# ---------------------------------------------------------------- paired vs identity


def paired_frame(cells: pd.DataFrame, reference: str = "identity") -> pd.DataFrame:
    """Differences in last-epoch test accuracy (percentage points) of each variant against the
    ``reference`` variant, paired by seed; column ``skip`` gives each variant's kind."""
    cells = D.with_variant(cells)
    c = cells.assign(test_acc=pd.to_numeric(cells["test_acc"], errors="coerce") * 100.0)
    c.loc[_diverged(cells), "test_acc"] = np.nan
    f = paired_vs_reference(c, "test_acc", reference, ROW_KEYS, group="variant")
    kinds = D.variant_kinds(cells)
    f.insert(f.columns.get_loc("variant") + 1, "skip", f["variant"].map(kinds))
    return f


def _p_text(p: float) -> str:
    if not np.isfinite(p):
        return "–"
    return "<0.001" if p < 1e-3 else f"{p:.3f}"


def paired_table(metrics_dir: Path) -> TextTable:
    cells = D.read_table(metrics_dir, "cells")
    if cells.empty or "identity" not in set(cells["variant"]):
        return _no_data("paired comparison against identity")
    f = paired_frame(cells)
    f = f.assign(_o=f["variant"].map(_variant_order(f)))
    f = f.sort_values([*ROW_KEYS, "_o"])
    header = ["dataset", "arch", "depth", "variant", "Δ acc (pp)", "95 % CI", "p", "pairs",
              "diverged"]  # fmt: skip
    rows = []
    for _, r in f.iterrows():
        ci = f"[{r['ci_lo']:.2f}, {r['ci_hi']:.2f}]" if np.isfinite(r["ci_lo"]) else "–"
        diff = f"{r['mean_diff']:+.2f}" if np.isfinite(r["mean_diff"]) else "–"
        rows.append([str(r["dataset"]), str(r["arch"]), str(int(r["depth"])), str(r["variant"]),
                     diff, ci, _p_text(r["p_value"]), str(int(r["n_pairs"])),
                     str(int(r["n_diverged"]))])  # fmt: skip
    note = (
        "Last-epoch test accuracy of each variant minus the identity variant (percentage "
        "points), paired on seed within dataset and depth; 95 % t-interval and two-sided "
        "paired t-test p-value. "
        "Pairs with a diverged run are left out (count in the last column)."
    )
    return TextTable(header, rows, set(), note, "llrlrrrrr")


# ---------------------------------------------------------------- identity rate


def identity_rate_frame(layers: pd.DataFrame) -> pd.DataFrame:
    """Fitted exponent b of mean ‖Q − I‖_F/√n ≈ C·m^b per (dataset, arch, variant), for the
    variants whose kind is in ``D.RATE_KINDS`` only (orth_learned, orth_manifold: the learned
    skips the O(log m / m) question is about; linear: the unconstrained control).

    One point per cell (mean over its square skip matrices at the last snapshot), so the
    interval reflects the seed-to-seed scatter. ``predicted`` is the slope that the
    O(log m / m) rate of seeds/000 has when fitted over the same m.
    """
    cols = ["dataset", "arch", "variant", "skip", "slope", "ci_lo", "ci_hi", "n_points",
            "depths", "predicted"]  # fmt: skip
    if layers.empty:
        return pd.DataFrame(columns=cols)
    pc = D.dist_identity_per_cell(layers)
    pc = pc[pc["skip"].isin(D.RATE_KINDS)]
    rows = []
    for (dataset, arch, variant, skip), g in pc.groupby(
        ["dataset", "arch", "variant", "skip"], sort=True
    ):
        fit = loglog_slope(g["m"], g["value"])
        ms = sorted(int(v) for v in g["m"].unique())
        rows.append((dataset, arch, variant, skip, fit.slope, fit.lo, fit.hi, fit.n,
                     ",".join(map(str, ms)), log_m_over_m_slope(ms)))  # fmt: skip
    return pd.DataFrame(rows, columns=cols)


def identity_rate_table(metrics_dir: Path) -> TextTable:
    layers = D.read_table(metrics_dir, "layers")
    f = identity_rate_frame(layers)
    if f.empty:
        return _no_data("rate of ‖Q − I‖ vs depth")
    f = f.assign(_o=f["variant"].map(_variant_order(f)))
    f = f.sort_values(["dataset", "arch", "_o"])
    header = ["dataset", "arch", "variant", "role", "blocks m", "slope", "95 % CI",
              "log m / m", "points"]  # fmt: skip
    rows = []
    for _, r in f.iterrows():
        slope = f"{r['slope']:.3f}" if np.isfinite(r["slope"]) else "–"
        ci = f"[{r['ci_lo']:.3f}, {r['ci_hi']:.3f}]" if np.isfinite(r["ci_lo"]) else "–"
        pred = f"{r['predicted']:.3f}" if np.isfinite(r["predicted"]) else "–"
        role = "control" if r["skip"] == "linear" else "learned orth."
        rows.append([str(r["dataset"]), str(r["arch"]), str(r["variant"]), role,
                     str(r["depths"]), slope, ci, pred, str(int(r["n_points"]))])  # fmt: skip
    note = (
        "Least-squares slope of log mean ‖Q − I‖_F/√n against log m (m = residual blocks; "
        "one point per cell at its last snapshot; transition blocks excluded) with its 95 % "
        "t-interval, next to the slope of log m / m fitted over the same m (seeds/000) and "
        "−1 for a 1/m rate. Only the learned orthogonal skips (orth_learned, orth_manifold "
        "and their variants) and the unconstrained linear control are fitted: orth_fixed "
        "is frozen and the theory says nothing about the others. A single-slope fit, not a "
        "comparison of rate models."
    )
    return TextTable(header, rows, set(), note, "llllrrrrr")


TABLES: dict[str, Callable[[Path], TextTable]] = {
    "accuracy": accuracy_table,
    "paired_vs_identity": paired_table,
    "identity_rate": identity_rate_table,
}


def make_table(name: str, metrics_dir: Path, out_md: Path, out_tex: Path) -> None:
    """Compute table ``name`` from ``metrics_dir/*.parquet``; write Markdown and LaTeX."""
    if name not in TABLES:
        raise ConfigError(f"table {name!r} is unknown; allowed: {', '.join(TABLES)}")
    table = TABLES[name](Path(metrics_dir))
    write_text(out_md, render_markdown(table))
    write_text(out_tex, render_latex(table))


__all__ = ["TABLES", "TextTable", "make_table", "render_latex", "render_markdown"]
