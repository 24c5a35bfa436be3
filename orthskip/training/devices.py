"""Choosing the torch device for one training job.

Three situations, one function (:func:`select_device`):

* **SLURM** — the scheduler gives each job its own GPU(s) and sets
  ``CUDA_VISIBLE_DEVICES``; torch then sees only those, so the job uses ``cuda:0``.
* **One multi-GPU box, local executor** — ``snakemake --cores N --resources gpu=K`` runs
  up to K training jobs at once, but every process sees every GPU. Each job claims
  one GPU by taking an exclusive ``flock`` on a lock file per GPU
  (``<lock_dir>/gpu-<id>.lock``) and keeps it for its lifetime. The kernel drops the
  lock when the process exits, however it exits (crash, SIGKILL), so no stale locks.
  With K at most the number of GPUs every concurrent job gets a GPU of its own; with
  more jobs than GPUs the extra ones share a GPU (and a warning says so) rather than
  wait.
* **No GPU** (or a CPU-only torch build) — the CPU.

The lock directory is ``$ORTHSKIP_GPU_LOCK_DIR`` if set, else
``<tmpdir>/orthskip-gpu-locks-<uid>``; lock files are keyed by the entry of
``CUDA_VISIBLE_DEVICES`` (an index or a GPU UUID), so jobs that see different subsets
of the GPUs still agree on which physical GPU a lock stands for.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from orthskip.errors import ConfigError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

DEVICE_SPECS = ("auto", "cpu", "cuda", "cuda:<index>")

# Slots claimed by this process: the open file objects keep the flocks alive.
_HELD: list[GpuSlot] = []


@dataclass
class GpuSlot:
    """A GPU claimed by this process: ``index`` is the torch device index."""

    index: int
    token: str
    lock_path: Path | None
    exclusive: bool
    _file: object | None = None

    def release(self) -> None:
        """Drop the lock early (normally it lives as long as the process)."""
        if self._file is not None:
            self._file.close()  # closing the descriptor releases the flock
            self._file = None


def default_lock_dir() -> Path:
    env = os.environ.get("ORTHSKIP_GPU_LOCK_DIR")
    if env:
        return Path(env)
    return Path(tempfile.gettempdir()) / f"orthskip-gpu-locks-{os.getuid()}"


def visible_gpu_tokens(count: int, env: str | None = None) -> list[str]:
    """Names of the ``count`` GPUs torch sees, as stable as the environment allows.

    ``CUDA_VISIBLE_DEVICES="2,3"`` → ``["2", "3"]`` (physical ids); unset → ``["0", …]``.
    """
    env = os.environ.get("CUDA_VISIBLE_DEVICES") if env is None else env
    entries = [e.strip() for e in env.split(",") if e.strip()] if env else []
    if len(entries) >= count:
        return entries[:count]
    return [str(i) for i in range(count)]


def _lock_name(token: str) -> str:
    return "gpu-" + re.sub(r"[^A-Za-z0-9_.-]", "_", token) + ".lock"


def claim_gpu_slot(tokens: Sequence[str], lock_dir: Path | None = None) -> GpuSlot:
    """Claim the first GPU whose lock is free; it stays claimed while the slot is held.

    ``tokens`` names the visible GPUs in torch index order (see
    :func:`visible_gpu_tokens`); its length is the device count, so this runs (and is
    tested) without any GPU. With every GPU taken, fall back to sharing one, chosen by
    pid so that over-subscribed jobs spread out, with ``exclusive=False``.
    """
    if not tokens:
        raise ValueError("claim_gpu_slot needs at least one GPU token")
    lock_dir = default_lock_dir() if lock_dir is None else Path(lock_dir)
    lock_dir.mkdir(parents=True, exist_ok=True)
    for index, token in enumerate(tokens):
        path = lock_dir / _lock_name(token)
        f = open(path, "a+")  # held open: the flock lives as long as the file
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            continue
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        return GpuSlot(index=index, token=token, lock_path=path, exclusive=True, _file=f)
    index = os.getpid() % len(tokens)
    log.warning(
        "all %d GPUs are claimed by other orthskip jobs (lock dir %s); sharing GPU %s — "
        "run snakemake with --resources gpu=K where K is at most the number of GPUs",
        len(tokens),
        lock_dir,
        tokens[index],
    )
    return GpuSlot(index=index, token=tokens[index], lock_path=None, exclusive=False)


def select_device(spec: str = "auto") -> torch.device:
    """The device a training job should use.

    ``spec``: ``"auto"`` (a claimed GPU if CUDA is usable, else the CPU), ``"cpu"``,
    ``"cuda"`` (a claimed GPU; error without one) or ``"cuda:N"`` (exactly that GPU).
    """
    import torch  # here, not at module level: the slot logic runs without torch

    spec = str(spec).strip().lower()
    if spec == "cpu":
        return torch.device("cpu")
    if spec not in ("auto", "cuda") and not re.fullmatch(r"cuda:\d+", spec):
        raise ConfigError(f"device: unknown value {spec!r}; expected one of {DEVICE_SPECS}")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        if spec == "auto":
            return torch.device("cpu")
        raise ConfigError(
            f"device: {spec!r} requested but no CUDA GPU is usable here "
            f"(torch {torch.__version__}, CUDA_VISIBLE_DEVICES="
            f"{os.environ.get('CUDA_VISIBLE_DEVICES')!r}); use 'auto' or 'cpu'"
        )
    if spec.startswith("cuda:"):
        index = int(spec.split(":")[1])
        if index >= count:
            raise ConfigError(f"device: {spec!r} but only {count} GPU(s) are visible")
        return torch.device(spec)
    if count == 1:
        # SLURM (or a one-GPU box): nothing to choose between.
        return torch.device("cuda:0")
    if not _HELD:
        _HELD.append(claim_gpu_slot(visible_gpu_tokens(count)))
    return torch.device(f"cuda:{_HELD[0].index}")
