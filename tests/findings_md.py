"""Reading findings.md in tests: the file as the stage writes it, its sections and the rows
of its tables."""

from __future__ import annotations

from pathlib import Path

from orthskip.results import read_table
from orthskip.tables.findings_text import findings_markdown


def findings_of(metrics_dir: Path) -> str:
    """findings.md of the aggregated results in ``metrics_dir``."""
    return findings_markdown(
        *(read_table(Path(metrics_dir), n) for n in ("layers", "cells", "approx", "history"))
    )


def section(text: str, title: str) -> str:
    """The ``## title…`` section of ``text`` (up to the next ``## ``); '' if absent."""
    for part in text.split("\n## ")[1:]:
        if part.startswith(title):
            return part
    return ""


def rows(part: str, heading: str = "") -> list[dict[str, str]]:
    """The first Markdown table after ``### heading`` in ``part`` (the first table of
    ``part`` without a heading), as one dict per row keyed by the header; [] for "none"."""
    if heading:
        part = part.split(f"### {heading}", 1)[1].split("\n", 1)[1].split("\n### ")[0]
    block: list[str] = []
    for ln in part.splitlines():
        if ln.startswith("|"):
            block.append(ln)
        elif block:
            break
    if not block:
        return []
    cells = [[c.strip() for c in ln.strip("|").split(" | ")] for ln in block]
    return [dict(zip(cells[0], r, strict=True)) for r in cells[2:]]
