"""Preemption: SIGTERM becomes a flag the training loop checks between steps; the loop
writes its resume checkpoint and raises :class:`Preempted`, and the command exits with
``PREEMPT_EXIT_CODE``."""

from __future__ import annotations

import signal
from typing import Any

PREEMPT_EXIT_CODE = 143  # 128 + SIGTERM, what SLURM and shells expect


class Preempted(Exception):
    """Raised after the resume checkpoint is written because SIGTERM arrived."""


class SigtermFlag:
    """Turns SIGTERM into a flag the loop checks between steps."""

    def __init__(self) -> None:
        self.raised = False
        self._old: Any = None

    def __enter__(self) -> SigtermFlag:
        self._old = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.raised = True

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGTERM, self._old)
