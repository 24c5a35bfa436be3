"""Figures 1–2: test accuracy vs depth, and training curves at the deepest depth."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.lines import Line2D

from orthskip import results
from orthskip.analysis.stats import mean_ci, summarize
from orthskip.figures import style as S

DIVERGED_MARKER = "X"


def accuracy_panel(ax, g, styles: dict[str, S.VariantStyle]) -> bool:
    """One setting's test score against depth: mean and 95 % t-interval per variant, diverged
    seeds as crosses on the bottom edge with their count. Returns whether any diverged."""
    variants = [v for v in styles if v in set(g["variant"])]
    div = results.diverged(g)
    ok = g[~div].assign(score=results.test_score(g[~div]))
    any_diverged = False
    # spread the variants a little along x so that intervals do not hide each other
    for n, variant in enumerate(variants):
        st = styles[variant]
        shift = 2 ** (0.04 * (n - (len(variants) - 1) / 2))
        s = summarize(ok[ok["variant"] == variant], ["depth"], "score")
        x = s["depth"].to_numpy(dtype=float) * shift
        yerr = np.vstack([s["mean"] - s["ci_lo"], s["ci_hi"] - s["mean"]])
        ax.errorbar(
            x, s["mean"], yerr=np.nan_to_num(yerr), color=st.color, marker=st.marker,
            ls=st.linestyle, label=st.label, elinewidth=0.7,
        )  # fmt: skip
        d = g[div & (g["variant"] == variant)].groupby("depth").size()
        for depth, count in d.items():
            any_diverged = True
            ax.plot(
                depth * shift, 0.04, DIVERGED_MARKER, color=st.color,
                transform=ax.get_xaxis_transform(), clip_on=False, markersize=4,
            )  # fmt: skip
            ax.annotate(
                f"{count}", (depth * shift, 0.04), xycoords=ax.get_xaxis_transform(),
                xytext=(3, 2), textcoords="offset points", fontsize=6, color=st.color,
            )  # fmt: skip
    S.depth_axis(ax, g["depth"].unique())
    ax.set_xlabel("depth")
    ax.set_ylabel(results.score_name(g))
    return any_diverged


def accuracy_vs_depth(metrics_dir: Path):
    cells = results.read_table(metrics_dir, "cells")
    if cells.empty:
        return S.no_data_figure("Test accuracy vs depth")
    groups = list(results.panels(cells))
    styles = S.variant_styles(results.variant_kinds(cells))
    ncols = min(3, len(groups))
    nrows = math.ceil(len(groups) / ncols)
    width = S.COLUMN_WIDTH_IN if ncols == 1 else S.PAGE_WIDTH_IN
    fig, axes = S.new_figure(nrows, ncols, height=S.PANEL_HEIGHT_IN * nrows + 1.2, width=width)
    any_diverged = False
    for k, (title, g) in enumerate(groups):
        ax = axes.flat[k]
        any_diverged |= accuracy_panel(ax, g, styles)
        ax.set_title(title)
    for ax in axes.flat[len(groups) :]:
        ax.set_axis_off()
    handles = S.variant_handles(styles)
    if any_diverged:
        handles.append(
            Line2D([], [], color="k", marker=DIVERGED_MARKER, ls="", label="diverged (n seeds)")
        )
    S.figure_legend(fig, handles)
    fig.suptitle("Test score at the last epoch: mean and 95 % t-interval over seeds")
    return fig


# the splits of one variant: its own line style throughout (a variant is told by colour,
# marker and line style); train and validation thin and faint beneath the test curve
SPLIT_LOOK = {
    "test": {"lw": 1.0, "alpha": 1.0},
    "train": {"lw": 0.6, "alpha": 0.45},
    "val": {"lw": 0.6, "alpha": 0.45, "marker": "."},
}


def _split_curve(ax, gs, split: str, col: str, st: S.VariantStyle) -> np.ndarray:
    """Draw one split's mean curve (test: with its 95 % t-band); return the means."""
    stats = [(e, mean_ci(ge[f"{split}_{col}"].to_numpy(dtype=float)))
             for e, ge in gs.groupby("epoch")]  # fmt: skip
    ep = np.array([e for e, _ in stats], dtype=float)
    mean = np.array([c.mean for _, c in stats])
    look = dict(SPLIT_LOOK[split])
    marker = look.pop("marker", st.marker if split == "test" else None)
    every = max(1, len(ep) // 8)  # a marker every few epochs: 60 of them would hide the line
    ax.plot(ep, mean, color=st.color, ls=st.linestyle, marker=marker, ms=2.5,
            markevery=every, **look)  # fmt: skip
    if split == "test":
        lo = np.array([c.lo for _, c in stats])
        hi = np.array([c.hi for _, c in stats])
        ax.fill_between(ep, lo, hi, color=st.color, alpha=0.15, lw=0)
    return mean


def _limits_from_means(ax, means: list[np.ndarray], log: bool) -> None:
    """y range of the mean curves, not of the bands: with three seeds one outlier seed makes
    a t-band many times wider than every curve, which then shrink to flat lines."""
    v = np.concatenate(means) if means else np.array([])
    v = v[np.isfinite(v) & ((v > 0) if log else True)]
    if not v.size:
        return
    lo, hi = float(v.min()), float(v.max())
    if log:
        ax.set_ylim(lo / 1.3, hi * 1.3)
    else:
        pad = 0.08 * (hi - lo) if hi > lo else 0.05 * max(abs(hi), 1.0)
        ax.set_ylim(lo - pad, hi + pad)


def training_curves(metrics_dir: Path):
    history = results.read_table(metrics_dir, "history")
    if history.empty:
        return S.no_data_figure("Training curves at the deepest depth")
    groups = [(t, results.deepest(g)) for t, g in results.panels(history)]
    styles = S.variant_styles(results.variant_kinds(history))
    splits = ["test", "train"]
    if "val_acc" in history.columns:  # validation split carved from the training data
        splits.append("val")
    fig, axes = S.new_figure(len(groups), 2, height=1.8 * len(groups) + 1.0,
                             width=S.PAGE_WIDTH_IN)  # fmt: skip
    any_diverged = False
    for r, (title, g) in enumerate(groups):
        depth = int(g["depth"].iloc[0])
        ax_loss, ax_acc = axes[r]
        # regression sets record R² where classification records accuracy
        regression = "test_r2" in g and g["test_acc"].isna().all() and g["test_r2"].notna().any()
        score = results.score_key("regression" if regression else "classification")
        means: dict[str, list[np.ndarray]] = {"loss": [], score: []}
        for variant in [v for v in styles if v in set(g["variant"])]:
            gs = g[g["variant"] == variant]
            st = styles[variant]
            for ax, col in ((ax_loss, "loss"), (ax_acc, score)):
                for split in splits:
                    means[col].append(_split_curve(ax, gs, split, col, st))
            # a seed that diverged: cross at its last finite test accuracy
            for _, gseed in gs.groupby("seed"):
                gseed = gseed.sort_values("epoch")
                bad = ~np.isfinite(gseed["test_loss"].to_numpy(dtype=float))
                if bad.any() and (~bad).any():
                    any_diverged = True
                    last = gseed[~bad].iloc[-1]
                    ax_loss.plot(last["epoch"], last["test_loss"], DIVERGED_MARKER, color=st.color)
                    ax_acc.plot(last["epoch"], last[f"test_{score}"], DIVERGED_MARKER,
                                color=st.color)  # fmt: skip
        ax_loss.set_yscale("log")
        _limits_from_means(ax_loss, means["loss"], log=True)
        _limits_from_means(ax_acc, means[score], log=False)
        S.plain_log_ticks(ax_loss)
        ax_loss.set_ylabel("loss")
        ax_acc.set_ylabel("R²" if regression else "accuracy")
        for ax in (ax_loss, ax_acc):
            ax.set_title(f"{title}, depth {depth}")
            ax.set_xlabel("epoch")
    handles = S.variant_handles(styles)
    handles += [
        Line2D([], [], color="k", label="test (mean, 95 % t-band)", **SPLIT_LOOK["test"]),
        Line2D([], [], color="k", label="train (mean)", **SPLIT_LOOK["train"]),
    ]
    if "val" in splits:
        handles.append(Line2D([], [], color="k", label="validation (mean)", **SPLIT_LOOK["val"]))
    if any_diverged:
        handles.append(Line2D([], [], color="k", marker=DIVERGED_MARKER, ls="",
                              label="diverged after"))  # fmt: skip
    S.figure_legend(fig, handles)
    return fig
