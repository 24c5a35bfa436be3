"""Figure 3: distance of the skip matrices to the identity, per block and vs depth.

The distance is ‖Q − I‖_F/√n (``results.DIST_STAT``): the spectral ‖Q − I‖₂ saturates at 2 for
any Haar-like Q and cannot show a Haar start moving toward I.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from orthskip import results
from orthskip.analysis.stats import (
    RATE_MODEL_LABELS,
    RATE_MODELS,
    compare_rate_models,
    log_m_over_m_slope,
    loglog_slope,
    rate_model_curve,
    summarize,
)
from orthskip.figures import style as S

DIST_LABEL = "‖Q − I‖_F / √n"
TITLE = f"Distance of the skip to the identity, {DIST_LABEL}"


def _per_block(ax, rows, layers_panel) -> None:
    """Mean over seeds per block with its 95 % t-band, one line per depth; transitions hollow."""
    depths = sorted(rows["depth"].unique())
    cmap = colormaps["viridis"]
    for n, depth in enumerate(depths):
        color = cmap(0.85 * n / max(1, len(depths) - 1))
        rd = rows[rows["depth"] == depth]
        s = summarize(rd.assign(_b=results.block_index(rd)), ["_b"], "value")
        trans = results.transition_blocks(layers_panel[layers_panel["depth"] == depth])
        x = s["_b"].to_numpy(dtype=float)
        y = s["mean"].to_numpy(dtype=float)
        ax.plot(x, y, color=color, lw=0.9, label=f"depth {depth}")
        lo, hi = s["ci_lo"].to_numpy(dtype=float), s["ci_hi"].to_numpy(dtype=float)
        band = np.isfinite(lo) & np.isfinite(hi) & (lo > 0)  # log axis: positive part only
        if band.any():
            ax.fill_between(x, np.where(band, lo, np.nan), np.where(band, hi, np.nan),
                            color=color, alpha=0.2, lw=0)  # fmt: skip
        is_t = np.isin(x, list(trans))
        if len(x) <= 40:  # a dot per block; on hundreds of blocks they merge into a smear
            ax.plot(x[~is_t], y[~is_t], "o", color=color, ms=2)
        if is_t.any():
            ax.plot(x[is_t], y[is_t], "o", mfc="white", mec=color, ms=4, mew=0.8)
    ax.set_yscale("log")
    S.plain_log_ticks(ax)
    S.block_axis(ax)
    ax.set_ylabel(DIST_LABEL)
    # beside the panel, not on the lines: up to eight depths would cover them
    ax.legend(handlelength=1.2, loc="center left", bbox_to_anchor=(1.01, 0.5),
              ncols=2 if len(depths) > 5 else 1, columnspacing=0.8)  # fmt: skip


# line style of each rate model's fitted curve (the best one drawn thicker)
MODEL_STYLE = {"log_m_over_m": "--", "inv_m": ":", "power": "-", "constant": "-."}


def _model_curves(ax, per_cell, color) -> str:
    """Overlay the four fitted rate models and the power law's exponent interval; return the
    text that states the best model, its margin and a."""
    cmp = compare_rate_models(per_cell["m"], per_cell["value"], per_cell["seed"])
    if not cmp.best:
        return "too few points (m ≥ 2) to compare rate models"
    grid = np.geomspace(cmp.m_min, cmp.m_max, 60)
    for name in RATE_MODELS:
        lw = 1.4 if name == cmp.best else 0.7
        y = rate_model_curve(name, cmp.fits[name], grid)
        ax.plot(grid, y, color="k" if name != "power" else color, ls=MODEL_STYLE[name], lw=lw)
    if np.isfinite(cmp.exponent_lo):
        # a ∈ [lo, hi] pivoting at the fit's centre (geometric mean of m, mean of log y): the
        # exponent's seed-bootstrap interval drawn as a fan
        pts = per_cell[(per_cell["m"] >= 2) & (per_cell["value"] > 0)]
        lm0 = float(np.log(pts["m"].to_numpy(dtype=float)).mean())
        ly0 = float(np.log(pts["value"].to_numpy(dtype=float)).mean())
        fan = [np.exp(ly0 - a * (np.log(grid) - lm0)) for a in (cmp.exponent_lo, cmp.exponent_hi)]
        ax.fill_between(grid, np.minimum(*fan), np.maximum(*fan), color=color, alpha=0.15, lw=0)
        a_text = f"a = {cmp.exponent:.2f} [{cmp.exponent_lo:.2f}, {cmp.exponent_hi:.2f}]"
    else:
        a_text = f"a = {cmp.exponent:.2f} (one seed: no CI)"
    return f"best: {RATE_MODEL_LABELS[cmp.best]} (ΔAIC {cmp.margin:.1f})\n{a_text}"


def _vs_depth(ax, per_cell, st: S.VariantStyle) -> None:
    """Mean distance vs blocks m (log–log) with 95 % t-intervals; the fitted rate models and
    the slope only for the kinds the rate question is about (results.RATE_KINDS)."""
    s = summarize(per_cell, ["m"], "value")
    m = s["m"].to_numpy(dtype=float)
    yerr = np.vstack([s["mean"] - s["ci_lo"], s["ci_hi"] - s["mean"]])
    ax.errorbar(m, s["mean"], yerr=np.nan_to_num(yerr), fmt=st.marker, color=st.color, ms=3)
    fit = loglog_slope(per_cell["m"], per_cell["value"])
    if st.skip not in results.RATE_KINDS:
        text = "no rate fit (not a kind\nthe rate question covers)"
    elif np.isfinite(fit.slope):
        interval = f" [{fit.lo:.2f}, {fit.hi:.2f}]" if np.isfinite(fit.lo) else " (2 points, no CI)"
        text = f"fit slope {fit.slope:.2f}{interval}\nlog m / m: {log_m_over_m_slope(m):.2f}"
        text += "\n" + _model_curves(ax, per_cell, st.color)
    else:
        text = "fewer than 2 depths: no fit"
    # right of the panel, not on the data (constrained layout makes room for it)
    ax.text(1.04, 0.5, text, transform=ax.transAxes, fontsize=6, va="center", ha="left")
    ax.set_yscale("log")
    S.plain_log_ticks(ax)
    S.depth_axis(ax, m)
    ax.set_xlabel("blocks m")
    ax.set_ylabel(f"mean {DIST_LABEL}")


def dist_identity(metrics_dir: Path):
    layers = results.read_table(metrics_dir, "layers")
    dist = (
        results.metric(results.last_epoch(layers), "dist_identity", results.DIST_STAT)
        if not layers.empty
        else layers
    )
    if dist.empty:
        return S.no_data_figure(TITLE)
    styles = S.variant_styles(results.variant_kinds(dist))
    per_cell = results.dist_identity_per_cell(layers)
    rows_of_fig = []
    for title, g in results.panels(dist):
        ds, arch = g["dataset"].iloc[0], g["arch"].iloc[0]
        panel_layers = layers[(layers["dataset"] == ds) & (layers["arch"] == arch)]
        for variant in [v for v in styles if v in set(g["variant"])]:
            pc = per_cell[(per_cell["dataset"] == ds) & (per_cell["arch"] == arch)
                          & (per_cell["variant"] == variant)]  # fmt: skip
            rows_of_fig.append((title, styles[variant], g[g["variant"] == variant],
                                panel_layers, pc))  # fmt: skip
    fig, axes = S.new_figure(len(rows_of_fig), 2, height=1.7 * len(rows_of_fig) + 1.2,
                             width=S.PAGE_WIDTH_IN)  # fmt: skip
    for r, (title, st, rows, panel_layers, pc) in enumerate(rows_of_fig):
        _per_block(axes[r, 0], rows, panel_layers)
        _vs_depth(axes[r, 1], pc, st)
        for ax in axes[r]:
            ax.set_title(f"{title}: {st.label}", color=st.color)
    handles = [
        Line2D([], [], color="0.3", marker="o", mfc="white", ls="", label="transition block"),
        Patch(color="0.3", alpha=0.2, label="95 % t-band over seeds"),
        Line2D([], [], color="0.3", marker="o", ls="", label="mean ± 95 % t-interval"),
        *[
            Line2D(
                [], [], color="k", ls=MODEL_STYLE[k], lw=0.8, label=f"fit {RATE_MODEL_LABELS[k]}"
            )
            for k in RATE_MODELS
        ],
        Line2D([], [], color="k", lw=1.4, label="best model (lowest AIC): thick"),
        Patch(color="0.3", alpha=0.15, label="exponent a: 95 % seed-bootstrap fan"),
    ]
    S.figure_legend(fig, handles)
    fig.suptitle(TITLE + " at the last snapshot; mean over seeds")
    return fig
