"""Packs: one job trains (and extracts metrics of) the cells that differ only in seed."""

from __future__ import annotations

import copy
import json
import logging
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pandas as pd
import pytest
import torch

from orthskip.config.grid import (
    cell_config,
    cells,
    pack_cells,
    pack_config_text,
    packs,
    prepare_config,
    read_pack_config,
)
from orthskip.errors import ConfigError
from orthskip.io import load_torch
from orthskip.logs import MemberFilter
from orthskip.stages.prepare import prepare_dataset
from orthskip.stages.train import train_pack
from orthskip.training.reference import train_reference
from tests.workflow import snakemake, tiny_config


def _cfg(**execution):
    cfg = tiny_config()
    cfg["grid"][0]["seeds"] = [0, 1, 2]
    cfg["grid"].append(
        {"arch": "mlp", "datasets": ["circles"], "variants": ["linear"], "depths": [2],
         "seeds": [5]}
    )  # fmt: skip
    cfg["execution"] = execution
    return prepare_config(cfg)


def test_packs_group_cells_that_differ_only_in_seed():
    by_seed = packs(_cfg())
    assert by_seed == {
        ("s0", "s1", "s2"): [
            f"circles/mlp/{v}/d{d}" for v in ("identity", "orth_learned") for d in (1, 3)
        ],
        ("s5",): ["circles/mlp/linear/d2"],
    }
    members = {c for ms, keys in by_seed.items() for k in keys for c in pack_cells(k, ms)}
    assert members == set(cells(_cfg()))
    alone = packs(_cfg(pack="none"))
    assert set(alone) == {("s0",), ("s1",), ("s2",), ("s5",)}
    assert sum(map(len, alone.values())) == 13
    family = packs(_cfg(pack="family"))
    both = tuple(f"d{d}/s{s}" for d in (1, 3) for s in (0, 1, 2))
    assert family == {
        both: ["circles/mlp/identity", "circles/mlp/orth_learned"],
        ("d2/s5",): ["circles/mlp/linear"],
    }
    members = {c for ms, keys in family.items() for k in keys for c in pack_cells(k, ms)}
    assert members == set(cells(_cfg()))


def test_unknown_pack_mode_is_refused_naming_the_key():
    cfg = tiny_config()
    cfg["execution"] = {"pack": "members"}
    with pytest.raises(ConfigError) as err:
        prepare_config(cfg)
    for word in ("execution", "pack", "members", "seeds", "none"):
        assert word in str(err.value)


def _members(kind="orth_learned", **train):
    cfg = _cfg()
    cfg["train"].update(train)
    return [cell_config(cfg, c) for c in cells(cfg) if c.variant == kind and c.depth == 3]


@pytest.mark.parametrize("kind", ["identity", "orth_learned"])
def test_a_sequential_member_equals_its_reference_run_bit_for_bit(tmp_path, circles, kind):
    members = _members(kind)
    outs = [tmp_path / "pack" / str(m.cell.seed) for m in members]
    logs = [tmp_path / "logs" / f"{m.cell.seed}.log" for m in members]
    # one after another, each a pack of one on its own module: every weight bit for bit (the
    # vectorised pack is checked in tests/test_stacked.py)
    assert train_pack(members, *circles, outs, logs, vectorise=False) == ["ok"] * 3
    for m, out, log in zip(members, outs, logs, strict=True):
        solo = tmp_path / "solo" / str(m.cell.seed)
        train_reference(m, *circles, solo)
        a, b = (
            load_torch(out / "snapshots.pt")["states"],
            load_torch(solo / "snapshots.pt")["states"],
        )
        assert a.keys() == b.keys()
        assert all(torch.equal(a[e][k], b[e][k]) for e in a for k in a[e])
        ha, hb = pd.read_parquet(out / "history.parquet"), pd.read_parquet(solo / "history.parquet")
        cols = ["train_acc", "val_acc", "test_acc"]
        pd.testing.assert_frame_equal(ha[cols], hb[cols], check_exact=True)
        # the engine averages per-row losses: the same numbers summed in another order
        cols = ["train_loss", "val_loss", "test_loss"]
        pd.testing.assert_frame_equal(ha[cols], hb[cols], check_exact=False, rtol=1e-6)
        # each member logs to its own file, and only its own epochs
        text = log.read_text()
        assert f"s{m.cell.seed}" in text and text.count("epoch 2/2") == 1
    # members differ from each other (their own seeds)
    first = [load_torch(o / "snapshots.pt")["states"]["2"] for o in outs]
    assert not all(torch.equal(first[0][k], first[1][k]) for k in first[0])


def test_each_member_log_holds_only_its_own_lines(tmp_path, circles):
    members = _members("orth_learned")
    outs = [tmp_path / "cells" / str(m.cell.seed) for m in members]
    logs = [tmp_path / "logs" / f"{m.cell.seed}.log" for m in members]
    assert train_pack(members, *circles, outs, logs) == ["ok"] * 3
    names = [m.cell.path for m in members]
    for name, out, rule_log in zip(names, outs, logs, strict=True):
        assert json.loads((out / "status.json").read_text())["pack"]["mode"] == "vectorised"
        for path in (out / "train.log", rule_log):
            text = path.read_text()
            # its own start and finish markers and its own epoch lines (0: the start) ...
            assert text.count(f"==== orthskip train {name} started") == 1, path
            assert text.count(f"==== orthskip train {name} finished: status ok") == 1, path
            assert [text.count(f"{name} epoch {e}/2 ") for e in range(3)] == [1, 1, 1], path
            # ... and nothing about the other members
            for other in names:
                assert other == name or other not in text, (path, other, text)


def test_member_filter_tells_a_member_from_one_whose_path_extends_it():
    names = ["c/mlp/identity/d1/s1", "c/mlp/identity/d1/s10"]
    keep = MemberFilter(names[0], names)

    def passes(msg, *args):
        return keep.filter(logging.makeLogRecord({"msg": msg, "args": args}))

    assert passes("%s epoch 1/2", names[0])
    assert not passes("%s epoch 1/2", names[1])
    assert not passes("results/cells/c/mlp/identity/d1/s10/last.pt was written for another config")
    assert passes("results/cells/c/mlp/identity/d1/s1/last.pt was written for another config")
    assert passes("the members' checkpoints are at different steps")  # about the whole pack


def test_a_diverging_member_does_not_stop_the_others(tmp_path, circles):
    members = _members("identity")
    exploding = {**members[1].train["optimizer"], "lr": 1e30}  # only the second member explodes
    members[1] = replace(members[1], train={**members[1].train, "optimizer": exploding})
    outs = [tmp_path / str(i) for i in range(3)]
    assert train_pack(members, *circles, outs) == ["ok", "diverged", "ok"]


@pytest.mark.parametrize("mode", ["vectorised", "sequential"])
def test_sigterm_mid_pack_then_rerun_is_bit_identical(tmp_path, mode):
    data = tmp_path / "circles.pt"
    spec = {"source": "circles", "n_train": 4096, "n_test": 64, "noise": 0.05}
    prepare_dataset("circles", spec, data, tmp_path / "circles.json")
    members = _members(epochs=2, batch_size=16, snapshot_epochs=[0])
    base = [sys.executable, "-m", "orthskip", "train-pack", "--pack-config",
            json.dumps([m.as_dict() for m in members]),
            "--data", str(data), "--manifest", str(tmp_path / "circles.json")]  # fmt: skip
    if mode == "sequential":
        base.append("--sequential")

    def outs(root):
        return ["--outs", *(str(tmp_path / root / str(i)) for i in range(3))]

    subprocess.run([*base, *outs("ref")], check=True, capture_output=True)
    proc = subprocess.Popen([*base, *outs("run")], stderr=subprocess.PIPE, text=True)
    # sequential: the second member has started; vectorised: the first epoch has ended
    started = tmp_path / "run" / ("1" if mode == "sequential" else "0") / "last.pt"
    deadline = time.time() + 180
    while not started.exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 143, err
    done = [(tmp_path / "run" / str(i) / "status.json").exists() for i in range(3)]
    assert done == ([True, False, False] if mode == "sequential" else [False] * 3)
    # The SIGTERM line, the preempted marker and the resume line name one position: the one
    # last.pt holds (epochs completed, then the next batch).
    stopped = started.parent
    state = load_torch(stopped / "last.pt")["state"]
    at = f"epoch {state['epoch']} batch {state['batch']}"
    assert f"SIGTERM at {at}" in err, err[-2000:]
    subprocess.run([*base, *outs("run")], check=True, capture_output=True)
    cell = members[int(stopped.name)].cell.path
    log = (stopped / "train.log").read_text()
    assert f"{cell} preempted (exit 143; resume from epoch {state['epoch']}" in log, log
    assert f"resumed {cell} at {at}" in log, log
    for i in range(3):
        ref = load_torch(tmp_path / "ref" / str(i) / "snapshots.pt")["states"]
        got = load_torch(tmp_path / "run" / str(i) / "snapshots.pt")["states"]
        assert all(torch.equal(ref[e][k], got[e][k]) for e in ref for k in ref[e])
        status = json.loads((tmp_path / "run" / str(i) / "status.json").read_text())
        # --sequential: each member a pack of one on its own module (nothing batched)
        engine = "hand" if mode == "vectorised" else "module"
        assert status["pack"] == {"mode": mode, "size": 3, "engine": engine}


def test_default_plans_far_fewer_jobs_than_cells_and_none_plans_one_per_cell(tmp_path):
    cfg = tiny_config()
    cfg["grid"][0]["seeds"] = [0, 1, 2]

    def planned(mode):
        c = copy.deepcopy(cfg)
        c["execution"] = {"pack": mode}
        out = snakemake(tmp_path / mode, "-n", cfg=c).stdout
        rows = [ln.split() for ln in out.splitlines()]
        return {r[0]: int(r[1]) for r in rows if len(r) == 2 and r[1].isdigit()}

    seeds, alone, family = planned("seeds"), planned("none"), planned("family")
    assert seeds["train"] == 4 and seeds["extract_metrics"] == 4  # 12 cells in 4 packs
    assert family["train"] == 2 and family["extract_metrics"] == 2  # 2 depths x 3 seeds each
    assert sum(v for k, v in alone.items() if k.startswith("train")) == 12


def test_a_family_pack_runs_through_snakemake_and_trains_each_depth_vectorised(tmp_path):
    cfg = tiny_config()
    cfg["grid"][0].update(seeds=[0, 1], variants=["orth_learned"])
    cfg["execution"] = {"pack": "family"}
    snakemake(tmp_path, "results/metrics/cells.parquet", cfg=cfg)
    table = pd.read_parquet(tmp_path / "results" / "metrics" / "cells.parquet")
    assert sorted(zip(table["depth"], table["seed"], strict=True)) == [
        (1, 0), (1, 1), (3, 0), (3, 1)
    ]  # fmt: skip
    assert set(table["status"]) == {"ok"}
    for d in (1, 3):
        for s in (0, 1):
            cell = tmp_path / "results" / "cells" / "circles" / "mlp" / "orth_learned"
            status = json.loads((cell / f"d{d}" / f"s{s}" / "status.json").read_text())
            assert status["pack"] == {"mode": "vectorised", "size": 2, "engine": "hand"}
    logs = tmp_path / "results" / "logs" / "train" / "circles" / "mlp" / "orth_learned"
    assert (logs / "pack.log").exists()


def test_kinds_packs_the_variants_of_one_recipe_together():
    cfg = tiny_config(variants={"fast": {"skip": "linear", "train": {"optimizer": {"lr": 0.5}}}})
    cfg["grid"][0].update(seeds=[0, 1], variants=["identity", "orth_learned", "fast"])
    cfg["grid"].append(
        {"arch": "cifar_resnet", "datasets": ["digits"], "variants": ["identity", "linear"],
         "depths": [8], "seeds": [0]}
    )  # fmt: skip
    cfg["execution"] = {"pack": "kinds"}
    cfg = prepare_config(cfg)
    got = packs(cfg)
    together = tuple(f"{v}/d{d}/s{s}" for d in (1, 3) for s in (0, 1)
                     for v in ("identity", "orth_learned"))  # fmt: skip
    assert got == {
        # another lr: a pack of its own
        tuple(f"fast/d{d}/s{s}" for d in (1, 3) for s in (0, 1)): ["circles/mlp"],
        ("d8/s0",): ["digits/cifar_resnet/identity", "digits/cifar_resnet/linear"],
        together: ["circles/mlp"],
    }
    members = {c for ms, keys in got.items() for k in keys for c in pack_cells(k, ms)}
    assert members == set(cells(cfg))


def test_a_kinds_pack_runs_through_snakemake_as_one_computation_per_depth(tmp_path):
    cfg = tiny_config()
    cfg["grid"][0].update(seeds=[0, 1], variants=["identity", "orth_learned"])
    cfg["execution"] = {"pack": "kinds"}
    out = snakemake(tmp_path / "plan", "-n", cfg=cfg).stdout
    rows = [ln.split() for ln in out.splitlines()]
    assert {r[0]: int(r[1]) for r in rows if len(r) == 2 and r[1].isdigit()}["train"] == 1
    snakemake(tmp_path, "results/metrics/cells.parquet", cfg=cfg)
    table = pd.read_parquet(tmp_path / "results" / "metrics" / "cells.parquet")
    assert len(table) == 8 and set(table["status"]) == {"ok"}
    cell = tmp_path / "results" / "cells" / "circles" / "mlp" / "orth_learned" / "d3" / "s1"
    status = json.loads((cell / "status.json").read_text())
    assert status["pack"] == {"mode": "vectorised", "size": 4, "engine": "hand"}
    logs = tmp_path / "results" / "logs" / "train" / "circles" / "mlp"
    assert len(list(logs.glob("pack.*.log"))) == 1


def test_variants_that_cannot_pack_together_train_apart_named_with_why(caplog):
    from orthskip.stages.train import _groups

    cfg = tiny_config(variants={"fast": {"skip": "linear", "train": {"optimizer": {"lr": 0.5}}}})
    cfg["grid"][0].update(seeds=[0, 1], variants=["identity", "orth_learned", "fast"], depths=[3])
    cfg = prepare_config(cfg)
    members = [cell_config(cfg, c) for c in cells(cfg)]
    together = [cell_config(cfg, c) for c in cells(cfg) if c.variant != "fast"]
    assert _groups(together) == [list(range(4))]  # two kinds x two seeds: one computation
    with caplog.at_level("INFO", logger="orthskip.stages.train"):
        groups = _groups(members)
    assert sorted(sorted(members[i].cell.variant for i in g) for g in groups) == [
        ["fast", "fast"], ["identity", "identity"], ["orth_learned", "orth_learned"]
    ]  # fmt: skip
    assert "circles/mlp/fast/d3/s0" in caplog.text and "train settings" in caplog.text


def test_pack_config_text_writes_each_section_once_and_reads_back_every_member():
    # the rules pass this text as a param and on stdin, and Snakemake stores both in every
    # output's record: as a plain list of full configs the default's records were 580 KB
    # each (665 MB of .snakemake/metadata)
    from orthskip.config.grid import load_config
    from tests.workflow import REPO

    cfg = load_config(REPO / "config" / "config.yaml")
    for members, keys in packs(cfg).items():
        for key in keys:
            cfgs = [cell_config(cfg, c) for c in pack_cells(key, members)]
            text = pack_config_text(cfgs)
            assert read_pack_config(text) == cfgs
            plain = json.dumps([c.as_dict() for c in cfgs], sort_keys=True)
            assert read_pack_config(plain) == cfgs
            if len(cfgs) >= 100:  # the rate and circles packs
                assert len(text) < len(plain) / 5, (key, len(text), len(plain))
    # a member differing in one section gets its own entry of that section only
    a = cfgs[0]
    b = replace(a, train={**a.train, "epochs": a.train["epochs"] + 1})
    blob = json.loads(pack_config_text([a, b]))
    assert len(blob["sections"]["train"]) == 2 and len(blob["sections"]["model"]) == 1
    assert read_pack_config(json.dumps(blob)) == [a, b]


def test_the_default_packs_reach_the_cli_through_stdin(tmp_path):
    # execution.pack: kinds puts 150 circles cells in one job; their configs as JSON are larger
    # than one command-line argument may be (MAX_ARG_STRLEN, 128 KiB: "Argument list too
    # long"), so the rules pass them on standard input (--pack-config -)
    from orthskip.config.grid import load_config
    from tests.workflow import REPO

    cfg = load_config(REPO / "config" / "config.yaml")
    sizes = [
        len(json.dumps([cell_config(cfg, c).without_metrics().as_dict()
                        for c in pack_cells(key, members)], sort_keys=True))
        for members, keys in packs(cfg).items() for key in keys
    ]  # fmt: skip
    assert max(sizes) > 128 * 1024
    for rule in ("train", "metrics"):
        text = (REPO / "workflow" / "rules" / f"{rule}.smk").read_text()
        assert "--pack-config - " in text and "<<< {params.cfg:q}" in text
    members = _members("identity", epochs=1)[:2]
    data = tmp_path / "circles.pt"
    spec = {"source": "circles", "n_train": 96, "n_test": 64, "noise": 0.05}
    prepare_dataset("circles", spec, data, tmp_path / "circles.json")
    outs = [str(tmp_path / str(i)) for i in range(len(members))]
    proc = subprocess.run(
        [sys.executable, "-m", "orthskip", "train-pack", "--pack-config", "-", "--data",
         str(data), "--manifest", str(tmp_path / "circles.json"), "--outs", *outs],
        input=json.dumps([m.as_dict() for m in members]), capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert all(json.loads((tmp_path / str(i) / "status.json").read_text())["status"] == "ok"
               for i in range(len(members)))  # fmt: skip
