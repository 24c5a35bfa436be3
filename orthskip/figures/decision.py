"""Figure 8: decision regions and the input grid warped by the blocks (2-D data only).

Every panel is drawn in one coordinate system: the decision regions and the training
points in input space, and each warped grid together with the training points carried
through the same blocks (when warp.parquet has them) — the earlier codebase mixed the two.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib import colormaps
from matplotlib.colors import ListedColormap
from matplotlib.lines import Line2D

from orthskip import results
from orthskip.figures import style as S

TITLE = "Decision regions and warped input grid"


def _class_colors(n: int, dark: bool) -> list:
    """Paired palette: light shade for regions, dark shade of the same hue for points."""
    cmap = colormaps["Paired"]
    return [cmap((2 * k + (1 if dark else 0)) % 12 / 11.0 + 1e-9) for k in range(n)]


def _choose_cells(warp: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, arch, variant): the deepest depth, then the lowest seed that did not
    diverge; variants in their kind's order, then by name."""
    warp, cells = results.with_variant(warp), results.with_variant(cells)
    have = warp[results.CELL_COLUMNS].drop_duplicates()
    if not cells.empty and "status" in cells:
        have = have.merge(
            cells[[*results.CELL_COLUMNS, "status"]], on=results.CELL_COLUMNS, how="left"
        )
        have = have[have["status"].fillna("ok") == "ok"]
    have = have.sort_values(["dataset", "arch", "variant", "depth", "seed"],
                            ascending=[True, True, True, False, True])  # fmt: skip
    have = have.groupby(["dataset", "arch", "variant"], sort=True).head(1)[results.CELL_COLUMNS]
    order = {v: k for k, v in enumerate(S.ordered_variants(results.variant_kinds(have)))}
    return have.sort_values(["dataset", "arch", "variant"], key=lambda c: c.map(order)
                            if c.name == "variant" else c)  # fmt: skip


def _draw_points(ax, pts: pd.DataFrame, colors) -> None:
    for cls, g in pts.groupby("pred"):
        ax.scatter(g["x"], g["y"], s=3, color=colors[int(cls) % len(colors)], lw=0.2,
                   edgecolors="white", zorder=3)  # fmt: skip


def _draw_decision(ax, dec: pd.DataFrame, pts: pd.DataFrame, n_cls: int) -> None:
    light, dark = _class_colors(n_cls, False), _class_colors(n_cls, True)
    grid = dec.pivot_table(index="j", columns="i", values="pred", aggfunc="first")
    xs = dec.pivot_table(index="j", columns="i", values="x", aggfunc="first").to_numpy()
    ys = dec.pivot_table(index="j", columns="i", values="y", aggfunc="first").to_numpy()
    ax.pcolormesh(xs, ys, grid.to_numpy(dtype=float), cmap=ListedColormap(light),
                  vmin=-0.5, vmax=n_cls - 0.5, shading="nearest", rasterized=True)  # fmt: skip
    _draw_points(ax, pts, dark)


def _draw_warp(ax, wg: pd.DataFrame, pts: pd.DataFrame, n_cls: int) -> None:
    """Grid lines through the warped nodes: constant i, and constant j."""
    for key in ("i", "j"):
        other = "j" if key == "i" else "i"
        for _, line in wg.groupby(key):
            line = line.sort_values(other)
            ax.plot(line["x"], line["y"], color="0.45", lw=0.4)
    known = wg[wg["pred"] >= 0]
    if len(known):  # nodes coloured by the class the network gives them, when recorded
        _draw_points(ax, known, _class_colors(n_cls, False))
    _draw_points(ax, pts, _class_colors(n_cls, True))


def _two_d_datasets(layers: pd.DataFrame) -> list[str]:
    """Datasets whose cells read 2-D inputs: the stem is a Linear(2, width) (its weight is
    width x 2; a conv stem's weight has four dimensions)."""
    if layers.empty or not {"param", "shape", "dataset"} <= set(layers.columns):
        return []
    stem = layers[layers["param"].str.fullmatch(r"stem\.(?:\d+\.)?weight")]
    return sorted(stem.loc[stem["shape"].str.fullmatch(r"\d+x2"), "dataset"].unique())


def _why_empty(metrics_dir: Path) -> str:
    two_d = _two_d_datasets(results.read_table(metrics_dir, "layers"))
    if not two_d:
        return "no data for this figure in this run (no 2-D dataset in the results)"
    return (
        f"2-D data present ({', '.join(two_d)}) but no decision grids were recorded:\n"
        "metrics.warp_seed is not among those cells' seeds\n"
        "(null, the default, picks the smallest seed of each cell family)"
    )


def decision_regions(metrics_dir: Path):
    warp = results.read_table(metrics_dir, "warp")
    if warp.empty:
        return S.no_data_figure(TITLE, _why_empty(metrics_dir))
    cells = results.read_table(metrics_dir, "cells")
    chosen = _choose_cells(warp, cells)
    if chosen.empty:
        return S.no_data_figure(TITLE, "every cell with decision grids diverged")
    styles = S.variant_styles(results.variant_kinds(chosen))
    warp = warp.merge(chosen, on=results.CELL_COLUMNS)
    n_cls = int(max(2, warp.loc[warp["grid"] != "warp", "pred"].max() + 1))
    ncols = 3
    rows = list(chosen.itertuples(index=False))
    fig, axes = S.new_figure(len(rows), ncols, height=1.0 * len(rows) + 0.8)
    by_cell = dict(list(warp.groupby(results.CELL_COLUMNS, sort=False)))
    for r, cell in enumerate(rows):
        c = by_cell[tuple(cell)]
        train = c[c["grid"] == "train"]
        blocks = sorted(c.loc[c["grid"] == "warp", "block"].unique())
        m = int(max(blocks)) if blocks else 0
        shown = [b for b in dict.fromkeys([m // 2, m]) if b in blocks]
        ax = axes[r, 0]
        _draw_decision(ax, c[c["grid"] == "decision"], train[train["block"] == 0], n_cls)
        ax.set_title(f"{cell.dataset} d{cell.depth} s{cell.seed}: input", fontsize=6)
        st = styles[cell.variant]
        ax.set_ylabel(st.label, color=st.color)
        for k in range(1, ncols):
            ax = axes[r, k]
            if k - 1 >= len(shown):
                ax.set_axis_off()
                continue
            b = shown[k - 1]
            wg = c[(c["grid"] == "warp") & (c["block"] == b)]
            _draw_warp(ax, wg, train[train["block"] == b], n_cls)
            ax.set_title(f"after block {b} of {m}", fontsize=6)
        for k, ax in enumerate(axes[r]):
            ax.set_aspect("equal", adjustable="datalim")
            ax.grid(False)
            if k:  # principal-axis coordinates of a warped grid: their numbers mean nothing
                ax.set_xticks([])
                ax.set_yticks([])
    dark = _class_colors(n_cls, True)
    handles = [
        Line2D([], [], color=dark[k], marker="o", ls="", label=f"class {k}") for k in range(n_cls)
    ]
    handles.append(Line2D([], [], color="0.45", lw=0.6, label="warped grid"))
    S.figure_legend(fig, handles, ncols=min(4, len(handles)))
    fig.suptitle(TITLE + "\n(axes: top two principal axes per block)")
    return fig
