"""Figures 4 and 7: gradient-norm ratio per block over epochs, block-Jacobian spread."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from orthskip import results
from orthskip.figures import style as S

GNR_TITLE = "Gradient-norm ratio ‖∂E/∂x_l‖ / ‖∂E/∂x_(l+1)‖ per block"
JAC_TITLE = "Block-Jacobian singular values"
ZERO_MARKER = r"$0$"  # σ_min recorded as 0: not drawable on a log axis


def _mark_transitions(ax, trans: set[int]) -> None:
    for b in sorted(trans):
        ax.axvspan(b - 0.4, b + 0.4, color="0.85", lw=0, zorder=0)


def grad_norm_ratio(metrics_dir: Path):
    layers = results.read_table(metrics_dir, "layers")
    gnr = results.metric(layers, "grad_norm_ratio")
    if gnr.empty:
        return S.no_data_figure(GNR_TITLE)
    styles = S.variant_styles(results.variant_kinds(gnr))
    groups = []
    for title, g in results.panels(gnr):
        g = results.deepest(g)
        for variant in [v for v in styles if v in set(g["variant"])]:
            groups.append((title, styles[variant], g[g["variant"] == variant]))
    ncols = min(3, len(groups))
    nrows = math.ceil(len(groups) / ncols)
    width = S.PAGE_WIDTH_IN if ncols > 1 else S.COLUMN_WIDTH_IN
    fig, axes = S.new_figure(nrows, ncols, height=1.6 * nrows + 1.1, width=width, sharey=True)
    cmap = colormaps["plasma"]
    epochs_all = sorted(gnr["epoch"].unique())
    for k, (title, st, g) in enumerate(groups):
        ax = axes.flat[k]
        g = g.assign(_b=results.block_index(g))
        _mark_transitions(ax, results.transition_blocks(g))
        epochs = sorted(g["epoch"].unique())
        for e in epochs:
            color = cmap(0.85 * epochs_all.index(e) / max(1, len(epochs_all) - 1))
            per_block = g[g["epoch"] == e].groupby("_b")["value"].apply(results.geo_mean)
            # a dot per block only where they stay apart (≤ 40 blocks)
            ax.plot(per_block.index, per_block.to_numpy(), color=color, lw=0.8,
                    marker="." if len(per_block) <= 40 else None, ms=2)  # fmt: skip
        ax.axhline(1.0, color="k", lw=0.6, ls=":")
        ax.set_yscale("log")
        S.plain_log_ticks(ax)
        # two lines: setting and variant side by side would run into the next panel's title
        ax.set_title(f"{title}, depth {int(g['depth'].iloc[0])}\n{st.label}")
        S.block_axis(ax)
        if k % ncols == 0:
            ax.set_ylabel("gradient-norm ratio")
    for ax in axes.flat[len(groups) :]:
        ax.set_axis_off()
    handles = [
        Line2D([], [], color=cmap(0.85 * n / max(1, len(epochs_all) - 1)), label=f"epoch {e}")
        for n, e in enumerate(epochs_all)
    ]
    if results.transition_blocks(gnr):  # the key only where a panel has a shaded block
        handles.append(Patch(color="0.85", label="transition block"))
    handles.append(Line2D([], [], color="k", ls=":", label="norm preserved (1)"))
    S.figure_legend(fig, handles)
    fig.suptitle(GNR_TITLE + ", geometric mean over seeds")
    return fig


def jacobian_spread(metrics_dir: Path):
    layers = results.read_table(metrics_dir, "layers")
    jac = results.metric(results.last_epoch(layers), "jacobian_sv")
    if jac.empty:
        return S.no_data_figure(JAC_TITLE)
    styles = S.variant_styles(results.variant_kinds(jac))
    groups = list(results.panels(jac))
    any_zero = any_estimate = False
    fig, axes = S.new_figure(len(groups), 1, height=1.9 * len(groups) + 1.1,
                             width=S.PAGE_WIDTH_IN)  # fmt: skip
    for r, (title, g) in enumerate(groups):
        ax = axes[r, 0]
        g = results.deepest(g)
        g = g.assign(_b=results.block_index(g))
        _mark_transitions(ax, results.transition_blocks(g))
        for variant in [v for v in styles if v in set(g["variant"])]:
            gs = g[g["variant"] == variant]
            st = styles[variant]
            hi = gs[gs["stat"] == "max"].groupby("_b")["value"].apply(results.geo_mean)
            ax.plot(hi.index, hi.to_numpy(), color=st.color, lw=0.9, marker=st.marker, ms=2)
            any_estimate |= bool((~gs.loc[gs["stat"] == "max", "exact"].astype(bool)).any())
            # σ_min only where exact (dense path; the Lanczos path reports no σ_min).
            # σ_min = 0 (below the floor) cannot sit on a log axis: a mark on the bottom edge
            mins = gs[(gs["stat"] == "min") & gs["exact"].astype(bool)]
            lo = mins.groupby("_b")["value"].apply(results.geo_mean)
            ax.plot(lo.index, lo.to_numpy(), color=st.color, lw=0.9, ls="--")
            zero = mins.groupby("_b")["value"].apply(lambda v: bool((v.to_numpy() == 0).any()))
            zb = zero.index[zero.to_numpy(dtype=bool)]
            if len(zb):
                any_zero = True
                ax.plot(zb, np.full(len(zb), 0.03), marker=ZERO_MARKER, ls="", color=st.color,
                        ms=4, clip_on=False, transform=ax.get_xaxis_transform())  # fmt: skip
        ax.axhline(1.0, color="k", lw=0.6, ls=":")
        ax.set_yscale("log")
        S.plain_log_ticks(ax)
        ax.set_title(f"{title}, depth {int(g['depth'].iloc[0])}, last snapshot")
        S.block_axis(ax)
        ax.set_ylabel("singular value of ∂y/∂x")
    # line style says σ_max or σ_min here: the variants by colour and marker alone
    handles = [Line2D([], [], color=st.color, marker=st.marker, label=st.label)
               for st in styles.values()]  # fmt: skip
    handles += [
        Line2D([], [], color="k", ls="-", label="σ_max" + (" (some Lanczos)" if any_estimate
                                                           else "")),
        Line2D([], [], color="k", ls="--", label="σ_min (exact only)"),
        Line2D([], [], color="k", ls=":", label="isometry (1)"),
        Patch(color="0.85", label="transition block"),
    ]  # fmt: skip
    if any_zero:
        handles.append(Line2D([], [], color="0.3", marker=ZERO_MARKER, ls="",
                              label="σ_min = 0 (below floor)"))  # fmt: skip
    S.figure_legend(fig, handles)
    fig.suptitle(
        f"{JAC_TITLE} at the last snapshot\ngeometric mean over seeds of the positive values"
    )
    return fig
