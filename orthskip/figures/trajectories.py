"""Does training move Q toward I? The skips' distance to the identity over the snapshot epochs.

One row of panels per (dataset, arch): the variants that start at I (orth_learned from I, the
linear control) on the left and those that start far from I (Haar starts) on the right, one
line per (variant, depth) with the mean over seeds and its 95 % t-band. Only the kinds the
rate question is about (``D.RATE_KINDS``): a frozen orth_fixed cannot move.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from orthskip import results as D
from orthskip.analysis.stats import summarize
from orthskip.figures import style as S

DIST_LABEL = "mean ‖Q − I‖_F / √n"
TITLE = "Does training move the skips toward I?"
STARTS = ("identity start", "Haar start")  # the panel of each start, left to right
LINESTYLES = ("-", "--", ":", "-.")


def _linestyles(variants: list[str]) -> dict[str, str]:
    return {v: LINESTYLES[k % len(LINESTYLES)] for k, v in enumerate(variants)}


def _panel(ax, rows, depth_colors, linestyles) -> None:
    """Mean over seeds per epoch with its 95 % t-band, one line per (variant, depth)."""
    for (variant, depth), g in rows.groupby(["variant", "depth"], sort=True):
        s = summarize(g, ["epoch"], "value")
        x = s["epoch"].to_numpy(dtype=float)
        y = s["mean"].to_numpy(dtype=float)
        color = depth_colors[int(depth)]
        (line,) = ax.plot(x, y, color=color, ls=linestyles[variant], lw=0.9, marker="o", ms=1.8)
        line.set_gid(f"{variant}|{int(depth)}")  # lets tests find the line of a (variant, depth)
        lo, hi = s["ci_lo"].to_numpy(dtype=float), s["ci_hi"].to_numpy(dtype=float)
        if np.isfinite(lo).any():
            ax.fill_between(x, lo, hi, color=color, alpha=0.15, lw=0)
    if rows["epoch"].max() >= 20:  # dense early snapshots, sparse late ones
        ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("epoch")
    ax.set_ylabel(DIST_LABEL)
    ax.set_ylim(bottom=0)


def dist_identity_epochs(metrics_dir: Path):
    # imported here: orthskip.stages.tables imports this package (its data reader)
    from orthskip.stages.tables import FAR_START, far_start_variants

    layers = D.read_table(metrics_dir, "layers")
    per_epoch = D.dist_per_epoch(layers)
    per_epoch = per_epoch[per_epoch["skip"].isin(D.RATE_KINDS)]
    if per_epoch.empty or per_epoch["epoch"].nunique() < 2:
        return S.no_data_figure(TITLE)
    far = far_start_variants(layers)
    start = [
        STARTS[1] if (str(d), str(a), str(v)) in far else STARTS[0]
        for d, a, v in per_epoch[["dataset", "arch", "variant"]].to_numpy()
    ]
    per_epoch = per_epoch.assign(start=start)
    variants = S.ordered_variants(D.variant_kinds(per_epoch))
    linestyles = _linestyles(variants)
    panel_list = list(D.panels(per_epoch))
    fig, axes = S.new_figure(len(panel_list), 2, height=1.7 * len(panel_list) + 0.7)
    cmap = colormaps["viridis"]
    for r, (title, g) in enumerate(panel_list):
        depths = sorted(int(d) for d in g["depth"].unique())
        colors = {d: cmap(0.85 * k / max(1, len(depths) - 1)) for k, d in enumerate(depths)}
        for c, which in enumerate(STARTS):
            ax = axes[r, c]
            ax.set_title(f"{title}: {which}")
            rows = g[g["start"] == which]
            if rows.empty:
                ax.text(0.5, 0.5, f"no {which} in this run", ha="center", va="center",
                        transform=ax.transAxes, fontsize=6)  # fmt: skip
                ax.set_xticks([])
                ax.set_yticks([])
                continue
            _panel(ax, rows, colors, linestyles)
            handles = [Line2D([], [], color=colors[d], lw=1.2, label=f"depth {d}")
                       for d in sorted(int(x) for x in rows["depth"].unique())]  # fmt: skip
            ax.legend(handles=handles, fontsize=5, handlelength=1.0, loc="best")
    handles = [Line2D([], [], color="0.3", ls=linestyles[v], label=v) for v in variants]
    handles.append(Patch(color="0.3", alpha=0.15, label="95 % t-band over seeds"))
    S.figure_legend(fig, handles, ncols=3)
    fig.suptitle(
        f"{TITLE}\n‖Q − I‖_F/√n per snapshot, mean over blocks, seeds\n"
        f"(Haar start: epoch-0 distance > {FAR_START})"
    )
    return fig
