"""Running the real Snakemake workflow of this repository in a temporary directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]


BIN = Path(sys.executable).parent
# For git and DVC in tests: no analytics, a committer identity.
TOOL_ENV = {
    **os.environ,
    "PATH": f"{BIN}:{os.environ['PATH']}",
    "DVC_NO_ANALYTICS": "1",
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.org",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.org",
}


def run(cwd: Path, *cmd: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command (git, dvc, make) in ``cwd``; on failure show the end of its output."""
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=TOOL_ENV, capture_output=True, text=True, timeout=600
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n"
            f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc


def tiny_config(**overrides: Any) -> dict[str, Any]:
    """A grid that trains in seconds: two 2-D sets and digits, MLPs of 1 and 3 blocks."""
    cfg: dict[str, Any] = {
        "datasets": {
            "circles": {"source": "circles", "n_train": 96, "n_test": 64, "noise": 0.05},
            "digits": {"source": "digits"},
        },
        "grid": [
            {
                "arch": "mlp",
                "datasets": ["circles"],
                "variants": ["identity", "orth_learned"],
                "depths": [1, 3],
                "seeds": [0],
            }
        ],
        "model": {"mlp": {"width": 8}},
        "train": {
            "epochs": 2,
            "batch_size": 32,
            "snapshot_epochs": [0, 1],
            "device": "cpu",
            "optimizer": {"lr": 0.05},
        },
        "metrics": {"probe_size": 32, "warp_grid": 5},
    }
    cfg.update(overrides)
    return cfg


def write_config(workdir: Path, cfg: dict[str, Any]) -> Path:
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def snakemake(
    workdir: Path,
    *args: str,
    cfg: dict[str, Any] | None = None,
    cores: int = 2,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run snakemake on this repo's Snakefile with ``workdir`` as working directory."""
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [*SNAKEMAKE, "--directory", str(workdir), "--cores", str(cores), *args]
    if cfg is not None:  # last: --configfile takes several values
        cmd += ["--configfile", str(write_config(workdir, cfg))]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env=env, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({proc.returncode}):\n"
            f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


def job_counts(dry_run_stdout: str) -> dict[str, int]:
    """Job counts per rule of a dry run's "Job stats" (empty when nothing is to be done)."""
    counts: dict[str, int] = {}
    if "Job stats:" in dry_run_stdout:
        table = dry_run_stdout.split("Job stats:", 1)[1].split("\n\n", 1)[0].splitlines()[3:]
        for line in table:
            rule, count = line.split()
            if rule != "total":
                counts[rule] = int(count)
    return counts


def copy_checkout(dest: Path) -> Path:
    """A copy of this checkout's files (tracked and untracked, not ignored) at ``dest``."""
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    for name in out.split():
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    return dest
