"""What only a CUDA GPU can show: bf16 AMP, deterministic kernels, the GPU lock with real
devices, packs equal to solo runs on the GPU, and divergence caught at the end of an epoch.

Every test here is marked ``cuda``; without a usable GPU tests/conftest.py skips them with
the reason. Run them with ``pytest -m cuda`` or ``make gpu-check`` (bench/gpu_check.py, which
also times the trainer on the GPU). The CPU versions of these claims are in
tests/test_stacked.py, tests/test_pack.py, tests/test_train.py and tests/test_devices.py; the
helpers are theirs.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

from orthskip.config.grid import CellConfig, cell_config, cells, prepare_config
from orthskip.data import load_prepared, read_manifest
from orthskip.io import load_torch
from orthskip.nn.models import build_cell_model
from orthskip.nn.orth import orth_defect
from orthskip.stages.prepare import prepare_dataset
from orthskip.stages.train import train_pack
from orthskip.training.reference import train_reference
from orthskip.training.runstate import validation_split
from orthskip.training.stacked import train_cell
from tests import test_stacked
from tests.fakedata import bypass_md5, write_cifar
from tests.test_stacked import (
    _layout,
    _members,
    _mixed_members,
    _rel,
    _solo_and_packed,
    assert_member_equals_solo,
    read_json,
)
from tests.workflow import tiny_config

pytestmark = pytest.mark.cuda

digits = test_stacked.digits  # its prepared digits set (module fixture): the sizes its tests use

REPO = Path(__file__).resolve().parents[1]
LOSSES = ["train_loss", "val_loss", "test_loss"]


def _on_gpu(out: Path) -> None:
    """The cell's status.json says it trained on a CUDA device (not a silent CPU fallback)."""
    assert read_json(out / "status.json")["device"].startswith("cuda:")


# ---- bf16 AMP -------------------------------------------------------------------------------


def _amp_members(amp: bool, seeds=(0, 1)) -> list[CellConfig]:
    # orth_learned: its Q comes from a float64 generator, which autocast must not touch
    return _members(
        "cifar_resnet", "orth_learned", seeds=seeds, device="cuda", amp=amp, epochs=3,
        batch_size=24, optimizer={"lr": 0.05, "momentum": 0.9},
    )  # fmt: skip


def _check_amp_run(out: Path, member: CellConfig, data) -> dict[str, torch.Tensor]:
    """A finished AMP run: finite history, the loss came down, float32 weights, skips
    orthogonal. Returns its final weights."""
    _on_gpu(out)
    hist = pd.read_parquet(out / "history.parquet")
    assert list(hist["epoch"]) == [0, 1, 2, 3]
    assert all(math.isfinite(v) for c in LOSSES for v in hist[c])
    assert hist["train_loss"].iloc[-1] < hist["train_loss"].iloc[0]
    state = load_torch(out / "last.pt")["model"]
    floats = [t for t in state.values() if t.is_floating_point()]
    assert all(torch.isfinite(t).all() for t in floats)
    assert {t.dtype for t in floats} <= {torch.float32, torch.float64}  # no bf16 weights
    net = build_cell_model(member, load_prepared(*data))
    net.load_state_dict(state)
    qs = [q for blk in net.blocks for q in blk.skip.matrices().values()]
    assert qs and max(orth_defect(q.detach().double()) for q in qs) < 1e-5
    return state


def test_bf16_amp_solo_run_trains_and_stays_finite(tmp_path, digits):
    amp, fp32 = _amp_members(True, seeds=(0,))[0], _amp_members(False, seeds=(0,))[0]
    assert train_cell(amp, *digits, tmp_path / "amp") == "ok"
    assert train_cell(fp32, *digits, tmp_path / "fp32") == "ok"
    state = _check_amp_run(tmp_path / "amp", amp, digits)
    ref = load_torch(tmp_path / "fp32" / "last.pt")["model"]
    # bf16 rounding changes the trajectory: train.amp reached the autocast
    assert max(_rel(state[k], ref[k]) for k in ref if ref[k].is_floating_point()) > 1e-4


def test_bf16_amp_pack_trains_and_stays_finite(tmp_path, digits):
    members = _amp_members(True)
    outs = [tmp_path / str(m.cell.seed) for m in members]
    assert train_pack(members, *digits, outs) == ["ok"] * len(members)
    for m, out in zip(members, outs, strict=True):
        assert read_json(out / "status.json")["pack"]["mode"] == "vectorised"
        _check_amp_run(out, m, digits)


# ---- deterministic kernels ------------------------------------------------------------------


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    """A CIFAR-10-format set (pickled batches, as torchvision reads them), prepared: 256
    training and 64 test images, with the cifar augmentation (drawn on the GPU)."""
    d = tmp_path_factory.mktemp("cifar")
    write_cifar(d / "root", "cifar10", n_train=256, n_test=64)
    with pytest.MonkeyPatch.context() as mp:
        bypass_md5(mp)  # generated files cannot match the real files' MD5s
        prepare_dataset("cifar10", {"root": str(d / "root")}, d / "c.pt", d / "c.json")
    assert read_manifest(d / "c.json")["augment"] == "cifar"
    return d / "c.pt", d / "c.json"


def _cifar_members(seeds: tuple[int, ...], **train) -> list[CellConfig]:
    cfg = tiny_config()
    cfg["datasets"]["cifar10"] = {"source": "cifar10", "n_train": 256, "n_test": 64}
    cfg["grid"] = [
        {"arch": "cifar_resnet", "datasets": ["cifar10"], "variants": ["orth_learned"],
         "depths": [8], "seeds": list(seeds)}
    ]  # fmt: skip
    cfg["model"] = {"cifar_resnet": {"width": 8}}
    cfg["train"].update(train)
    cfg = prepare_config(cfg)
    return [cell_config(cfg, c) for c in cells(cfg)]


def _train_pack_cli(members: list[CellConfig], data, outs: list[Path]) -> None:
    """A fresh process per run, as a job runs: deterministic mode and the cuBLAS workspace
    are set once per process (orthskip.training.runstate.torch_setup)."""
    cmd = [sys.executable, "-m", "orthskip", "train-pack",
           "--pack-config", json.dumps([m.as_dict() for m in members]),
           "--data", str(data[0]), "--manifest", str(data[1]),
           "--outs", *map(str, outs)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.parametrize("seeds", [(0,), (0, 1)], ids=["solo", "pack"])
def test_deterministic_repeats_are_bit_identical(tmp_path, cifar, seeds):
    members = _cifar_members(
        seeds, device="cuda", deterministic=True, epochs=2, batch_size=32,
        snapshot_epochs=[0, 1], optimizer={"lr": 0.05, "momentum": 0.9},
    )  # fmt: skip
    runs = {r: [tmp_path / r / str(s) for s in seeds] for r in ("a", "b")}
    for outs in runs.values():
        _train_pack_cli(members, cifar, outs)
    for a, b in zip(runs["a"], runs["b"], strict=True):
        _on_gpu(a)
        assert read_json(a / "status.json")["cell_config"]["train"]["deterministic"] is True
        sa, sb = (load_torch(o / "snapshots.pt")["states"] for o in (a, b))
        assert sa.keys() == sb.keys() == {"0", "1", "2"}
        assert all(torch.equal(sa[e][k], sb[e][k]) for e in sa for k in sa[e])
        ha, hb = (pd.read_parquet(o / "history.parquet") for o in (a, b))
        pd.testing.assert_frame_equal(ha[LOSSES], hb[LOSSES], check_exact=True)
    if len(seeds) > 1:
        assert read_json(runs["a"][0] / "status.json")["pack"]["mode"] == "vectorised"


# ---- the GPU lock, with real devices --------------------------------------------------------

# One training job's device choice: claim a GPU among the ones torch sees, allocate on it,
# print what it got, hold the claim until stdin closes (the job's lifetime).
HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import torch
    from orthskip.training.devices import claim_gpu_slot, visible_gpu_tokens
    slot = claim_gpu_slot(visible_gpu_tokens(torch.cuda.device_count()), Path(sys.argv[1]))
    x = torch.ones(1, device=f"cuda:{slot.index}")
    print(slot.index, int(slot.exclusive), slot.lock_path or "-", x.device, flush=True)
    sys.stdin.read()
    """
)
SELECT = textwrap.dedent(
    """
    import sys
    import torch
    from orthskip.training.devices import select_device
    dev = select_device("cuda")
    x = torch.ones(1, device=dev)
    print(x.device.index, flush=True)
    sys.stdin.read()
    """
)


def _start(code: str, *args: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """Start a job stand-in; its first line of output (what it claimed)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
    )  # fmt: skip
    return proc, proc.stdout.readline().strip()


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.stdin.close()
            p.wait(timeout=60)


def _lock_is_free(path: Path) -> bool:
    with open(path, "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        return True


def test_a_job_holds_its_gpu_lock_until_it_exits(tmp_path):
    count = torch.cuda.device_count()
    procs: list[subprocess.Popen] = []
    try:
        first, line = _start(HOLDER, str(tmp_path))
        procs.append(first)
        index, exclusive, lock, device = line.split()
        assert exclusive == "1" and device == f"cuda:{index}"
        lock_path = Path(lock)
        assert lock_path.parent == tmp_path
        assert lock_path.read_text().strip() == str(first.pid)
        assert not _lock_is_free(lock_path)  # held while the job runs
        second, line = _start(HOLDER, str(tmp_path))
        procs.append(second)
        index2, exclusive2, _, device2 = line.split()
        if count >= 2:  # another GPU of its own
            assert index2 != index and exclusive2 == "1"
        else:  # the only GPU is taken: it shares it rather than wait
            assert (index2, exclusive2) == (index, "0")
        assert device2 == f"cuda:{index2}"
        # SIGKILL: the kernel drops the flock, so no stale lock is left behind
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
        assert _lock_is_free(lock_path)
    finally:
        _stop(procs)


def test_select_device_gives_concurrent_jobs_different_gpus(tmp_path):
    count = torch.cuda.device_count()
    env = {"ORTHSKIP_GPU_LOCK_DIR": str(tmp_path / "locks")}
    procs: list[subprocess.Popen] = []
    try:
        got = []
        for _ in range(2):
            proc, line = _start(SELECT, env=env)
            procs.append(proc)
            got.append(int(line))
        if count >= 2:
            assert got[0] != got[1]
            locks = sorted((tmp_path / "locks").glob("gpu-*.lock"))
            assert len(locks) == 2 and not any(_lock_is_free(p) for p in locks)
        else:  # one GPU (or SLURM's one per job): nothing to choose, nothing locked
            assert got == [0, 0]
            assert not list((tmp_path / "locks").glob("gpu-*.lock"))
    finally:
        _stop(procs)


# ---- packs equal their solo runs on the GPU -------------------------------------------------

FLOAT64 = {
    "dtype": "float64", "epochs": 5, "snapshot_epochs": [0, 2], "grad_clip": 1.0,
    "optimizer": {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4}, "device": "cuda",
}  # fmt: skip


def _same_as_solo(out: Path, solo: Path) -> None:
    """As tests/test_stacked.py: weights to 1e-9 relative, the history's losses to 1e-9."""
    _on_gpu(out)
    _on_gpu(solo)
    assert_member_equals_solo(out, solo)


@pytest.mark.parametrize("kind", ["identity", "orth_learned", "orth_manifold"])
def test_cifar_resnet_pack_members_equal_their_solo_runs_on_cuda(tmp_path, digits, kind):
    # 20 optimizer steps: 96 rows / batch 24 x 5 epochs, vmap over the stacked members
    members = _members("cifar_resnet", kind, batch_size=24, **FLOAT64)
    statuses, solos, outs = _solo_and_packed(tmp_path, digits, members)
    assert statuses == solos == ["ok"] * 3
    for m, out in zip(members, outs, strict=True):
        _same_as_solo(out, tmp_path / "solo" / str(m.cell.seed))
        pack = read_json(out / "status.json")["pack"]
        assert pack == {"mode": "vectorised", "size": 3, "engine": "vmap"}


def test_mixed_kind_mlp_pack_members_equal_their_solo_runs_on_cuda(tmp_path, circles):
    # every matrix kind in one hand-batched pack; 86 rows / batch 22 = 4 steps x 5 epochs
    members = _mixed_members(batch_size=22, **FLOAT64)
    outs = [tmp_path / "pack" / m.cell.path for m in members]
    assert train_pack(members, *circles, outs) == ["ok"] * len(members)
    for m, out in zip(members, outs, strict=True):
        solo = tmp_path / "solo" / m.cell.path
        assert train_reference(m, *circles, solo) == "ok"
        _same_as_solo(out, solo)
        pack = read_json(out / "status.json")["pack"]
        assert pack == {"mode": "vectorised", "size": len(members), "engine": "hand"}
        a, b = load_torch(out / "last.pt"), load_torch(solo / "last.pt")
        assert _layout(a["optimizer"]) == _layout(b["optimizer"])


# ---- divergence -----------------------------------------------------------------------------


def _exploding_cell(arch: str, skip: str) -> CellConfig:
    cfg = tiny_config()
    dataset = "circles" if arch == "mlp" else "digits"
    cfg["grid"] = [
        {"arch": arch, "datasets": [dataset], "variants": [skip],
         "depths": [3 if arch == "mlp" else 8], "seeds": [0]}
    ]  # fmt: skip
    cfg["model"] = {"mlp": {"width": 8}, "cifar_resnet": {"width": 4}}
    # lr 1e30: on the CPU the loss is non-finite at step 1 of 11 (tests/test_train.py)
    cfg["train"].update(device="cuda", batch_size=8, grad_clip=None,
                        optimizer={"lr": 1e30, "momentum": 0.9})  # fmt: skip
    cfg = prepare_config(cfg)
    return cell_config(cfg, cells(cfg)[0])


@pytest.mark.parametrize(("arch", "skip"), [("cifar_resnet", "identity"), ("mlp", "linear")])
def test_divergence_on_cuda_is_caught_at_the_end_of_the_epoch(
    tmp_path, circles, digits, arch, skip
):
    """On CUDA a solo run checks no step (a check is a device sync): the non-finite loss
    sum is caught when the epoch ends, recorded at the epoch's last step."""
    cfg = _exploding_cell(arch, skip)
    data = circles if arch == "mlp" else digits
    assert train_cell(cfg, *data, tmp_path) == "diverged"
    _on_gpu(tmp_path)
    n_train = len(validation_split(read_manifest(data[1])["n_train"], 0.1, 0)[0])
    steps = math.ceil(n_train / 8)
    assert steps >= 4  # the explosion (step 1) is well inside epoch 1
    status = read_json(tmp_path / "status.json")
    assert status["status"] == "diverged" and math.isnan(status["test_acc"])
    assert (status["diverged_epoch"], status["diverged_step"]) == (1, steps - 1)
    hist = pd.read_parquet(tmp_path / "history.parquet")
    assert list(hist["epoch"]) == [0, 1]
    assert math.isfinite(hist["train_loss"].iloc[0]) and math.isnan(hist["train_loss"].iloc[1])


def test_a_diverging_member_of_a_cuda_pack_does_not_stop_the_others(tmp_path, circles):
    members = _members("mlp", "identity", device="cuda")
    exploding = {**members[1].train["optimizer"], "lr": 1e30}
    members[1] = replace(members[1], train={**members[1].train, "optimizer": exploding})
    outs = [tmp_path / str(i) for i in range(3)]
    assert train_pack(members, *circles, outs) == ["ok", "diverged", "ok"]
    assert math.isnan(pd.read_parquet(outs[1] / "history.parquet")["train_loss"].iloc[-1])
    for out in (outs[0], outs[2]):
        _on_gpu(out)
        hist = pd.read_parquet(out / "history.parquet")
        assert all(math.isfinite(v) for c in LOSSES for v in hist[c])
