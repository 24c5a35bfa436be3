"""`orthskip dvc keep-records`: a rerun that only re-times Snakemake's job records leaves
their bytes alone; a rerun with other params, code or inputs keeps the new records.

A real Snakemake run of a two-rule workflow makes the records (tests/test_dvc.py runs the
whole pipeline's `make figures` on pulled results).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

from orthskip.job_records import RUN_FIELDS, keep_records, read_records

SNAKEFILE = """
rule all:
    input: "b.txt"

rule a:
    output: "a.txt"
    params: value=config.get("value", 1)
    shell: "echo {params.value} > {output}"

rule b:
    input: "a.txt"
    output: "b.txt"
    shell: "cat {input} > {output}"
"""


def snakemake(workdir: Path, *args: str) -> list[str]:
    where = ["--snakefile", str(workdir / "Snakefile"), "--directory", str(workdir)]
    return [sys.executable, "-m", "snakemake", "--cores", "1", *where, *args]


def record(workdir: Path, output: str) -> dict[str, object]:
    name = base64.b64encode(output.encode()).decode()
    return json.loads((workdir / ".snakemake/metadata" / name).read_bytes())


def test_rerun_with_the_same_inputs_keeps_the_records_bytes(tmp_path: Path) -> None:
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    subprocess.run(snakemake(tmp_path), check=True, capture_output=True)
    meta = tmp_path / ".snakemake/metadata"
    before = read_records(meta)
    assert len(before) == 2

    # Control: a plain forced rerun rewrites both records (new run times).
    subprocess.run(snakemake(tmp_path, "--forceall"), check=True, capture_output=True)
    rewritten = read_records(meta)
    assert rewritten.keys() == before.keys()
    assert all(rewritten[k] != before[k] for k in before)

    before = rewritten
    assert keep_records(snakemake(tmp_path, "--forceall"), meta) == 0
    assert read_records(meta) == before

    # Other params for rule a: its record and b's input checksum change, and both stay new.
    a_then, b_then = record(tmp_path, "a.txt"), record(tmp_path, "b.txt")
    cmd = snakemake(tmp_path, "--forceall", "--config", "value=2")
    assert keep_records(cmd, meta) == 0
    after = read_records(meta)
    assert all(after[k] != before[k] for k in before)
    a_now, b_now = record(tmp_path, "a.txt"), record(tmp_path, "b.txt")
    assert a_now["params"] != a_then["params"]
    assert b_now["input_checksums"] != b_then["input_checksums"]
    assert set(a_now) - RUN_FIELDS  # the compared content is not empty


def test_a_failed_command_returns_its_status_and_keeps_the_records(tmp_path: Path) -> None:
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    subprocess.run(snakemake(tmp_path), check=True, capture_output=True)
    meta = tmp_path / ".snakemake/metadata"
    before = read_records(meta)
    assert keep_records([sys.executable, "-c", "raise SystemExit(3)"], meta) == 3
    assert read_records(meta) == before
