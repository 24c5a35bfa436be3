"""The rate exponent against training state: the model comparison of ``identity_rate`` fitted
at every snapshot epoch, not only at each cell's last one. Under a fixed budget the exponent
is a property of the budget as much as of depth; this table shows how far it moves."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from orthskip import results
from orthskip.analysis.stats import RATE_MODEL_LABELS, compare_rate_models
from orthskip.tables.formats import interval, num
from orthskip.tables.keys import variant_order
from orthskip.tables.render import Table, no_data

COLUMNS = [
    "dataset",
    "arch",
    "variant",
    "skip",
    "epoch",
    "n_cells",
    "n_ended",
    "final",
    "m_min",
    "m_max",
    "best",
    "margin",
    "exponent",
    "exponent_lo",
    "exponent_hi",
]


def rate_by_epoch_frame(layers: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, arch, variant) of a kind in ``results.RATE_KINDS`` and snapshot epoch
    E > 0: the rate-model comparison of the mean ‖Q − I‖_F/√n over every cell, each at E.

    A cell whose last snapshot is before E ended there (stopped by the rule, or diverged): it
    enters with its final value (``n_ended`` counts them), so that the fit at E is over the
    same cells as at any other epoch, not over the ones still running. E is an epoch of the
    snapshot schedule: an epoch where a cell still running has no snapshot (another cell's
    stop) has no row. ``final``: every cell is at its last snapshot (its stop, or the cap) —
    the fit of the rate table, whose epoch is then the last cell's stop or the cap."""
    pe = results.dist_per_epoch(layers)
    pe = pe[pe["skip"].isin(results.RATE_KINDS) & (pe["epoch"] > 0)]
    rows = []
    keys = ["dataset", "arch", "variant", "skip"]
    for (dataset, arch, variant, skip), g in pe.groupby(keys, sort=True):
        at = g.pivot_table(index=[*results.CELL_COLUMNS, "m"], columns="epoch", values="value")
        m, seed = at.index.get_level_values("m"), at.index.get_level_values("seed")
        last = at.notna().iloc[:, ::-1].idxmax(axis=1)  # each cell's last snapshot epoch
        final = at.ffill(axis=1)  # at each epoch, a cell's latest value so far
        for epoch in at.columns:
            here, ended = at[epoch].notna(), last < epoch
            if not (here | ended).all():
                continue
            value = at[epoch].where(here, final[epoch])
            cmp = compare_rate_models(m, value, seed)
            every_last = bool((last <= epoch).all())
            rows.append((dataset, arch, variant, skip, int(epoch), len(at), int(ended.sum()),
                         every_last,
                         cmp.m_min, cmp.m_max, cmp.best, cmp.margin, cmp.exponent,
                         cmp.exponent_lo, cmp.exponent_hi))  # fmt: skip
    return pd.DataFrame(rows, columns=COLUMNS)


@dataclass(frozen=True)
class TrainingState:
    """How far the runs of a selection trained: ``n_cells`` runs (any status), of which
    ``n_converged`` met the stopping rule; ``cap`` the epochs of the longest run that ended
    ``ok`` without it — the epoch cap it ran to — or None where every such run stopped by the
    rule (the cap is then nowhere in the results); ``last`` the longest run's epochs."""

    n_cells: int
    n_converged: int
    cap: int | None
    last: int | None

    @property
    def converged(self) -> bool:
        return self.n_cells > 0 and self.n_converged == self.n_cells


def training_state(cells: pd.DataFrame, **where: str) -> TrainingState:
    """:class:`TrainingState` of the rows of cells.parquet that match ``where`` (column =
    value, e.g. ``dataset``, ``arch``, ``variant``). A result without the ``converged``
    column (written before the flag existed) counts as not converged, as the rate fits do."""
    c = results.with_variant(cells)
    for col, value in where.items():
        c = c[c[col].astype(str) == str(value)] if not c.empty else c
    if c.empty:
        return TrainingState(0, 0, None, None)
    conv = c["converged"].fillna(False).astype(bool) if "converged" in c else c["epochs"] < 0
    epochs = pd.to_numeric(c["epochs"], errors="coerce")
    stalled = c["stalled"].fillna(False).astype(bool) if "stalled" in c else c["epochs"] < 0
    capped = epochs[(c["status"] == "ok") & ~conv & ~stalled].dropna()
    return TrainingState(len(c), int(conv.sum()), int(capped.max()) if len(capped) else None,
                         int(epochs.max()) if epochs.notna().any() else None)  # fmt: skip


NOTE = (
    "The fit of the rate table (mean ‖Q − I‖_F/√n per cell vs blocks m, models compared by "
    "AIC on m ≥ 2, a of C·m^(−a) with a 95 % seed-bootstrap interval) at each snapshot epoch "
    "instead of each cell's last, over every cell: ended counts the cells that had stopped (or "
    "diverged) before that epoch and enter with their final value; final marks the epoch by "
    "which every cell has ended (the last cell's stop, or the cap): the fit of the rate table. "
    "The interval "
    "covers seed noise at one epoch and recipe only; the spread of a over epochs is what the "
    "training budget moves it by."
)


def rate_by_epoch_table(layers: pd.DataFrame) -> Table:
    f = rate_by_epoch_frame(layers)
    if f.empty:
        return no_data("rate exponent by snapshot epoch")
    f = f.assign(_o=f["variant"].map(variant_order(f))).sort_values(
        ["dataset", "arch", "_o", "epoch"]
    )
    header = ["dataset", "arch", "variant", "epoch", "cells", "ended", "m", "best", "margin", "a",
              "95 % CI"]  # fmt: skip
    rows = [
        [
            str(r.dataset),
            str(r.arch),
            str(r.variant),
            f"{r.epoch}, final" if r.final else str(r.epoch),
            str(r.n_cells),
            str(r.n_ended),
            f"{int(r.m_min)}–{int(r.m_max)}" if r.m_max else "–",
            RATE_MODEL_LABELS.get(r.best, "–"),
            num(r.margin, ".1f"),
            num(r.exponent),
            interval(r.exponent_lo, r.exponent_hi),
        ]
        for r in f.itertuples()
    ]
    return Table.of_rows(header, rows, note=NOTE, align="lllrrrrlrrr")
