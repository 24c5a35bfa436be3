"""The orthogonal-approximation stage of one trained identity cell (the seed codebase's open
experiment).

``approximate_cell`` loads the cell's last snapshot, fits the orthogonal W_i of every
non-transition block on the metrics probe (:func:`orthskip.analysis.approx.approximate`),
and for each kind (orth_fixed: W_i frozen; orth_learned: W_i learnable) evaluates the test
score before the swap, right after it and after fine-tuning; one Parquet row per (kind, phase).

Fine-tuning runs on the training engine as a pack of one
(:func:`orthskip.training.stacked.finetune`). What it shares with the cell's training: the
train rows (the same seeded validation split is held out), the optimizer and its settings
(``train.optimizer``, through :func:`orthskip.nn.optim.build_optimizer`, so orth_learned's
generator gets ``skip_weight_decay``), the batch size, the loss (cross-entropy with the
cell's label smoothing, or MSE), gradient clipping when the cell has it, augmentation, the
seed's data-order and augmentation streams (started afresh: the first fine-tuning epoch
sees the batches of the first training epoch), and the engine's step with its divergence
checks. What it does not: the learning-rate schedule restarts (the cell's schedule over
the fine-tuning epochs, warm-up included, so the lr does not start at the ~0 a cosine
schedule ends with), no AMP, no checkpoint/resume, no snapshots, no per-epoch history; a
non-finite loss, gradient or parameter stops fine-tuning and the row says ``diverged``.

The probe is the metrics probe (rows of the test set,
:func:`orthskip.stages.metrics.probe_indices`): only its inputs enter the fit, never its
labels; scores are over the whole test set.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from orthskip.analysis.approx import VARIANT_KINDS, CorrectedBranch, approximate, block_io
from orthskip.analysis.metrics.lipschitz import branch_lipschitz
from orthskip.analysis.metrics.orthogonality import dist_identity
from orthskip.config.grid import CellConfig
from orthskip.data import load_prepared
from orthskip.io import load_torch, write_parquet
from orthskip.nn.models import build_cell_model
from orthskip.provenance import provenance
from orthskip.results import APPROX_COLUMNS, APPROX_PHASES, score_key
from orthskip.stages.metrics import lipschitz_options, probe_indices
from orthskip.training.devices import select_device
from orthskip.training.runstate import evaluate
from orthskip.training.stacked import finetune


def model_stats(net: nn.Module, probe_x: Tensor, lipschitz: tuple[int, int, int]) -> dict:
    """Means over the non-transition blocks (those :func:`approximate` swaps) of
    ‖W_i − I‖_F/√n (``dist_identity``'s ``fro_rel``; 0 for an identity skip), of
    branch_lipschitz ``max`` of the (corrected) branch at the probe's block inputs (the same
    seed per block as ``approximate``), of ‖C_i‖_F/√n of the correction layer (NaN without
    one); the largest entry of |WᵀW − I| over the blocks (``gram_err_max``: a worst case,
    not the layer metrics' ``orth_defect`` ‖WᵀW − I‖_F/√n) and how many blocks have an
    orthogonal skip (``n_swapped``)."""
    was = net.training
    net.eval()
    samples, segments, steps = lipschitz
    dists, lips, corrs, defects, swapped = [], [], [], [0.0], 0
    try:
        for i, (block, (x, _)) in enumerate(zip(net.blocks, block_io(net, probe_x), strict=True)):
            if bool(block.transition) or block.branch is None:
                continue
            q = block.skip.matrices().get("Q")
            if q is not None:
                q = q.detach().to("cpu", torch.float64)
                dists.append(dist_identity(q)["fro_rel"])
                defects.append(float((q.T @ q - torch.eye(q.shape[0], dtype=q.dtype)).abs().max()))
                swapped += 1
            else:
                dists.append(0.0)
            lip = branch_lipschitz(block, x[:samples], segments=segments, steps=steps, seed=i)
            lips.append(lip[0]["max"] if lip else math.nan)
            if isinstance(block.branch, CorrectedBranch):
                c = block.branch.correction.detach().double()
                corrs.append(float(torch.linalg.matrix_norm(c)) / math.sqrt(c.shape[0]))
    finally:
        net.train(was)

    def mean(v: list[float]) -> float:
        return sum(v) / len(v) if v else math.nan

    return {
        "n_swapped": swapped,
        "dist_identity": mean(dists),
        "branch_lipschitz": mean(lips),
        "correction_norm": mean(corrs),
        "gram_err_max": max(defects),
    }


def _finite_state(state: dict[str, Tensor]) -> bool:
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def approximate_cell(
    cell_cfg: CellConfig,
    data_path: Path,
    manifest: Path,
    snapshots: Path,
    out: Path,
    *,
    kinds: tuple[str, ...] = VARIANT_KINDS,
    epochs: int,
    correction: bool = True,
    skip_options: dict | None = None,
    status: Path | None = None,
) -> None:
    """Write ``out`` (Parquet): per kind of ``kinds`` and phase of APPROX_PHASES one row
    (APPROX_COLUMNS).

    ``cell_cfg``: the trained identity cell's config (orthskip.config.grid.cell_config);
    ``snapshots``: its snapshots.pt (the last epoch is used); ``epochs``: fine-tuning epochs;
    ``correction``: the branch's parallel linear layer I − W_i (orthskip.analysis.approx);
    ``skip_options``:
    options per kind (config ``skip_options``) for the new skips and the optimizer;
    ``status``: the cell's status.json: a cell that did not end ``ok`` (diverged: its last
    snapshot may be an early, untrained one) gives NaN rows with status ``source_diverged``.
    Phase ``before`` is the identity net itself (the same numbers for every kind).
    """
    if cell_cfg.skip != "identity":
        raise ValueError(f"approximate_cell needs an identity cell, got {cell_cfg.skip!r}")
    for kind in kinds:
        if kind not in VARIANT_KINDS:
            raise ValueError(f"kind {kind!r}: expected one of {VARIANT_KINDS}")
    tcfg, mcfg = cell_cfg.train, cell_cfg.metrics
    torch.set_num_threads(tcfg["threads"])
    device = select_device(tcfg["device"])
    data = load_prepared(Path(data_path), Path(manifest))
    idx = probe_indices(len(data.x_test), mcfg["probe_size"], mcfg["probe_seed"])
    probe_x = data.x_test[idx]
    lipschitz = lipschitz_options(mcfg)
    x_test, y_test = data.x_test.to(device), data.y_test.to(device)
    score_name = score_key(data.task)

    states = load_torch(snapshots)["states"]
    source_epoch = max(int(e) for e in states)
    state = states[next(k for k in states if int(k) == source_epoch)]
    model = build_cell_model(cell_cfg, data)
    model.load_state_dict(state)
    model.eval()

    base = {**cell_cfg.keys, "correction": bool(correction),
            "source_epoch": source_epoch, "score_name": score_name}  # fmt: skip
    nan_stats = dict.fromkeys(["dist_identity", "branch_lipschitz", "correction_norm",
                               "gram_err_max"], math.nan) | {"n_swapped": 0}  # fmt: skip
    rows: list[dict[str, Any]] = []

    def scored(net: nn.Module) -> tuple[float, float]:
        return evaluate(net.to(device), x_test, y_test, False)

    def stats_of(net: nn.Module) -> dict:
        return model_stats(copy.deepcopy(net).cpu(), probe_x, lipschitz)

    source_ok = status is None or json.loads(Path(status).read_text())["status"] == "ok"
    if not source_ok or not _finite_state(state):  # nothing (trained) to approximate
        why = "source_diverged" if not source_ok else "source_not_finite"
        for kind in kinds:
            for phase in APPROX_PHASES:
                rows.append({**base, "kind": kind, "phase": phase, "finetune_epochs": 0,
                             "status": why, "score": math.nan,
                             "loss": math.nan, **nan_stats})  # fmt: skip
    else:
        loss0, score0 = scored(model)
        stats0 = stats_of(model)
        for kind in kinds:
            rows.append({**base, "kind": kind, "phase": "before", "finetune_epochs": 0,
                         "status": "ok", "score": score0, "loss": loss0, **stats0})  # fmt: skip
            new, _ = approximate(model.cpu(), probe_x, kind=kind, correction=correction,
                                 skip_cfg=skip_options, lipschitz=lipschitz)  # fmt: skip
            loss1, score1 = scored(new)
            rows.append({**base, "kind": kind, "phase": "swapped", "finetune_epochs": 0,
                         "status": "ok", "score": score1, "loss": loss1,
                         **stats_of(new)})  # fmt: skip
            status = finetune(new.to(device), cell_cfg, data, epochs, skip_options or {})
            loss2, score2 = scored(new) if status == "ok" else (math.nan, math.nan)
            stats2 = stats_of(new) if status == "ok" else nan_stats
            rows.append({**base, "kind": kind, "phase": "finetuned", "finetune_epochs": epochs,
                         "status": status, "score": score2, "loss": loss2,
                         **stats2})  # fmt: skip
    table = pd.DataFrame(rows)[list(APPROX_COLUMNS)]
    for key, value in provenance(cell_cfg.hash, device).items():
        table[key] = value
    write_parquet(Path(out), table)
