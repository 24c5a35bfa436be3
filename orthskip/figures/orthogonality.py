"""Figure 3: distance of the skip matrices to the identity, per block and vs depth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.lines import Line2D
from matplotlib.ticker import NullLocator

from orthskip.figures import data as D
from orthskip.figures import style as S
from orthskip.stats import log_m_over_m_slope, loglog_slope, summarize

TITLE = "Distance of the skip to the identity, ‖Q − I‖₂"


def _per_block(ax, rows, layers_panel) -> None:
    """Mean over seeds of ‖Q − I‖₂ per block, one line per depth; transitions hollow."""
    depths = sorted(rows["depth"].unique())
    cmap = colormaps["viridis"]
    for n, depth in enumerate(depths):
        color = cmap(0.85 * n / max(1, len(depths) - 1))
        rd = rows[rows["depth"] == depth]
        per_block = rd.assign(_b=D.block_index(rd)).groupby("_b")["value"].mean()
        trans = D.transition_blocks(layers_panel[layers_panel["depth"] == depth])
        x = per_block.index.to_numpy(dtype=float)
        y = per_block.to_numpy(dtype=float)
        ax.plot(x, y, color=color, lw=0.9, label=f"depth {depth}")
        is_t = np.isin(x, list(trans))
        ax.plot(x[~is_t], y[~is_t], "o", color=color, ms=2)
        if is_t.any():
            ax.plot(x[is_t], y[is_t], "o", mfc="white", mec=color, ms=4, mew=0.8)
    ax.set_yscale("log")
    S.plain_log_ticks(ax)
    ax.set_xlabel("block")
    ax.set_ylabel("‖Q − I‖₂")
    ax.legend(fontsize=5, handlelength=1.0, loc="best")


def _vs_depth(ax, per_cell, skip) -> None:
    """Mean ‖Q − I‖₂ vs blocks m on log–log axes with the fitted slope and references."""
    color = S.skip_color(skip)
    s = summarize(per_cell, ["m"], "value")
    m = s["m"].to_numpy(dtype=float)
    yerr = np.vstack([s["mean"] - s["ci_lo"], s["ci_hi"] - s["mean"]])
    ax.errorbar(m, s["mean"], yerr=np.nan_to_num(yerr), fmt=S.skip_marker(skip), color=color)
    fit = loglog_slope(per_cell["m"], per_cell["value"])
    grid = np.geomspace(m.min(), m.max(), 50) if len(m) else np.array([])
    if np.isfinite(fit.slope):
        y_fit = np.exp(fit.intercept) * grid**fit.slope
        ax.plot(grid, y_fit, color=color, lw=1.0)
        # references anchored to the fit at the smallest m: only the slopes are compared
        anchor = y_fit[0]
        m0 = grid[0]
        if m0 > 1:
            ax.plot(grid, anchor * (np.log(grid) / grid) / (np.log(m0) / m0), "k--", lw=0.7)
        ax.plot(grid, anchor * m0 / grid, "k:", lw=0.7)
        interval = f" [{fit.lo:.2f}, {fit.hi:.2f}]" if np.isfinite(fit.lo) else " (2 points, no CI)"
        text = f"fit slope {fit.slope:.2f}{interval}\nlog m / m: {log_m_over_m_slope(m):.2f}"
        text += "\n1/m: −1"
    else:
        text = "fewer than 2 depths: no fit"
    ax.text(0.03, 0.04, text, transform=ax.transAxes, fontsize=5.5, va="bottom")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(sorted(set(m.astype(int))), labels=[str(int(v)) for v in sorted(set(m))])
    ax.xaxis.set_minor_locator(NullLocator())
    S.plain_log_ticks(ax)
    ax.set_xlabel("blocks m")
    ax.set_ylabel("mean ‖Q − I‖₂")


def dist_identity(metrics_dir: Path):
    layers = D.read_table(metrics_dir, "layers")
    spec = D.metric(D.last_epoch(layers), "dist_identity", "spec") if not layers.empty else layers
    if spec.empty:
        return S.no_data_figure(TITLE)
    per_cell = D.dist_identity_per_cell(layers)
    rows_of_fig = []
    for title, g in D.panels(spec):
        panel_layers = layers[(layers["dataset"] == g["dataset"].iloc[0])
                              & (layers["arch"] == g["arch"].iloc[0])]  # fmt: skip
        for skip in S.ordered_skips(g["skip"].unique()):
            pc = per_cell[
                (per_cell["dataset"] == g["dataset"].iloc[0])
                & (per_cell["arch"] == g["arch"].iloc[0])
                & (per_cell["skip"] == skip)
            ]
            rows_of_fig.append((title, skip, g[g["skip"] == skip], panel_layers, pc))
    fig, axes = S.new_figure(len(rows_of_fig), 2, height=1.5 * len(rows_of_fig) + 0.4)
    for r, (title, skip, rows, panel_layers, pc) in enumerate(rows_of_fig):
        _per_block(axes[r, 0], rows, panel_layers)
        _vs_depth(axes[r, 1], pc, skip)
        for ax in axes[r]:
            ax.set_title(f"{title}: {S.skip_label(skip)}", color=S.skip_color(skip))
    handles = [
        Line2D([], [], color="0.3", marker="o", mfc="white", ls="", label="transition block"),
        Line2D([], [], color="k", ls="-", label="fit (95 % CI of slope)"),
        Line2D([], [], color="k", ls="--", label="O(log m / m), seeds/000"),
        Line2D([], [], color="k", ls=":", label="1/m"),
    ]
    S.figure_legend(fig, handles, ncols=2)
    fig.suptitle(TITLE + "\nat the last snapshot; mean over seeds")
    return fig
