"""Figures 4 and 7: gradient-norm ratio per block over epochs, block-Jacobian spread."""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib import colormaps
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from orthskip.figures import data as D
from orthskip.figures import style as S

GNR_TITLE = "Gradient-norm ratio ‖∂E/∂x_l‖ / ‖∂E/∂x_(l+1)‖ per block"
JAC_TITLE = "Block-Jacobian singular values"


def _mark_transitions(ax, trans: set[int]) -> None:
    for b in sorted(trans):
        ax.axvspan(b - 0.4, b + 0.4, color="0.85", lw=0, zorder=0)


def grad_norm_ratio(metrics_dir: Path):
    layers = D.read_table(metrics_dir, "layers")
    gnr = D.metric(layers, "grad_norm_ratio")
    if gnr.empty:
        return S.no_data_figure(GNR_TITLE)
    groups = []
    for title, g in D.panels(gnr):
        g = D.deepest(g)
        for skip in S.ordered_skips(g["skip"].unique()):
            groups.append((title, skip, g[g["skip"] == skip]))
    ncols = 2 if len(groups) > 1 else 1
    nrows = math.ceil(len(groups) / ncols)
    fig, axes = S.new_figure(nrows, ncols, height=1.3 * nrows + 0.5, sharey=True)
    cmap = colormaps["plasma"]
    epochs_all = sorted(gnr["epoch"].unique())
    for k, (title, skip, g) in enumerate(groups):
        ax = axes.flat[k]
        g = g.assign(_b=D.block_index(g))
        _mark_transitions(ax, D.transition_blocks(g))
        epochs = sorted(g["epoch"].unique())
        for e in epochs:
            color = cmap(0.85 * epochs_all.index(e) / max(1, len(epochs_all) - 1))
            per_block = g[g["epoch"] == e].groupby("_b")["value"].apply(D.geo_mean)
            ax.plot(per_block.index, per_block.to_numpy(), color=color, lw=0.8, marker=".", ms=2)
        ax.axhline(1.0, color="k", lw=0.6, ls=":")
        ax.set_yscale("log")
        S.plain_log_ticks(ax)
        ax.set_title(f"{title} d{int(g['depth'].iloc[0])}: {S.skip_label(skip)}",
                     color=S.skip_color(skip))  # fmt: skip
        ax.set_xlabel("block")
        if k % ncols == 0:
            ax.set_ylabel("gradient-norm ratio")
    for ax in axes.flat[len(groups) :]:
        ax.set_axis_off()
    handles = [
        Line2D([], [], color=cmap(0.85 * n / max(1, len(epochs_all) - 1)), label=f"epoch {e}")
        for n, e in enumerate(epochs_all)
    ]
    handles += [
        Patch(color="0.85", label="transition block"),
        Line2D([], [], color="k", ls=":", label="norm preserved (1)"),
    ]
    S.figure_legend(fig, handles, ncols=3)
    fig.suptitle(GNR_TITLE + "\ngeometric mean over seeds")
    return fig


def jacobian_spread(metrics_dir: Path):
    layers = D.read_table(metrics_dir, "layers")
    jac = D.metric(D.last_epoch(layers), "jacobian_sv")
    if jac.empty:
        return S.no_data_figure(JAC_TITLE)
    groups = list(D.panels(jac))
    fig, axes = S.new_figure(len(groups), 1, height=1.8 * len(groups) + 0.5)
    for r, (title, g) in enumerate(groups):
        ax = axes[r, 0]
        g = D.deepest(g)
        g = g.assign(_b=D.block_index(g))
        _mark_transitions(ax, D.transition_blocks(g))
        for skip in S.ordered_skips(g["skip"].unique()):
            gs = g[g["skip"] == skip]
            color = S.skip_color(skip)
            hi = gs[gs["stat"] == "max"].groupby("_b")["value"].apply(D.geo_mean)
            lo = gs[gs["stat"] == "min"].groupby("_b")["value"].apply(D.geo_mean)
            ax.plot(hi.index, hi.to_numpy(), color=color, lw=0.9, marker=S.skip_marker(skip),
                    ms=2)  # fmt: skip
            ax.plot(lo.index, lo.to_numpy(), color=color, lw=0.9, ls="--")
        ax.axhline(1.0, color="k", lw=0.6, ls=":")
        ax.set_yscale("log")
        S.plain_log_ticks(ax)
        ax.set_title(f"{title}, depth {int(g['depth'].iloc[0])}, last snapshot")
        ax.set_xlabel("block")
        ax.set_ylabel("singular value of ∂y/∂x")
    handles = S.skip_handles(jac["skip"].unique())
    handles += [
        Line2D([], [], color="k", ls="-", label="σ_max"),
        Line2D([], [], color="k", ls="--", label="σ_min"),
        Line2D([], [], color="k", ls=":", label="isometry (1)"),
        Patch(color="0.85", label="transition block"),
    ]
    S.figure_legend(fig, handles, ncols=3)
    fig.suptitle(JAC_TITLE + "\n(estimates; geometric mean over seeds)")
    return fig
