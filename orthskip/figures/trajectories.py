"""Does training move Q toward I? The skips' distance to the identity over the snapshot epochs.

One row of panels per (dataset, arch): the variants that start at I (orth_learned from I, the
linear control) on the left and those that start far from I (Haar starts) on the right, one
line per (variant, depth) with the mean over seeds and its 95 % t-band. Only the kinds the
rate question is about (``results.RATE_KINDS``): a frozen orth_fixed cannot move.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from orthskip import results
from orthskip.analysis.stats import summarize
from orthskip.figures import style as S

DIST_LABEL = "mean ‖Q − I‖_F / √n"
TITLE = "Does training move the skips toward I?"
STARTS = ("identity start", "Haar start")  # the panel of each start, left to right


def _panel(ax, rows, depth_colors, styles: dict[str, S.VariantStyle]) -> None:
    """Mean over seeds per epoch with its 95 % t-band, one line per (variant, depth)."""
    for (variant, depth), g in rows.groupby(["variant", "depth"], sort=True):
        s = summarize(g, ["epoch"], "value")
        x = s["epoch"].to_numpy(dtype=float)
        y = s["mean"].to_numpy(dtype=float)
        color = depth_colors[int(depth)]
        st = styles[variant]  # colour: the depth; marker and line style: the variant
        (line,) = ax.plot(x, y, color=color, ls=st.linestyle, lw=0.9, marker=st.marker, ms=2.5)
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
    # imported here: orthskip.tables imports this package (figures.style)
    from orthskip.tables.start_end import FAR_START, far_start_variants

    layers = results.read_table(metrics_dir, "layers")
    per_epoch = results.dist_per_epoch(layers)
    per_epoch = per_epoch[per_epoch["skip"].isin(results.RATE_KINDS)]
    if per_epoch.empty or per_epoch["epoch"].nunique() < 2:
        return S.no_data_figure(TITLE)
    far = far_start_variants(layers)
    start = [
        STARTS[1] if (str(d), str(a), str(v)) in far else STARTS[0]
        for d, a, v in per_epoch[["dataset", "arch", "variant"]].to_numpy()
    ]
    per_epoch = per_epoch.assign(start=start)
    styles = S.variant_styles(results.variant_kinds(per_epoch))
    panel_list = list(results.panels(per_epoch))
    fig, axes = S.new_figure(len(panel_list), 2, height=1.9 * len(panel_list) + 1.2,
                             width=S.PAGE_WIDTH_IN)  # fmt: skip
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
            _panel(ax, rows, colors, styles)
            handles = [Line2D([], [], color=colors[d], lw=1.2, label=f"depth {d}")
                       for d in sorted(int(x) for x in rows["depth"].unique())]  # fmt: skip
            # beside the panel: inside, eight depths would cover the lines
            ax.legend(handles=handles, handlelength=1.0, loc="center left",
                      bbox_to_anchor=(1.01, 0.5), ncols=2 if len(handles) > 5 else 1,
                      columnspacing=0.8)  # fmt: skip
    handles = [Line2D([], [], color="0.3", ls=st.linestyle, marker=st.marker, label=v)
               for v, st in styles.items()]  # fmt: skip
    handles.append(Patch(color="0.3", alpha=0.15, label="95 % t-band over seeds"))
    S.figure_legend(fig, handles)
    fig.suptitle(
        f"{TITLE} ‖Q − I‖_F/√n per snapshot, mean over blocks and seeds\n"
        f"(Haar start: epoch-0 distance > {FAR_START})"
    )
    return fig
