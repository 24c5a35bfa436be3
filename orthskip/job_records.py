"""``orthskip dvc keep-records -- CMD``: Snakemake's job records survive a redraw unchanged.

The pipeline publishes ``.snakemake/metadata`` with the results (docs/dvc.md): one JSON
record per output file with the code, params and input checksums of the job that made it,
which is what lets a fresh clone run nothing after ``dvc pull``. Snakemake rewrites a record
whenever the job reruns, and every rewrite holds new run times and an in-memory job hash,
so ``make figures`` on pulled results (identical figures from identical inputs) would leave
``dvc status`` dirty. This command runs CMD, then gives every record that differs from its
earlier bytes only in those run-specific fields its earlier bytes back. A record whose code,
params, inputs or software environment changed keeps the new content: that output is a new
result and ``dvc status`` says so.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orthskip.io import atomic_path

METADATA = Path(".snakemake/metadata")
# Fields that describe one run of a job rather than what made its output: when it ran, the
# job object's hash in that Snakemake process, and the shell command, which holds absolute
# paths of the checkout (the paper rule's source directory; its content hash is a param).
# Snakemake's rerun triggers (code, params, input, software-env, mtime) read none of them.
RUN_FIELDS = frozenset({"starttime", "endtime", "job_hash", "shellcmd"})


def read_records(directory: Path = METADATA) -> dict[Path, bytes]:
    """Every record file under ``directory`` (by path relative to it) and its bytes."""
    if not directory.is_dir():
        return {}
    return {p.relative_to(directory): p.read_bytes() for p in directory.rglob("*") if p.is_file()}


def _content(raw: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(raw)
    except ValueError:  # a record Snakemake was writing when it stopped: never restored
        return None
    if not isinstance(record, dict):
        return None
    return {k: v for k, v in record.items() if k not in RUN_FIELDS}


def restore_unchanged(before: dict[Path, bytes], directory: Path = METADATA) -> list[Path]:
    """Write back the earlier bytes of each record whose content apart from RUN_FIELDS is
    unchanged; returns those records' paths (relative to ``directory``)."""
    restored = []
    for rel, raw in sorted(read_records(directory).items()):
        old = before.get(rel)
        if old is None or old == raw:
            continue
        then, now = _content(old), _content(raw)
        if then is not None and then == now:
            with atomic_path(directory / rel) as tmp:
                tmp.write_bytes(old)
            restored.append(rel)
    return restored


def keep_records(cmd: Sequence[str], directory: Path = METADATA) -> int:
    """Run ``cmd``; then restore the records it only re-timed. Returns its exit status."""
    before = read_records(directory)
    try:
        return subprocess.run(list(cmd)).returncode
    finally:  # also after a failure: the jobs that finished made the same outputs
        restore_unchanged(before, directory)
