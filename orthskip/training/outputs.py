"""A cell's outputs once it stops training: ``history.parquet`` (one row per epoch),
``snapshots.pt`` (the weights at the snapshot epochs) and ``status.json`` (how it ended, its
final and best-on-validation scores, what trained it and with which versions)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from orthskip.config.grid import CellConfig, thaw
from orthskip.io import save_torch, write_json, write_parquet
from orthskip.provenance import library_versions, provenance
from orthskip.results import is_converged, score_key
from orthskip.training.runstate import SPLITS, TrainState


def write_outputs(
    cell_cfg: CellConfig,
    state: TrainState,
    outdir: Path,
    device: torch.device,
    cfg_hash: str,
    meta: dict[str, Any],
) -> None:
    history = pd.DataFrame(state.history)
    cell_cols = cell_cfg.keys  # the cell's wildcards and its skip kind
    for key, value in reversed(list(cell_cols.items())):
        history.insert(0, key, value)
    write_parquet(outdir / "history.parquet", history)
    save_torch(
        outdir / "snapshots.pt",
        {
            "cell": cell_cols,
            "config_hash": cfg_hash,
            "states": state.snapshots,
        },
    )
    final = state.history[-1]
    ok = state.status == "ok"
    nan = float("nan")
    # The best epoch is chosen on validation, never on test; ties go to the earlier epoch.
    score = score_key(meta["task"])
    scored = [h for h in state.history if math.isfinite(h[f"val_{score}"])]
    best = max(scored, key=lambda h: h[f"val_{score}"]) if scored else None
    write_json(
        outdir / "status.json",
        {
            **cell_cols,
            "status": state.status,
            "epochs": state.epoch,
            "diverged_epoch": state.diverged_at[0] if state.diverged_at else None,
            "diverged_step": state.diverged_at[1] if state.diverged_at else None,
            "stopped": state.stopped,
            "converged": is_converged(state.status, state.stopped),
            **{
                f"{split}_{name}": final[f"{split}_{name}"] if ok else nan
                for split in SPLITS
                for name in ("loss", "acc", "r2")
            },
            "best_val_epoch": best["epoch"] if best else None,
            "test_acc_at_best_val": best["test_acc"] if best else nan,
            "test_r2_at_best_val": best["test_r2"] if best else nan,
            "clipped_frac": _mean([h["clipped_frac"] for h in state.history[1:]]),
            "wall_time_s": state.elapsed,
            **meta,
            "model_options": thaw(cell_cfg.model),
            "snapshot_epochs": sorted(int(e) for e in state.snapshots),
            "skip_weight_decay": cell_cfg.train["optimizer"]["skip_weight_decay"],
            **provenance(cfg_hash, device),
            "versions": library_versions(),
            "cell_config": cell_cfg.as_dict(),
        },
    )


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else 0.0
