"""One matplotlib style for every figure, one fixed colour per skip kind, and per variant
(a named kind + config overrides) the kind's colour with a marker of its own.

Sizes are for a single-column paper figure (3.4 in wide) so that the 7–8 pt text
stays legible when printed; the PNG for the report is the same figure at 200 dpi.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are built in batch jobs

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator

from orthskip.io import atomic_path
from orthskip.nn.skip_kinds import KINDS

COLUMN_WIDTH_IN = 3.4
PAGE_WIDTH_IN = 7.0
MAX_HEIGHT_IN = 9.0  # a printed page less its margins and caption
PANEL_HEIGHT_IN = 1.9
MAX_TICK_LABELS = 5  # per log axis: more of them collide at 6 pt in a 1.5-in panel
PNG_DPI = 200

# Markers and line styles for every variant that is not a bare kind, taken in turn across the
# variants of one figure (not per kind): two variants in one panel never share a marker or a
# line style, e.g. rate_linear and rate_orth_learned_haar; none of them is a kind's marker or
# line style, nor the "X" of a diverged run.
VARIANT_MARKERS: tuple[str, ...] = ("*", "h", "p", "d", "H", "8")
VARIANT_LINESTYLES: tuple[tuple, ...] = (
    (0, (4, 1.5)),
    (0, (1, 2)),
    (0, (7, 1.5, 1, 1.5)),
    (0, (2, 1, 2, 3)),
    (0, (8, 1)),
    (0, (4, 1, 1, 1, 1, 1, 1, 1)),
)

UNKNOWN_COLOR = "#7F7F7F"
NO_DATA_TEXT = "no data for this figure in this run"

RC = {
    "font.size": 7,
    "axes.titlesize": 7,
    "axes.labelsize": 7,
    "xtick.labelsize": 6,
    "ytick.labelsize": 6,
    "legend.fontsize": 6,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.4,
    "lines.linewidth": 1.0,
    "lines.markersize": 3,
    "errorbar.capsize": 1.5,
    # no bbox="tight": constrained layout already keeps titles and legends inside, and
    # "tight" costs an extra draw of every figure
    "pdf.fonttype": 42,  # embed TrueType: text stays editable/searchable in the PDF
    "ps.fonttype": 42,
    "figure.dpi": 100,
    "font.family": "DejaVu Sans",
}


# Order, colour, marker, line style and label of each skip kind: its registry entry
# (orthskip.nn.skip_kinds, torch-free), read at every call so that a kind registered later
# draws like the others.
def skip_order() -> tuple[str, ...]:
    """Every registered kind, in registry order: baselines first, then the orthogonal ones."""
    return tuple(KINDS)


def skip_color(skip: str) -> str:
    return KINDS[skip].color if skip in KINDS else UNKNOWN_COLOR


def skip_marker(skip: str) -> str:
    return KINDS[skip].marker if skip in KINDS else "x"


def skip_linestyle(skip: str) -> str | tuple:
    return KINDS[skip].linestyle if skip in KINDS else "-"


def skip_label(skip: str) -> str:
    return KINDS[skip].label if skip in KINDS else skip


def ordered_skips(skips: Iterable[str]) -> list[str]:
    """Registered kinds in registry order, then any others (results of a kind no longer
    registered) alphabetically."""
    present = set(skips)
    known = [s for s in KINDS if s in present]
    return known + sorted(present - set(KINDS))


def ordered_variants(kinds: Mapping[str, str]) -> list[str]:
    """Variants (keys; values are their kinds) by their kind's order, then by name."""
    rank = {s: k for k, s in enumerate(ordered_skips(kinds.values()))}
    return sorted(kinds, key=lambda v: (rank[kinds[v]], v))


@dataclass(frozen=True)
class VariantStyle:
    variant: str
    skip: str
    color: str  # always the kind's colour
    marker: str
    label: str
    bare: bool  # the variant is the kind itself
    linestyle: str | tuple = "-"

    def line(self) -> dict:
        """Keyword arguments of ``ax.plot`` for a line with markers in this style."""
        return {"color": self.color, "marker": self.marker, "ls": self.linestyle}


def variant_styles(kinds: Mapping[str, str]) -> dict[str, VariantStyle]:
    """Style per variant: the kind's colour; the bare kind its marker, line style and label,
    every other variant the next unused of VARIANT_MARKERS and VARIANT_LINESTYLES (in kind
    order, then name order) and its own name."""
    out: dict[str, VariantStyle] = {}
    n_extra = 0
    for v in ordered_variants(kinds):
        skip = kinds[v]
        if v == skip:
            out[v] = VariantStyle(v, skip, skip_color(skip), skip_marker(skip), skip_label(skip),
                                  True, skip_linestyle(skip))  # fmt: skip
            continue
        marker = VARIANT_MARKERS[n_extra % len(VARIANT_MARKERS)]
        ls = VARIANT_LINESTYLES[n_extra % len(VARIANT_LINESTYLES)]
        n_extra += 1
        out[v] = VariantStyle(v, skip, skip_color(skip), marker, v, False, ls)
    return out


def variant_handles(styles: Mapping[str, VariantStyle], variants: Iterable[str] | None = None):
    """Legend handles (colour, marker, line style, label) for the given variants (default
    all), in order."""
    from matplotlib.lines import Line2D  # the table jobs read this module without matplotlib

    keep = set(styles if variants is None else variants)
    return [Line2D([], [], **st.line(), label=st.label) for v, st in styles.items() if v in keep]


@contextlib.contextmanager
def style() -> Iterator[None]:
    with plt.rc_context(RC):
        yield


def new_figure(
    nrows: int = 1,
    ncols: int = 1,
    height: float | None = None,
    width: float = COLUMN_WIDTH_IN,
    **kw,
):
    """Figure of column (default) or page width with ``nrows × ncols`` panels (axes always
    2-D), never taller than a page: a caller that asks for more gets MAX_HEIGHT_IN."""
    h = height if height is not None else PANEL_HEIGHT_IN * nrows
    return plt.subplots(nrows, ncols, figsize=(width, min(h, MAX_HEIGHT_IN)), squeeze=False,
                        layout="constrained", **kw)  # fmt: skip


def block_axis(ax) -> None:
    """x axis of block numbers: whole numbers only (no 2.5th block), a handful of them."""
    ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
    ax.set_xlabel("block")


def depth_axis(ax, values: Iterable[float], axis: str = "x") -> None:
    """Log-scaled axis of depths or block counts, labelled with at most MAX_TICK_LABELS of
    the values that were run (every k-th, the smallest always among them); the others keep
    an unlabelled tick. 2…256 gives 2, 8, 32, 128 where all eight labels would collide."""
    # the table jobs read this module without matplotlib
    from matplotlib.ticker import FixedLocator, NullFormatter

    vals = sorted({int(v) for v in values if v > 0})
    if not vals:
        return
    target = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    step = -(-len(vals) // MAX_TICK_LABELS)  # ceil
    major = vals[::step]
    target.set_major_locator(FixedLocator(major))
    target.set_minor_locator(FixedLocator([v for v in vals if v not in major]))
    target.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:.0f}"))
    target.set_minor_formatter(NullFormatter())
    lo, hi = vals[0], vals[-1]
    pad = 1.2 if hi > lo else 1.5
    (ax.set_xlim if axis == "x" else ax.set_ylim)(lo / pad, hi * pad)


def no_data_figure(title: str, reason: str = NO_DATA_TEXT) -> Figure:
    fig, axes = new_figure(1, 1, height=1.2)
    ax = axes[0, 0]
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.5, reason, ha="center", va="center", transform=ax.transAxes, wrap=True)
    return fig


def pdf_metadata() -> dict[str, str | None]:
    """PDF info without a wall-clock date, so that the same figure gives the same bytes.

    With SOURCE_DATE_EPOCH set, matplotlib stamps that date instead (reproducible builds);
    otherwise CreationDate is left out. Producer/Creator are fixed strings.
    """
    meta: dict[str, str | None] = {"Creator": "orthskip", "Producer": "orthskip (matplotlib)"}
    if not os.environ.get("SOURCE_DATE_EPOCH"):
        meta["CreationDate"] = None
    return meta


PNG_METADATA = {"Software": "orthskip (matplotlib)"}


def save_figure(fig: Figure, out_pdf: Path, out_png: Path) -> None:
    """Vector PDF and PNG, each written atomically and byte-reproducibly; closes the figure."""
    try:
        with atomic_path(out_pdf) as tmp:
            fig.savefig(tmp, format="pdf", metadata=pdf_metadata())
        with atomic_path(out_png) as tmp:
            fig.savefig(tmp, format="png", dpi=PNG_DPI, metadata=PNG_METADATA)
    finally:
        plt.close(fig)


LEGEND_HANDLE_EM = 2.6  # handle length: long enough to tell the dash patterns apart


def legend_columns(labels: Iterable[str], width_in: float, fontsize: float = 6.0) -> int:
    """How many legend columns of these labels fit across ``width_in`` (an estimate from the
    longest label: a DejaVu character is ~0.6 em wide; handle, pad and spacing ~5 em)."""
    labels = list(labels)
    if not labels:
        return 1
    em_in = fontsize / 72.0
    col_in = (0.6 * max(len(t) for t in labels) + LEGEND_HANDLE_EM + 2.6) * em_in
    return max(1, min(len(labels), int(0.95 * width_in / col_in)))


def figure_legend(fig: Figure, handles: list, ncols: int | None = None) -> None:
    """One legend for the whole figure, below the panels, in as many columns as fit its width
    (``ncols`` is an upper bound): a legend wider than the figure is cut by its edge."""
    # rcParams may hold a relative size ("medium") outside style(): in points, as drawn
    points = FontProperties(size=plt.rcParams["legend.fontsize"]).get_size_in_points()
    fit = legend_columns([h.get_label() for h in handles], fig.get_figwidth(), points)
    n = fit if ncols is None else min(ncols, fit)
    fig.legend(handles=handles, loc="outside lower center", ncols=n,
               handlelength=LEGEND_HANDLE_EM)  # fmt: skip


# leading digits of the labelled minor ticks of a log axis, densest first, with the smallest
# gap (in decades) between two neighbouring labels of each set, the decade ticks included
MINOR_LABEL_SETS: tuple[tuple[tuple[int, ...], float], ...] = (
    ((2, 3, 4, 5, 6, 7, 8, 9), math.log10(10 / 9)),
    ((2, 3, 5, 7), math.log10(7 / 5)),
    ((2, 5), math.log10(2)),
    ((3,), math.log10(10 / 3)),
)


def _minor_digits(decades: float, length_pt: float, label_pt: float) -> tuple[int, ...]:
    """The densest set of minor-tick digits whose labels stay ``label_pt`` apart on an axis
    ``length_pt`` long spanning ``decades``: more would collide, fewer leave it bare."""
    if decades <= 0 or decades >= 2.5:
        return ()
    per_decade = length_pt / decades
    for digits, gap in MINOR_LABEL_SETS:
        if gap * per_decade >= label_pt:
            return digits
    return ()


NARROW_DECADES = 0.5  # a log axis spanning less: decade and 2…9 ticks leave it unlabelled


def _narrow(lo: float, hi: float) -> bool:
    return 0 < lo < hi and math.log10(hi / lo) < NARROW_DECADES


class _PlainLogLocator(LogLocator):
    """Decade ticks as LogLocator; on an axis narrower than NARROW_DECADES round linear steps
    instead (0.8, 1, 1.2, 1.4), where 2…9 × 10^k would leave most of it unlabelled."""

    def tick_values(self, vmin, vmax):
        if _narrow(min(vmin, vmax), max(vmin, vmax)):
            lo, hi = min(vmin, vmax), max(vmin, vmax)
            ticks = MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi)
            return ticks[ticks > 0]
        return super().tick_values(vmin, vmax)


def plain_log_ticks(ax, axis: str = "y") -> None:
    """Log-axis tick labels as plain numbers (0.3, 10, 1e+04) instead of 3×10⁻¹.

    Minor ticks are labelled when the axis spans few decades, as densely as the axis length
    allows without two labels touching (``_minor_digits``), where the decade ticks alone
    would leave it bare.
    """
    target = ax.yaxis if axis == "y" else ax.xaxis
    lim = ax.get_ylim if axis == "y" else ax.get_xlim

    def plain(v: float) -> str:
        if 1 <= v < 1e5 and float(v).is_integer():
            return f"{v:.0f}"  # 10000, not the 1e+04 of .4g
        return f"{v:.4g}" if 1e-3 <= v < 1e5 else f"{v:.0e}"

    def major(v, _pos):
        return plain(v)

    def minor(v, _pos):
        lo, hi = sorted(lim())
        if not (lo > 0 and v > 0) or _narrow(lo, hi):  # narrow: the major steps say it all
            return ""
        box = ax.get_window_extent()
        length_pt = (box.height if axis == "y" else box.width) * 72.0 / ax.figure.dpi
        ticks = target.get_major_ticks()
        size = ticks[0].label1.get_fontsize() if ticks else 6.0
        # vertical labels need their height apart, horizontal ones their width (~4 digits)
        label_pt = 1.6 * size if axis == "y" else 2.6 * size
        lead = round(v / 10 ** math.floor(math.log10(v)))
        if lead in _minor_digits(math.log10(hi / lo), length_pt, label_pt):
            return plain(v)
        return ""

    target.set_major_locator(_PlainLogLocator())
    target.set_major_formatter(FuncFormatter(major))
    target.set_minor_formatter(FuncFormatter(minor))
