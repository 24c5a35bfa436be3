"""The train stage: a pack of cells, in one process (``execution.pack``), on one engine.

The members of one (dataset, arch, depth) train as one batched computation
(``orthskip.training.stacked``, with ``execution.vectorise``, the default): any mix of the
mlp's matrix skip kinds hand-batched (``orthskip.training.handmlp``), other members per
variant under vmap; each member's numbers are those of its reference run
(``orthskip.training.reference``) to float rounding. A pack of one (one cell) trains on
the same engine, its own module called directly (``orthskip.training.single``). Members
that cannot be batched (``vectorise: false``, ``train.compile`` / ``channels_last``,
orth_jacobian on images, or checkpoints left at different steps) train one after another,
each as a pack of one. Either way each member writes its own cell directory and its own
log, and a diverged member is recorded ``diverged`` while the others go on. SIGTERM ends
the pack after checkpointing; the rerun skips finished members (their ``last.pt`` says
so) and resumes the others.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from orthskip.config.grid import CellConfig
from orthskip.logs import check_member_paths, run_member
from orthskip.training.runlog import train_stacked_logged
from orthskip.training.stacked import can_vectorise


def train_pack(
    members: Sequence[CellConfig],
    data: Path,
    manifest: Path,
    outdirs: Sequence[Path],
    logs: Sequence[Path] | None = None,
    vectorise: bool = True,
) -> list[str]:
    """Train every member; returns their statuses (``ok`` / ``diverged``)."""

    logs = logs or [None] * len(members)
    check_member_paths(members, outdirs, logs)
    statuses: dict[int, str] = {}
    for idx in _groups(members):
        sub = [members[i] for i in idx]
        got = _train_group(sub, data, manifest, [outdirs[i] for i in idx],
                           [logs[i] for i in idx], vectorise)  # fmt: skip
        statuses.update(zip(idx, got, strict=True))
    return [statuses[i] for i in range(len(members))]


def _groups(members: Sequence[CellConfig]) -> list[list[int]]:
    """The batched computations: the members of one (dataset, arch, depth), any variant,
    where they can train as one (the mlp's matrix kinds, hand-batched); else the members
    that differ only in seed. A family pack has one such group per depth, trained one
    group after another."""
    by_depth: dict[tuple[str, str, int], list[int]] = {}
    for i, cfg in enumerate(members):
        c = cfg.cell
        by_depth.setdefault((c.dataset, c.arch, c.depth), []).append(i)
    groups: list[list[int]] = []
    for idx in by_depth.values():
        if len({members[i].cell.variant for i in idx}) > 1:
            why = can_vectorise([members[i] for i in idx])
            if why is None:
                groups.append(idx)
                continue
            cells = ", ".join(members[i].cell.path for i in idx)
            logging.getLogger(__name__).info("packed per variant: %s (%s)", cells, why)
        by_variant: dict[str, list[int]] = {}
        for i in idx:
            by_variant.setdefault(members[i].cell.pack, []).append(i)
        groups.extend(by_variant.values())
    return groups


def _train_group(
    members: list[CellConfig],
    data: Path,
    manifest: Path,
    outdirs: list[Path],
    logs: list[Path | None],
    vectorise: bool,
) -> list[str]:
    """One batched computation if the members can be (see ``_groups``), else one by one."""
    why = can_vectorise(members) if vectorise else "execution.vectorise is false"
    if why is None:
        statuses = train_stacked_logged(members, data, manifest, outdirs, logs)
        if statuses is not None:
            return statuses
        why = "the members' checkpoints are at different steps"
    if len(members) > 1:
        logging.getLogger(__name__).info("members one after another: %s", why)
    label = {"mode": "sequential", "size": len(members)}
    engine = "auto" if vectorise else "module"  # vectorise false: nothing batched or stacked
    return [
        run_member(log, _train_one, cfg, data, manifest, out, label, engine)
        for cfg, out, log in zip(members, outdirs, logs, strict=True)
    ]


def _train_one(
    cfg: CellConfig, data: Path, manifest: Path, out: Path, label: dict, engine: str
) -> str:
    """One member of a sequential pack: a pack of one (always at one step); its records
    reach the rule's member log through run_member, its markers its train.log."""
    statuses = train_stacked_logged([cfg], data, manifest, [out], [None], label, engine)
    assert statuses is not None
    return statuses[0]
