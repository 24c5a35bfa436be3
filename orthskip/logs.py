"""Append-only logs, and a pack's members run one after another, each logged to its own file.

Snakemake deletes a rule's log file before it reruns the job, so a stage that must keep every
run's history (training: the cell's ``train.log``) appends to a second file of its own. When a
pack's members train as one computation, their logs are open at once: a
:class:`MemberFilter` keeps each member's files to its own records.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orthskip.config.grid import CellConfig

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class MemberFilter(logging.Filter):
    """Passes the records (and marker lines) about one member of a pack, and those that name
    no member at all (about the whole pack); drops those about the other members only.

    A record is about a member when its message names the member's cell path as a whole
    path: ``d1/s1`` is not named by ``d1/s10``. The filters of one pack share ``names``
    (``MemberNames(members)``): each record's message is then searched once for all of
    them, not once per member's log (every record reaches every member's handler).
    """

    def __init__(self, own: str, members: Sequence[str], names: MemberNames | None = None) -> None:
        super().__init__()
        self._own = own
        self._names = names if names is not None else MemberNames(members)

    def filter(self, record: logging.LogRecord) -> bool:
        named = self._names.of(record)
        return not named or self._own in named


class MemberNames:
    """Which members of a pack a log record names (the last record's answer kept)."""

    def __init__(self, members: Sequence[str]) -> None:
        self._patterns = [(m, _named(m)) for m in dict.fromkeys(members)]
        self._last: tuple[logging.LogRecord | None, frozenset[str]] = (None, frozenset())

    def of(self, record: logging.LogRecord) -> frozenset[str]:
        last, named = self._last
        if last is not record:
            text = record.getMessage()
            named = frozenset(m for m, p in self._patterns if m in text and p.search(text))
            self._last = (record, named)
        return named


def _named(cell: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w.-]){re.escape(cell)}(?![\w.-])")


@contextmanager
def appended_log(path: Path, keep: logging.Filter | None = None) -> Iterator[Callable[[str], None]]:
    """Copy every log record (and the lines given to ``say``) to ``path``, appended; with
    ``keep``, only those it passes.

    Snakemake deletes a rule's log file before it reruns the job, so the train rule keeps
    this second, append-only log in the cell's directory: it holds every run of the cell.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter(_FORMAT))
    if keep is not None:
        handler.addFilter(keep)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(min(level, logging.INFO) if level else logging.INFO)  # epoch lines are INFO

    def say(line: str) -> None:
        """A marker line, verbatim, on stderr and in every log file open now (the rule's too)
        whose filters pass it."""
        print(line, file=sys.stderr, flush=True)
        marker = logging.makeLogRecord({"msg": line})
        for h in root.handlers:
            if isinstance(h, logging.FileHandler) and h.filter(marker):
                h.stream.write(line + "\n")
                h.flush()

    try:
        yield say
    except Exception as err:  # the reason of a failed run belongs in its history too
        handler.stream.write("".join(traceback.format_exception(err)))
        handler.flush()
        raise
    finally:
        root.setLevel(level)
        root.removeHandler(handler)
        handler.close()


def check_member_paths(members: Sequence[CellConfig], *paths: Sequence[Any]) -> None:
    """A pack's per-member paths: one of each per member."""
    for p in paths:
        if len(p) != len(members):
            raise ValueError(f"a pack of {len(members)} members needs as many paths, got {len(p)}")


def run_member(log: Path | None, func: Any, cfg: CellConfig, *args: Any, **kwargs: Any) -> Any:
    """One member, its records also in the rule's per-member log ``log``."""
    with appended_log(log) if log else contextlib.nullcontext():
        logging.getLogger(__name__).info("member %s", cfg.cell.path)
        return func(cfg, *args, **kwargs)
