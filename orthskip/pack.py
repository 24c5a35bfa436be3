"""A pack: the cells that differ only in seed, run in one process (``execution.pack``).

Each member is trained (and its metrics extracted) exactly as when run alone, one after
another, writing its own cell directory and its own log: the pack only saves the
per-job process start-up (Python, torch, the dataset), which dominated short cells.
A member that diverges is recorded ``diverged`` and the next member starts as usual;
SIGTERM ends the pack after the running member has checkpointed, and the rerun skips
finished members (their ``last.pt`` says so) and resumes the interrupted one.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _check(members: Sequence[dict[str, Any]], *paths: Sequence[Any]) -> None:
    for p in paths:
        if len(p) != len(members):
            raise ValueError(f"a pack of {len(members)} members needs as many paths, got {len(p)}")


def train_pack(
    members: Sequence[dict[str, Any]],
    data: Path,
    manifest: Path,
    outdirs: Sequence[Path],
    logs: Sequence[Path] | None = None,
) -> list[str]:
    """Train every member; returns their statuses (``ok`` / ``diverged``)."""
    from orthskip.runlog import train_logged

    logs = logs or [None] * len(members)
    _check(members, outdirs, logs)
    return [
        _run(log, train_logged, cfg, data, manifest, out)
        for cfg, out, log in zip(members, outdirs, logs, strict=True)
    ]


def metrics_pack(
    members: Sequence[dict[str, Any]],
    data: Path,
    manifest: Path,
    snapshots: Sequence[Path],
    outs: Sequence[Path],
    warp_outs: Sequence[Path],
    logs: Sequence[Path] | None = None,
) -> int:
    """Extract every member's metrics; returns the number of rows written."""
    from orthskip.cell_metrics import cell_metrics

    logs = logs or [None] * len(members)
    _check(members, snapshots, outs, warp_outs, logs)
    return sum(
        _run(log, cell_metrics, cfg, data, manifest, snap, out, warp)
        for cfg, snap, out, warp, log in zip(members, snapshots, outs, warp_outs, logs, strict=True)
    )


def _run(log: Path | None, func: Any, cfg: dict[str, Any], *args: Any) -> Any:
    """One member, its records also in the rule's per-member log ``log``."""
    from orthskip.runlog import appended_log

    with appended_log(log) if log else contextlib.nullcontext():
        cell = cfg["cell"]
        logging.getLogger(__name__).info(
            "member %s/%s/%s/d%s/s%s", cell["dataset"], cell["arch"], cell["variant"],
            cell["depth"], cell["seed"],
        )  # fmt: skip
        return func(cfg, *args)
