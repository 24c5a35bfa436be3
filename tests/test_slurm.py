"""Integration tests against a real single-node SLURM (slurmctld + slurmd on localhost).

They run snakemake with the repository's own profile (``--profile slurm``) plus a small
site overlay profile for the test cluster (partition, status command), exactly as a
user layers a site profile, and check what SLURM saw. Needs root and the Debian
packages slurm-wlm and munge (``.ci/install-slurm.sh``); under CI a missing
prerequisite is a failure, elsewhere a skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import cluster as res
import pandas as pd
import pytest
import yaml

from tests.slurm_cluster import missing_prerequisites, slurm_cluster
from tests.workflow import REPO, snakemake, tiny_config

# The test cluster's site settings, layered over the repository's profile the way a
# user adapts it: later --profile entries replace the earlier ones' top-level keys.
SITE_PROFILE = {
    "default-resources": {"slurm_partition": "debug", "mem_mb": 500, "runtime": 10},
    "slurm-no-account": True,
    # accounting is off on the test cluster: sacct sees nothing, squeue does
    "slurm-status-command": "squeue",
    "slurm-init-seconds-before-status-checks": 1,
}


def test_runtime_estimate_scales_and_doubles_on_retry():
    # PreResNet-164 on CIFAR-10 for 164 epochs: 50k · 164 · 7.5e-6 s ≈ 61.5 s per epoch
    # → 164 · 61.5 · 2 (safety) / 60 ≈ 336 min, + 10 overhead = 346 → 350 (5-min steps).
    assert res.train_runtime_minutes("cifar10", "cifar_preresnet", 164, 164) == 350
    # linear in depth and epochs (before rounding and the floor)
    t1 = res.train_runtime_minutes("cifar10", "cifar_resnet", 56, 160)
    t2 = res.train_runtime_minutes("cifar10", "cifar_resnet", 110, 160)
    t3 = res.train_runtime_minutes("cifar10", "cifar_resnet", 110, 320)
    assert t1 < t2 < t3
    assert abs((t3 - 10) / (t2 - 10) - 2) < 0.05
    # each Snakemake retry (after a time-out) doubles the limit
    assert res.train_runtime_minutes("cifar10", "cifar_resnet", 110, 160, attempt=2) == 2 * t2
    assert res.train_runtime_minutes("cifar10", "cifar_resnet", 110, 160, attempt=3) == 4 * t2
    # short cells hit the floor; the ceiling is a week
    assert res.train_runtime_minutes("circles", "mlp", 32, 100) == res.MIN_MINUTES
    assert res.train_runtime_minutes("cifar100", "resnet", 10_000, 10_000) == res.MAX_MINUTES
    # a small n_train shrinks the estimate; scale multiplies it
    assert res.train_runtime_minutes("cifar10", "cifar_resnet", 110, 160, n_train=500) < t2
    assert res.train_runtime_minutes("cifar10", "cifar_resnet", 110, 160, scale=0.5) < t2
    for t in (t1, t2, t3):
        assert t % 5 == 0


def test_memory_gpus_and_groups():
    # CIFAR float32 train set: 50k · 3·32·32 · 4 B = 614 MB, ×2.2 (test set, copy)
    # = 1352 MB + 3000 runtime + 8·110 layers = 5232 → 6000 MB.
    assert res.train_mem_mb("cifar10", "cifar_resnet", 110) == 6000
    assert res.train_mem_mb("mnist", "mlp", 8) == 4000
    assert res.train_mem_mb("circles", "mlp", 32) == 2000
    for src in ("circles", "moons", "blobs", "parity", "gaussian_mixture", "digits"):
        assert res.train_group(src) == res.SHORT_GROUP
        assert res.train_gpus(src) == 0
    for src in ("mnist", "fashion_mnist", "cifar10", "cifar100", "somethingelse"):
        assert res.train_group(src) is None
        assert res.train_gpus(src) == 1


def test_sources_are_short_by_their_kind_in_the_data_spec(tmp_path):
    """What a source is comes from orthskip.data.spec, not a list of its own: every generated
    set (diffeo included) and digits are short cells, and under ``device: auto`` their train
    jobs ask for no GPU while an image set's job asks for one."""
    from orthskip.data.spec import SOURCE_KINDS

    for src, kind in SOURCE_KINDS.items():
        assert res.is_short(src) == (kind != "torchvision")
        assert res.train_gpus(src) == (1 if kind == "torchvision" else 0)
    # STL-10's images are 3·96·96 (the spec's shape): 5000 · 27648 · 4 B · 2.2 = 1216 MB
    # + 3000 runtime + 8·110 layers = 5097 → 6000 MB
    assert res.train_mem_mb("stl10", "cifar_resnet", 110) == 6000

    cfg = tiny_config(
        datasets={"diffeo2": {"source": "diffeo", "n_train": 200, "n_test": 32},
                  "cifar10": {"source": "cifar10"}},
        grid=[{"arch": "mlp", "datasets": ["diffeo2"], "variants": ["identity"],
               "depths": [2], "seeds": [0]},
              {"arch": "cifar_resnet", "datasets": ["cifar10"], "variants": ["identity"],
               "depths": [8], "seeds": [0]}],
        train={"device": "auto", "epochs": 1, "snapshot_epochs": [0]},
    )  # fmt: skip
    targets = ["results/cells/diffeo2/mlp/identity/d2/s0/status.json",
               "results/cells/cifar10/cifar_resnet/identity/d8/s0/status.json"]  # fmt: skip
    out = snakemake(tmp_path, "-n", *targets, cfg=cfg).stdout
    gpus = {}
    for job in out.split("rule train:")[1:]:
        pack = job.split("wildcards: pack=")[1].split()[0]
        resources = job.split("resources: ")[1].splitlines()[0]
        gpus[pack] = next(r for r in resources.split(", ") if r.startswith("gpu="))
    assert gpus == {"diffeo2/mlp/identity/d2": "gpu=0",
                    "cifar10/cifar_resnet/identity/d8": "gpu=1"}  # fmt: skip


def test_profile_groups_what_the_workflow_groups():
    profile = yaml.safe_load((REPO / "slurm" / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    assert profile["slurm-requeue"] is True
    groups = dict(item.split("=") for item in profile["group-components"])
    assert int(groups[res.SHORT_GROUP]) > 1


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    problems = missing_prerequisites()
    if problems:
        msg = "SLURM test cluster unavailable: " + "; ".join(problems)
        msg += " (run .ci/install-slurm.sh as root)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(msg)
        pytest.skip(msg)
    with slurm_cluster(tmp_path_factory.mktemp("slurm")) as c:
        yield c


def _env() -> dict[str, str]:
    # Jobs inherit this environment (sbatch --export=ALL): the venv's snakemake and
    # orthskip, this checkout's orthskip package and its workflow helpers (workflow/lib).
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    paths = [str(REPO), str(REPO / "workflow" / "lib"), os.environ.get("PYTHONPATH")]
    pythonpath = os.pathsep.join(filter(None, paths))
    return {**os.environ, "PATH": path, "PYTHONPATH": pythonpath}


def _profiles(workdir: Path) -> list[str]:
    """``--profile slurm`` as written (resolved in the working directory) + the site."""
    (workdir / "slurm").symlink_to(REPO / "slurm")
    site = workdir / "site"
    site.mkdir()
    (site / "config.yaml").write_text(yaml.safe_dump(SITE_PROFILE))
    return ["--profile", "slurm", "--profile", str(site)]


# A stand-in workflow with the shapes of the real one: short cells grouped, long
# cells with one GPU each, and one long job that gets preempted (requeued) once.
MINI_SNAKEFILE = textwrap.dedent(
    r"""
    from cluster import train_group, train_gpus, train_mem_mb, train_runtime_minutes

    SHORT = ["circles", "moons", "digits"]
    LONG = ["cifar10", "mnist"]

    rule all:
        input:
            expand("out/{d}.json", d=SHORT + LONG),
            "out/preempted.json",

    rule cell:
        output:
            "out/{dataset}.json",
        group:
            lambda wc: train_group(wc.dataset)
        resources:
            gpu=lambda wc: train_gpus(wc.dataset),
            cpus_per_gpu=2,
            slurm_extra="--signal=TERM@120 --open-mode=append",
            mem_mb=lambda wc: train_mem_mb(wc.dataset, "mlp", 3),
            runtime=lambda wc, attempt: train_runtime_minutes(
                wc.dataset, "mlp", 3, 1, attempt=attempt
            ),
        shell:
            "python -c 'import json, os; json.dump({{k: os.environ.get(k) for k in "
            "(\"SLURM_JOB_ID\", \"CUDA_VISIBLE_DEVICES\")}}, open(\"{output}\", \"w\"))'"

    # First run: note the start, then wait to be preempted; SIGTERM is what the
    # training code checkpoints on, so record that it arrived. Second run: finish.
    rule preempted:
        output:
            "out/preempted.json",
        resources:
            gpu=1,
            runtime=5,
        shell:
            "echo $SLURM_JOB_ID >> runs.log; "
            "if [ ! -e started ]; then "
            "  trap 'echo TERM >> sigterm.log; exit 143' TERM; "
            "  touch started; sleep 120 & wait $!; exit 1; "
            "fi; "
            "python -c 'import json, os; json.dump({{\"SLURM_JOB_ID\": "
            "os.environ.get(\"SLURM_JOB_ID\")}}, open(\"{output}\", \"w\"))'"
    """
)


def _requeue_when_started(cluster, workdir: Path, done: threading.Event, seen: dict) -> None:
    """Play the scheduler preempting a job: requeue it once its command runs."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not done.is_set():
        if (workdir / "started").exists():
            jobid = (workdir / "runs.log").read_text().split()[0]
            seen["jobid"] = jobid
            seen["before"] = cluster.show_job(jobid)
            seen["requeue"] = cluster.run("scontrol", "requeue", jobid, check=False)
            return
        time.sleep(0.3)


@pytest.mark.slow
def test_profile_submits_groups_requests_gpus_and_requeues(cluster, tmp_path):
    workdir = tmp_path / "mini"
    workdir.mkdir()
    (workdir / "Snakefile").write_text(MINI_SNAKEFILE)
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", *_profiles(workdir)]

    done, seen = threading.Event(), {}
    watcher = threading.Thread(target=_requeue_when_started, args=(cluster, workdir, done, seen))
    watcher.start()
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            cmd, cwd=workdir, capture_output=True, text=True, env=_env(), timeout=300
        )
    finally:
        done.set()
        watcher.join()
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]

    out = {p.stem: json.loads(p.read_text()) for p in (workdir / "out").glob("*.json")}
    assert set(out) == {"circles", "moons", "digits", "cifar10", "mnist", "preempted"}
    job_of = {name: rec["SLURM_JOB_ID"] for name, rec in out.items()}

    # Everything ran inside SLURM jobs, and every such job was submitted by sbatch
    # through the controller (its log records each submission).
    assert all(job_of.values()), job_of
    submitted = set(cluster.submitted_job_ids())
    assert set(job_of.values()) <= submitted

    # Short cells: one group, so one cluster job for all three.
    assert len({job_of[d] for d in ("circles", "moons", "digits")}) == 1
    # Long cells: one job each, each with one (fake) GPU that SLURM bound to it.
    assert len({job_of["cifar10"], job_of["mnist"], job_of["circles"]}) == 3
    for d in ("cifar10", "mnist"):
        info = cluster.show_job(job_of[d])
        assert "gpu:1" in info.get("TresPerJob", ""), info
        assert info["Requeue"] == "1"  # the profile's slurm-requeue
        assert out[d]["CUDA_VISIBLE_DEVICES"] in ("0", "1")
    # the short group asked for no GPU and got none
    assert out["circles"]["CUDA_VISIBLE_DEVICES"] is None
    # The runtime limit is the one workflow/lib/cluster.py computed (15 min floor).
    assert cluster.show_job(job_of["cifar10"])["TimeLimit"] == "00:15:00"

    # Preemption: the requeued job got SIGTERM, ran again under the same job id
    # (SLURM's requeue, not a Snakemake resubmission) and finished.
    assert seen.get("jobid") == job_of["preempted"], (seen, proc.stderr[-3000:])
    assert seen["before"]["Requeue"] == "1"
    assert (workdir / "sigterm.log").read_text().split() == ["TERM"]
    assert (workdir / "runs.log").read_text().split() == [seen["jobid"]] * 2
    assert cluster.show_job(seen["jobid"])["Restarts"] == "1"

    # Job logs kept where the profile says (results/logs/slurm/).
    assert list((workdir / "results" / "logs" / "slurm").rglob("*.log"))
    print(f"mini workflow through SLURM: {elapsed:.1f} s")


def _cell_results(workdir: Path) -> pd.DataFrame:
    rows = []
    for status in sorted((workdir / "results" / "cells").rglob("status.json")):
        hist = pd.read_parquet(status.with_name("history.parquet"))
        hist["cell"] = str(status.parent.relative_to(workdir))
        rows.append(hist)
    return pd.concat(rows, ignore_index=True)


@pytest.mark.slow
def test_tiny_grid_through_slurm_matches_local_run(cluster, tmp_path):
    # One short cell of the real workflow (data → train → metrics), run by the local
    # executor and through SLURM: same numbers.
    cfg = tiny_config()
    cfg["grid"][0]["variants"] = ["orth_learned"]
    cfg["grid"][0]["depths"] = [3]
    cell = "results/cells/circles/mlp/orth_learned/d3/s0"
    targets = [f"{cell}/status.json", f"{cell}/metrics.parquet"]

    local = tmp_path / "local"
    snakemake(local, *targets, cfg=cfg)

    remote = tmp_path / "slurm"
    remote.mkdir()
    cfgfile = remote / "config.yaml"
    cfgfile.write_text(yaml.safe_dump(cfg, sort_keys=False))
    before = set(cluster.submitted_job_ids())
    proc = subprocess.run(
        [
            sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
            "--cores", "2", *_profiles(remote), "--configfile", str(cfgfile), "--", *targets,
        ],
        cwd=remote, capture_output=True, text=True, env=_env(), timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]

    # Went through sbatch: the controller logged the submissions, the executor
    # reported SLURM job ids, and SLURM wrote the job logs where the profile says.
    submitted = set(cluster.submitted_job_ids()) - before
    assert submitted, "no job went through sbatch"
    reported = {
        line.split("with SLURM jobid ")[1].split()[0]
        for line in proc.stderr.splitlines()
        if "with SLURM jobid " in line
    }
    assert reported == submitted
    assert list((remote / "results" / "logs" / "slurm").rglob("*.log"))
    # prepare_dataset, then train + extract_metrics of the short cell as one group job
    assert len(submitted) == 2, (
        f"{len(submitted)} SLURM jobs for prepare + train + metrics of one short cell; "
        "expected 2: train and extract_metrics need `group: ` cluster.train_group (workflow/lib)"
        "(source) so that short cells share jobs (docs/cluster.md §3)\n" + proc.stderr[-3000:]
    )

    for t in targets:
        assert (remote / t).exists()
    assert json.loads((remote / cell / "status.json").read_text())["status"] == "ok"
    cols = ["epoch", "train_loss", "train_acc", "test_loss", "test_acc"]
    a = pd.read_parquet(local / cell / "history.parquet")[cols]
    b = pd.read_parquet(remote / cell / "history.parquet")[cols]
    assert len(a) == len(b) == cfg["train"]["epochs"] + 1
    pd.testing.assert_frame_equal(a, b)
    ma = pd.read_parquet(local / cell / "metrics.parquet")
    mb = pd.read_parquet(remote / cell / "metrics.parquet")
    key = ["epoch", "layer_index", "layer_name", "param", "metric", "stat"]
    ma, mb = (m.sort_values(key, ignore_index=True, kind="stable") for m in (ma, mb))
    assert len(ma) == len(mb) > 0
    pd.testing.assert_series_equal(ma["value"], mb["value"])
