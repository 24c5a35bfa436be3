"""The reference loop: one model trained by a plain loop written out, nothing batched.

The pipeline trains every cell on the engine (``orthskip.training.stacked``: a pack of M
members, one cell being a pack of one). This loop computes what the engine must compute for
each member, step by step in the most direct way: one model, one optimizer, one batch at a
time. The tests hold every engine (module, vmap, hand-batched) to it, and the benchmarks
time the engine against it; nothing in the pipeline calls it.

It shares the engine's records and formats (``runstate``, ``outputs``): the same seeded
streams, validation split, history rows, stopping rule, divergence records and ``last.pt``,
so a reference run and an engine run of one cell can be compared file by file, and either
resumes the other's checkpoint.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch import nn
from tqdm import tqdm

from orthskip.config.grid import Cell, CellConfig, resume_key
from orthskip.data import augment_batch, load_prepared
from orthskip.io import save_torch
from orthskip.nn.models import build_cell_model
from orthskip.nn.optim import build_optimizer
from orthskip.nn.skips import skip_identity_gap
from orthskip.training.outputs import write_outputs
from orthskip.training.preempt import Preempted, SigtermFlag
from orthskip.training.runstate import (
    CheckpointClock,
    RunSpec,
    TrainState,
    apply_stop,
    checkpoint_payload,
    epoch_train_stats,
    evaluate,
    finite,
    linalg_diverged,
    loss_module,
    lr_schedulers,
    read_checkpoint,
    record_divergence,
    record_epoch,
    resumed_state,
    streams,
    torch_setup,
    validation_split,
)

log = logging.getLogger(__name__)


class Diverged(Exception):
    """A non-finite loss, gradient or parameter at one optimizer step."""


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


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


def train_reference(
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
    with SigtermFlag() as sigterm:
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
        images = channels_last and t.dim() == 4  # the inputs, not the labels
        tensors[name] = t.contiguous(memory_format=memory_format) if images else t

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
    run: SoloRun, epoch: int, sigterm: SigtermFlag
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
        tensors = [p.detach() for p in run.model.parameters()]
        tensors += [p.grad for p in run.model.parameters() if p.grad is not None]
        if not linalg_diverged(err, tensors + ([loss.detach()] if loss is not None else [])):
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
    if check and not finite([loss.detach()]):
        raise Diverged("non-finite loss")
    clipped: torch.Tensor | bool = False
    if spec.clip:
        norm = nn.utils.clip_grad_norm_(params, spec.clip)
        clipped = norm > spec.clip  # a device tensor: no host sync here
    if check and not finite([p.grad for p in params if p.grad is not None]):
        raise Diverged("non-finite gradient")
    run.bundle.step()
    if check and not finite([p.detach() for p in params]):
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
