"""``orthskip dvc check`` / ``orthskip dvc diagnose``: the checks around ``make publish/pull``.

check: fail with the remote's name and URL when no default remote is set or it cannot be
read (and, before a pull, when it holds nothing). diagnose (after a failed pull): name
every workspace file whose object is missing from the remote or arrived corrupt (the
project's remote sets ``verify = true``, so a corrupt download never reaches the cache).
Only public DVC interfaces: the repository's config, ``dvc ls-url``'s implementation for
the remote's root, and ``dvc data status --granular --not-in-remote --json``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

from orthskip.errors import OrthskipError


class DvcCheckError(OrthskipError):
    pass


def default_remote(root: Path) -> tuple[str, str, dict[str, Any]]:
    """Name, URL and config section of the default remote (local config included)."""
    from dvc.repo import Repo  # dvc takes ~1 s to import: only the dvc commands pay it

    with Repo(str(root)) as repo:
        config = repo.config
        name = config["core"].get("remote")
        if not name:
            raise DvcCheckError(
                "no default DVC remote; add one: dvc remote add -d NAME URL (docs/dvc.md)"
            )
        section = dict(config["remote"].get(name, {}))
    return name, str(section.get("url", "?")), section


def check(mode: Literal["push", "pull"], root: Path = Path(".")) -> str:
    """Raise unless the default remote is readable (and, for a pull, exists)."""
    # dvc takes ~1 s to import: only the dvc commands pay it
    from dvc.exceptions import URLMissingError
    from dvc.repo.ls_url import ls_url

    name, url, section = default_remote(root)
    fs_config = {k: v for k, v in section.items() if k != "url"}
    try:
        ls_url(url, fs_config=fs_config, maxdepth=0)
        found = True
    except URLMissingError:
        found = False
    except Exception as exc:  # the remote's own error (auth, DNS, ...) is the useful part
        raise DvcCheckError(f"DVC remote '{name}' ({url}) is unreachable: {exc}") from None
    if not found and mode == "pull":
        raise DvcCheckError(
            f"DVC remote '{name}' ({url}) holds no published results: {url} does not exist. "
            f"Point it at the right place: dvc remote modify --local {name} url URL"
        )
    return f"DVC remote '{name}' ({url}): ok" + ("" if found else " (created by the push)")


def data_status(root: Path) -> dict[str, Any]:
    # The dvc beside this Python (the project's environment), else the one on PATH.
    dvc = Path(sys.executable).parent / "dvc"
    cmd = [str(dvc) if dvc.is_file() else "dvc", "data", "status", "--granular"]
    proc = subprocess.run(
        [*cmd, "--not-in-remote", "--json"], cwd=root, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise DvcCheckError(f"dvc data status failed: {proc.stderr.strip()}")
    return json.loads(proc.stdout or "{}")


def diagnose(root: Path = Path(".")) -> list[str]:
    """One line per tracked path that is not in the local cache, and why.

    Corrupt means the remote holds the object but the pull rejected it. DVC can delete a
    corrupt object from a writable local remote during the pull (seen with DVC 3.67 for a
    single-file output): that file then reads as missing, which the remote now says too.
    """
    check("pull", root)
    status = data_status(root)
    absent = set(status.get("not_in_remote", []))
    missing = status.get("not_in_cache", [])
    # A directory whose listing arrived is named by its files; one whose listing did not is
    # named itself.
    files = [p for p in missing if not (p.endswith("/") and any(
        q != p and q.startswith(p) for q in missing))]  # fmt: skip
    lines = []
    for path in sorted(files):
        why = "missing from" if path in absent else "corrupt on"
        lines.append(f"  {why} the remote: {path.rstrip('/')}")
    return lines
