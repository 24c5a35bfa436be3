"""GPU slot claiming (flock per GPU) and device selection, run on the CPU with fake counts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from orthskip.errors import ConfigError
from orthskip.training.devices import claim_gpu_slot, select_device, visible_gpu_tokens

REPO = Path(__file__).resolve().parents[1]

# A stand-in for one training job: claim a GPU among `n` fake ones, print its index,
# then hold the claim until stdin closes (the job's lifetime).
HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from orthskip.training.devices import claim_gpu_slot
    slot = claim_gpu_slot([str(i) for i in range(int(sys.argv[1]))], Path(sys.argv[2]))
    print(slot.index, int(slot.exclusive), flush=True)
    sys.stdin.read()
    """
)


def _start_holder(n: int, lock_dir: Path) -> tuple[subprocess.Popen, int, bool]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(n), str(lock_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    index, exclusive = proc.stdout.readline().split()
    return proc, int(index), exclusive == "1"


def test_concurrent_processes_get_different_gpus(tmp_path):
    # Three "jobs" on a 3-GPU box at the same time: three different GPUs.
    procs = []
    try:
        claims = []
        for _ in range(3):
            proc, index, exclusive = _start_holder(3, tmp_path)
            procs.append(proc)
            claims.append((index, exclusive))
        assert sorted(i for i, _ in claims) == [0, 1, 2]
        assert all(ex for _, ex in claims)

        # A fourth job finds every GPU taken: it shares one instead of waiting.
        proc, index, exclusive = _start_holder(3, tmp_path)
        procs.append(proc)
        assert not exclusive
        assert 0 <= index < 3

        # A job killed with SIGKILL loses its lock (the kernel drops it): the next job
        # gets exactly that GPU back.
        victim = procs[1]
        victim_index = claims[1][0]
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        proc, index, exclusive = _start_holder(3, tmp_path)
        procs.append(proc)
        assert (index, exclusive) == (victim_index, True)
    finally:
        for p in procs:
            if p.poll() is None:
                p.stdin.close()
                p.wait(timeout=10)


def test_claims_in_one_process_and_release(tmp_path):
    a = claim_gpu_slot(["0", "1"], tmp_path)
    b = claim_gpu_slot(["0", "1"], tmp_path)
    assert (a.index, b.index) == (0, 1)
    assert a.exclusive and b.exclusive
    assert a.lock_path.read_text().strip() == str(os.getpid())
    a.release()
    c = claim_gpu_slot(["0", "1"], tmp_path)
    assert (c.index, c.exclusive) == (0, True)
    b.release()
    c.release()


def test_locks_are_keyed_by_physical_gpu(tmp_path):
    # Job A sees GPUs 2,3 and takes 2; job B sees only GPU 3 (torch index 0) and gets
    # it; job C sees only GPU 2, which A holds, so it can only share.
    a = claim_gpu_slot(visible_gpu_tokens(2, "2,3"), tmp_path)
    b = claim_gpu_slot(visible_gpu_tokens(1, "3"), tmp_path)
    c = claim_gpu_slot(visible_gpu_tokens(1, "2"), tmp_path)
    assert (a.token, a.index, a.exclusive) == ("2", 0, True)
    assert (b.token, b.index, b.exclusive) == ("3", 0, True)
    assert (c.token, c.exclusive) == ("2", False)
    for s in (a, b, c):
        s.release()


def test_visible_gpu_tokens():
    assert visible_gpu_tokens(2, "") == ["0", "1"]
    assert visible_gpu_tokens(2, "5,7") == ["5", "7"]
    assert visible_gpu_tokens(1, "GPU-ab12, GPU-cd34") == ["GPU-ab12"]
    # fewer entries than devices (odd environments): fall back to plain indices
    assert visible_gpu_tokens(3, "1") == ["0", "1", "2"]


def test_claim_needs_a_gpu(tmp_path):
    with pytest.raises(ValueError):
        claim_gpu_slot([], tmp_path)


def test_select_device_specs():
    assert select_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="device"):
        select_device("tpu")
    if torch.cuda.is_available():
        assert select_device("auto").type == "cuda"
        assert select_device("cuda:0") == torch.device("cuda:0")
    else:
        assert select_device("auto") == torch.device("cpu")
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            select_device("cuda")


# Four "training" jobs, each claiming one of two fake GPUs and holding it while it runs.
GPU_SNAKEFILE = textwrap.dedent(
    r"""
    rule all:
        input: expand("out/{i}.txt", i=range(4))

    rule job:
        output: "out/{i}.txt"
        resources: gpu=1
        shell:
            "python -c 'import sys, time\n"
            "from pathlib import Path\n"
            "from orthskip.training.devices import claim_gpu_slot, visible_gpu_tokens\n"
            "t0 = time.time()\n"
            "slot = claim_gpu_slot(visible_gpu_tokens(2), Path(\"locks\"))\n"
            "time.sleep(1.5)\n"
            "out = open(\"{output}\", \"w\")\n"
            "print(slot.index, int(slot.exclusive), t0, time.time(), file=out)'"
    """
)


def test_local_executor_with_gpu_resources_spreads_jobs_over_gpus(tmp_path):
    # snakemake --resources gpu=2 on a (fake) 2-GPU box: two trainings at a time, and
    # the two that run together hold different GPUs.
    (tmp_path / "Snakefile").write_text(GPU_SNAKEFILE)
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    env.pop("CUDA_VISIBLE_DEVICES", None)
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "4", "--resources", "gpu=2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = []
    for f in sorted((tmp_path / "out").glob("*.txt")):
        index, exclusive, start, end = f.read_text().split()
        runs.append((int(index), exclusive == "1", float(start), float(end)))
    assert len(runs) == 4
    # every job got a GPU of its own: never more than two at once, as asked
    assert all(exclusive for _, exclusive, _, _ in runs)
    overlapping = [
        (a, b) for i, a in enumerate(runs) for b in runs[i + 1 :] if a[2] < b[3] and b[2] < a[3]
    ]
    assert overlapping, "snakemake ran the jobs one by one; nothing to check"
    for a, b in overlapping:
        assert a[0] != b[0], (a, b)
