"""The paper's figures: one claim each, sized for print (column 3.4 in or page 7 in wide, at
most 9 in tall, no text below 6 pt). The per-setting detail behind each of them is in the
report figures of the sibling modules; these reuse their data selections and the fits of
:mod:`orthskip.analysis.stats`, and add nothing to either.

- ``rate``: ‖Q − I‖_F/√n and Lip(F) against m in the rate setting, one column per start,
  with the four competing rate models and the fitted exponent a in the legend;
- ``rate_by_epoch``: the exponent a of that fit at every snapshot epoch, per variant, with
  the epoch cap marked: how far the training state moves it;
- ``accuracy_depth``: test score against depth, one panel per setting with several depths;
- ``start_end``: ‖Q − I‖_F/√n at the first and at the last snapshot against m;
- ``approximation``: the orthogonal approximation of identity nets, score and ‖W − I‖;
- ``grad_ratio``: gradient-norm ratio per block at the deepest depth;
- ``conditioning``: condition number of the hidden representations per block.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from orthskip import results
from orthskip.analysis.stats import (
    RATE_MODEL_LABELS,
    RATE_MODELS,
    compare_rate_models,
    rate_model_curve,
    summarize,
)
from orthskip.figures import style as S
from orthskip.figures.accuracy import accuracy_panel
from orthskip.tables.approximation import orthogonal_approximation_frame
from orthskip.tables.rate_by_epoch import rate_by_epoch_frame, training_state
from orthskip.tables.start_end import start_end_distance_frame

DIST_LABEL = "‖Q − I‖_F / √n"
LIP_LABEL = "Lip(F) (lower bound)"
# the fitted rate models: black, one dash pattern each; the power law in the variant's colour
MODEL_STYLE = {"log_m_over_m": "--", "inv_m": ":", "power": "-", "constant": "-."}
PAPER_PANEL_IN = 2.0  # height of one row of panels


def _grid(n: int, max_cols: int, panel_h: float = PAPER_PANEL_IN, extra_h: float = 0.6):
    """Page-wide figure of n panels in rows of at most ``max_cols`` (column wide for one)."""
    ncols = max(1, min(max_cols, n))
    nrows = max(1, math.ceil(n / ncols))
    width = S.COLUMN_WIDTH_IN if ncols == 1 else S.PAGE_WIDTH_IN
    fig, axes = S.new_figure(nrows, ncols, height=panel_h * nrows + extra_h, width=width)
    for ax in axes.flat[n:]:
        ax.set_axis_off()
    return fig, axes


def _no_data(title: str, reason: str = S.NO_DATA_TEXT):
    return S.no_data_figure(title, reason)


# ---------------------------------------------------------------- rate


def rate_setting(per_cell: pd.DataFrame) -> tuple[str, str] | None:
    """The (dataset, arch) whose rate-kind cells span the most decades of m (then the most
    variants, then by name): the rate experiment where a grid has several settings."""
    pc = per_cell[per_cell["skip"].isin(results.RATE_KINDS) & (per_cell["m"] >= 2)]
    if pc.empty:
        return None
    score = {
        (str(ds), str(arch)): (g["m"].max() / g["m"].min(), g["variant"].nunique())
        for (ds, arch), g in pc.groupby(list(results.PANEL_KEYS), sort=True)
    }
    return max(sorted(score), key=lambda k: score[k])


def _lip_per_cell(layers: pd.DataFrame) -> pd.DataFrame:
    return results.dist_identity_per_cell(layers, stat="max", metric_name="branch_lipschitz")


def _rate_points(ax, pc: pd.DataFrame, st: S.VariantStyle, hollow: bool = False) -> None:
    if pc.empty:
        return
    s = summarize(pc, ["m"], "value")
    yerr = np.vstack([s["mean"] - s["ci_lo"], s["ci_hi"] - s["mean"]])
    ax.errorbar(s["m"], s["mean"], yerr=np.nan_to_num(yerr), color=st.color, marker=st.marker,
                ls="none", ms=3.5, elinewidth=0.7, zorder=3,
                mfc="none" if hollow else st.color)  # fmt: skip


def _a_text(cmp) -> str:
    if not np.isfinite(cmp.exponent):
        return "a: no fit"
    if np.isfinite(cmp.exponent_lo):
        return f"a = {cmp.exponent:.2f} [{cmp.exponent_lo:.2f}, {cmp.exponent_hi:.2f}]"
    return f"a = {cmp.exponent:.2f}"


def _rate_fits(ax, pc: pd.DataFrame, st: S.VariantStyle, all_models: bool, state: str) -> list:
    """Fitted curves of one variant; every model for the main variant of the panel, the power
    law alone for the others. Returns their legend handles (a and ΔAIC in the labels; the
    training state of the fitted runs: converged or at the cap)."""
    cmp = compare_rate_models(pc["m"], pc["value"], pc["seed"])
    handles = [Line2D([], [], color=st.color, marker=st.marker, ls="none",
                      label=f"{st.label}, {state} (mean ± 95 % CI)")]  # fmt: skip
    if not cmp.best:
        return handles
    grid = np.geomspace(cmp.m_min, cmp.m_max, 60)
    best_aic = cmp.fits[cmp.best].aic
    for name in RATE_MODELS if all_models else ("power",):
        fit = cmp.fits[name]
        color = st.color if name == "power" else "k"
        lw = 1.5 if name == cmp.best else 0.8
        # a variant drawn with its power law alone takes its own line style: two recipes of
        # one kind share a colour, and their lines must still tell apart
        ls = MODEL_STYLE[name] if all_models else st.linestyle
        ax.plot(grid, rate_model_curve(name, fit, grid), color=color, ls=ls, lw=lw, zorder=2)
        label = RATE_MODEL_LABELS[name]
        if name == "power":
            label += f", {_a_text(cmp)}"
        if all_models:
            label += " (best)" if name == cmp.best else f" (ΔAIC {fit.aic - best_aic:.1f})"
        handles.append(Line2D([], [], color=color, ls=ls, lw=lw, label=label))
    return handles


def _rate_panel(ax, pc: pd.DataFrame, styles: dict, ylabel: str) -> None:
    variants = [v for v in styles if v in set(pc["variant"])]
    if not variants:
        ax.text(0.5, 0.5, "no runs with this start", ha="center", va="center",
                transform=ax.transAxes)  # fmt: skip
        ax.set_xticks([])
        ax.set_yticks([])
        return
    # the model comparison for the learned skip; the linear control (and the identity
    # reference of Lip(F)) with its own power law only
    main = next((v for v in variants if styles[v].skip not in ("linear", "identity")),
                variants[0])  # fmt: skip
    handles = []
    for v in variants:
        # fitted: the variant's converged cells where it has any (as identity_rate does);
        # the cells the epoch cap stopped are drawn hollow beside them, not fitted
        g = pc[pc["variant"] == v]
        done = g[g["converged"]] if g["converged"].any() else g
        capped = g.drop(done.index)
        _rate_points(ax, done, styles[v])
        _rate_points(ax, capped, styles[v], hollow=True)
        handles += _rate_fits(
            ax,
            done,
            styles[v],
            all_models=v == main,
            state="converged" if g["converged"].any() else "at the cap",
        )
        if len(capped):
            n = len(capped)
            label = f"{styles[v].label}: {n} run{'s' * (n > 1)} at the cap, not fitted"
            handles.append(Line2D([], [], color=styles[v].color, marker=styles[v].marker,
                                  mfc="none", ls="none", label=label))  # fmt: skip
    pos = pc.loc[pc["value"] > 0, "value"]
    ax.set_yscale("log")
    S.plain_log_ticks(ax)
    if len(pos):
        ax.set_ylim(pos.min() / 1.6, pos.max() * 1.6)
    S.depth_axis(ax, pc["m"].unique())
    ax.set_xlabel("residual blocks m")
    ax.set_ylabel(ylabel)
    # below the panel: beside it, the legend's long fit labels would squeeze the panel
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.2),
              handlelength=S.LEGEND_HANDLE_EM)  # fmt: skip


def _rate_layers(
    metrics_dir: Path, title: str
) -> tuple[tuple[str, str], pd.DataFrame, pd.DataFrame] | Figure:
    """The rate setting (dataset, arch), its rows of layers.parquet and its per-cell
    distances to I; or the no-data figure that says why there is none."""
    layers = results.read_table(metrics_dir, "layers")
    if layers.empty:
        return _no_data(title)
    dist = results.dist_identity_per_cell(layers)
    setting = rate_setting(dist)
    if setting is None:
        return _no_data(title, "no learned skip or linear control at two or more depths")
    ds, arch = setting

    def here(f: pd.DataFrame) -> pd.DataFrame:
        return f[(f["dataset"] == ds) & (f["arch"] == arch)]

    return setting, here(layers), here(dist)


def rate(metrics_dir: Path):
    """‖Q − I‖_F/√n and Lip(F) against m (log–log) in the rate setting: from I (left) and from
    a Haar start (right), the linear control beside the learned orthogonal skip."""
    from orthskip.tables.start_end import far_start_variants  # tables import figures.style

    title = "Rate of ‖Q − I‖ and Lip(F) in the number of blocks"
    found = _rate_layers(metrics_dir, title)
    if isinstance(found, Figure):
        return found
    (ds, arch), here, dist = found
    far = {v for d, a, v in far_start_variants(here)}
    cells = results.read_table(metrics_dir, "cells")
    dist = results.with_run_flags(dist[dist["skip"].isin(results.RATE_KINDS)], cells)
    lip = _lip_per_cell(here)
    lip = results.with_run_flags(lip[lip["skip"].isin([*results.RATE_KINDS, "identity"])], cells)
    styles = S.variant_styles(results.variant_kinds(pd.concat([dist, lip])))
    fig, axes = S.new_figure(2, 2, height=8.0, width=S.PAGE_WIDTH_IN)
    for c, (start, is_far) in enumerate((("start at I", False), ("Haar start", True))):
        for r, (pc, ylabel) in enumerate(((dist, DIST_LABEL), (lip, LIP_LABEL))):
            sel = pc["variant"].isin(far) if is_far else ~pc["variant"].isin(far)
            _rate_panel(axes[r, c], pc[sel], styles, ylabel)
        axes[0, c].set_title(start)
    fig.suptitle(f"{ds} / {arch}, last snapshot. Thick: lowest AIC; "
                 "a: exponent of C·m^(−a) [95 % seed-bootstrap interval]")  # fmt: skip
    return fig


# ---------------------------------------------------------------- rate by epoch

CAP_STYLE = {"color": "0.35", "ls": (0, (1, 1.5)), "lw": 0.8}


def rate_by_epoch(metrics_dir: Path):
    """The exponent a of C·m^(−a) fitted to ‖Q − I‖_F/√n against m at every snapshot epoch,
    per variant of the rate setting, with its 95 % seed-bootstrap interval as error bars and
    the epoch cap as a dotted line: the exponent is a property of the training state."""
    title = "Rate exponent a against the training epoch"
    found = _rate_layers(metrics_dir, title)
    if isinstance(found, Figure):
        return found
    (ds, arch), here, _ = found
    f = rate_by_epoch_frame(here)
    f = f[np.isfinite(f["exponent"].to_numpy(dtype=float))]
    if f.empty:
        return _no_data(title, "no snapshot with a rate fit (m ≥ 2 at two or more depths)")
    # the runs of the plotted variants only: rate_identity has no Q and no a
    cells = results.read_table(metrics_dir, "cells")
    cells = cells[cells["variant"].isin(set(f["variant"]))] if not cells.empty else cells
    state = training_state(cells, dataset=ds, arch=arch)
    styles = S.variant_styles(results.variant_kinds(f))
    fig, axes = S.new_figure(1, 1, height=3.0)
    ax = axes[0, 0]
    for v, st in styles.items():
        g = f[f["variant"] == v].sort_values("epoch")
        a = g["exponent"].to_numpy(dtype=float)
        yerr = np.vstack([a - g["exponent_lo"].to_numpy(dtype=float),
                          g["exponent_hi"].to_numpy(dtype=float) - a])  # fmt: skip
        # one seed has no interval: a point without a bar, not a missing point
        ax.errorbar(g["epoch"].to_numpy(dtype=float), a, yerr=np.nan_to_num(yerr), color=st.color,
                    marker=st.marker, ls=st.linestyle, ms=3.5, lw=0.9, elinewidth=0.6,
                    zorder=3, label=v)  # fmt: skip
    handles = S.variant_handles(styles)
    if state.cap is not None:
        ax.axvline(state.cap, **CAP_STYLE, zorder=1)
        handles.append(Line2D([], [], **CAP_STYLE, label=f"epoch cap ({state.cap})"))
    ax.axhline(1.0, color="0.6", lw=0.6, ls="--", zorder=0)  # a = 1: the C/m rate
    handles.append(Line2D([], [], color="0.6", lw=0.6, ls="--", label="a = 1 (C/m)"))
    right = max(float(f["epoch"].max()), float(state.cap or 0))
    ax.set_xlim(0, 1.04 * right)  # the cap line clear of the frame's edge
    ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
    ax.set_xlabel("epoch of the snapshot")
    ax.set_ylabel("exponent a of C·m^(−a)")
    conv = f"{state.n_converged} of {state.n_cells} runs converged"
    ax.set_title(f"{ds} / {arch}, ‖Q − I‖_F/√n: a with its\n"
                 f"95 % seed-bootstrap interval; {conv}")  # fmt: skip
    S.figure_legend(fig, handles)
    return fig


# ---------------------------------------------------------------- accuracy vs depth


def accuracy_depth(metrics_dir: Path):
    """Test score against depth, one panel per setting that was run at several depths."""
    title = "Test score against depth"
    cells = results.read_table(metrics_dir, "cells")
    if cells.empty:
        return _no_data(title)
    groups = [(t, g) for t, g in results.panels(cells) if g["depth"].nunique() >= 2]
    if not groups:
        return _no_data(title, "no setting was run at two or more depths")
    styles = S.variant_styles(results.variant_kinds(pd.concat([g for _, g in groups])))
    fig, axes = _grid(len(groups), max_cols=3, extra_h=1.0)
    any_diverged = False
    for ax, (t, g) in zip(axes.flat, groups, strict=False):
        any_diverged |= accuracy_panel(ax, g, styles)
        ax.set_title(t)
    handles = S.variant_handles(styles)
    if any_diverged:
        handles.append(Line2D([], [], color="k", marker="X", ls="", label="diverged (n seeds)"))
    S.figure_legend(fig, handles)
    return fig


# ---------------------------------------------------------------- start → end


def start_end(metrics_dir: Path):
    """‖Q − I‖_F/√n at the first (hollow) and the last (filled) snapshot against m in the rate
    setting: does training carry a Haar start toward I?"""
    title = "Distance to I at the start and at the end of training"
    found = _rate_layers(metrics_dir, title)
    if isinstance(found, Figure):
        return found
    (ds, arch), here, _ = found
    f = start_end_distance_frame(here)
    f = f[f["skip"].isin(results.RATE_KINDS)]
    if f.empty or not np.isfinite(f["dist_identity_start_mean"].to_numpy(dtype=float)).any():
        return _no_data(title, "one snapshot per run: no start to compare")
    styles = S.variant_styles(results.variant_kinds(f))
    fig, axes = S.new_figure(1, 1, height=3.0)
    ax = axes[0, 0]
    for v, st in styles.items():
        g = f[f["variant"] == v].sort_values("m")
        m = g["m"].to_numpy(dtype=float)
        # start just left of end: a skip that hardly moves would hide its start under its
        # end; on top and unclipped, so that a start at exactly 0 (Q₀ = I) shows
        ax.errorbar(m / 1.12, g["dist_identity_start_mean"], yerr=g["dist_identity_start_std"],
                    color=st.color, marker=st.marker, mfc="white", ls="none", ms=3.5,
                    elinewidth=0.6, zorder=4, clip_on=False)  # fmt: skip
        ax.errorbar(m * 1.12, g["dist_identity_end_mean"], yerr=g["dist_identity_end_std"],
                    color=st.color, marker=st.marker, ls=st.linestyle, ms=3.5, lw=0.9,
                    elinewidth=0.6, zorder=3)  # fmt: skip
    S.depth_axis(ax, f["m"].unique())
    ax.set_ylim(bottom=0)
    ax.set_xlabel("residual blocks m")
    ax.set_ylabel(DIST_LABEL)
    ax.set_title(f"{ds} / {arch}: mean ± std over seeds")
    handles = S.variant_handles(styles)
    handles += [
        Line2D([], [], color="0.3", marker="o", mfc="white", ls="none", label="first snapshot"),
        Line2D([], [], color="0.3", marker="o", ls="none", label="last snapshot"),
    ]
    S.figure_legend(fig, handles)
    return fig


# ---------------------------------------------------------------- approximation

APPROX_PHASE_LABEL = {"before": "identity net", "swapped": "swapped", "finetuned": "fine-tuned"}


def approximation(metrics_dir: Path):
    """Identity nets with each skip swapped for its orthogonal best approximation W_i: the
    test score before, right after the swap and after fine-tuning (left), and ‖W_i − I‖
    after the swap and after fine-tuning (right), against depth."""
    title = "Orthogonal approximation of identity nets"
    f = orthogonal_approximation_frame(results.read_table(metrics_dir, "approx"))
    if f.empty:
        return _no_data(title)
    f = f[f["correction"].astype(bool)] if f["correction"].astype(bool).any() else f
    settings = list(f.groupby(["dataset", "arch"], sort=True))
    fig, axes = S.new_figure(len(settings), 2, height=PAPER_PANEL_IN * len(settings) + 0.8,
                             width=S.PAGE_WIDTH_IN)  # fmt: skip
    kinds = sorted(f["kind"].unique(), key=lambda k: S.ordered_skips(f["kind"]).index(k))
    phase_marker = {"before": "o", "swapped": "s", "finetuned": "^"}
    phase_ls = {"before": "-", "swapped": ":", "finetuned": "--"}
    # the identity net once, then each kind swapped and fine-tuned
    series = [(kinds[0], "before")] + [(k, p) for k in kinds for p in results.APPROX_PHASES[1:]]
    for r, ((ds, arch), g) in enumerate(settings):
        ax_s, ax_d = axes[r]
        for n, (kind, phase) in enumerate(series):
            gp = g[(g["kind"] == kind) & (g["phase"] == phase)].sort_values("depth")
            if gp.empty:
                continue
            # swapped reproduces the identity net (correction layer): spread the series a
            # little along x so that none hides another
            x = gp["depth"].to_numpy(dtype=float) * 2 ** (0.05 * (n - (len(series) - 1) / 2))
            look = {"color": "k" if phase == "before" else S.skip_color(kind),
                    "marker": phase_marker[phase], "ls": phase_ls[phase], "ms": 3,
                    "elinewidth": 0.6, "lw": 0.9}  # fmt: skip
            ax_s.errorbar(x, gp["score_mean"], yerr=gp["score_std"], **look)
            if phase != "before":
                ax_d.errorbar(x, gp["dist_identity_mean"], yerr=gp["dist_identity_std"], **look)
        name = str(g["score_name"].iloc[0])
        ax_s.set_ylabel(results.SCORE_LABELS[name])
        ax_d.set_ylabel("‖W − I‖_F / √n")
        for ax in (ax_s, ax_d):
            S.depth_axis(ax, g["depth"].unique())
            ax.set_xlabel("depth")
            ax.set_title(f"{ds} / {arch}")
        ax_d.set_ylim(bottom=0)
    handles = [Line2D([], [], color="k", marker="o", ls="-", label="identity net")]
    for kind in kinds:
        for phase in results.APPROX_PHASES[1:]:
            handles.append(
                Line2D(
                    [],
                    [],
                    color=S.skip_color(kind),
                    marker=phase_marker[phase],
                    ls=phase_ls[phase],
                    label=f"{S.skip_label(kind)}, {APPROX_PHASE_LABEL[phase]}",
                )
            )
    S.figure_legend(fig, handles)
    fig.suptitle("Identity nets with each skip swapped for its closest orthogonal W_i "
                 "(mean ± std over seeds)")  # fmt: skip
    return fig


# ---------------------------------------------------------------- per-block panels


def _deepest_last(layers: pd.DataFrame, family: str, stat: str) -> list[tuple[str, pd.DataFrame]]:
    """Per setting, the rows of (family, stat) at the deepest depth and the last snapshot, with
    the block number ``_b``; settings with fewer than three blocks are left out."""
    rows = results.metric(results.last_epoch(layers), family, stat)
    out = []
    for t, g in results.panels(rows):
        g = results.deepest(g)
        g = g.assign(_b=results.block_index(g))
        if g["_b"].nunique() >= 3:
            out.append((t, g))
    return out


MAX_BLOCK_POINTS = 40  # deeper nets: blocks pooled into this many bins, else a blur of lines


def _per_block(values: pd.DataFrame) -> pd.Series:
    """Geometric mean per block, or per bin of neighbouring blocks in a deep net (index: the
    bin's mean block number)."""
    per = values.groupby("_b")["value"].apply(results.geo_mean)
    if len(per) <= MAX_BLOCK_POINTS:
        return per
    bins = np.minimum((per.index.to_numpy() * MAX_BLOCK_POINTS) // (per.index.max() + 1),
                      MAX_BLOCK_POINTS - 1)  # fmt: skip
    b = values["_b"].map(dict(zip(per.index, bins, strict=True)))
    pooled = values.assign(_bin=b).groupby("_bin")
    return pd.Series(pooled["value"].apply(results.geo_mean).to_numpy(),
                     index=pooled["_b"].mean().to_numpy())  # fmt: skip


def _per_block_figure(panels, styles, ylabel: str, reference: float | None):
    fig, axes = _grid(len(panels), max_cols=2, extra_h=0.9)
    for ax, (t, g) in zip(axes.flat, panels, strict=False):
        values = []
        for v in [v for v in styles if v in set(g["variant"])]:
            per = _per_block(g[g["variant"] == v])
            ax.plot(per.index, per.to_numpy(), **styles[v].line(), lw=0.9, ms=2.5)
            values.append(per.to_numpy())
        if reference is not None:
            ax.axhline(reference, color="0.4", lw=0.6, ls=(0, (1, 3)), zorder=0)
        v = np.concatenate(values) if values else np.array([])
        v = v[np.isfinite(v) & (v > 0)]
        # a log axis only where the values span a decade or more: under that it leaves
        # most of the range unlabelled
        if v.size and v.max() / v.min() > 10:
            ax.set_yscale("log")
            S.plain_log_ticks(ax)
        pooled = g["_b"].nunique() > MAX_BLOCK_POINTS
        ax.set_title(f"{t}, depth {int(g['depth'].iloc[0])}"
                     + (f" ({MAX_BLOCK_POINTS} bins of blocks)" if pooled else ""))  # fmt: skip
        S.block_axis(ax)
        ax.set_ylabel(ylabel)
    S.figure_legend(fig, S.variant_handles(styles))
    return fig


def grad_ratio(metrics_dir: Path):
    """‖∂E/∂x_l‖ / ‖∂E/∂x_(l+1)‖ per block at the deepest depth and the last snapshot."""
    title = "Gradient-norm ratio per block"
    layers = results.read_table(metrics_dir, "layers")
    panels = _deepest_last(layers, "grad_norm_ratio", "value") if not layers.empty else []
    if not panels:
        return _no_data(title)
    styles = S.variant_styles(results.variant_kinds(pd.concat([g for _, g in panels])))
    fig = _per_block_figure(panels, styles, "gradient-norm ratio", 1.0)
    # two lines: one setting gives a column-wide figure
    fig.suptitle("last snapshot, geometric mean over seeds\ndotted: norm preserved (1)")
    return fig


def conditioning(metrics_dir: Path):
    """Condition number of each block's output on the probe batch, deepest depth, last
    snapshot (finite values; a rank-deficient output has κ = ∞ and is left out here)."""
    title = "Condition of the hidden representations"
    layers = results.read_table(metrics_dir, "layers")
    panels = _deepest_last(layers, "repr_condition", "cond") if not layers.empty else []
    if not panels:
        return _no_data(title)
    styles = S.variant_styles(results.variant_kinds(pd.concat([g for _, g in panels])))
    fig = _per_block_figure(panels, styles, "condition number κ", None)
    fig.suptitle(
        "hidden representations at the last snapshot\ngeometric mean over seeds of finite κ"
    )
    return fig
