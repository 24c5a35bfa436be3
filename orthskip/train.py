"""Training of one cell: seeded, resumable, on-device, and honest about divergence.

One seed fixes the initial weights, the data order and the augmentation. ``last.pt`` is
written atomically every epoch and on SIGTERM (mid-epoch, with the batch position), so a
preempted job resumes where it stopped and ends with the same weights, bit for bit on
CPU, as a run that was never interrupted. A NaN/inf loss ends the cell with status
``diverged``: a result, not a crash.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from orthskip.config import Cell, config_hash, resume_key
from orthskip.io import load_torch, save_torch, write_json, write_parquet
from orthskip.provenance import library_versions, provenance

log = logging.getLogger(__name__)

EVAL_BATCH = 1024
PREEMPT_EXIT_CODE = 143  # 128 + SIGTERM, what SLURM and shells expect


class Preempted(Exception):
    """Raised after the resume checkpoint is written because SIGTERM arrived."""


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
    """Mean cross-entropy and accuracy over (x, y), eval mode, no augmentation."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=x.device, dtype=torch.float64)
    correct = torch.zeros((), device=x.device, dtype=torch.int64)
    for i in range(0, len(x), EVAL_BATCH):
        xb, yb = x[i : i + EVAL_BATCH], y[i : i + EVAL_BATCH]
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(xb)
        loss_sum += nn.functional.cross_entropy(out.float(), yb, reduction="sum").double()
        correct += (out.argmax(1) == yb).sum()
    model.train(was_training)
    n = max(len(x), 1)
    return float(loss_sum) / n, float(correct) / n


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


def train_cell(cell_cfg: dict[str, Any], data_path: Path, manifest: Path, outdir: Path) -> str:
    """Train one cell; returns the final status (``ok`` or ``diverged``).

    Raises :class:`Preempted` after checkpointing when SIGTERM arrives.
    """
    from orthskip.data import augment_batch, load_prepared
    from orthskip.optim import build_optimizer

    outdir = Path(outdir)
    cell = Cell(**cell_cfg["cell"])
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

    data = load_prepared(Path(data_path), Path(manifest))
    x_train, y_train = data.x_train.to(device), data.y_train.to(device)
    x_test, y_test = data.x_test.to(device), data.y_test.to(device)
    augment = data.meta.get("augment")
    memory_format = torch.preserve_format
    if tcfg.get("channels_last") and x_train.dim() == 4:
        memory_format = torch.channels_last
        x_train = x_train.contiguous(memory_format=memory_format)
        x_test = x_test.contiguous(memory_format=memory_format)

    torch.manual_seed(cell.seed)
    model = build_cell_model(cell_cfg, data).to(device, memory_format=memory_format)
    n_params, n_skip_params = count_params(model)
    bundle = build_optimizer(model, tcfg["optimizer"], {cell.skip: cell_cfg["skip_options"]})
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
    loss_fn = nn.CrossEntropyLoss(label_smoothing=float(tcfg.get("label_smoothing", 0.0)))
    snapshot_epochs = sorted(set(tcfg.get("snapshot_epochs", [])) | {epochs})

    # Separate streams so that data order and augmentation do not depend on each other.
    data_gen = torch.Generator().manual_seed(cell.seed * 1_000_003 + 17)
    aug_gen = torch.Generator(device=device).manual_seed(cell.seed * 1_000_003 + 29)

    state: dict[str, Any] = {
        "epoch": 0,  # epochs fully completed
        "batch": 0,  # next batch within the running epoch
        "perm": None,
        "sums": None,
        "history": [],
        "snapshots": {},
        "elapsed": 0.0,
        "status": "running",
    }
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
            state.update(ckpt["state"])
            if state["status"] == "ok" and state["epoch"] < epochs:
                state["status"] = "running"  # continue a finished run for more epochs
            log.info("resumed %s at epoch %d batch %d", cell.path, state["epoch"], state["batch"])

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
                "state": state,
            },
        )

    def record(epoch: int, train_loss: float, train_acc: float, seconds: float) -> None:
        test_loss, test_acc = evaluate(model, x_test, y_test, amp)
        state["history"].append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "train_acc": train_acc,
                "test_loss": test_loss,
                "test_acc": test_acc,
                "lr": bundle.optimizers[0].param_groups[0]["lr"],
                "time_s": seconds,
            }
        )
        if epoch in snapshot_epochs:
            state["snapshots"][str(epoch)] = _cpu_state(model)
        log.info(
            "epoch %d/%d train_loss %.4f train_acc %.4f test_acc %.4f",
            epoch,
            epochs,
            train_loss,
            train_acc,
            test_acc,
        )

    if not state["history"]:
        record(0, *evaluate(model, x_train, y_train, amp), 0.0)

    tty = sys.stderr.isatty()
    with _SigtermFlag() as sigterm:
        while state["status"] == "running" and state["epoch"] < epochs:
            epoch = state["epoch"] + 1
            if state["perm"] is None:
                state["perm"] = torch.randperm(n_train, generator=data_gen)
                state["sums"] = torch.zeros(3, dtype=torch.float64)
            perm = state["perm"].to(device)
            sums = state["sums"].to(device)  # loss sum, correct, seen (kept on the host)
            seen = int(sums[2])
            bar = _progress(tty, steps_per_epoch, f"epoch {epoch}/{epochs}")
            t0 = time.perf_counter()
            model.train()
            for b in range(state["batch"], steps_per_epoch):
                if sigterm.raised:
                    state["batch"] = b
                    sums[2] = seen
                    state["sums"] = sums.cpu()
                    state["elapsed"] += time.perf_counter() - t0
                    checkpoint()
                    raise Preempted(f"SIGTERM at epoch {epoch} batch {b}; saved {last}")
                idx = perm[b * batch : (b + 1) * batch]
                xb, yb = x_train[idx], y_train[idx]
                if augment:
                    xb = augment_batch(xb, augment, aug_gen)
                with autocast():
                    out = forward(xb)
                    loss = loss_fn(out.float() if amp else out, yb)
                bundle.zero_grad()
                loss.backward()
                if clip:
                    nn.utils.clip_grad_norm_(model.parameters(), clip)
                bundle.step()
                for sched in schedulers:
                    sched.step()
                with torch.no_grad():  # device-side sums: no host sync per step
                    sums[0] += loss.detach() * len(yb)
                    sums[1] += (out.argmax(1) == yb).sum()
                seen += len(yb)
                if bar is not None:
                    bar.update(1)
            if bar is not None:
                bar.close()
            state["elapsed"] += time.perf_counter() - t0
            loss_sum, correct, _ = sums.tolist()
            state.update(epoch=epoch, batch=0, perm=None, sums=None)
            if not math.isfinite(loss_sum):
                state["status"] = "diverged"
                state["history"].append(
                    {
                        "epoch": epoch,
                        "train_loss": float("nan"),
                        "train_acc": float("nan"),
                        "test_loss": float("nan"),
                        "test_acc": float("nan"),
                        "lr": bundle.optimizers[0].param_groups[0]["lr"],
                        "time_s": state["elapsed"],
                    }
                )
                log.warning("%s diverged at epoch %d (non-finite loss)", cell.path, epoch)
            else:
                record(epoch, loss_sum / seen, correct / seen, state["elapsed"])
            checkpoint()
    if state["status"] == "running":
        state["status"] = "ok"
        checkpoint()

    meta = {"n_params": n_params, "n_skip_params": n_skip_params, "optimizer": bundle.metadata()}
    _write_outputs(cell, cell_cfg, state, outdir, device, cfg_hash, meta)
    return state["status"]


def _write_outputs(
    cell: Cell,
    cell_cfg: dict[str, Any],
    state: dict[str, Any],
    outdir: Path,
    device: torch.device,
    cfg_hash: str,
    meta: dict[str, Any],
) -> None:
    import pandas as pd

    history = pd.DataFrame(state["history"])
    for key, value in cell.as_dict().items():
        history.insert(0, key, value)
    write_parquet(outdir / "history.parquet", history)
    save_torch(
        outdir / "snapshots.pt",
        {
            "cell": cell.as_dict(),
            "config_hash": cfg_hash,
            "states": state["snapshots"],
        },
    )
    final = state["history"][-1]
    ok = state["status"] == "ok"
    finite_acc = [h["test_acc"] for h in state["history"] if math.isfinite(h["test_acc"])]
    write_json(
        outdir / "status.json",
        {
            **cell.as_dict(),
            "status": state["status"],
            "epochs": state["epoch"],
            "train_loss": final["train_loss"] if ok else float("nan"),
            "train_acc": final["train_acc"] if ok else float("nan"),
            "test_loss": final["test_loss"] if ok else float("nan"),
            "test_acc": final["test_acc"] if ok else float("nan"),
            "best_test_acc": max(finite_acc) if finite_acc else float("nan"),
            "wall_time_s": state["elapsed"],
            **meta,
            "snapshot_epochs": sorted(int(e) for e in state["snapshots"]),
            "skip_weight_decay": cell_cfg["train"]["optimizer"].get("skip_weight_decay", 0.0),
            **provenance(cfg_hash, device),
            "versions": library_versions(),
            "cell_config": cell_cfg,
        },
    )
