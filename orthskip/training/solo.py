"""Training of one cell: seeded, resumable, on-device, and honest about divergence.

One seed fixes the initial weights, the data order and the augmentation. ``last.pt`` is
written atomically every epoch and on SIGTERM (mid-epoch, with the batch position), so a
preempted job resumes where it stopped and ends with the same weights, bit for bit on
CPU, as a run that was never interrupted.

Divergence is a result, not a crash, for every skip kind: a non-finite loss or parameter is
caught at the step where it appears (before the optimizer or a projection sees it), and a
linear-algebra failure on non-finite inputs counts the same; the cell ends with status
``diverged``, the epoch and step recorded and its history kept up to there.

A seeded validation split is carved from the training data (``train.val_fraction``) and
never augmented: anything "best" is chosen on it, never on the test set.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from orthskip.config.grid import Cell, CellConfig, resume_key, thaw
from orthskip.data import augment_batch, load_prepared
from orthskip.io import save_torch, write_json, write_parquet
from orthskip.nn.models import build_cell_model
from orthskip.nn.optim import build_optimizer
from orthskip.nn.skips import skip_identity_gap
from orthskip.provenance import library_versions, provenance
from orthskip.results import is_converged, score_key
from orthskip.training.runstate import (
    SPLITS,
    CheckpointClock,
    RunSpec,
    TrainState,
    apply_stop,
    checkpoint_payload,
    epoch_train_stats,
    loss_and_score,
    loss_module,
    lr_schedulers,
    read_checkpoint,
    record_divergence,
    record_epoch,
    resumed_state,
    streams,
    torch_setup,
)

log = logging.getLogger(__name__)

EVAL_BATCH = 1024
PREEMPT_EXIT_CODE = 143  # 128 + SIGTERM, what SLURM and shells expect


class Preempted(Exception):
    """Raised after the resume checkpoint is written because SIGTERM arrived."""


class Diverged(Exception):
    """A non-finite loss, gradient or parameter at one optimizer step."""


def validation_split(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val) row indices: a seeded random ``fraction`` of the n rows, both sorted."""
    n_val = round(n * fraction)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + 41))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def _finite(tensors: list[torch.Tensor]) -> bool:
    """All entries finite (the largest |entry| propagates NaN and inf, and never overflows)."""
    return bool(torch.isfinite(nn.utils.get_total_norm(tensors, norm_type=math.inf)))


def _linalg_diverged(err: Exception, model: nn.Module, loss: torch.Tensor | None) -> bool:
    """Whether a linear-algebra failure was caused by non-finite inputs (then: diverged)."""
    if not isinstance(err, torch.linalg.LinAlgError):
        return False
    tensors = [p.detach() for p in model.parameters()]
    tensors += [p.grad for p in model.parameters() if p.grad is not None]
    return (loss is not None and not torch.isfinite(loss).all()) or not _finite(tensors)


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, amp: bool) -> tuple[float, float]:
    """(loss, score) over (x, y) in eval mode, no augmentation.

    Classification (integer y): mean cross-entropy and accuracy. Regression (float y): mean
    squared error per target entry (nn.MSELoss's mean) and R² = 1 − SSE / SST, SST about
    the mean of y over these rows.
    """
    was_training = model.training
    model.eval()
    regression = y.is_floating_point()
    loss_sum = torch.zeros((), device=x.device, dtype=torch.float64)
    correct = torch.zeros((), device=x.device, dtype=torch.float64)
    for i in range(0, len(x), EVAL_BATCH):
        xb, yb = x[i : i + EVAL_BATCH], y[i : i + EVAL_BATCH]
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(xb)
        out = out.float() if amp else out
        if regression:
            loss_sum += nn.functional.mse_loss(out, yb, reduction="sum").double()
        else:
            loss_sum += nn.functional.cross_entropy(out, yb, reduction="sum").double()
            correct += (out.argmax(1) == yb).sum()
    model.train(was_training)
    if not len(x):
        return math.nan, math.nan
    return loss_and_score(float(loss_sum), float(correct), y, regression)


class _SigtermFlag:
    """Turns SIGTERM into a flag the loop checks between steps."""

    def __init__(self) -> None:
        self.raised = False
        self._old: Any = None

    def __enter__(self) -> _SigtermFlag:
        self._old = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.raised = True

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGTERM, self._old)


def _progress(enabled: bool, total: int, desc: str) -> Any:
    if not enabled:
        return None
    return tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True)


@dataclass
class SoloRun:
    """One cell's run: what stays fixed while it trains, and its TrainState."""

    cell: Cell
    cfg: CellConfig
    rkey: str  # resume_key: which last.pt this run may resume
    cfg_hash: str
    spec: RunSpec
    outdir: Path
    task: str
    data: dict[str, torch.Tensor]  # x_/y_ train, val and test, on the device
    augment: str | None
    model: nn.Module
    forward: Callable[[torch.Tensor], torch.Tensor]  # the model, or its compiled form
    bundle: Any  # orthskip.nn.optim's optimizers, projections and Riemannian steps
    params: list[torch.Tensor]  # the trained parameters (clipping, divergence checks)
    schedulers: list[torch.optim.lr_scheduler.LambdaLR]
    loss_fn: nn.Module
    data_gen: torch.Generator
    aug_gen: torch.Generator
    state: TrainState = field(default_factory=TrainState)
    clock: CheckpointClock = field(init=False)

    def __post_init__(self) -> None:
        self.clock = CheckpointClock(self.spec.checkpoint_every_s)

    @property
    def last(self) -> Path:
        return self.outdir / "last.pt"

    @property
    def lr(self) -> float:
        return self.bundle.optimizers[0].param_groups[0]["lr"]


def train_cell(
    cell_cfg: CellConfig,
    data_path: Path,
    manifest: Path,
    outdir: Path,
    pack: dict[str, Any] | None = None,
) -> str:
    """Train one cell; returns the final status (``ok`` or ``diverged``).

    ``pack``: how the cell's pack ran it (recorded in status.json), None when alone.

    Raises :class:`Preempted` after checkpointing when SIGTERM arrives.
    """
    run = _set_up(cell_cfg, Path(data_path), Path(manifest), Path(outdir))
    _resume(run)
    state, spec = run.state, run.spec
    if not state.history:
        d = run.data
        _record(run, 0, evaluate(run.model, d["x_train"], d["y_train"], spec.amp), 0.0)
    with _SigtermFlag() as sigterm:
        while state.status == "running" and state.epoch < spec.epochs:
            epoch = state.epoch + 1
            sums, seen, step, why = _train_epoch(run, epoch, sigterm)
            _end_epoch(run, epoch, sums, seen, step, why)
            if state.status != "running" or run.clock.due():
                _checkpoint(run)
                run.clock.written()
    if state.status == "running":
        state.status = "ok"
        _checkpoint(run)
    _finish(run, pack)
    return state.status


def _set_up(cell_cfg: CellConfig, data_path: Path, manifest: Path, outdir: Path) -> SoloRun:
    """Device, data (with the validation split), seeded model, optimizer and schedulers."""
    cell, tcfg = cell_cfg.cell, cell_cfg.train
    device = torch_setup(tcfg)
    data = load_prepared(data_path, manifest)
    tr, va = validation_split(len(data.x_train), float(tcfg["val_fraction"]), cell.seed)
    spec = RunSpec.of(tcfg, device, data.task, len(tr))
    tensors = {
        "x_train": data.x_train[tr], "y_train": data.y_train[tr],
        "x_val": data.x_train[va], "y_val": data.y_train[va],
        "x_test": data.x_test, "y_test": data.y_test,
    }  # fmt: skip
    channels_last = bool(tcfg["channels_last"]) and tensors["x_train"].dim() == 4
    memory_format = torch.channels_last if channels_last else torch.preserve_format
    for name, t in tensors.items():
        t = spec.put(t)
        tensors[name] = t.contiguous(memory_format=memory_format) if channels_last else t

    torch.manual_seed(cell.seed)
    model = build_cell_model(cell_cfg, data).to(device, memory_format=memory_format)
    if spec.dtype != torch.float32:  # skips keep their float64 generators in float32 runs
        model.to(spec.dtype)
    bundle = build_optimizer(model, tcfg["optimizer"], {cell_cfg.skip: cell_cfg.skip_options})
    data_gen, aug_gen = streams(cell.seed, device)
    return SoloRun(
        cell=cell,
        cfg=cell_cfg,
        rkey=resume_key(cell_cfg),
        cfg_hash=cell_cfg.hash,
        spec=spec,
        outdir=outdir,
        task=data.task,
        data=tensors,
        augment=data.meta.get("augment"),
        model=model,
        forward=torch.compile(model) if tcfg["compile"] else model,
        bundle=bundle,
        params=[p for p in model.parameters() if p.requires_grad],
        schedulers=lr_schedulers(
            bundle.optimizers, spec.steps_per_epoch, spec.epochs, tcfg["schedule"]
        ),
        loss_fn=loss_module(tcfg, spec.regression),
        data_gen=data_gen,
        aug_gen=aug_gen,
    )


def _resume(run: SoloRun) -> None:
    """Continue from ``last.pt`` when it was written for this config."""
    ckpt = read_checkpoint(run.last, run.rkey)
    if ckpt is None:
        return
    run.model.load_state_dict(ckpt["model"])
    run.bundle.load_state_dict(ckpt["optimizer"])
    for sched, sd in zip(run.schedulers, ckpt["schedulers"], strict=True):
        sched.load_state_dict(sd)
    run.state = resumed_state(ckpt, run.spec.epochs, run.data_gen, run.aug_gen)
    log.info("resumed %s at epoch %d batch %d", run.cell.path, run.state.epoch, run.state.batch)


def _train_epoch(
    run: SoloRun, epoch: int, sigterm: _SigtermFlag
) -> tuple[list[float], int, int, str | None]:
    """The epoch's steps from the saved position: (sums, rows seen, last step, divergence)."""
    state, spec, d = run.state, run.spec, run.data
    if state.perm is None:
        state.perm = torch.randperm(len(d["x_train"]), generator=run.data_gen)
        state.sums = torch.zeros(4, dtype=torch.float64)
    perm = state.perm.to(spec.device)
    sums = state.sums.to(spec.device)  # loss sum, correct, seen, clipped steps
    seen = int(sums[2])
    bar = _progress(sys.stderr.isatty(), spec.steps_per_epoch, f"epoch {epoch}/{spec.epochs}")
    t0 = time.perf_counter()
    run.model.train()
    b, loss, why = state.batch, None, None
    try:
        for b in range(state.batch, spec.steps_per_epoch):
            if sigterm.raised:
                _preempt(run, epoch, b, sums, seen, t0)
            idx = perm[b * spec.batch : (b + 1) * spec.batch]
            xb, yb = d["x_train"][idx], d["y_train"][idx]
            if run.augment:
                xb = augment_batch(xb, run.augment, run.aug_gen)
            out, loss, clipped = _step(run, xb, yb)
            for sched in run.schedulers:
                sched.step()
            with torch.no_grad():  # device-side sums: no host sync per step
                sums[0] += loss.detach() * len(yb)
                if not spec.regression:
                    sums[1] += (out.argmax(1) == yb).sum()
                sums[3] += clipped
            seen += len(yb)
            if bar is not None:
                bar.update(1)
    except Diverged as err:
        why = str(err)
    except RuntimeError as err:
        if not _linalg_diverged(err, run.model, loss):
            raise RuntimeError(f"{run.cell.path}: epoch {epoch} step {b}: {err}") from err
        why = f"linear-algebra failure on non-finite values ({type(err).__name__})"
    if bar is not None:
        bar.close()
    state.elapsed += time.perf_counter() - t0
    return sums.tolist(), seen, b, why


def _preempt(
    run: SoloRun, epoch: int, b: int, sums: torch.Tensor, seen: int, t0: float
) -> NoReturn:
    """Checkpoint the position within the epoch (batch b is next), then stop."""
    state = run.state
    state.batch = b
    sums[2] = seen
    state.sums = sums.cpu()
    state.elapsed += time.perf_counter() - t0
    _checkpoint(run)
    # the checkpoint's position, as the resume line names it: epochs completed, then batches
    raise Preempted(f"SIGTERM at epoch {state.epoch} batch {b}; saved {run.last}")


def _step(
    run: SoloRun, xb: torch.Tensor, yb: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | bool]:
    """One optimizer step; raises Diverged before a non-finite value reaches the update.

    On CPU a check per step costs no device sync; on CUDA non-finite values are caught by
    the end-of-epoch check and by the linear-algebra guard (a NaN then fails loudly there).
    """
    spec, params = run.spec, run.params
    check = spec.device.type != "cuda"
    # a disabled autocast still costs an enter/exit per step: skip it off CUDA-AMP
    amp = torch.autocast(spec.device.type, dtype=torch.bfloat16) if spec.amp else None
    with amp or contextlib.nullcontext():
        out = run.forward(xb)
        loss = run.loss_fn(out.float() if spec.amp else out, yb)
    run.bundle.zero_grad()
    loss.backward()
    if check and not _finite([loss.detach()]):
        raise Diverged("non-finite loss")
    clipped: torch.Tensor | bool = False
    if spec.clip:
        norm = nn.utils.clip_grad_norm_(params, spec.clip)
        clipped = norm > spec.clip  # a device tensor: no host sync here
    if check and not _finite([p.grad for p in params if p.grad is not None]):
        raise Diverged("non-finite gradient")
    run.bundle.step()
    if check and not _finite([p.detach() for p in params]):
        raise Diverged("non-finite parameter after the step")
    return out, loss, clipped


def _end_epoch(
    run: SoloRun, epoch: int, sums: list[float], seen: int, step: int, why: str | None
) -> None:
    """Record the finished epoch (or the divergence) and apply the stopping rule."""
    state = run.state
    if why is None and not math.isfinite(sums[0]):
        why, step = "non-finite loss", run.spec.steps_per_epoch - 1  # caught late (CUDA)
    state.update(epoch=epoch, batch=0, perm=None, sums=None)
    if why is not None:
        record_divergence(state, run.cell.path, epoch, step, why, sums[3], run.lr)
        return
    train_loss, train_score, clipped = epoch_train_stats(sums, seen, run.data["y_train"], run.spec)
    _record(run, epoch, (train_loss, train_score), clipped)
    apply_stop(state, run.spec, run.cell.path, epoch, functools.partial(_cpu_state, run.model))


def _record(run: SoloRun, epoch: int, train: tuple[float, float], clipped: float) -> None:
    """The epoch's history row: train as given, val and test evaluated now."""
    d, spec = run.data, run.spec
    val = evaluate(run.model, d["x_val"], d["y_val"], spec.amp)
    test = evaluate(run.model, d["x_test"], d["y_test"], spec.amp)
    weights = functools.partial(_cpu_state, run.model)
    gap = skip_identity_gap(run.model)
    record_epoch(run.state, spec, epoch, (train, val, test), clipped, run.lr, gap, weights)
    log.info(
        "epoch %d/%d train_loss %.4f train_%s %.4f test_%s %.4f",
        epoch, spec.epochs, train[0], spec.score, train[1], spec.score, test[1],
    )  # fmt: skip


def _checkpoint(run: SoloRun) -> None:
    payload = checkpoint_payload(
        run.rkey,
        run.cfg_hash,
        run.model.state_dict(),
        run.bundle.state_dict(),
        run.schedulers,
        run.data_gen,
        run.aug_gen,
        run.state,
    )
    save_torch(run.last, payload)


def _finish(run: SoloRun, pack: dict[str, Any] | None) -> None:
    """The cell's history, snapshots and status.json."""
    meta = {
        "task": run.task,
        "n_params": run.model.n_params(),
        "n_skip_params": run.model.n_skip_params(),
        "optimizer": run.bundle.metadata(),
        **({"pack": pack} if pack else {}),
    }
    write_outputs(run.cfg, run.state, run.outdir, run.spec.device, run.cfg_hash, meta)


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
