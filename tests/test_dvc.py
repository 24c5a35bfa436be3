"""Publish and pull results with real DVC, real git and a real remote directory.

The key user path: run the pipeline and `make publish` in one git repository; clone it
elsewhere and `make pull`; Snakemake then plans no training or metrics job (even with every
pulled file's mtime in the worst order); `make figures` redraws every figure and table; and
more epochs continue the pulled checkpoints. Bad input: a missing remote, a remote with a
missing or corrupt object, and local results that were never pushed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from orthskip.job_records import read_records
from orthskip.stages.figures import FIGURES, PER_SETTING
from orthskip.stages.tables import TABLES
from tests.workflow import copy_checkout, job_counts, run, tiny_config

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
VENV = BIN.parent
CELL = "circles/mlp/orth_learned/d1/s0"
CELL_DIR = f"results/cells/{CELL}"


def make(cwd: Path, target: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    # The shared environment, never rebuilt from the copy's newer pyproject (-o).
    stamp = VENV / ".installed"
    return run(cwd, "make", f"VENV={VENV}", "-o", stamp, "CORES=2", target, check=check)


def snakemake(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(cwd, BIN / "snakemake", "--cores", "2", *args, check=check)


def planned(cwd: Path, *args: str) -> dict[str, int]:
    """Job counts per rule of a dry run (empty when nothing is to be done)."""
    return job_counts(snakemake(cwd, "--dry-run", *args).stdout)


def digests(root: Path) -> dict[str, str]:
    """The published results' checksums: not the logs, not the report (rendered per run)."""
    files = sorted(p for p in (root / "results").rglob("*") if p.is_file())
    return {
        str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in files
        if "logs" not in p.parts and p.name != "report.html"
    }


def dvc_status(cwd: Path) -> dict[str, object]:
    """What `dvc status` finds changed against dvc.lock; empty when the workspace is clean."""
    return json.loads(run(cwd, BIN / "dvc", "status", "--json").stdout or "{}")


def remote_object(remote: Path, path: Path) -> Path:
    """The remote's copy of one workspace file (DVC 3 layout: files/md5/ab/cdef...)."""
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    return remote / "files" / "md5" / md5[:2] / md5[2:]


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A git repository of this project on a tiny grid, run and published to a directory."""
    base = tmp_path_factory.mktemp("dvc")
    origin, remote = base / "origin", base / "remote"
    copy_checkout(origin)
    grid = [{"arch": "mlp", "datasets": ["circles"], "variants": ["identity", "orth_learned"],
             "depths": [1], "seeds": [0]}]  # fmt: skip
    cfg = tiny_config(grid=grid)
    (origin / "config/config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    run(origin, "git", "init", "-q")
    run(origin, "git", "add", "-A")
    run(origin, "git", "commit", "-qm", "tiny grid")
    run(origin, BIN / "dvc", "remote", "modify", "--local", "local", "url", remote)
    make(origin, "publish")
    run(origin, "git", "commit", "-qm", "publish results", "dvc.lock")
    return origin, remote


def clone(published: tuple[Path, Path], name: str, remote: Path | None = None) -> Path:
    origin, default_remote = published
    target = origin.parent / name
    run(origin.parent, "git", "clone", "-q", origin, target)
    url = remote or default_remote
    run(target, BIN / "dvc", "remote", "modify", "--local", "local", "url", url)
    return target


def test_pull_plans_no_training_and_redraws_figures(published: tuple[Path, Path]) -> None:
    origin, _ = published
    reader = clone(published, "reader")
    pulled = make(reader, "pull")
    assert "Nothing to be done" in pulled.stdout, pulled.stdout[-3000:]
    assert digests(reader) == digests(origin)
    assert (reader / CELL_DIR / "last.pt").is_file()  # the resume checkpoint is published

    # Worst case for Snakemake's mtime rule: every input newer than every output.
    order = ["paper", "figures", "tables", "metrics", "approx", "cells", "data"]
    t0 = 1_700_000_000
    for rank, part in enumerate(order):
        root = reader / "results" / part
        for f in [root] if root.is_file() else sorted(root.rglob("*")):
            os.utime(f, (t0 + 1000 * rank, t0 + 1000 * rank))
    assert planned(reader) == {}
    # Control: without the published job records the same files would retrain everything.
    shutil.move(reader / ".snakemake/metadata", reader / "metadata.bak")
    assert planned(reader)["train"] == 2
    shutil.rmtree(reader / ".snakemake/metadata")  # the empty one Snakemake made
    shutil.move(reader / "metadata.bak", reader / ".snakemake/metadata")
    assert planned(reader) == {}

    fig_dir = reader / "results/figures"
    figures = [p for p in fig_dir.rglob("*") if p.is_file()]
    tables = list((reader / "results/tables").iterdir())
    before = {p: p.stat().st_mtime for p in [*figures, *tables]}
    # PDF+PNG of every whole-run figure at the top, of the per-setting ones under their name
    # (figures/{name}/{dataset}/{arch}.{ext}); Markdown+LaTeX of every table, and findings.md
    whole = {n for n in FIGURES if n not in PER_SETTING}
    assert {p.name for p in figures if p.parent == fig_dir} == {
        f"{n}.{ext}" for n in whole for ext in ("pdf", "png")
    }
    per_setting = {p.relative_to(fig_dir).parts[0] for p in figures if p.parent != fig_dir}
    assert per_setting and per_setting <= PER_SETTING
    assert len(tables) == 3 * len(TABLES) + 1  # .md, .tex, .long.tex each; findings.md
    redraw = make(reader, "figures")
    assert "rule train" not in redraw.stdout + redraw.stderr
    assert "rule extract_metrics" not in redraw.stdout + redraw.stderr
    assert "rule figure" in redraw.stdout + redraw.stderr
    for path, mtime in before.items():
        assert path.stat().st_mtime > mtime, path
    assert planned(reader) == {}


def test_figures_on_pulled_results_leave_dvc_status_clean(published: tuple[Path, Path]) -> None:
    origin, _ = published
    reader = clone(published, "redraw")
    make(reader, "pull")
    assert dvc_status(reader) == {}
    # The report is a per-run rendering (its own time and every job's run times): not
    # published, rendered by `make figures`.
    assert (origin / "results/report.html").is_file()
    assert not (reader / "results/report.html").exists()
    records = read_records(reader / ".snakemake/metadata")
    assert records

    redraw = make(reader, "figures")
    assert "rule figure" in redraw.stdout + redraw.stderr  # the redraw really ran
    assert "rule paper_numbers" in redraw.stdout + redraw.stderr
    assert (reader / "results/report.html").is_file()
    assert digests(reader) == digests(origin)  # figures, tables and paper: the same bytes
    # The redrawn jobs' records differ from the published ones only in their run times, so
    # they keep the published bytes, and DVC finds nothing changed.
    assert read_records(reader / ".snakemake/metadata") == records
    assert dvc_status(reader) == {}
    assert planned(reader) == {}


def test_more_epochs_continue_pulled_checkpoints(published: tuple[Path, Path]) -> None:
    reader = clone(published, "continue")
    make(reader, "pull")
    old = pd.read_parquet(reader / CELL_DIR / "history.parquet")
    assert old["epoch"].tolist() == [0, 1, 2]

    cfg_path = reader / "config/config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["train"]["epochs"] = 3
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    # The published params records notice the change: both cells continue, nothing else trains.
    plan = planned(reader)
    assert plan["train"] == 2 and "prepare_dataset" not in plan

    snakemake(reader, f"{CELL_DIR}/status.json")
    new = pd.read_parquet(reader / CELL_DIR / "history.parquet")
    assert new["epoch"].tolist() == [0, 1, 2, 3]
    # Resumed, not restarted: the first epochs keep their recorded wall times bit for bit.
    pd.testing.assert_frame_equal(new.iloc[:3].reset_index(drop=True), old)
    log = (reader / f"results/logs/train/{CELL}.log").read_text()
    assert "resumed" in log and "at epoch 2" in log


def test_pull_from_missing_remote_fails_clearly(published: tuple[Path, Path]) -> None:
    reader = clone(published, "lost", remote=published[0].parent / "no-such-remote")
    proc = make(reader, "pull", check=False)
    assert proc.returncode != 0
    assert "remote 'local'" in proc.stderr and "no-such-remote" in proc.stderr
    assert "does not exist" in proc.stderr
    assert not (reader / "results").exists()


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_damaged_remote_object_fails_pull_and_keeps_the_rest(
    published: tuple[Path, Path], damage: str
) -> None:
    origin, remote = published
    damaged = origin.parent / f"remote-{damage}"
    shutil.copytree(remote, damaged)
    obj = remote_object(damaged, origin / CELL_DIR / "snapshots.pt")
    assert obj.is_file()
    if damage == "missing":
        obj.unlink()
    else:
        obj.chmod(0o644)
        obj.write_bytes(obj.read_bytes()[:-100] + b"\0" * 100)  # same size, other bytes

    reader = clone(published, f"reader-{damage}", remote=damaged)
    proc = make(reader, "pull", check=False)
    assert proc.returncode != 0
    where = "missing from" if damage == "missing" else "corrupt on"
    assert f"{where} the remote: {CELL_DIR}/snapshots.pt" in proc.stderr
    assert proc.stderr.count("the remote: ") == 1  # only the damaged file is named
    # The damaged checkpoint never reaches the workspace, and nothing there has wrong bytes.
    assert not (reader / CELL_DIR / "snapshots.pt").exists()
    want = digests(origin)
    assert all(want[path] == md5 for path, md5 in digests(reader).items())
    if damage == "corrupt":  # the download succeeded, so every intact output is checked out
        assert "results/metrics/cells.parquet" in digests(reader)


def test_pull_never_overwrites_local_results(published: tuple[Path, Path]) -> None:
    reader = clone(published, "local-work")
    make(reader, "pull")
    last = reader / CELL_DIR / "last.pt"
    mine = last.read_bytes() + b"local training"  # a checkpoint whose hash no longer matches
    last.write_bytes(mine)
    extra = reader / "results/figures/my_extra.pdf"
    extra.write_bytes(b"%PDF local")
    (reader / CELL_DIR / "status.json").unlink()  # so that pull has something to restore

    status = run(reader, BIN / "dvc", "status").stdout
    assert "modified:" in status and "results/cells" in status
    proc = make(reader, "pull", check=False)
    assert proc.returncode != 0
    assert "without confirmation" in proc.stderr and "last.pt" in proc.stderr
    assert last.read_bytes() == mine
    assert extra.read_bytes() == b"%PDF local"
