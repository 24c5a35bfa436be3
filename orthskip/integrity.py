"""What planning checks before any job is scheduled, without loading torch: that a prepared
dataset still matches its manifest and that a cell's ``snapshots.pt`` is a whole archive.

A bad file found here is named with its fix before Snakemake plans around it: it would
otherwise look like an updated input (deleting good outputs downstream) or fail a pack's
job after the job's other members' outputs were deleted.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from orthskip.errors import DatasetError
from orthskip.io import sha256_file

# Above this size the parse-time check compares the size only (hashing 1 GiB takes seconds
# on every snakemake call); load_prepared still verifies the full sha256 before training.
HASH_MAX_BYTES = 1 << 30


def check_prepared(path: Path, manifest: Path, hash_max_bytes: int = HASH_MAX_BYTES) -> None:
    """Raise DatasetError when ``path`` no longer matches its manifest (both must exist).

    Run by the Snakefile before any job is scheduled: a truncated or replaced tensor file
    would otherwise look like an updated input, and Snakemake would delete the good
    outputs of every cell that trains on it before the first job fails on the hash.
    """
    path, manifest = Path(path), Path(manifest)
    if not (path.is_file() and manifest.is_file()):
        return
    fix = (
        f"delete {path} and {manifest} to prepare it again, or restore both with `dvc pull`"
        " (nothing under results/ was changed)"
    )
    try:
        info = json.loads(manifest.read_text())
        expected, size = str(info["sha256"]), info.get("bytes")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DatasetError(f"dataset manifest {manifest} is unreadable ({e!r}): {fix}") from None
    actual = path.stat().st_size
    if size is not None and actual != size:
        raise DatasetError(
            f"prepared dataset {path} is corrupt: {actual} bytes, its manifest {manifest} "
            f"records {size}; {fix}"
        )
    if size is not None and actual > hash_max_bytes:
        return
    digest = sha256_file(path)
    if digest != expected:
        raise DatasetError(
            f"prepared dataset {path} is corrupt: sha256 {digest} does not match {expected} "
            f"in {manifest}; {fix}"
        )


def snapshots_fix(path: Path) -> str:
    """What to do about a bad ``snapshots.pt``: its cell's last.pt holds every snapshot."""
    return (
        f"delete it and ask for it again (`snakemake --cores 1 {path}`, or restore it with "
        "`dvc pull`): the train job writes it again from the cell's last.pt, without "
        "retraining, and the next run extracts its metrics"
    )


def check_snapshots(path: str | Path, full: bool = True) -> None:
    """Raise DatasetError naming ``path`` and the fix unless it is a whole snapshots file.

    torch.save writes a zip archive whose central directory is at its end, so a truncated
    copy cannot be opened (what ``full=False`` checks: a few reads, for planning); ``full``
    also reads every entry against its CRC, without keeping it.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"snapshots {path} does not exist: rerun the cell's train job")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip() if full else None
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        why = f"{type(err).__name__}: {err}"
    else:
        if bad is None:
            return
        why = f"entry {bad} fails its CRC check"
    raise DatasetError(
        f"snapshots {path} is truncated or corrupt ({why}, {path.stat().st_size} bytes): "
        f"{snapshots_fix(path)}"
    )
