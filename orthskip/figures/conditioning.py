"""Figures 5–6: condition numbers of layer weights and of hidden representations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from orthskip import results
from orthskip.figures import style as S

WEIGHT_TITLE = "Condition number of each weight layer"
REPR_TITLE = "Condition of the hidden representations per block"
INF_MARKER = r"$\infty$"  # distinct from every kind's and variant's marker


def _weight_position(rows: pd.DataFrame) -> pd.Series:
    """Position of each weight layer within its cell (0, 1, 2, …) by layer_index."""
    return rows.groupby(results.CELL_COLUMNS)["layer_index"].rank(method="dense").astype(int) - 1


def _mark_infinite(ax, x, color) -> None:
    """Triangles on the top edge where a value is +inf (cannot be drawn on a log axis)."""
    if len(x):
        ax.plot(x, np.full(len(x), 0.97), marker=INF_MARKER, ls="", color=color, ms=5,
                clip_on=False, transform=ax.get_xaxis_transform())  # fmt: skip


def weight_condition(metrics_dir: Path):
    layers = results.read_table(metrics_dir, "layers")
    if layers.empty:
        return S.no_data_figure(WEIGHT_TITLE)
    last = results.last_epoch(layers)
    sv = last[last["metric"].isin(["sv_reshaped", "sv_operator"]) & (last["stat"] == "cond")]
    if sv.empty:
        return S.no_data_figure(WEIGHT_TITLE)
    groups = list(results.panels(sv))
    styles = S.variant_styles(results.variant_kinds(sv))
    # the operator column only when some run has convolutions
    families = [("sv_reshaped", "reshaped W")]
    if (sv["metric"] == "sv_operator").any():
        # sv_operator is the operator at the layer's real padding; the circular surrogate
        # (sv_operator_circular) is not drawn: its κ is not the operator's
        families.append(("sv_operator", "conv operator"))
    fig, axes = S.new_figure(len(groups), len(families), height=1.8 * len(groups) + 1.1,
                             width=S.PAGE_WIDTH_IN if len(families) > 1 else S.COLUMN_WIDTH_IN,
                             sharey="row")  # fmt: skip
    any_estimate = any_inf = False
    for r, (title, g) in enumerate(groups):
        g = results.deepest(g)
        g = g.assign(_pos=_weight_position(g))
        depth = int(g["depth"].iloc[0])
        for c, (family, label) in enumerate(families):
            ax = axes[r, c]
            gf = g[g["metric"] == family]
            ax.set_title(f"{title} d{depth}: {label}")
            S.block_axis(ax)
            ax.set_xlabel("weight layer")
            if c == 0:
                ax.set_ylabel("condition number κ")
            if gf.empty:
                ax.text(0.5, 0.5, "no convolutions", ha="center", va="center",
                        transform=ax.transAxes)  # fmt: skip
                ax.set_xticks([])
                ax.grid(False)
                continue
            for variant in [v for v in styles if v in set(gf["variant"])]:
                gs = gf[gf["variant"] == variant]
                st = styles[variant]
                color = st.color
                per = gs.groupby("_pos").agg(
                    value=("value", results.geo_mean),
                    exact=("exact", "all"),
                    inf=("value", lambda v: bool(np.isposinf(v.to_numpy(dtype=float)).any())),
                )
                ax.plot(per.index, per["value"], color=color, ls=st.linestyle, lw=0.8)
                ex, bd = per[per["exact"]], per[~per["exact"]]
                ax.plot(ex.index, ex["value"], st.marker, color=color, ms=2.5)
                # an iterative (LOBPCG) estimate of the operator's κ, a lower bound on it
                ax.plot(bd.index, bd["value"], st.marker, mfc="white", mec=color,
                        ms=2.5, mew=0.6)  # fmt: skip
                any_estimate |= len(bd) > 0
                _mark_infinite(ax, per.index[per["inf"]], color)
                any_inf |= bool(per["inf"].any())
            ax.set_yscale("log")
            S.plain_log_ticks(ax)
    handles = S.variant_handles(styles)
    if any_estimate:
        handles.append(Line2D([], [], color="0.3", marker="o", mfc="white", ls="",
                              label="LOBPCG est. (≤ κ)"))  # fmt: skip
    if any_inf:
        handles.append(Line2D([], [], color="0.3", marker=INF_MARKER, ls="", label="κ = ∞"))
    S.figure_legend(fig, handles)
    fig.suptitle(WEIGHT_TITLE + "\nat the last snapshot (geometric mean over seeds)")
    return fig


def repr_condition(metrics_dir: Path):
    layers = results.read_table(metrics_dir, "layers")
    rc = results.metric(results.last_epoch(layers), "repr_condition")
    if rc.empty:
        return S.no_data_figure(REPR_TITLE)
    groups = list(results.panels(rc))
    styles = S.variant_styles(results.variant_kinds(rc))
    fig, axes = S.new_figure(len(groups), 2, height=1.8 * len(groups) + 1.1,
                             width=S.PAGE_WIDTH_IN)  # fmt: skip
    any_inf = False
    for r, (title, g) in enumerate(groups):
        g = results.deepest(g)
        g = g.assign(_b=results.block_index(g))
        depth = int(g["depth"].iloc[0])
        ax_c, ax_r = axes[r]
        for variant in [v for v in styles if v in set(g["variant"])]:
            gs = g[g["variant"] == variant]
            st = styles[variant]
            color = st.color
            cond = gs[gs["stat"] == "cond"].groupby("_b")["value"]
            finite = cond.apply(results.geo_mean)
            n_inf = cond.apply(lambda v: int(np.isposinf(v.to_numpy(dtype=float)).sum()))
            ax_c.plot(finite.index, finite.to_numpy(), **st.line(), lw=0.8, ms=2)
            inf_blocks = n_inf.index[n_inf > 0]
            _mark_infinite(ax_c, inf_blocks, color)
            for b in inf_blocks:
                ax_c.annotate(f"{n_inf[b]}", (b, 0.97), xycoords=ax_c.get_xaxis_transform(),
                              xytext=(0, 3), textcoords="offset points", ha="center",
                              fontsize=6, color=color)  # fmt: skip
            any_inf |= len(inf_blocks) > 0
            er = gs[gs["stat"] == "eff_rank"].groupby("_b")["value"].mean()
            ax_r.plot(er.index, er.to_numpy(), **st.line(), lw=0.8, ms=2)
        ax_c.set_yscale("log")
        S.plain_log_ticks(ax_c)
        ax_c.set_ylabel("condition number")
        ax_r.set_ylabel("effective rank")
        for ax in (ax_c, ax_r):
            ax.set_title(f"{title}, depth {depth}")
            S.block_axis(ax)
    handles = S.variant_handles(styles)
    if any_inf:
        handles.append(Line2D([], [], color="0.3", marker=INF_MARKER, ls="",
                              label="∞ (σ_min at floor; n seeds)"))  # fmt: skip
    S.figure_legend(fig, handles)
    fig.suptitle(REPR_TITLE + " (finite values: geometric mean over seeds)")
    return fig
