"""The bench/ scripts still run against the library and print well-formed tables.

Smoke runs at toy sizes: they assert the shape and sanity of the output (every kind has a
positive ratio, pooled over the right number of processes), never a timing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_bench(script: str, *args: str) -> list[list[str]]:
    """Run bench/<script> and return the cells of its Markdown table rows (header excluded)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("|")]
    assert len(rows) >= 3, proc.stdout  # header, separator, at least one row
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]


def test_bench_skips_pools_fresh_processes() -> None:
    kinds = ["identity", "linear", "orth_learned", "orth_manifold"]
    rows = run_bench(
        "bench_skips.py",
        *("--depth", "8", "--width", "4", "--batch", "4", "--size", "8"),
        *("--steps", "3", "--warmup", "1", "--repeats", "2", "--kinds", *kinds),
    )
    by_kind = {row[0]: row for row in rows}
    # the A/A control, a second identity model, comes right after the reference
    control = "identity (2nd model)"
    assert list(by_kind) == [kinds[0], control, *kinds[1:]]
    # identity is the reference: ratio 1, no per-process column
    assert by_kind["identity"][4] == "1.000" and by_kind["identity"][5] == ""
    assert by_kind[control][1] == by_kind["identity"][1]  # the same architecture
    for kind in [control, *kinds[1:]]:
        _, params, step_ms, opt_ms, vs_identity, per_process, vs_linear, _ = by_kind[kind]
        assert int(params) > 0 and float(step_ms) > 0 and float(opt_ms) >= 0
        median, iqr = vs_identity.split(" ", 1)
        lo, hi = (float(v) for v in iqr.strip("[]").split(","))
        assert 0 < lo <= float(median) <= hi
        assert len(per_process.split(",")) == 2  # one median per process
        assert float(vs_linear.split(" ")[0]) > 0
    # the matrix skips carry C × C parameters that identity has not
    assert int(by_kind["linear"][1]) > int(by_kind["identity"][1])


def test_bench_apply_times_both_paths() -> None:
    rows = run_bench("bench_apply.py", "--rounds", "2")
    assert len(rows) == 7
    for row in rows:
        assert all(float(ms) > 0 for ms in row[3:])  # four timings and the ratio


def test_bench_maps_times_both_maps() -> None:
    rows = run_bench("bench_maps.py", "--depth", "8", "--rounds", "2")
    assert [row[:2] for row in rows] == [
        [m, how] for m in ("matrix_exp", "cayley") for how in ("grouped", "separate")
    ]
    for _, _, skips, median_ms, min_ms in rows:
        assert int(skips) == 3  # one per block of a CIFAR ResNet-8
        assert 0 < float(min_ms) <= float(median_ms)


def test_bench_arch_times_vit_and_resnet50() -> None:
    rows = run_bench("bench_arch.py", "--quick", "--steps", "1", "--rounds", "2", "--warmup", "1")
    assert [row[:3:2] for row in rows] == [
        [arch, kind]
        for arch in ("vit", "resnet")
        for kind in ("identity", "orth_learned", "orth_manifold")
    ]
    for row in rows:
        step_ms, opt_ms, ratio = float(row[3]), float(row[4]), float(row[5])
        assert step_ms > 0 and 0 <= opt_ms < step_ms and ratio > 0
        if row[2] == "identity":
            assert row[5] == "1.000"
    # one architecture alone (resnet-50 at full size is timed on its own)
    rows = run_bench("bench_arch.py", "--quick", "--archs", "vit", "--steps", "1", "--rounds", "1")
    assert [row[0] for row in rows] == ["vit"] * 3


def test_bench_pack_quick_ends_with_the_mlp_speedup() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_pack.py"), "--quick"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("mlp pack speedup ")
    assert float(last.split()[-1]) > 0
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| mlp")]
    assert len(rows) == 1 and "identity" in rows[0]


def test_bench_engine_times_both_engines() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = ["--cases", "rate", "--depth", "4", "--seeds", "2", "--steps", "2", "--rounds", "1"]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_engine.py"), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("|")][2:]
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    assert [c[0] for c in cells] == ["vmap, 4 packs of 2", "hand, 1 pack of 8"]
    assert all(float(v) > 0 for c in cells for v in c[1:])
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("rate speedup ") and float(last.split()[-1]) > 0
    assert "GFLOP/s" in proc.stdout and "ceiling" in proc.stdout
