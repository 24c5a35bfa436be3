"""bench/gpu_check.py still runs: its CPU smoke test (``--device cpu --quick``) writes a sane
JSON and prints its table; on a machine without a GPU the cuda tests report skipped.

Asserts shapes and signs, never a timing (as tests/test_bench.py)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> tuple[dict, str]:
    """One ``--device cpu --quick`` run: (its JSON, its standard output)."""
    out = tmp_path_factory.mktemp("gpu_check") / "gpu_check.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--device", "cpu", "--quick",
         "--out", str(out)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


def _positive(x: float) -> bool:
    return math.isfinite(x) and x > 0


def test_cuda_tests_are_run_and_reported(quick):
    res, _ = quick
    tests = res["cuda_tests"]
    assert tests["command"].startswith("python -m pytest -m cuda")
    assert tests["returncode"] == 0 and tests["ok"] is True
    names = {t["name"].split("::")[-1].split("[")[0] for t in tests["tests"]}
    # every claim of the issue has a test: AMP, deterministic, the lock, packs, divergence
    for word in ("amp", "deterministic", "lock", "different_gpus", "equal_their_solo_runs",
                 "divergence", "diverging"):  # fmt: skip
        assert any(word in n for n in names), word
    assert all(t["name"].startswith("tests.test_cuda::") for t in tests["tests"])
    counts = [tests[k] for k in ("passed", "failed", "error", "skipped")]
    assert sum(counts) == tests["collected"] == len(tests["tests"]) >= 10
    assert tests["cuda_available"] is torch.cuda.is_available()
    if not torch.cuda.is_available():
        assert tests["skipped"] == tests["collected"] and tests["passed"] == 0
        assert all("needs a CUDA GPU" in t["message"] for t in tests["tests"])


def test_resnet20_epochs_solo_pack_and_bare(quick):
    res, _ = quick
    assert (res["device"], res["quick"], res["device_name"].split(":")[0]) == ("cpu", True, "cpu")
    r = res["resnet20"]
    assert (r["arch"], r["depth"], r["width"]) == ("cifar_resnet", 20, 16)
    assert r["solo"]["status"] == "ok" and r["pack"]["statuses"] == ["ok"] * 5
    assert r["pack"]["members"] == 5
    assert r["pack"]["pack"] == {"mode": "vectorised", "size": 5, "engine": "vmap"}
    for side in ("solo", "pack", "bare"):
        assert _positive(r[side]["epoch_s"]) and _positive(r[side]["images_per_s"])
    assert _positive(r["overhead_solo_vs_bare"]) and _positive(r["pack_speedup_vs_solo"])
    # the throughputs and the ratios agree with the epoch times they come from
    assert math.isclose(r["solo"]["images_per_s"], r["n_train"] / r["solo"]["epoch_s"])
    assert math.isclose(r["overhead_solo_vs_bare"], r["solo"]["epoch_s"] / r["bare"]["epoch_s"])


def test_rate_pack_hand_and_vmap(quick):
    res, _ = quick
    rate = res["rate_pack"]
    assert rate["members"] == rate["variants"] * rate["seeds"] and rate["variants"] == 4
    assert (rate["hand"]["packs"], rate["vmap"]["packs"]) == (1, 4)
    for side in ("hand", "vmap"):
        for key in ("step_s", "member_block_steps_per_s", "gflop_s"):
            assert _positive(rate[side][key]), (side, key)
    assert math.isclose(rate["speedup_hand_vs_vmap"],
                        rate["vmap"]["step_s"] / rate["hand"]["step_s"])  # fmt: skip


def test_seconds_budget_and_table(quick):
    res, stdout = quick
    sec = res["seconds"]
    assert all(_positive(sec[k]) for k in ("cuda_tests", "resnet20", "rate_pack", "total"))
    assert sec["total"] >= sec["cuda_tests"] + sec["resnet20"] + sec["rate_pack"]
    assert res["budget_s"] == 480 and res["within_budget"] is (sec["total"] <= 480)
    rows = [ln for ln in stdout.splitlines() if ln.startswith("|")]
    assert len(rows) == 2 + 5  # header, separator, three ResNet-20 rows, two rate-pack rows
    assert "cuda tests: " in stdout and "wrote " in stdout
