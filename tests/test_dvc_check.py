"""``orthskip dvc check`` / ``dvc diagnose`` on a real DVC project and a real remote directory.

A small project (one tracked file, one tracked directory) is pushed once; each test clones
it and points it at a copy of the remote, damaged as the test needs.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from orthskip.dvc_check import DvcCheckError, check, diagnose
from tests.workflow import BIN, TOOL_ENV, run


def orthskip(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**TOOL_ENV, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run(
        [sys.executable, "-m", "orthskip", *args], cwd=cwd, env=env, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("dvccheck")
    origin, remote = base / "origin", base / "remote"
    (origin / "results/cells").mkdir(parents=True)
    (origin / "results/cells/a.pt").write_bytes(b"checkpoint a" * 100)
    (origin / "results/cells/b.pt").write_bytes(b"checkpoint b" * 100)
    (origin / "results/summary.json").write_text('{"acc": 0.9}\n')
    run(origin, "git", "init", "-q")
    run(origin, BIN / "dvc", "init", "-q")
    run(origin, BIN / "dvc", "add", "-q", "results/cells", "results/summary.json")
    run(origin, BIN / "dvc", "remote", "add", "-d", "store", remote)
    run(origin, BIN / "dvc", "remote", "modify", "store", "verify", "true")
    run(origin, "git", "add", "-A")
    run(origin, "git", "commit", "-qm", "results")
    run(origin, BIN / "dvc", "push", "-q")
    return origin, remote


def clone(published: tuple[Path, Path], name: str, remote: Path | str | None = None) -> Path:
    origin, default = published
    target = origin.parent / name
    run(origin.parent, "git", "clone", "-q", origin, target)
    run(target, BIN / "dvc", "remote", "modify", "--local", "store", "url", remote or default)
    return target


def remote_object(remote: Path, content: bytes) -> Path:
    md5 = hashlib.md5(content).hexdigest()
    return remote / "files" / "md5" / md5[:2] / md5[2:]


def test_check_passes_on_a_good_remote_and_diagnose_finds_nothing(published):
    reader = clone(published, "good")
    assert "DVC remote 'store'" in check("pull", reader) and "ok" in check("pull", reader)
    run(reader, BIN / "dvc", "pull", "-q")
    assert diagnose(reader) == []
    proc = orthskip(reader, "dvc", "diagnose")
    assert proc.returncode == 0 and proc.stderr == ""


def test_no_default_remote(published):
    reader = clone(published, "no-default")
    run(reader, BIN / "dvc", "remote", "default", "--unset")
    proc = orthskip(reader, "dvc", "check", "pull")
    assert proc.returncode == 2
    assert "no default DVC remote; add one: dvc remote add -d NAME URL" in proc.stderr


def test_missing_remote_fails_pull_check_but_not_push_check(published):
    lost = published[0].parent / "no-such-remote"
    reader = clone(published, "lost", remote=lost)
    with pytest.raises(DvcCheckError, match=r"remote 'store'.*no-such-remote.*does not exist"):
        check("pull", reader)
    proc = orthskip(reader, "dvc", "check", "pull")
    assert proc.returncode == 2 and "dvc remote modify --local store url URL" in proc.stderr
    assert "created by the push" in check("push", reader)
    assert not lost.exists()  # a check writes nothing


def test_unreachable_remote_names_the_remote_and_its_error(published):
    reader = clone(published, "unreachable", remote="ssh://127.0.0.1:1/nowhere")
    for mode in ("push", "pull"):
        with pytest.raises(DvcCheckError, match=r"'store' \(ssh://127.0.0.1:1/nowhere\) is unre"):
            check(mode, reader)


def test_diagnose_names_each_missing_and_corrupt_file(published):
    origin, remote = published
    damaged = origin.parent / "remote-damaged"
    shutil.copytree(remote, damaged)
    gone = remote_object(damaged, (origin / "results/cells/a.pt").read_bytes())
    gone.unlink()
    bad = remote_object(damaged, (origin / "results/summary.json").read_bytes())
    bad.chmod(0o644)
    bad.write_bytes(b'{"acc": 0.1}\n')  # same size, other bytes
    bad.chmod(0o444)  # read-only as DVC stores it: a writable one DVC may delete on pull
    reader = clone(published, "damaged", remote=damaged)
    assert run(reader, BIN / "dvc", "pull", check=False).returncode != 0
    proc = orthskip(reader, "dvc", "diagnose")
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "  missing from the remote: results/cells/a.pt",
        "  corrupt on the remote: results/summary.json",
    ]
