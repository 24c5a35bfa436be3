"""Vectorised packs: K members trained as one batched computation equal their solo runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from orthskip.config.grid import cell_config, cells, prepare_config
from orthskip.io import load_torch
from orthskip.nn.models import build_cell_model
from orthskip.nn.orth import orth_defect
from orthskip.nn.skip_specs import MATRIX_KINDS
from orthskip.nn.skips import SKIPS
from orthskip.results import SKIP_GAP
from orthskip.stages.prepare import prepare_dataset
from orthskip.stages.train import train_pack
from orthskip.training import stacked
from orthskip.training.reference import train_reference
from orthskip.training.single import Single
from orthskip.training.stacked import train_stacked
from tests.workflow import tiny_config

KINDS = sorted(SKIPS)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    d = tmp_path_factory.mktemp("digits")
    prepare_dataset("digits", {"source": "digits", "n_test": 1700}, d / "d.pt", d / "d.json")
    return d / "d.pt", d / "d.json"


def _members(arch: str, kind: str, seeds=(0, 1, 2), norm="batch", **train):
    cfg = tiny_config()
    dataset = "circles" if arch == "mlp" else "digits"
    cfg["grid"] = [
        {"arch": arch, "datasets": [dataset], "variants": [kind],
         "depths": [3 if arch == "mlp" else 8], "seeds": list(seeds)}
    ]  # fmt: skip
    cfg["model"] = {"mlp": {"width": 6, "norm": norm}, "cifar_resnet": {"width": 4}}
    cfg["train"].update(train)
    cfg = prepare_config(cfg)
    return [cell_config(cfg, c) for c in cells(cfg)]


def _solo_and_packed(tmp_path, data, members, engine=None):
    """The members through train_pack (``engine`` None) or as one pack on ``engine``
    (train_stacked: the vmap engine also where train_pack would not choose it), and each
    through the reference loop."""
    outs = [tmp_path / "pack" / str(m.cell.seed) for m in members]
    if engine is None:
        statuses = train_pack(list(members), *data, outs)
    else:
        statuses = train_stacked(list(members), *data, outs, engine=engine)
    solos = []
    for m in members:
        solo = tmp_path / "solo" / str(m.cell.seed)
        solos.append(train_reference(m, *data, solo))
        assert read_json(solo / "status.json").get("pack") is None
    return statuses, solos, outs


def read_json(path):
    return json.loads(path.read_text())


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    if not a.is_floating_point():
        return float((a != b).any())
    # relative to the tensor's largest entry; a tensor that is ~0 throughout (a bias before
    # BatchNorm: its gradient is zero analytically, rounding noise in practice) absolutely
    scale = max(float(b.abs().max()), 1e-6)
    return float((a - b).abs().max()) / scale


@pytest.mark.parametrize("arch", ["mlp", "cifar_resnet"])
@pytest.mark.parametrize("kind", KINDS)
def test_packed_members_equal_their_solo_runs_in_float64(tmp_path, circles, digits, arch, kind):
    # 20 optimizer steps: mlp 86 rows / batch 22 = 4 steps x 5 epochs; digits 96 rows / 24 x 5
    data = circles if arch == "mlp" else digits
    batch = 22 if arch == "mlp" else 24
    members = _members(
        arch, kind, dtype="float64", epochs=5, batch_size=batch, snapshot_epochs=[0, 2],
        optimizer={"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4}, grad_clip=1.0,
    )  # fmt: skip
    # on the CPU train_pack trains a cifar_resnet pack one member after another (vmap is
    # slower there: ArchSpec.vmap_on_cpu); the vmap engine, which GPUs use, is tested here
    jacobian = (kind, arch) == ("orth_jacobian", "cifar_resnet")
    vmap = arch == "cifar_resnet" and not jacobian
    statuses, solos, outs = _solo_and_packed(tmp_path, data, members, "vmap" if vmap else None)
    assert statuses == solos == ["ok"] * 3
    for m, out in zip(members, outs, strict=True):
        solo = tmp_path / "solo" / str(m.cell.seed)
        assert_member_equals_solo(out, solo)
        pack = read_json(out / "status.json")["pack"]
        if jacobian:
            # spectral convolutions are not vmapped: one after another, each a pack of one
            assert pack == {"mode": "sequential", "size": 3, "engine": "module"}
        else:
            hand = arch == "mlp" and kind in MATRIX_KINDS
            assert pack == {"mode": "vectorised", "size": 3, "engine": "hand" if hand else "vmap"}


@pytest.mark.parametrize("kind", ["orth_learned", "orth_manifold", "orth_jacobian"])
def test_float32_pack_same_accuracy_and_orthogonal_skips(tmp_path, circles, kind):
    # float32: a packed member and its solo run round differently (vmap's op order; another
    # CPU's kernels), and this small-batch MLP amplifies that like any float32 training does —
    # after 24 steps their weights differ by 0.8–6 % of the largest entry for every kind,
    # identity included (AMD EPYC). What holds on any CPU is the same accuracy up to a couple
    # of test points and weights that agree far better than two seeds do; the exact claim is
    # the float64 test above. orth_manifold's direction has a singular-value floor, so its
    # rounding differences are not lifted to unit steps (tests/test_skips.py).
    members = _members("mlp", kind, epochs=4, batch_size=16, optimizer={"lr": 0.05})
    statuses, solos, outs = _solo_and_packed(tmp_path, circles, members)
    assert statuses == solos
    for m, out in zip(members, outs, strict=True):
        solo = tmp_path / "solo" / str(m.cell.seed)
        sa, sb = read_json(out / "status.json"), read_json(solo / "status.json")
        n_test = 64
        assert abs(sa["test_acc"] - sb["test_acc"]) * n_test <= 2 + 1e-9
        model = load_torch(out / "last.pt")["model"]
        ref = load_torch(solo / "last.pt")["model"]
        assert max(_rel(model[k], ref[k]) for k in ref) < 0.25
        # every orthogonal skip of the member, rebuilt from its weights, is orthogonal
        net = build_cell_model(m, _Data())
        net.load_state_dict(model)
        qs = [q for blk in net.blocks for q in blk.skip.matrices().values()]
        assert qs and max(orth_defect(q.detach().double()) for q in qs) < 1e-5
    # two seeds' weights differ at O(1): the bound above is not vacuous
    other = [load_torch(o / "last.pt")["model"] for o in outs[:2]]
    assert max(_rel(other[0][k], other[1][k]) for k in other[1]) > 0.25


class _Data:
    input_shape = (2,)
    num_classes = 2


def _pack_cli(tmp_path, members, root, *extra):
    data = tmp_path / "circles.pt"
    if not data.exists():
        spec = {"source": "circles", "n_train": 4096, "n_test": 64, "noise": 0.05}
        prepare_dataset("circles", spec, data, tmp_path / "circles.json")
    outs = [str(tmp_path / root / str(i)) for i in range(len(members))]
    return [sys.executable, "-m", "orthskip", "train-pack", "--pack-config",
            json.dumps([m.as_dict() for m in members]),
            "--data", str(data), "--manifest", str(tmp_path / "circles.json"), "--outs", *outs,
            *extra]  # fmt: skip


def assert_member_equals_solo(out: Path, solo: Path, epochs: int = 5) -> None:
    """A packed member's last.pt weights within 1e-9 relative of its solo run's, at the same
    epoch, and its history's losses and clipped fraction to 1e-9."""
    a, b = load_torch(out / "last.pt"), load_torch(solo / "last.pt")
    assert a["model"].keys() == b["model"].keys()
    errs = {k: _rel(a["model"][k], b["model"][k]) for k in b["model"]}
    assert max(errs.values()) < 1e-9, sorted(errs.items(), key=lambda kv: -kv[1])[:3]
    assert a["state"]["epoch"] == b["state"]["epoch"] == epochs
    ha, hb = pd.read_parquet(out / "history.parquet"), pd.read_parquet(solo / "history.parquet")
    cols = ["train_loss", "val_loss", "test_loss", "clipped_frac", SKIP_GAP]
    pd.testing.assert_frame_equal(ha[cols], hb[cols], rtol=1e-9)


def _same_snapshots(tmp_path, n):
    for i in range(n):
        ref = load_torch(tmp_path / "ref" / str(i) / "snapshots.pt")["states"]
        got = load_torch(tmp_path / "run" / str(i) / "snapshots.pt")["states"]
        assert ref.keys() == got.keys()
        assert all(torch.equal(ref[e][k], got[e][k]) for e in ref for k in ref[e])


def _interrupted(tmp_path, members, wait_for: str, after: float, sig: int) -> int:
    """Train the reference pack, then start the same pack under ``run/``, wait until member
    0's ``wait_for`` file exists, ``after`` seconds more, send ``sig``; its exit code."""
    subprocess.run(_pack_cli(tmp_path, members, "ref"), check=True, capture_output=True)
    proc = subprocess.Popen(_pack_cli(tmp_path, members, "run"), stderr=subprocess.DEVNULL)
    first = tmp_path / "run" / "0" / wait_for
    deadline = time.time() + 180
    while not first.exists() and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(after)
    proc.send_signal(sig)
    return proc.wait(timeout=120)


def test_sigkill_mid_pack_then_rerun_is_bit_identical(tmp_path):
    members = _members("mlp", "orth_learned", epochs=3, batch_size=16, snapshot_epochs=[0, 1])
    # somewhere in epoch 2, possibly between two members' checkpoints
    assert _interrupted(tmp_path, members, "last.pt", 0.3, signal.SIGKILL) == -signal.SIGKILL
    subprocess.run(_pack_cli(tmp_path, members, "run"), check=True, capture_output=True)
    _same_snapshots(tmp_path, 3)


def test_members_killed_between_checkpoint_writes_resume_at_one_step(tmp_path):
    """Member 0 wrote its new checkpoint, members 1 and 2 did not: all restart together."""
    members = _members("mlp", "linear", epochs=3, batch_size=16, snapshot_epochs=[0, 1])
    # last.prev.pt: the second round of checkpoints has begun
    assert _interrupted(tmp_path, members, "last.prev.pt", 0.2, signal.SIGTERM) == 143
    for i in (1, 2):  # as if killed after member 0's write: 1 and 2 still hold the older one
        d = tmp_path / "run" / str(i)
        os.replace(d / "last.prev.pt", d / "last.pt")
    positions = [
        load_torch(tmp_path / "run" / str(i) / "last.pt")["state"]["epoch"] for i in range(3)
    ]
    assert positions[1] == positions[2] and positions[0] >= positions[1]
    subprocess.run(_pack_cli(tmp_path, members, "run"), check=True, capture_output=True)
    _same_snapshots(tmp_path, 3)
    status = read_json(tmp_path / "run" / "0" / "status.json")
    assert status["pack"]["mode"] == "vectorised"


def test_a_diverging_member_is_frozen_and_the_others_continue_bit_for_bit(tmp_path):
    """A fault injected into one member's checkpoint: it diverges, the others do not notice."""
    members = _members("mlp", "orth_learned", epochs=3, batch_size=16, snapshot_epochs=[0, 1, 2])
    assert _interrupted(tmp_path, members, "last.pt", 0.2, signal.SIGTERM) == 143
    bad = tmp_path / "run" / "1" / "last.pt"
    ckpt = load_torch(bad)
    name = next(k for k in ckpt["model"] if k.endswith("branch.0.weight"))
    ckpt["model"][name][0, 0] = float("inf")
    torch.save(ckpt, bad)
    at = (ckpt["state"]["epoch"] + 1, ckpt["state"]["batch"])
    subprocess.run(_pack_cli(tmp_path, members, "run"), check=True, capture_output=True)
    status = [read_json(tmp_path / "run" / str(i) / "status.json") for i in range(3)]
    assert [s["status"] for s in status] == ["ok", "diverged", "ok"]
    assert (status[1]["diverged_epoch"], status[1]["diverged_step"]) == at
    for i in (0, 2):
        ref = load_torch(tmp_path / "ref" / str(i) / "snapshots.pt")["states"]
        got = load_torch(tmp_path / "run" / str(i) / "snapshots.pt")["states"]
        assert all(torch.equal(ref[e][k], got[e][k]) for e in ref for k in ref[e])
        h = pd.read_parquet(tmp_path / "run" / str(i) / "history.parquet")
        assert h["train_loss"].notna().all() and len(h) == 4


def test_checkpoint_interval_writes_fewer_checkpoints_with_the_same_result(tmp_path, circles):
    """train.checkpoint_every_s: every epoch at 0 (last.pt rotated to last.prev.pt each
    time), only the final one when the interval is never reached; same weights either way."""
    runs = {}
    for every in (0, 1e9):
        members = _members("mlp", "orth_learned", epochs=3, batch_size=16,
                           snapshot_epochs=[0, 1], checkpoint_every_s=every)  # fmt: skip
        outs = [tmp_path / str(every) / str(i) for i in range(len(members))]
        assert train_pack(members, *circles, outs) == ["ok"] * 3
        assert all((o / "last.prev.pt").exists() == (every == 0) for o in outs)
        assert all(load_torch(o / "last.pt")["state"]["epoch"] == 3 for o in outs)
        runs[every] = [load_torch(o / "snapshots.pt")["states"] for o in outs]
    for ref, got in zip(runs[0], runs[1e9], strict=True):
        assert ref.keys() == got.keys()
        assert all(torch.equal(ref[e][k], got[e][k]) for e in ref for k in ref[e])


# every way a matrix skip's Q is produced: I, 0, W, frozen Haar Q, exp or Cayley from I or
# Haar, the manifold step
MIXED = {
    "orth_learned_haar": {"skip": "orth_learned", "skip_options": {"init": "haar"}},
    "orth_learned_cayley": {"skip": "orth_learned", "skip_options": {"map": "cayley"}},
}
MIXED_KINDS = [*MATRIX_KINDS, *MIXED]


def _mixed_members(seeds=(0, 1), norm="batch", **train):
    """One mlp pack of every matrix kind (``MIXED_KINDS``) and seed."""
    cfg = tiny_config(variants=MIXED)
    cfg["grid"] = [
        {"arch": "mlp", "datasets": ["circles"], "variants": MIXED_KINDS, "depths": [3],
         "seeds": list(seeds)}
    ]  # fmt: skip
    cfg["model"] = {"mlp": {"width": 6, "norm": norm}}
    cfg["train"].update(train)
    cfg = prepare_config(cfg)
    return [cell_config(cfg, c) for c in cells(cfg)]


@pytest.mark.parametrize(
    ("norm", "optimizer"),
    [
        ("batch", {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4}),
        # no batch norm under AdamW: the bias before it has a zero gradient up to rounding,
        # which Adam's normalisation turns into full steps, packed or solo alike
        ("layer", {"name": "adamw", "lr": 0.01, "weight_decay": 1e-4}),
        # the skips' step divided by the blocks (the rate recipe's), the manifold's included
        ("layer", {"name": "adamw", "lr": 0.01, "weight_decay": 1e-4, "skip_lr": "per_block"}),
        # SGD's depth-aware step: the branches' step times the blocks, the skips' divided
        (
            "batch",
            {
                "name": "sgd",
                "lr": 0.01,
                "momentum": 0.9,
                "weight_decay": 1e-4,
                "skip_lr": "per_block",
                "main_lr": "times_blocks",
            },
        ),
    ],
)
def test_mixed_kind_mlp_pack_members_equal_their_solo_runs_in_float64(
    tmp_path, circles, norm, optimizer
):
    # 20 optimizer steps (86 rows / batch 22 = 4 steps x 5 epochs), every kind in one pack
    members = _mixed_members(
        norm=norm, dtype="float64", epochs=5, batch_size=22, snapshot_epochs=[0, 2],
        optimizer=optimizer, grad_clip=1.0,
    )  # fmt: skip
    outs = [tmp_path / "pack" / m.cell.path for m in members]
    assert train_pack(members, *circles, outs) == ["ok"] * len(members)
    for m, out in zip(members, outs, strict=True):
        solo = tmp_path / "solo" / m.cell.path
        assert train_reference(m, *circles, solo) == "ok"
        a, b = load_torch(out / "last.pt"), load_torch(solo / "last.pt")
        assert a["model"].keys() == b["model"].keys()
        errs = {k: _rel(a["model"][k], b["model"][k]) for k in b["model"]}
        assert max(errs.values()) < 1e-9, (m.cell.path, max(errs.items(), key=lambda kv: kv[1]))
        ha, hb = pd.read_parquet(out / "history.parquet"), pd.read_parquet(solo / "history.parquet")
        cols = ["train_loss", "val_loss", "test_loss", "clipped_frac", SKIP_GAP]
        pd.testing.assert_frame_equal(ha[cols], hb[cols], rtol=1e-9)
        sa, sb = read_json(out / "status.json"), read_json(solo / "status.json")
        assert sa["pack"] == {"mode": "vectorised", "size": len(members), "engine": "hand"}
        # the counts and the optimizer's description, read once per variant
        assert (sa["n_params"], sa["n_skip_params"]) == (sb["n_params"], sb["n_skip_params"])
        # (the retraction counts apart: a packed member reports its pack's batched
        # Newton–Schulz counts, a solo run its own; both ran the retraction)
        assert _described(sa["optimizer"]) == _described(sb["optimizer"])
        if m.skip == "orth_manifold":
            assert sa["optimizer"]["retraction_max_iterations"] > 0
            assert sb["optimizer"]["retraction_max_iterations"] > 0
        # the member's checkpoint is a solo run's: the same optimizer and scheduler layout
        assert _layout(a["optimizer"]) == _layout(b["optimizer"])
        assert _optimizer_error(a["optimizer"], b["optimizer"]) < 1e-9, m.cell.path
        assert a["schedulers"] == b["schedulers"]
        assert a["optimizer"]["steps"] == b["optimizer"]["steps"] == 20


def _described(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if not k.startswith("retraction")}


def _optimizer_error(got, ref) -> float:
    """The largest relative difference of two optimizer states, parameter by parameter (by
    index: a mapping that put one parameter's state under another's index shows here)."""
    errs = [0.0]
    for o_got, o_ref in zip(got["optimizers"], ref["optimizers"], strict=True):
        assert o_got["state"].keys() == o_ref["state"].keys()
        for index, st in o_ref["state"].items():
            assert o_got["state"][index].keys() == st.keys()
            for name, value in st.items():
                other = o_got["state"][index][name]
                if isinstance(value, torch.Tensor):
                    errs.append(_rel(other, value))
                else:
                    assert other == value, (index, name)
    return max(errs)


def _layout(opt_state):
    return [
        (
            [g["params"] for g in o["param_groups"]],
            sorted(o["state"]),
            [g["lr"] for g in o["param_groups"]],
        )
        for o in opt_state["optimizers"]
    ]


def test_mixed_kind_pack_float32_skips_orthogonal(tmp_path, circles):
    members = _mixed_members(epochs=4, batch_size=16, optimizer={"lr": 0.05})
    outs = [tmp_path / m.cell.path for m in members]
    assert train_pack(members, *circles, outs) == ["ok"] * len(members)
    for m, out in zip(members, outs, strict=True):
        net = build_cell_model(m, _Data())
        net.load_state_dict(load_torch(out / "last.pt")["model"])
        qs = [q for blk in net.blocks for q in blk.skip.matrices().values()]
        if m.skip.startswith("orth"):
            assert qs and max(orth_defect(q.detach().double()) for q in qs) < 1e-5


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_mixed_kind_pack_killed_then_rerun_is_bit_identical(tmp_path, sig):
    members = _mixed_members(
        seeds=(0,), epochs=3, batch_size=16, snapshot_epochs=[0, 1],
        optimizer={"name": "adamw", "lr": 0.01},
    )  # fmt: skip
    code = _interrupted(tmp_path, members, "last.pt", 0.3, sig)
    assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 143)
    subprocess.run(_pack_cli(tmp_path, members, "run"), check=True, capture_output=True)
    _same_snapshots(tmp_path, len(members))
    assert read_json(tmp_path / "run" / "0" / "status.json")["pack"]["engine"] == "hand"


def test_rate_pack_members_start_bit_identical_to_their_solo_runs(tmp_path):
    """The hand engine draws each member's init without building its model: for every rate
    variant of the default (identity, linear, orth_learned from I and from Haar, both
    recipes: float32, identity stem and head) a member's epoch-0 snapshot is its solo run's,
    bit for bit, and its status.json has the solo counts and optimizer description."""
    default = yaml.safe_load(Path("config/config.yaml").read_text())
    variants = {k: v for k, v in default["variants"].items() if k.startswith("rate_")}
    for v in variants.values():
        v["train"] = {**v["train"], "epochs": 1, "snapshot_epochs": [0, 1]}
    cfg = tiny_config(variants=variants)
    cfg["datasets"] = {"diffeo2": {**default["datasets"]["diffeo2"], "n_train": 160, "n_test": 32}}
    cfg["grid"] = [{"arch": "mlp", "datasets": ["diffeo2"], "variants": sorted(variants),
                    "depths": [3], "seeds": [0, 1]}]  # fmt: skip
    members = [cell_config(prepare_config(cfg), c) for c in cells(prepare_config(cfg))]
    data = tmp_path / "d.pt", tmp_path / "d.json"
    prepare_dataset("diffeo2", cfg["datasets"]["diffeo2"], *data)
    outs = [tmp_path / "pack" / m.cell.path for m in members]
    assert train_pack(members, *data, outs) == ["ok"] * len(members)
    for m, out in zip(members, outs, strict=True):
        solo = tmp_path / "solo" / m.cell.path
        assert train_reference(m, *data, solo) == "ok"
        got = load_torch(out / "snapshots.pt")["states"]["0"]
        ref = load_torch(solo / "snapshots.pt")["states"]["0"]
        assert list(got) == list(ref)
        for name, t in ref.items():
            assert got[name].dtype == t.dtype and torch.equal(got[name], t), (m.cell.path, name)
        sa, sb = read_json(out / "status.json"), read_json(solo / "status.json")
        for key in ("n_params", "n_skip_params", "optimizer"):
            assert sa[key] == sb[key], (m.cell.path, key)
        assert sa["pack"]["engine"] == "hand"


@pytest.mark.parametrize("engine", ["hand", "vmap"])
def test_a_pack_drops_its_stopped_members_and_each_run_is_unchanged(tmp_path, engine):
    """Members stop by the rule at different epochs; once at most ``COMPACT_AT`` of a pack
    still trains it is rebuilt from the running members' checkpoints, down to a pack of
    one. In float64 every member's weights and history equal those of the uncompacted pack
    and of its solo run to 1e-9 (the hand engine, every matrix kind; vmap, one kind)."""
    train = {"dtype": "float64", "epochs": 30, "batch_size": 22, "snapshot_epochs": [0, 2],
             "optimizer": {"name": "adamw", "lr": 0.01, "weight_decay": 1e-4},
             "stop": {"patience": 3, "min_delta": 0.02, "watch": "skips"}}  # fmt: skip
    if engine == "hand":
        members = _mixed_members(norm="layer", **train)
    else:
        # no batch norm under AdamW (see the mixed-kind test above)
        members = _members("mlp", "orth_learned", seeds=range(6), norm="layer", **train)
    circles = tmp_path / "c.pt", tmp_path / "c.json"  # noisier: the members' stops spread
    prepare_dataset("circles", {"source": "circles", "n_train": 96, "n_test": 32, "noise": 0.1},
                    *circles)  # fmt: skip
    runs = {}
    for compact in (True, False):
        outs = [tmp_path / str(compact) / m.cell.path for m in members]
        got = train_stacked(members, *circles, outs, engine=engine, compact=compact)
        assert got == ["ok"] * len(members)
        runs[compact] = outs
    packs = [read_json(o / "status.json")["pack"] for o in runs[True]]
    epochs = [read_json(o / "status.json")["epochs"] for o in runs[True]]
    assert len(set(epochs)) > 2 and min(epochs) < 30, epochs  # stopped at different epochs
    assert max(len(p.get("compacted_to", [])) for p in packs) >= 2, packs
    assert {p["engine"] for p in packs} == {engine}
    assert all("compacted_to" not in read_json(o / "status.json")["pack"] for o in runs[False])
    for m, out, ref in zip(members, runs[True], runs[False], strict=True):
        for other in (ref, tmp_path / "solo" / m.cell.path):
            if other != ref:
                assert train_reference(m, *circles, other) == "ok"
            a, b = load_torch(out / "last.pt"), load_torch(other / "last.pt")
            errs = {k: _rel(a["model"][k], b["model"][k]) for k in b["model"]}
            assert max(errs.values()) < 1e-9, (m.cell.path, max(errs.items(), key=lambda kv: kv[1]))
            assert a["state"]["epoch"] == b["state"]["epoch"]
            ha = pd.read_parquet(out / "history.parquet")
            hb = pd.read_parquet(other / "history.parquet")
            cols = ["train_loss", "val_loss", "test_loss", SKIP_GAP]
            pd.testing.assert_frame_equal(ha[cols], hb[cols], rtol=1e-9)


def test_a_compacting_pack_killed_then_rerun_ends_as_an_uninterrupted_one(tmp_path):
    """SIGKILL after the pack dropped its first stopped members: the rerun rebuilds the
    pack of the members still training from their checkpoints and every member ends with
    the uninterrupted run's weights (float64, to 1e-12: the packs' sizes differ)."""
    members = _mixed_members(
        seeds=(0,), norm="layer", dtype="float64", epochs=40, batch_size=64,
        snapshot_epochs=[0, 1], optimizer={"name": "adamw", "lr": 0.01},
        stop={"patience": 3, "min_delta": 0.02, "watch": "skips"},
    )  # fmt: skip
    spec = {"source": "circles", "n_train": 512, "n_test": 32, "noise": 0.1}  # _pack_cli's data
    prepare_dataset("circles", spec, tmp_path / "circles.pt", tmp_path / "circles.json")
    subprocess.run(_pack_cli(tmp_path, members, "ref"), check=True, capture_output=True)
    ref = [read_json(tmp_path / "ref" / str(i) / "status.json") for i in range(len(members))]
    assert any("compacted_to" in s["pack"] for s in ref)
    assert len({s["epochs"] for s in ref}) > 2, [s["epochs"] for s in ref]
    proc = subprocess.Popen(_pack_cli(tmp_path, members, "run"), stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while not list((tmp_path / "run").glob("*/status.json")) and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=120) == -signal.SIGKILL
    done = list((tmp_path / "run").glob("*/status.json"))
    assert 0 < len(done) < len(members)  # killed after a compaction, before the end
    subprocess.run(_pack_cli(tmp_path, members, "run"), check=True, capture_output=True)
    for i, status in enumerate(ref):
        a = load_torch(tmp_path / "run" / str(i) / "last.pt")
        b = load_torch(tmp_path / "ref" / str(i) / "last.pt")
        assert a["state"]["epoch"] == b["state"]["epoch"] == status["epochs"]
        errs = {k: _rel(a["model"][k], b["model"][k]) for k in b["model"]}
        assert max(errs.values()) < 1e-12, (i, max(errs.items(), key=lambda kv: kv[1]))
        got = read_json(tmp_path / "run" / str(i) / "status.json")
        assert (got["status"], got["stopped"]) == (status["status"], status["stopped"])


@pytest.mark.parametrize(
    ("arch", "kind", "dtype"),
    [("cifar_resnet", "linear", "float32"), ("cifar_resnet", "procrustes", "float32"),
     ("mlp", "orth_learned", "float64"), ("mlp", "orth_manifold", "float64")],
)  # fmt: skip
def test_a_pack_of_one_is_its_solo_run(tmp_path, circles, digits, arch, kind, dtype):
    """One cell trains on the pack engine as a pack of one. A net's module called on its
    member's views of the stacked tensors (no vmap) is the solo computation: its weights
    equal bit for bit in float32; the mlp's hand-batched pack of one (a batch of one per
    bmm) equals its solo run to 1e-9 in float64, as bigger packs do."""
    data = circles if arch == "mlp" else digits
    members = _members(
        arch, kind, seeds=(0,), dtype=dtype, epochs=5, batch_size=22 if arch == "mlp" else 24,
        snapshot_epochs=[0, 2], optimizer={"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4},
    )  # fmt: skip
    statuses, solos, outs = _solo_and_packed(tmp_path, data, members)
    assert statuses == solos == ["ok"]
    engine = "hand" if arch == "mlp" else "module"
    assert read_json(outs[0] / "status.json")["pack"] == {
        "mode": "vectorised", "size": 1, "engine": engine}  # fmt: skip
    solo = tmp_path / "solo" / "0"
    if dtype == "float64":
        assert_member_equals_solo(outs[0], solo)
        return
    a, b = load_torch(outs[0] / "last.pt"), load_torch(solo / "last.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])
    ha, hb = pd.read_parquet(outs[0] / "history.parquet"), pd.read_parquet(solo / "history.parquet")
    # the recorded epoch means are summed in another order (per member in a tensor) than the
    # solo run's: equal to rounding, while the weights they describe are equal bit for bit
    cols = ["train_loss", "val_loss", "test_loss", "test_acc"]
    pd.testing.assert_frame_equal(ha[cols], hb[cols], rtol=1e-6)


@pytest.mark.parametrize(
    ("arch", "option"),
    [("cifar_resnet", {"channels_last": True}), ("mlp", {"compile": True})],
    ids=["channels_last", "compile"],
)
def test_a_pack_of_one_runs_what_vmap_cannot(tmp_path, circles, digits, arch, option):
    """``train.channels_last`` and ``train.compile`` reach a pack of one's own module (the
    engine's Single net): the weights are channels_last / the module is compiled, and the
    member equals its reference run with the same option to 1e-9 in float64."""
    data = circles if arch == "mlp" else digits
    kind = "orth_learned"
    members = _members(
        arch, kind, seeds=(0,), dtype="float64", epochs=3,
        batch_size=22 if arch == "mlp" else 24, snapshot_epochs=[0, 2],
        optimizer={"lr": 0.05, "momentum": 0.9}, **option,
    )  # fmt: skip
    assert stacked.engine_for(members) == "module"
    out = tmp_path / "open"
    pack, _, _ = stacked.open_pack(members, *data, [out], stacked.engine_for(members))
    assert pack is not None and isinstance(pack.net, Single)
    if "channels_last" in option:
        convs = [m for m in pack.net.model.modules() if isinstance(m, torch.nn.Conv2d)]
        assert convs and all(
            c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs
        )
    else:
        assert isinstance(pack.net.call, torch._dynamo.eval_frame.OptimizedModule)
    statuses, solos, outs = _solo_and_packed(tmp_path, data, members)
    assert statuses == solos == ["ok"]
    assert read_json(outs[0] / "status.json")["pack"]["engine"] == "module"
    assert_member_equals_solo(outs[0], tmp_path / "solo" / "0", epochs=3)


def test_a_pack_is_vmapped_on_the_cpu_only_where_it_pays():
    """On the CPU a conv net's or a ViT's pack trains one member after another (each a
    pack of one: bench_engine measured vmap slower there); an mlp pack of a non-matrix kind
    is vmapped; a pack of one always trains on the engine."""
    resnet = _members("cifar_resnet", "orth_learned", device="cpu")
    why = stacked.can_vectorise(resnet)
    assert why is not None and "cifar_resnet" in why and "slower" in why
    assert stacked.can_vectorise(resnet[:1]) is None
    mlp = _members("mlp", "procrustes", device="cpu")
    assert stacked.can_vectorise(mlp) is None and stacked.engine_for(mlp) == "vmap"
    assert stacked.engine_for(mlp[:1]) == "module"
    assert stacked.engine_for(_members("mlp", "orth_learned", device="cpu")) == "hand"


def test_a_pack_of_one_that_checks_at_the_epochs_end_trains_the_same_and_catches_divergence(
    tmp_path, circles, monkeypatch
):
    """A pack of one on CUDA checks no step (a device sync each), only the epoch's loss sum.
    The same path on the CPU (the policy switched off here): the same weights bit for bit as
    the checked steps, and an exploding lr ends ``diverged`` at the epoch's last step."""
    member = _members("mlp", "procrustes", seeds=(0,), epochs=2, batch_size=16)
    assert train_stacked(member, *circles, [tmp_path / "checked"]) == ["ok"]
    monkeypatch.setattr(stacked, "checks_every_step", lambda pack: False)
    assert train_stacked(member, *circles, [tmp_path / "unchecked"]) == ["ok"]
    a = load_torch(tmp_path / "checked" / "last.pt")["model"]
    b = load_torch(tmp_path / "unchecked" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    hot = _members("mlp", "linear", seeds=(0,), epochs=2, batch_size=16, grad_clip=None,
                   optimizer={"lr": 1e30, "momentum": 0.9})  # fmt: skip
    assert train_stacked(hot, *circles, [tmp_path / "hot"]) == ["diverged"]
    status = read_json(tmp_path / "hot" / "status.json")
    steps = -(-86 // 16)  # ceil: the 86 training rows of circles, batch 16
    assert (status["diverged_epoch"], status["diverged_step"]) == (1, steps - 1)
