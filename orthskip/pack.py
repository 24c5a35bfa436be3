"""A pack: the cells that differ only in seed, run in one process (``execution.pack``).

Training: the members train as one batched computation (``orthskip.stacked``, with
``execution.vectorise``, the default), each member's numbers those of its solo run to float
rounding; or one after another, each exactly as when run alone (``vectorise: false``,
``train.compile`` / ``channels_last``, or checkpoints left at different steps). Either way
each member writes its own cell directory and its own log, and a diverged member is
recorded ``diverged`` while the others go on. SIGTERM ends the pack after checkpointing;
the rerun skips finished members (their ``last.pt`` says so) and resumes the others.
Metric extraction runs the members one after another in the one process.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orthskip.config import Cell


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
    vectorise: bool = True,
) -> list[str]:
    """Train every member; returns their statuses (``ok`` / ``diverged``)."""

    logs = logs or [None] * len(members)
    _check(members, outdirs, logs)
    # members that differ only in seed train together; a family pack has one such group
    # per depth, trained one group after another
    groups: dict[str, list[int]] = {}
    for i, cfg in enumerate(members):
        groups.setdefault(Cell.of(cfg["cell"]).pack, []).append(i)
    statuses: dict[int, str] = {}
    for idx in groups.values():
        sub = [members[i] for i in idx]
        got = _train_group(sub, data, manifest, [outdirs[i] for i in idx],
                           [logs[i] for i in idx], vectorise)  # fmt: skip
        statuses.update(zip(idx, got, strict=True))
    return [statuses[i] for i in range(len(members))]


def _train_group(
    members: list[dict[str, Any]],
    data: Path,
    manifest: Path,
    outdirs: list[Path],
    logs: list[Path | None],
    vectorise: bool,
) -> list[str]:
    """Members that differ only in seed: vectorised if they can be, else one by one."""
    from orthskip.runlog import train_logged, train_stacked_logged
    from orthskip.stacked import can_vectorise

    why = can_vectorise(members) if vectorise else "execution.vectorise is false"
    if why is None:
        statuses = train_stacked_logged(members, data, manifest, outdirs, logs)
        if statuses is not None:
            return statuses
        why = "the members' checkpoints are at different steps"
    if len(members) > 1:
        logging.getLogger(__name__).info("members one after another: %s", why)
    pack = {"mode": "sequential", "size": len(members)}
    return [
        _run(log, train_logged, cfg, data, manifest, out, pack=pack)
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


def _run(log: Path | None, func: Any, cfg: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
    """One member, its records also in the rule's per-member log ``log``."""
    from orthskip.runlog import appended_log

    with appended_log(log) if log else contextlib.nullcontext():
        cell = cfg["cell"]
        logging.getLogger(__name__).info(
            "member %s/%s/%s/d%s/s%s", cell["dataset"], cell["arch"], cell["variant"],
            cell["depth"], cell["seed"],
        )  # fmt: skip
        return func(cfg, *args, **kwargs)
