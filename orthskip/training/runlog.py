"""Training's run logs: every run of a cell in its append-only ``train.log``
(``orthskip.logs.appended_log``), with a marker line at each start and end — the fresh start,
a preemption, each resume and the finish (and a failure's traceback).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orthskip.config.grid import CellConfig, resume_key
from orthskip.io import load_torch
from orthskip.logs import MemberFilter, MemberNames, appended_log
from orthskip.training.preempt import PREEMPT_EXIT_CODE, Preempted
from orthskip.training.stacked import train_stacked


def resume_note(cell_cfg: CellConfig, outdir: Path) -> str:
    """What the trainer will do with ``outdir/last.pt``: resume from epoch N, or fresh."""
    last = outdir / "last.pt"
    if not last.exists():
        return "fresh"
    try:  # mmap: only the small state dict is read, not the weights
        ckpt = load_torch(last, mmap=True)
    except Exception as err:  # the trainer reports an unreadable checkpoint itself
        return f"last.pt unreadable ({type(err).__name__})"
    if ckpt.get("resume_key") != resume_key(cell_cfg):
        return "fresh; last.pt is for another config"
    state = ckpt.get("state", {})
    batch = f" batch {state['batch']}" if state.get("batch") else ""
    return f"resume from epoch {state.get('epoch', '?')}{batch}"


def train_stacked_logged(
    cfgs: list[CellConfig],
    data: Path,
    manifest: Path,
    outs: list[Path],
    logs: list[Path | None],
    label: Mapping[str, Any] | None = None,
    engine: str = "auto",
) -> list[str] | None:
    """orthskip.training.stacked.train_stacked with each member's run marked in its logs (its
    ``train.log`` and the rule's member log): each holds its member's markers and records,
    and the records about the whole pack, never another member's."""
    names = [c.cell.path for c in cfgs]
    named = MemberNames(names)  # each record searched once for every member's filter
    with ExitStack() as stack:
        for name, out, log_file in zip(names, outs, logs, strict=True):
            keep = MemberFilter(name, names, named)
            # say() writes to every open log whose filter passes the line: each member's own
            say = stack.enter_context(appended_log(Path(out) / "train.log", keep))
            if log_file:
                stack.enter_context(appended_log(Path(log_file), keep))
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        packed = "; packed, vectorised" if len(cfgs) > 1 else ""  # one cell is no pack
        for name, cfg, out in zip(names, cfgs, outs, strict=True):
            note = resume_note(cfg, Path(out))
            say(f"==== orthskip train {name} started {now} ({note}{packed})")
        try:
            statuses = train_stacked(
                cfgs, data, manifest, [Path(o) for o in outs], engine=engine, label=label
            )
        except Preempted:
            for name, cfg, out in zip(names, cfgs, outs, strict=True):
                note = resume_note(cfg, Path(out))
                say(f"==== orthskip train {name} preempted (exit {PREEMPT_EXIT_CODE}; {note})")
            raise
        if statuses is None:
            return None
        for name, status in zip(names, statuses, strict=True):
            say(f"==== orthskip train {name} finished: status {status}")
    return statuses
