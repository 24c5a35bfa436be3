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
import logging
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from orthskip.config import Cell, config_hash, resume_key
from orthskip.io import load_torch, save_torch, write_json, write_parquet
from orthskip.provenance import library_versions, provenance

log = logging.getLogger(__name__)

EVAL_BATCH = 1024
SPLITS = ("train", "val", "test")
PREEMPT_EXIT_CODE = 143  # 128 + SIGTERM, what SLURM and shells expect


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


class CheckpointClock:
    """Whether an end-of-epoch checkpoint is due (``train.checkpoint_every_s``): every epoch
    at 0, else once that many seconds have passed since the last one. Resuming from any epoch
    boundary gives the same result, so skipping some only costs work after a SIGKILL."""

    def __init__(self, every_s: float) -> None:
        self.every_s = float(every_s)
        self.last = time.monotonic()

    def due(self) -> bool:
        if time.monotonic() - self.last < self.every_s:
            return False
        self.last = time.monotonic()
        return True


class Preempted(Exception):
    """Raised after the resume checkpoint is written because SIGTERM arrived."""


class Diverged(Exception):
    """A non-finite loss, gradient or parameter at one optimizer step."""


def plateau(history: list[dict[str, Any]], stop: dict[str, Any]) -> str | None:
    """The stopping rule: training loss plateaued (``train.stop``), or None to go on.

    Stops when the best training loss of the last ``patience`` epochs is not below
    (1 − ``min_delta``) × the best before them; patience 0 switches the rule off (then
    training runs ``train.epochs``, the cap either way). Epoch 0 (at init) is not counted.
    """
    patience = int(stop.get("patience", 0))
    losses = [h["train_loss"] for h in history[1:]]
    if patience <= 0 or len(losses) <= patience:
        return None
    before, recent = min(losses[:-patience]), min(losses[-patience:])
    if recent < (1.0 - float(stop.get("min_delta", 0.0))) * before:
        return None
    return f"train_loss plateau: best of the last {patience} epochs {recent:.4g} vs {before:.4g}"


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


def lr_factor(step: int, steps_per_epoch: int, sched: dict[str, Any], epochs: int) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based)."""
    warm = sched.get("warmup_epochs", 0) * steps_per_epoch
    if warm and step < warm:
        return (step + 1) / warm
    name = sched.get("name", "cosine")
    if name == "constant":
        return 1.0
    if name == "multistep":
        epoch = step // steps_per_epoch
        passed = sum(1 for m in sched.get("milestones", []) if epoch >= m)
        return sched.get("gamma", 0.1) ** passed
    total = max(epochs * steps_per_epoch - warm, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(step - warm, total) / total))


def _select_device(spec: str) -> torch.device:
    from orthskip.devices import select_device

    return select_device(spec)


def build_cell_model(cell_cfg: dict[str, Any], data: Any) -> nn.Module:
    """The model of one cell for a prepared dataset (initialised from torch's global RNG)."""
    from orthskip.models import build_model

    cell = cell_cfg["cell"]
    return build_model(
        cell["arch"],
        cell["depth"],
        cell["skip"],
        tuple(data.input_shape),
        data.num_classes,
        cell_cfg["model"],
        {cell["skip"]: cell_cfg["skip_options"]},
    )


def count_params(model: nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    skip = sum(
        p.numel()
        for block in model.blocks
        if getattr(block, "skip", None) is not None
        for p in block.skip.parameters()
    )
    return total, skip


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
    if regression:
        return float(loss_sum) / y.numel(), r_squared(float(loss_sum), y)
    return float(loss_sum) / len(x), float(correct) / len(x)


def r_squared(sse: float, y: torch.Tensor) -> float:
    """1 − SSE / SST with SST = Σ (y − ȳ)² over rows, every target entry counted."""
    sst = float(((y.double() - y.double().mean(0)) ** 2).sum())
    return 1.0 - sse / sst if sst > 0 else math.nan


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
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True)


def train_cell(
    cell_cfg: dict[str, Any],
    data_path: Path,
    manifest: Path,
    outdir: Path,
    pack: dict[str, Any] | None = None,
) -> str:
    """Train one cell; returns the final status (``ok`` or ``diverged``).

    ``pack``: how the cell's pack ran it (recorded in status.json), None when alone.

    Raises :class:`Preempted` after checkpointing when SIGTERM arrives.
    """
    from orthskip.data import augment_batch, load_prepared
    from orthskip.optim import build_optimizer

    outdir = Path(outdir)
    cell = Cell.of(cell_cfg["cell"])
    tcfg = cell_cfg["train"]
    cfg_hash = config_hash(cell_cfg)
    rkey = resume_key(cell_cfg)
    torch.set_num_threads(tcfg.get("threads", 1))
    device = _select_device(tcfg.get("device", "auto"))
    amp = bool(tcfg.get("amp")) and device.type == "cuda"
    if tcfg.get("deterministic") and device.type == "cuda":
        # cuBLAS needs a fixed workspace for reproducible reductions (set before first use).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False

    dtype = getattr(torch, tcfg.get("dtype", "float32"))
    data = load_prepared(Path(data_path), Path(manifest))
    tr, va = validation_split(len(data.x_train), float(tcfg.get("val_fraction", 0.0)), cell.seed)

    def put(t: torch.Tensor) -> torch.Tensor:
        return t.to(device, dtype) if t.is_floating_point() else t.to(device)

    x_train, y_train = put(data.x_train[tr]), put(data.y_train[tr])
    x_val, y_val = put(data.x_train[va]), put(data.y_train[va])
    x_test, y_test = put(data.x_test), put(data.y_test)
    augment = data.meta.get("augment")
    memory_format = torch.preserve_format
    if tcfg.get("channels_last") and x_train.dim() == 4:
        memory_format = torch.channels_last
        x_train = x_train.contiguous(memory_format=memory_format)
        x_val = x_val.contiguous(memory_format=memory_format)
        x_test = x_test.contiguous(memory_format=memory_format)

    torch.manual_seed(cell.seed)
    model = build_cell_model(cell_cfg, data).to(device, memory_format=memory_format)
    if dtype != torch.float32:  # skips keep their float64 generators in float32 runs
        model.to(dtype)
    n_params, n_skip_params = count_params(model)
    kind = cell_cfg["cell"]["skip"]
    bundle = build_optimizer(model, tcfg["optimizer"], {kind: cell_cfg["skip_options"]})
    params = [p for p in model.parameters() if p.requires_grad]
    epochs = int(tcfg["epochs"])
    batch = int(tcfg["batch_size"])
    n_train = len(x_train)
    steps_per_epoch = max(math.ceil(n_train / batch), 1)
    schedulers = [
        torch.optim.lr_scheduler.LambdaLR(
            opt,
            lambda s: lr_factor(s, steps_per_epoch, tcfg["schedule"], epochs),
        )
        for opt in bundle.optimizers
    ]
    forward = torch.compile(model) if tcfg.get("compile") else model

    # A disabled autocast still costs an enter/exit per step: skip it off CUDA-AMP.
    def autocast() -> Any:
        if amp:
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    clip = float(tcfg["grad_clip"]) if tcfg.get("grad_clip") else None
    # On CPU a check per step costs no device sync; on CUDA non-finite values are caught by
    # the end-of-epoch check and by the linear-algebra guard (a NaN then fails loudly there).
    check_each_step = device.type != "cuda"
    regression = data.task == "regression"
    score = "r2" if regression else "acc"  # the history/status column of the task's score
    if regression:
        loss_fn: nn.Module = nn.MSELoss()
    else:
        loss_fn = nn.CrossEntropyLoss(label_smoothing=float(tcfg.get("label_smoothing", 0.0)))
    snapshot_epochs = sorted(set(tcfg.get("snapshot_epochs", [])) | {epochs})

    # Separate streams so that data order and augmentation do not depend on each other.
    data_gen = torch.Generator().manual_seed(cell.seed * 1_000_003 + 17)
    aug_gen = torch.Generator(device=device).manual_seed(cell.seed * 1_000_003 + 29)

    state = TrainState()
    last = outdir / "last.pt"
    if last.exists():
        ckpt = load_torch(last)
        if ckpt.get("resume_key") != rkey:
            stale = last.with_name(f"last.{ckpt.get('resume_key', 'unknown')}.pt")
            last.rename(stale)
            log.warning("%s was written for another config; kept as %s", last, stale.name)
        else:
            model.load_state_dict(ckpt["model"])
            bundle.load_state_dict(ckpt["optimizer"])
            for sched, sd in zip(schedulers, ckpt["schedulers"], strict=True):
                sched.load_state_dict(sd)
            data_gen.set_state(ckpt["data_gen"])
            aug_gen.set_state(ckpt["aug_gen"].to(aug_gen.get_state().device))
            state = TrainState.of(ckpt["state"])
            if state.status == "ok" and state.epoch < epochs and not state.stopped:
                state.status = "running"  # continue a finished run for more epochs
            log.info("resumed %s at epoch %d batch %d", cell.path, state.epoch, state.batch)

    def checkpoint() -> None:
        save_torch(
            last,
            {
                "resume_key": rkey,
                "config_hash": cfg_hash,
                "model": model.state_dict(),
                "optimizer": bundle.state_dict(),
                "schedulers": [s.state_dict() for s in schedulers],
                "data_gen": data_gen.get_state(),
                "aug_gen": aug_gen.get_state().cpu(),
                "state": state.as_dict(),
            },
        )

    clock = CheckpointClock(tcfg.get("checkpoint_every_s", 0))
    nan = float("nan")

    def record(epoch: int, train_loss: float, train_score: float, clipped: float) -> None:
        val_loss, val_score = evaluate(model, x_val, y_val, amp)
        test_loss, test_score = evaluate(model, x_test, y_test, amp)
        scores = {f"{split}_{name}": nan for split in SPLITS for name in ("acc", "r2")}
        scores.update(
            {f"train_{score}": train_score, f"val_{score}": val_score, f"test_{score}": test_score}
        )
        state.history.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "test_loss": test_loss,
                **scores,
                "clipped_frac": clipped,
                "lr": bundle.optimizers[0].param_groups[0]["lr"],
                "time_s": state.elapsed,
            }
        )
        if epoch in snapshot_epochs:
            state.snapshots[str(epoch)] = _cpu_state(model)
        log.info(
            "epoch %d/%d train_loss %.4f train_%s %.4f test_%s %.4f",
            epoch,
            epochs,
            train_loss,
            score,
            train_score,
            score,
            test_score,
        )

    if not state.history:
        record(0, *evaluate(model, x_train, y_train, amp), 0.0)

    def step(xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """One optimizer step; raises Diverged before a non-finite value reaches the update."""
        with autocast():
            out = forward(xb)
            loss = loss_fn(out.float() if amp else out, yb)
        bundle.zero_grad()
        loss.backward()
        if check_each_step and not _finite([loss.detach()]):
            raise Diverged("non-finite loss")
        clipped = False
        if clip:
            norm = nn.utils.clip_grad_norm_(params, clip)
            clipped = norm > clip  # a device tensor: no host sync here
        if check_each_step and not _finite([p.grad for p in params if p.grad is not None]):
            raise Diverged("non-finite gradient")
        bundle.step()
        if check_each_step and not _finite([p.detach() for p in params]):
            raise Diverged("non-finite parameter after the step")
        return out, loss, clipped

    tty = sys.stderr.isatty()
    with _SigtermFlag() as sigterm:
        while state.status == "running" and state.epoch < epochs:
            epoch = state.epoch + 1
            if state.perm is None:
                state.perm = torch.randperm(n_train, generator=data_gen)
                state.sums = torch.zeros(4, dtype=torch.float64)
            perm = state.perm.to(device)
            sums = state.sums.to(device)  # loss sum, correct, seen, clipped steps
            seen = int(sums[2])
            bar = _progress(tty, steps_per_epoch, f"epoch {epoch}/{epochs}")
            t0 = time.perf_counter()
            model.train()
            b = state.batch
            loss = None
            try:
                for b in range(state.batch, steps_per_epoch):
                    if sigterm.raised:
                        state.batch = b
                        sums[2] = seen
                        state.sums = sums.cpu()
                        state.elapsed += time.perf_counter() - t0
                        checkpoint()
                        raise Preempted(f"SIGTERM at epoch {epoch} batch {b}; saved {last}")
                    idx = perm[b * batch : (b + 1) * batch]
                    xb, yb = x_train[idx], y_train[idx]
                    if augment:
                        xb = augment_batch(xb, augment, aug_gen)
                    out, loss, clipped = step(xb, yb)
                    for sched in schedulers:
                        sched.step()
                    with torch.no_grad():  # device-side sums: no host sync per step
                        sums[0] += loss.detach() * len(yb)
                        if not regression:
                            sums[1] += (out.argmax(1) == yb).sum()
                        sums[3] += clipped
                    seen += len(yb)
                    if bar is not None:
                        bar.update(1)
            except Diverged as err:
                why = str(err)
            except RuntimeError as err:
                if not _linalg_diverged(err, model, loss):
                    raise RuntimeError(f"{cell.path}: epoch {epoch} step {b}: {err}") from err
                why = f"linear-algebra failure on non-finite values ({type(err).__name__})"
            else:
                why = None
            if bar is not None:
                bar.close()
            state.elapsed += time.perf_counter() - t0
            loss_sum, correct, _, n_clipped = sums.tolist()
            if why is None and not math.isfinite(loss_sum):
                why, b = "non-finite loss", steps_per_epoch - 1  # caught late (CUDA)
            state.update(epoch=epoch, batch=0, perm=None, sums=None)
            if why is not None:
                state.status = "diverged"
                state.diverged_at = (epoch, b)
                state.history.append(
                    {
                        **{k: nan for k in state.history[0]},
                        "epoch": epoch,
                        "clipped_frac": n_clipped / max(b, 1),
                        "lr": bundle.optimizers[0].param_groups[0]["lr"],
                        "time_s": state.elapsed,
                    }
                )
                log.warning("%s diverged at epoch %d step %d (%s)", cell.path, epoch, b, why)
            else:
                # regression: the epoch's running SSE (loss is the mean over target entries)
                train_score = (
                    r_squared(loss_sum * y_train[0].numel(), y_train)
                    if regression
                    else correct / seen
                )
                record(epoch, loss_sum / seen, train_score, n_clipped / steps_per_epoch)
                state.stopped = plateau(state.history, tcfg.get("stop") or {})
                if state.stopped:
                    state.status = "ok"
                    state.snapshots[str(epoch)] = _cpu_state(model)  # the last epoch
                    log.info("%s stopped at epoch %d: %s", cell.path, epoch, state.stopped)
            if state.status != "running" or clock.due():
                checkpoint()
    if state.status == "running":
        state.status = "ok"
        checkpoint()

    meta = {
        "task": data.task,
        "n_params": n_params,
        "n_skip_params": n_skip_params,
        "optimizer": bundle.metadata(),
        **({"pack": pack} if pack else {}),
    }
    write_outputs(cell, cell_cfg, state, outdir, device, cfg_hash, meta)
    return state.status


def write_outputs(
    cell: Cell,
    cell_cfg: dict[str, Any],
    state: TrainState,
    outdir: Path,
    device: torch.device,
    cfg_hash: str,
    meta: dict[str, Any],
) -> None:
    import pandas as pd

    history = pd.DataFrame(state.history)
    cell_cols = cell_cfg["cell"]  # the cell's wildcards and its skip kind
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
    score = "r2" if meta["task"] == "regression" else "acc"
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
            "model_options": cell_cfg["model"],
            "snapshot_epochs": sorted(int(e) for e in state.snapshots),
            "skip_weight_decay": cell_cfg["train"]["optimizer"].get("skip_weight_decay", 0.0),
            **provenance(cfg_hash, device),
            "versions": library_versions(),
            "cell_config": cell_cfg,
        },
    )


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else 0.0
