"""Where the rotation goes: the angle of the skips' product Q_m ⋯ Q_1 beside the angle of the
target's best linear fit and the mean per-skip distance ‖Q − I‖_F/√n. A skip can stay far
from I while the product carries a given rotation, and near I while it carries little."""

from __future__ import annotations

import numpy as np
import pandas as pd

from orthskip import results
from orthskip.tables.formats import num, pm
from orthskip.tables.keys import variant_order
from orthskip.tables.render import Table, no_data

COLUMNS = [
    "dataset",
    "arch",
    "variant",
    "skip",
    "m",
    "n_seeds",
    "angle",
    "angle_std",
    "fit_angle",
    "share",
    "share_std",
    "dist",
    "dist_std",
]


def product_per_cell(layers: pd.DataFrame) -> pd.DataFrame:
    """Per cell at its last snapshot: ``angle`` of the skips' product, ``fit_angle`` of the
    probe targets' best linear fit (NaN for classification), ``dist`` the mean ‖Q − I‖_F/√n
    and m. Cells without a ``skip_product`` row (identity skips, transitions) are absent."""
    last = results.last_epoch(layers)
    rows = results.metric(last, "skip_product")
    cols = [*results.CELL_COLUMNS, "m", "angle", "fit_angle", "dist"]
    if rows.empty:
        return pd.DataFrame(columns=cols)
    wide = rows.pivot_table(
        index=results.CELL_COLUMNS, columns="stat", values="value"
    ).reset_index()
    if "fit_angle" not in wide:
        wide["fit_angle"] = np.nan
    dist = results.dist_identity_per_cell(layers)[[*results.CELL_COLUMNS, "m", "value"]]
    out = wide.merge(dist.rename(columns={"value": "dist"}), on=results.CELL_COLUMNS, how="left")
    return out[cols]


def skip_rotation_frame(layers: pd.DataFrame) -> pd.DataFrame:
    """Seed means (and standard deviations) per (dataset, arch, variant, m) of the product's
    angle, its share of the fit's angle (angle / fit_angle per cell) and the mean distance."""
    pc = product_per_cell(layers)
    if pc.empty:
        return pd.DataFrame(columns=COLUMNS)
    pc = pc.assign(share=pc["angle"] / pc["fit_angle"])
    g = pc.groupby(["dataset", "arch", "variant", "skip", "m"], sort=True)
    out = g.agg(
        n_seeds=("seed", "nunique"),
        angle=("angle", "mean"),
        angle_std=("angle", "std"),
        fit_angle=("fit_angle", "mean"),
        share=("share", "mean"),
        share_std=("share", "std"),
        dist=("dist", "mean"),
        dist_std=("dist", "std"),
    )
    return out.reset_index()[COLUMNS]


NOTE = (
    "Per variant and number of blocks m, means ± std over seeds at each cell's last snapshot: "
    "angle = ‖log P‖_F/√2 of the skips' product P = Q_m ⋯ Q_1 (rad; in SO(2) the rotation "
    "angle), h's angle = the same of the orthogonal factor of the least-squares linear fit "
    "of the probe targets, share = angle / h's angle per cell, ‖Q − I‖ = mean over the "
    "skips of ‖Q − I‖_F/√n. For a Haar start P is a product of far-from-I rotations, so its "
    "angle says nothing about a single skip's distance."
)


def skip_rotation_table(layers: pd.DataFrame) -> Table:
    f = skip_rotation_frame(layers)
    if f.empty:
        return no_data("rotation of the skips' product")
    f = f.assign(_o=f["variant"].map(variant_order(f))).sort_values(["dataset", "arch", "_o", "m"])
    header = ["dataset", "arch", "variant", "m", "seeds", "angle", "h's angle", "share", "‖Q − I‖"]
    rows = [
        [
            str(r.dataset),
            str(r.arch),
            str(r.variant),
            str(int(r.m)),
            str(int(r.n_seeds)),
            pm(r.angle, r.angle_std, ".3f"),
            num(r.fit_angle, ".3f"),
            pm(r.share, r.share_std),
            pm(r.dist, r.dist_std, ".4f"),
        ]
        for r in f.itertuples()
    ]
    return Table.of_rows(header, rows, note=NOTE, align="lllrrrrrr")
