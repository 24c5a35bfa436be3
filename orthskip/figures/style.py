"""One matplotlib style for every figure, one fixed colour per skip kind, and per variant
(a named kind + config overrides) the kind's colour with a marker of its own.

Sizes are for a single-column paper figure (3.4 in wide) so that the 7–8 pt text
stays legible when printed; the PNG for the report is the same figure at 200 dpi.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are built in batch jobs

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from orthskip.io import atomic_path

COLUMN_WIDTH_IN = 3.4
PANEL_HEIGHT_IN = 1.9
PNG_DPI = 200

# Order in legends and tables: baselines first, then the orthogonal variants.
SKIP_ORDER: tuple[str, ...] = (
    "identity",
    "none",
    "linear",
    "orth_fixed",
    "orth_learned",
    "orth_manifold",
    "procrustes",
    "orth_jacobian",
)

# Okabe–Ito colour-blind-safe palette plus black; never reused for another kind.
SKIP_COLORS: dict[str, str] = {
    "identity": "#000000",
    "none": "#999999",
    "linear": "#E69F00",
    "orth_fixed": "#56B4E9",
    "orth_learned": "#009E73",
    "orth_manifold": "#0072B2",
    "procrustes": "#D55E00",
    "orth_jacobian": "#CC79A7",
}

# Markers as a second cue for grey-scale prints.
SKIP_MARKERS: dict[str, str] = {
    "identity": "o",
    "none": "s",
    "linear": "D",
    "orth_fixed": "v",
    "orth_learned": "^",
    "orth_manifold": "<",
    "procrustes": ">",
    "orth_jacobian": "P",
}

SKIP_LABELS: dict[str, str] = {
    "identity": "identity",
    "none": "none (plain)",
    "linear": "linear",
    "orth_fixed": "orth. fixed",
    "orth_learned": "orth. learned",
    "orth_manifold": "orth. manifold",
    "procrustes": "Procrustes",
    "orth_jacobian": "orth. Jacobian",
}

# Markers for the 2nd, 3rd, … variant of one kind (the bare kind keeps SKIP_MARKERS'); none
# of them is a kind's marker, nor the "X" of a diverged run.
VARIANT_MARKERS: tuple[str, ...] = ("*", "h", "p", "d", "H", "8")

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


def skip_color(skip: str) -> str:
    return SKIP_COLORS.get(skip, UNKNOWN_COLOR)


def skip_marker(skip: str) -> str:
    return SKIP_MARKERS.get(skip, "x")


def skip_label(skip: str) -> str:
    return SKIP_LABELS.get(skip, skip)


def ordered_skips(skips: Iterable[str]) -> list[str]:
    """Known kinds in SKIP_ORDER, then any others alphabetically."""
    present = set(skips)
    known = [s for s in SKIP_ORDER if s in present]
    return known + sorted(present - set(SKIP_ORDER))


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


def variant_styles(kinds: Mapping[str, str]) -> dict[str, VariantStyle]:
    """Style per variant: the kind's colour; the bare kind its marker and label, every other
    variant of that kind the next of VARIANT_MARKERS (in name order) and its own name."""
    out: dict[str, VariantStyle] = {}
    extra: dict[str, int] = {}
    for v in ordered_variants(kinds):
        skip = kinds[v]
        if v == skip:
            out[v] = VariantStyle(v, skip, skip_color(skip), skip_marker(skip), skip_label(skip),
                                  True)  # fmt: skip
            continue
        k = extra.get(skip, 0)
        extra[skip] = k + 1
        marker = VARIANT_MARKERS[k % len(VARIANT_MARKERS)]
        out[v] = VariantStyle(v, skip, skip_color(skip), marker, v, False)
    return out


def variant_handles(styles: Mapping[str, VariantStyle], variants: Iterable[str] | None = None):
    """Legend handles (colour, marker, label) for the given variants (default all), in order."""
    from matplotlib.lines import Line2D

    keep = set(styles if variants is None else variants)
    return [
        Line2D([], [], color=st.color, marker=st.marker, label=st.label)
        for v, st in styles.items()
        if v in keep
    ]


@contextlib.contextmanager
def style() -> Iterator[None]:
    with plt.rc_context(RC):
        yield


def new_figure(nrows: int = 1, ncols: int = 1, height: float | None = None, **kw):
    """Figure of single-column width with ``nrows × ncols`` panels (axes always 2-D)."""
    h = height if height is not None else PANEL_HEIGHT_IN * nrows
    return plt.subplots(
        nrows, ncols, figsize=(COLUMN_WIDTH_IN, h), squeeze=False, layout="constrained", **kw
    )


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


def skip_handles(skips: Iterable[str]) -> list:
    """Legend handles (colour and marker) for the given kinds, in SKIP_ORDER."""
    from matplotlib.lines import Line2D

    return [
        Line2D([], [], color=skip_color(s), marker=skip_marker(s), label=skip_label(s))
        for s in ordered_skips(skips)
    ]


def figure_legend(fig: Figure, handles: list, ncols: int = 3) -> None:
    """One legend for the whole figure, below the panels."""
    fig.legend(handles=handles, loc="outside lower center", ncols=ncols, handlelength=1.6)


def plain_log_ticks(ax, axis: str = "y") -> None:
    """Log-axis tick labels as plain numbers (0.3, 10, 1e+04) instead of 3×10⁻¹.

    Minor ticks are labelled when the axis spans few decades (all of them below one
    decade, 2 and 5 below 2.5), where the major ticks alone would leave it bare.
    """
    import math

    from matplotlib.ticker import FuncFormatter

    target = ax.yaxis if axis == "y" else ax.xaxis
    lim = ax.get_ylim if axis == "y" else ax.get_xlim

    def plain(v: float) -> str:
        return f"{v:.4g}" if 1e-3 <= v < 1e5 else f"{v:.0e}"

    def major(v, _pos):
        return plain(v)

    def minor(v, _pos):
        lo, hi = lim()
        if not (lo > 0 and hi > 0):
            return ""
        decades = math.log10(hi / lo)
        lead = round(v / 10 ** math.floor(math.log10(v)))
        if decades < 1.0 or (decades < 2.5 and lead in (2, 5)):
            return plain(v)
        return ""

    target.set_major_formatter(FuncFormatter(major))
    target.set_minor_formatter(FuncFormatter(minor))
