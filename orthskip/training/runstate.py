"""What a run is made of, for the engine (``training.stacked``) and the reference loop
(``training.reference``) alike.

A run's fixed settings (:class:`RunSpec`), its resumable state (:class:`TrainState`), its
seeded streams and validation split, the rows it records (an epoch, a divergence, the
stopping rule), its evaluation, and its ``last.pt`` (payload, reading, resuming). Both
write the same history and checkpoint format through these, so a member's ``last.pt``
resumes in a pack of any size, or in the reference loop.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from orthskip.io import load_torch
from orthskip.results import SKIP_GAP, STALLED, score_key
from orthskip.training.devices import select_device

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
EVAL_BATCH = 1024  # rows per evaluation batch


@dataclass
class TrainState:
    """What ``last.pt`` holds besides the weights: the run's position, records and outcome."""

    epoch: int = 0  # epochs fully completed
    batch: int = 0  # next batch within the running epoch
    perm: torch.Tensor | None = None  # the running epoch's data order
    sums: torch.Tensor | None = None  # the running epoch's loss sum, correct, seen, clipped
    diverged_at: tuple[int, int] | None = None  # (epoch, step) of the first non-finite value
    stopped: str | None = None  # why training ended before train.epochs (the stopping rule)
    history: list[dict[str, Any]] = field(default_factory=list)
    snapshots: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    elapsed: float = 0.0
    status: str = "running"

    @classmethod
    def of(cls, saved: dict[str, Any]) -> TrainState:
        return cls(**saved)

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))  # shallow: the snapshots are not copied

    def update(self, **values: Any) -> None:
        for key, value in values.items():
            setattr(self, key, value)


@dataclass(frozen=True)
class RunSpec:
    """The run's fixed settings, read once from the ``train`` config and the data."""

    device: torch.device
    dtype: torch.dtype
    amp: bool
    epochs: int
    batch: int
    steps_per_epoch: int
    regression: bool
    snapshot_epochs: list[int]
    clip: float | None
    stop: Mapping[str, Any]
    checkpoint_every_s: float = 0.0

    @classmethod
    def of(cls, tcfg: Mapping[str, Any], device: torch.device, task: str, n_train: int) -> RunSpec:
        epochs, batch = int(tcfg["epochs"]), int(tcfg["batch_size"])
        return cls(
            device=device,
            dtype=getattr(torch, tcfg["dtype"]),
            amp=bool(tcfg["amp"]) and device.type == "cuda",
            epochs=epochs,
            batch=batch,
            steps_per_epoch=max(math.ceil(n_train / batch), 1),
            regression=task == "regression",
            snapshot_epochs=sorted(set(tcfg["snapshot_epochs"]) | {epochs}),
            clip=float(tcfg["grad_clip"]) if tcfg["grad_clip"] else None,
            stop=tcfg["stop"],
            checkpoint_every_s=float(tcfg["checkpoint_every_s"]),
        )

    def put(self, t: torch.Tensor) -> torch.Tensor:
        """t on the run's device; floating point in the run's dtype, labels as they are."""
        return t.to(self.device, self.dtype) if t.is_floating_point() else t.to(self.device)

    @property
    def score(self) -> str:
        """The history/status column of the task's score."""
        return score_key("regression" if self.regression else "classification")


class CheckpointClock:
    """Whether an end-of-epoch checkpoint is due (``train.checkpoint_every_s``): every epoch
    at 0, else once that many seconds of training have passed since the last one ended (the
    interval counts from the end of the writing, so writing a large pack's checkpoints can
    never take most of the time). Resuming from any epoch boundary gives the same result, so
    skipping some only costs work after a SIGKILL."""

    def __init__(self, every_s: float) -> None:
        self.every_s = float(every_s)
        self.last = time.monotonic()

    def due(self) -> bool:
        return time.monotonic() - self.last >= self.every_s

    def written(self) -> None:
        """The checkpoints are written: the next interval starts now."""
        self.last = time.monotonic()


def torch_setup(tcfg: Mapping[str, Any]) -> torch.device:
    """Threads, the device, and deterministic kernels where asked; returns the device."""
    torch.set_num_threads(tcfg["threads"])
    device = select_device(tcfg["device"])
    if tcfg["deterministic"] and device.type == "cuda":
        # cuBLAS needs a fixed workspace for reproducible reductions (set before first use).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    return device


def lr_factor(step: int, steps_per_epoch: int, sched: Mapping[str, Any], epochs: int) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based).

    ``sched``: the config's ``train.schedule``, every key filled (defaults: the schema's).
    """
    warm = sched["warmup_epochs"] * steps_per_epoch
    if warm and step < warm:
        return (step + 1) / warm
    name = sched["name"]
    if name == "constant":
        return 1.0
    if name == "multistep":
        epoch = step // steps_per_epoch
        passed = sum(1 for m in sched["milestones"] if epoch >= m)
        return sched["gamma"] ** passed
    total = max(epochs * steps_per_epoch - warm, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(step - warm, total) / total))


def lr_schedulers(
    optimizers: list[torch.optim.Optimizer],
    steps_per_epoch: int,
    epochs: int,
    schedule: Mapping[str, Any],
) -> list[torch.optim.lr_scheduler.LambdaLR]:
    """One scheduler per optimizer, stepped after every optimizer step.

    LambdaLR on the closed form, not LinearLR/CosineAnnealingLR in a SequentialLR: those
    update the rate recursively (lr ← lr · ratio), which drifts from the closed form by
    float rounding, and ``last.pt`` files hold LambdaLR states.
    """
    return [
        torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: lr_factor(s, steps_per_epoch, schedule, epochs)
        )
        for opt in optimizers
    ]


def loss_module(tcfg: Mapping[str, Any], regression: bool, reduction: str = "mean") -> nn.Module:
    if regression:
        return nn.MSELoss(reduction=reduction)
    smoothing = float(tcfg["label_smoothing"])
    return nn.CrossEntropyLoss(reduction=reduction, label_smoothing=smoothing)


def streams(seed: int, device: torch.device) -> tuple[torch.Generator, torch.Generator]:
    """(data order, augmentation): separate streams, so neither depends on the other."""
    return (
        torch.Generator().manual_seed(seed * 1_000_003 + 17),
        torch.Generator(device=device).manual_seed(seed * 1_000_003 + 29),
    )


MEAN_ONLY_R2 = 0.01  # below it over a whole window, a regression net predicts the mean


def plateau(history: list[dict[str, Any]], stop: Mapping[str, Any]) -> str | None:
    """The stopping rule (``train.stop``) after a recorded epoch: the reason to stop, or None.

    ``watch: train_loss``: stop when the best training loss of the last ``patience`` epochs is
    not below (1 − ``min_delta``) × the best before them. ``watch: skips``: stop when the
    net's mean ‖Q − I‖_F/√n (``SKIP_GAP``, what the rate experiment fits) has moved by at most
    ``min_delta`` of its mean over the last ``patience`` epochs (max − min over those epochs
    and the one before); a net without matrix skips watches the loss. patience 0 switches the
    rule off (then training runs ``train.epochs``, the cap either way). Epoch 0 (at init) is
    not counted. While a regression net's training R² stays below ``MEAN_ONLY_R2`` over the
    window, the loss decides even under ``watch: skips``. A net whose best loss of the
    window is not below its loss at init, or that plateaued at the targets' mean (R² below
    ``MEAN_ONLY_R2``), is stalled, not converged: the reason starts with ``STALLED`` (a dead
    deep net sits flat above where it started, or at the mean, and its skips stop moving
    too).
    """
    patience, delta = int(stop["patience"]), float(stop["min_delta"])
    losses = [h["train_loss"] for h in history[1:]]
    if patience <= 0 or len(losses) <= patience:
        return None
    before, recent = min(losses[:-patience]), min(losses[-patience:])
    gaps = [float(h.get(SKIP_GAP, math.nan)) for h in history[-patience - 1 :]]
    # a regression net no better than the targets' mean (train R² < 0.01 over the whole
    # window: the epoch's running R² wanders around 0 by a few 1e-3 for such a net) has not
    # learned: its resting skips say nothing yet (a Haar start's barely move from the first
    # epoch), so the loss decides — still falling: go on; flat: stalled
    r2 = [float(h.get("train_r2", math.nan)) for h in history[-patience:]]
    mean_only = all(map(math.isfinite, r2)) and max(r2) < MEAN_ONLY_R2
    watch_skips = stop.get("watch", "train_loss") == "skips" and all(map(math.isfinite, gaps))
    if watch_skips and not mean_only:
        mean = sum(gaps) / len(gaps)
        spread = (max(gaps) - min(gaps)) / mean if mean > 0 else 0.0
        if spread > delta:
            return None
        reason = (f"skips stationary: mean ‖Q − I‖_F/√n {gaps[-1]:.4g} moved {spread:.2g} of "
                  f"itself over the last {patience} epochs; train_loss {recent:.4g} vs {before:.4g}"
                  " before them")  # fmt: skip
    elif recent < (1.0 - delta) * before:
        return None
    else:
        reason = (f"train_loss plateau: best of the last {patience} epochs {recent:.4g} vs "
                  f"{before:.4g}")  # fmt: skip
    start = history[0]["train_loss"]
    if not recent < start:
        return f"{STALLED}: best of the last {patience} epochs {recent:.4g}, at init {start:.4g}"
    if mean_only:
        return f"{STALLED}: train R² at most {max(r2):.3g} over the last {patience} epochs"
    return reason


def r_squared(sse: float, y: torch.Tensor) -> float:
    """1 − SSE / SST with SST = Σ (y − ȳ)² over rows, every target entry counted."""
    sst = float(((y.double() - y.double().mean(0)) ** 2).sum())
    return 1.0 - sse / sst if sst > 0 else math.nan


def loss_and_score(
    loss_sum: float, correct: float, y: torch.Tensor, regression: bool
) -> tuple[float, float]:
    """(mean loss, score) from the sums over the rows y: MSE per entry and R², or CE and
    accuracy."""
    if regression:
        return loss_sum / y.numel(), r_squared(loss_sum, y)
    return loss_sum / len(y), correct / len(y)


def epoch_train_stats(
    sums: list[float], seen: int, y_train: torch.Tensor, spec: RunSpec
) -> tuple[float, float, float]:
    """(train loss, train score, clipped fraction) from an epoch's running sums."""
    loss_sum, correct, _, n_clipped = sums
    # regression: the epoch's running SSE (loss is the mean over target entries)
    score = r_squared(loss_sum * y_train[0].numel(), y_train) if spec.regression else correct / seen
    return loss_sum / seen, score, n_clipped / spec.steps_per_epoch


def record_epoch(
    state: TrainState,
    spec: RunSpec,
    epoch: int,
    scores: tuple[tuple[float, float], tuple[float, float], tuple[float, float]],
    clipped: float,
    lr: float,
    skip_gap: float,
    weights: Callable[[], dict[str, torch.Tensor]],
) -> None:
    """Append the epoch's history row; ``weights()`` is kept at the snapshot epochs.

    ``scores``: (loss, score) on train, val and test; the other task's scores are NaN.
    ``skip_gap``: the net's mean ‖Q − I‖_F/√n over its matrix skips (NaN without any), what
    ``train.stop.watch: skips`` watches.
    """
    (train_loss, train), (val_loss, val), (test_loss, test) = scores
    named = {f"{split}_{name}": math.nan for split in SPLITS for name in ("acc", "r2")}
    named.update(
        {f"train_{spec.score}": train, f"val_{spec.score}": val, f"test_{spec.score}": test}
    )
    state.history.append(
        {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "test_loss": test_loss,
            **named,
            "clipped_frac": clipped,
            "lr": lr,
            SKIP_GAP: skip_gap,
            "time_s": state.elapsed,
        }
    )
    if epoch in spec.snapshot_epochs:
        state.snapshots[str(epoch)] = weights()


def record_divergence(
    state: TrainState, name: str, epoch: int, step: int, why: str, n_clipped: float, lr: float
) -> None:
    """End the run ``diverged`` at (epoch, step): a row of NaN scores, the history kept (a
    run that records no history, fine-tuning, gets no row)."""
    state.update(epoch=epoch, batch=0, perm=None, sums=None)
    state.status = "diverged"
    state.diverged_at = (epoch, step)
    log.warning("%s diverged at epoch %d step %d (%s)", name, epoch, step, why)
    if not state.history:
        return
    state.history.append(
        {
            **{key: math.nan for key in state.history[0]},
            "epoch": epoch,
            "clipped_frac": n_clipped / max(step, 1),
            "lr": lr,
            "time_s": state.elapsed,
        }
    )


def apply_stop(
    state: TrainState,
    spec: RunSpec,
    name: str,
    epoch: int,
    weights: Callable[[], dict[str, torch.Tensor]],
) -> None:
    """The stopping rule after a recorded epoch: a stopped run ends ``ok``, its last
    epoch's weights kept as a snapshot."""
    state.stopped = plateau(state.history, spec.stop)
    if state.stopped:
        state.status = "ok"
        state.snapshots[str(epoch)] = weights()
        log.info("%s stopped at epoch %d: %s", name, epoch, state.stopped)


def checkpoint_payload(
    rkey: str,
    cfg_hash: str,
    model: dict[str, torch.Tensor],
    optimizer: dict[str, Any],
    schedulers: list[torch.optim.lr_scheduler.LRScheduler] | list[dict[str, Any]],
    data_gen: torch.Generator,
    aug_gen: torch.Generator,
    state: TrainState,
) -> dict[str, Any]:
    """The content of ``last.pt`` (its keys are the format: keep them)."""
    return {
        "resume_key": rkey,
        "config_hash": cfg_hash,
        "model": model,
        "optimizer": optimizer,
        "schedulers": [s if isinstance(s, dict) else s.state_dict() for s in schedulers],
        "data_gen": data_gen.get_state(),
        "aug_gen": aug_gen.get_state().cpu(),
        "state": state.as_dict(),
    }


def read_checkpoint(last: Path, rkey: str) -> dict[str, Any] | None:
    """``last`` if it exists and was written for this config (``rkey``); a checkpoint of
    another config is kept aside as ``last.<its key>.pt`` and None returned."""
    if not last.exists():
        return None
    ckpt = load_torch(last)
    if ckpt.get("resume_key") == rkey:
        return ckpt
    stale = last.with_name(f"last.{ckpt.get('resume_key', 'unknown')}.pt")
    last.rename(stale)
    log.warning("%s was written for another config; kept as %s", last, stale.name)
    return None


def continues(ckpt: dict[str, Any], epochs: int) -> bool:
    """A finished (ok) run asked for more epochs continues."""
    st = ckpt["state"]
    return st["status"] == "ok" and st["epoch"] < epochs and not st["stopped"]


def running_ckpt(ckpt: dict[str, Any], epochs: int) -> bool:
    """Whether training goes on from this checkpoint."""
    return ckpt["state"]["status"] == "running" or continues(ckpt, epochs)


def resumed_state(
    ckpt: dict[str, Any], epochs: int, data_gen: torch.Generator, aug_gen: torch.Generator
) -> TrainState:
    """The checkpoint's TrainState, its random streams restored into the two generators."""
    data_gen.set_state(ckpt["data_gen"])
    aug_gen.set_state(ckpt["aug_gen"].to(aug_gen.get_state().device))
    state = TrainState.of(ckpt["state"])
    if continues(ckpt, epochs):
        state.status = "running"  # continue a finished run for more epochs
    return state


def validation_split(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val) row indices: a seeded random ``fraction`` of the n rows, both sorted."""
    n_val = round(n * fraction)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + 41))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


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


def finite(tensors: list[torch.Tensor]) -> bool:
    """All entries finite (the largest |entry| propagates NaN and inf, and never overflows)."""
    return bool(torch.isfinite(nn.utils.get_total_norm(tensors, norm_type=math.inf)))


def linalg_diverged(err: Exception, tensors: list[torch.Tensor]) -> bool:
    """Whether a linear-algebra failure was caused by non-finite values among ``tensors``
    (the run's parameters, gradients and loss): then the run diverged; a failure on finite
    values is an error."""
    return isinstance(err, torch.linalg.LinAlgError) and not finite(tensors)
