"""The metrics stage: per-layer metrics of a cell at every snapshot epoch, and the
decision-region grids of 2-D sets. A pack's members run one after another in one process.

Rebuilds the cell's model from ``snapshots.pt``, runs
:func:`orthskip.analysis.metrics.extract_metrics` on a fixed, seeded probe batch of the test
set, and writes one Parquet file per cell (schema: :mod:`orthskip.results`).

A truncated ``snapshots.pt`` (a failed copy, say) is named with its fix before any job: the
workflow checks every cell's file when it plans
(:func:`orthskip.integrity.check_snapshots` with ``full=False``, workflow/rules/common.smk),
since Snakemake deletes every member's outputs when a pack's job fails. A pack job checks
its members' files in full (every entry's CRC) before it computes anything, and names
every bad one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from orthskip.analysis.metrics import extract_metrics
from orthskip.analysis.metrics.extract import family_options
from orthskip.config.grid import CellConfig
from orthskip.data import load_prepared
from orthskip.errors import DatasetError
from orthskip.integrity import check_snapshots, snapshots_fix
from orthskip.io import load_torch, write_parquet
from orthskip.logs import check_member_paths, run_member
from orthskip.nn.models import build_cell_model
from orthskip.provenance import provenance
from orthskip.results import WARP_COLUMNS, to_table


def load_snapshots(path: Path) -> dict[Any, Any]:
    """The per-epoch model states of a cell's ``snapshots.pt`` (DatasetError naming the file
    and the fix when it cannot be read)."""
    try:
        states = load_torch(path)["states"]
    except Exception as err:
        check_snapshots(path)  # the precise reason when the archive itself is broken
        raise DatasetError(
            f"snapshots {path} cannot be read ({type(err).__name__}: {err}): {snapshots_fix(path)}"
        ) from None
    return states


def probe_indices(n: int, size: int, seed: int) -> torch.Tensor:
    """The fixed probe batch of a dataset: the same rows for every cell of that dataset
    (``size`` of the ``n`` drawn without replacement by a seeded generator, sorted; all ``n``
    when ``size`` exceeds it)."""
    if size < 1:
        raise ValueError(f"probe size must be >= 1, got {size}")
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=gen)[: min(size, n)].sort().values


def cell_metrics(
    cell_cfg: CellConfig,
    data_path: Path,
    manifest: Path,
    snapshots: Path,
    out: Path,
    warp_out: Path,
) -> int:
    """Write the per-layer metrics of every snapshot; returns the number of rows."""
    torch.set_num_threads(cell_cfg.train["threads"])
    cell = cell_cfg.keys
    mcfg = cell_cfg.metrics
    data = load_prepared(Path(data_path), Path(manifest))
    idx = probe_indices(len(data.x_test), mcfg["probe_size"], mcfg["probe_seed"])
    probe_x, probe_y = data.x_test[idx], data.y_test[idx]
    snaps = load_snapshots(snapshots)
    model = build_cell_model(cell_cfg, data)
    prov = provenance(cell_cfg.hash, "cpu")
    initial = initial_skip_matrices(model, snaps)
    frames = []
    for epoch in sorted(snaps, key=int):
        model.load_state_dict(snaps[epoch])
        model.eval()
        df = extract_metrics(
            model,
            probe_x,
            probe_y,
            families=mcfg["families"],
            initial_skips=initial,
            **family_options(mcfg),
        )
        df.insert(0, "epoch", int(epoch))
        frames.append(df)
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    for key, value in reversed(list(cell.items())):
        table.insert(0, key, value)
    for key, value in prov.items():
        table[key] = value
    write_parquet(out, to_table(table))

    warp = decision_grids(model, data, cell, mcfg) if snaps else None
    write_parquet(warp_out, warp if warp is not None else _empty_warp())
    return len(table)


def metrics_pack(
    members: Sequence[CellConfig],
    data: Path,
    manifest: Path,
    snapshots: Sequence[Path],
    outs: Sequence[Path],
    warp_outs: Sequence[Path],
    logs: Sequence[Path] | None = None,
) -> int:
    """Extract every member's metrics; returns the number of rows written."""
    logs = logs or [None] * len(members)
    check_member_paths(members, snapshots, outs, warp_outs, logs)
    # every member's input first: one bad file fails the job before any work, naming them all
    bad = []
    for path in snapshots:
        try:
            check_snapshots(path)
        except DatasetError as err:
            bad.append(str(err))
    if bad:
        raise DatasetError("\n".join(bad))
    return sum(
        run_member(log, cell_metrics, cfg, data, manifest, snap, out, warp)
        for cfg, snap, out, warp, log in zip(members, snapshots, outs, warp_outs, logs, strict=True)
    )


def lipschitz_options(mcfg: Mapping[str, Any]) -> tuple[int, int, int]:
    """(samples, segments, power-iteration steps) of the branch Lipschitz estimate."""
    return (int(mcfg["lipschitz_samples"]), int(mcfg["lipschitz_segments"]),
            int(mcfg["lipschitz_steps"]))  # fmt: skip


def initial_skip_matrices(model: Any, snaps: dict[Any, Any]) -> dict[str, torch.Tensor]:
    """Skip matrices at epoch 0 keyed by param (``blocks.3.skip.Q``); empty if 0 is missing.

    Loads the epoch-0 state into ``model`` (the caller loads every snapshot afterwards).
    An empty dict makes ``dist_init`` rows NaN rather than absent, so the gap is visible.
    """
    key = next((k for k in snaps if int(k) == 0), None)
    if key is None:
        return {}
    model.load_state_dict(snaps[key])
    with torch.no_grad():
        return {
            f"blocks.{i}.{name}": mat.detach().to("cpu", torch.float64).clone()
            for i, block in enumerate(model.blocks)
            for name, mat in block.skip_matrices().items()
        }


def _empty_warp() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in WARP_COLUMNS.items()})


def _pca2(feats: np.ndarray, fit_on: np.ndarray) -> np.ndarray:
    """Project onto the two leading principal axes of ``fit_on`` (identity for 2-D)."""
    if feats.shape[1] == 2:
        return feats
    if not np.isfinite(fit_on).all():  # an exploding net: no plane to project onto
        return np.full((len(feats), 2), np.nan)
    mean = fit_on.mean(0)
    _, _, vt = np.linalg.svd(fit_on - mean, full_matrices=False)
    return (feats - mean) @ vt[:2].T


@torch.no_grad()
def decision_grids(
    model: Any, data: Any, cell: dict[str, Any], mcfg: Mapping[str, Any]
) -> pd.DataFrame | None:
    """Decision regions and the input grid warped by each block (2-D inputs, one seed only).

    Grid points and training points go through the same maps and are drawn in the same
    coordinates: block 0 is the input plane; block k the k-th block's output projected onto
    the two leading principal axes of the grid's features at that block. ``cell``: the
    cell's key columns (``CellConfig.keys``).
    """
    if data.task == "regression":  # decision regions need class labels
        return None
    if tuple(data.input_shape) != (2,) or cell["seed"] != mcfg["warp_seed"]:
        return None
    n = mcfg["warp_grid"]
    pts = data.x_train
    lo, hi = pts.min(0).values - 0.5, pts.max(0).values + 0.5
    gx, gy = torch.meshgrid(
        torch.linspace(float(lo[0]), float(hi[0]), n),
        torch.linspace(float(lo[1]), float(hi[1]), n),
        indexing="ij",
    )
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    train = pts[:300]
    both = torch.cat([grid, train])
    model.eval()
    pred = model(both).argmax(1)
    ii, jj = np.divmod(np.arange(n * n), n)
    rows = [
        pd.DataFrame(
            {
                "grid": "decision",
                "block": 0,
                "i": ii,
                "j": jj,
                "x": grid[:, 0].numpy(),
                "y": grid[:, 1].numpy(),
                "pred": pred[: n * n].numpy(),
            }
        )
    ]
    h = model.stem(both)
    feats = [both.numpy()]
    for block in model.blocks:
        h = block(h)
        feats.append(h.reshape(len(both), -1).float().numpy())
    labels = data.y_train[:300].numpy()
    for k, f in enumerate(feats):
        xy = _pca2(f.astype(np.float64), f[: n * n].astype(np.float64))
        rows.append(
            pd.DataFrame(
                {
                    "grid": "warp",
                    "block": k,
                    "i": ii,
                    "j": jj,
                    "x": xy[: n * n, 0],
                    "y": xy[: n * n, 1],
                    "pred": pred[: n * n].numpy(),
                }
            )
        )
        rows.append(
            pd.DataFrame(
                {
                    "grid": "train",
                    "block": k,
                    "i": -1,
                    "j": -1,
                    "x": xy[n * n :, 0],
                    "y": xy[n * n :, 1],
                    "pred": labels,
                }
            )
        )
    out = pd.concat(rows, ignore_index=True)
    for key, value in reversed(list(cell.items())):
        out.insert(0, key, value)
    return out.astype(WARP_COLUMNS)
