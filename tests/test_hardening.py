"""Hardening found by the acceptance tests (issue 19, items 2-5).

Each test here failed before its change: a corrupt prepared dataset stopped before any job
(item 2), YAML locations and allowed keys in config messages (item 3), the train log kept
across reruns and the stale-lock hint of `make run` (item 4), decision grids whatever the
seeds and a figure message that names the cause (item 5).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from orthskip.config.grid import cell_config, cells, load_config, prepare_config, warp_seed_for
from orthskip.errors import ConfigError
from tests.workflow import REPO, snakemake, tiny_config, write_config

# ---- item 3: config messages ------------------------------------------------------------

BAD_YAML = "datasets:\n  circles: {source: circles\ngrid: [\n"


def test_yaml_syntax_error_names_file_line_and_column(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_YAML)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    # PyYAML notices the unclosed flow mapping at the ':' of line 3, column 5
    assert str(err.value).startswith(f"{path}:3:5: YAML syntax error: ")
    assert "started at line 2, column 12" in str(err.value)


def test_yaml_tab_indent_names_its_line(tmp_path):
    path = tmp_path / "tab.yaml"
    path.write_text("datasets:\n\tcircles: {source: circles}\n")
    with pytest.raises(ConfigError, match=rf"^{path}:2:1: YAML syntax error: .*'\\t'"):
        load_config(path)


def test_check_command_prints_the_location(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_YAML)
    proc = subprocess.run(
        [sys.executable, "-m", "orthskip", "check", str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 2
    assert f"{path}:3:5: YAML syntax error" in proc.stderr


def _allowed_train_keys() -> str:
    keys = tiny_config()["train"].keys() | {"amp", "grad_clip", "threads", "val_fraction"}
    return ", ".join(sorted(keys))


@pytest.mark.parametrize(
    ("section", "where", "message"),
    [
        (
            "train",
            "train",
            "config key 'train.epochz': unknown key 'epochz' (did you mean 'epochs'?)",
        ),
        (
            "optimizer",
            "train.optimizer",
            "config key 'train.optimizer.lrr': unknown key 'lrr' (did you mean 'lr'?); "
            "allowed: betas, lr, main_lr, momentum, name, nesterov, skip_lr, "
            "skip_weight_decay, weight_decay",
        ),
        ("metrics", "metrics", "config key 'metrics.warp_sed': unknown key 'warp_sed' (did you"),
    ],
)
def test_unknown_key_lists_allowed_keys_with_a_suggestion(section, where, message):
    cfg = tiny_config()
    bad = {"train": {"epochz": 3}, "optimizer": {"lrr": 0.1}, "metrics": {"warp_sed": 1}}[section]
    node = cfg
    for key in where.split(".")[:-1]:
        node = node[key]
    node.setdefault(where.split(".")[-1], {}).update(bad)
    with pytest.raises(ConfigError) as err:
        prepare_config(cfg)
    assert message in str(err.value)
    if section == "train":
        for key in _allowed_train_keys().split(", "):
            assert key in str(err.value).split("allowed: ")[1]


def test_unknown_key_in_a_variant_override_names_its_path():
    cfg = tiny_config(variants={"fast": {"skip": "identity", "train": {"epocs": 1}}})
    cfg["grid"][0]["variants"] = ["fast"]
    with pytest.raises(ConfigError, match=r"'variants\.fast\.train\.epocs'.*did you mean 'epochs'"):
        prepare_config(cfg)


def test_unknown_key_through_snakemake(tmp_path):
    cfg = tiny_config()
    cfg["train"]["epochz"] = 3
    proc = snakemake(tmp_path, "-n", cfg=cfg, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "config key 'train.epochz': unknown key 'epochz' (did you mean 'epochs'?)" in out
    assert "allowed: amp, batch_size," in out
    assert "Failed validating" not in out  # not the jsonschema dump any more


# ---- item 5: decision grids whatever the seeds -------------------------------------------


def _seeds_cfg(seeds: list[int], **metrics) -> dict:
    cfg = tiny_config()
    cfg["grid"][0]["seeds"] = seeds
    cfg["grid"][0]["depths"] = [1]
    cfg["grid"][0]["variants"] = ["identity"]
    cfg["metrics"].update(metrics)
    return prepare_config(cfg)


def test_warp_seed_defaults_to_the_smallest_seed_of_each_family():
    cfg = _seeds_cfg([11, 7])
    assert cfg["metrics"]["warp_seed"] is None  # the schema default
    for cell in cells(cfg):
        assert warp_seed_for(cfg, cell) == 7
        assert cell_config(cfg, cell).metrics["warp_seed"] == 7
    # families differ in depth too: each gets its own smallest seed
    cfg = tiny_config()
    cfg["grid"] = [
        {"arch": "mlp", "datasets": ["circles"], "variants": ["identity"], "depths": [1],
         "seeds": [5, 3]},
        {"arch": "mlp", "datasets": ["circles"], "variants": ["identity"], "depths": [2],
         "seeds": [9]},
    ]  # fmt: skip
    cfg = prepare_config(cfg)
    got = {(c.depth, c.seed): warp_seed_for(cfg, c) for c in cells(cfg)}
    assert got == {(1, 3): 3, (1, 5): 3, (2, 9): 9}


def test_explicit_warp_seed_is_kept():
    cfg = _seeds_cfg([7, 11], warp_seed=11)
    assert {warp_seed_for(cfg, c) for c in cells(cfg)} == {11}
    cfg = tiny_config(variants={"late": {"skip": "identity", "metrics": {"warp_seed": 11}}})
    cfg["grid"][0].update(variants=["late", "identity"], depths=[1], seeds=[7, 11])
    cfg = prepare_config(cfg)
    got = {(c.variant, c.seed): warp_seed_for(cfg, c) for c in cells(cfg)}
    assert got == {("identity", 7): 7, ("identity", 11): 7, ("late", 7): 11, ("late", 11): 11}


def test_seeds_7_and_11_give_warp_rows_for_seed_7_only(tmp_path):
    from orthskip.figures.decision import _why_empty, decision_regions
    from orthskip.stages.aggregate import aggregate
    from orthskip.stages.metrics import cell_metrics
    from orthskip.stages.prepare import prepare_dataset
    from orthskip.training.stacked import train_cell

    cfg = _seeds_cfg([7, 11])
    spec = cfg["datasets"]["circles"]
    data, man = tmp_path / "circles.pt", tmp_path / "circles.manifest.json"
    prepare_dataset("circles", {k: v for k, v in spec.items() if k != "source"}, data, man)
    paths: dict[str, list[Path]] = {"status": [], "history": [], "metrics": [], "warp": []}
    for cell in cells(cfg):
        out = tmp_path / "cells" / cell.path
        ccfg = cell_config(cfg, cell)
        train_cell(ccfg, data, man, out)
        cell_metrics(ccfg, data, man, out / "snapshots.pt", out / "m.parquet", out / "w.parquet")
        for key, name in (("status", "status.json"), ("history", "history.parquet"),
                          ("metrics", "m.parquet"), ("warp", "w.parquet")):  # fmt: skip
            paths[key].append(out / name)
        warp = pd.read_parquet(out / "w.parquet")
        assert (len(warp) > 0) == (cell.seed == 7), (cell, len(warp))
    aggregate(paths["status"], paths["history"], paths["metrics"], paths["warp"], tmp_path / "m")
    warp = pd.read_parquet(tmp_path / "m" / "warp.parquet")
    assert set(warp["seed"]) == {7}
    assert {"decision", "warp", "train"} <= set(warp["grid"])
    fig = decision_regions(tmp_path / "m")
    assert "s7" in fig.axes[0].get_title()

    # The same results without their grids (as with warp_seed 0 before): the message says
    # the data are 2-D, not that there is no 2-D dataset.
    (tmp_path / "m" / "warp.parquet").unlink()
    why = _why_empty(tmp_path / "m")
    assert why.startswith("2-D data present (circles) but no decision grids were recorded")
    assert "warp_seed" in why


def test_no_2d_message_when_the_data_are_not_2d(tmp_path):
    from orthskip.figures.decision import _why_empty

    layers = pd.DataFrame(
        {"dataset": ["digits", "cifar"], "param": ["stem.1.weight", "stem.0.weight"],
         "shape": ["8x64", "16x3x3x3"]}
    )  # fmt: skip
    layers.to_parquet(tmp_path / "layers.parquet")
    assert "no 2-D dataset in the results" in _why_empty(tmp_path)
    assert "no 2-D dataset in the results" in _why_empty(tmp_path / "missing")


# ---- item 2: a corrupt prepared dataset stops the run before any job --------------------

ONE_CELL = "results/cells/circles/mlp/identity/d1/s0"


def _one_cell_config() -> dict:
    cfg = tiny_config()
    cfg["grid"][0].update(variants=["identity"], depths=[1], seeds=[0])
    return cfg


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A workdir whose only cell was trained by the real train rule (twice: --forcerun)."""
    work = tmp_path_factory.mktemp("trained")
    snakemake(work, f"{ONE_CELL}/status.json", cfg=_one_cell_config(), cores=1)
    return work


def test_corrupt_dataset_stops_before_any_job_and_keeps_results(trained, tmp_path):
    import shutil

    work = tmp_path / "w"
    shutil.copytree(trained, work, symlinks=True)
    data = work / "results/data/circles.pt"
    data.write_bytes(data.read_bytes()[:100])  # truncated, as by a failed copy
    before = _snapshot(work / "results")
    for args in (["-n"], [f"{ONE_CELL}/status.json"]):  # the plan, and a real run
        proc = snakemake(work, *args, cfg=_one_cell_config(), cores=1, check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0, out
        assert "prepared dataset results/data/circles.pt is corrupt: 100 bytes" in out
        assert (
            "delete results/data/circles.pt and results/data/circles.manifest.json to prepare"
            " it again, or restore both with `dvc pull`" in out
        )
        assert "train" not in out.split("DatasetError")[0]  # no job was planned
        assert _snapshot(work / "results") == before


def test_check_prepared_hashes_and_compares_sizes(tmp_path):
    from orthskip.errors import DatasetError
    from orthskip.integrity import check_prepared
    from orthskip.stages.prepare import prepare_dataset

    data, man = tmp_path / "c.pt", tmp_path / "c.manifest.json"
    check_prepared(data, man)  # neither exists: nothing to check (prepare will make them)
    prepare_dataset("circles", {"n_train": 16, "n_test": 8}, data, man)
    check_prepared(data, man)
    blob = bytearray(data.read_bytes())
    blob[-30] ^= 0xFF  # same size, other bytes: only the hash sees it
    data.write_bytes(bytes(blob))
    with pytest.raises(DatasetError, match=r"c\.pt is corrupt: sha256 [0-9a-f]{64} does not"):
        check_prepared(data, man)
    # above the hashing limit only the size is compared (load_prepared still hashes)
    check_prepared(data, man, hash_max_bytes=len(blob) - 1)
    assert hashlib.sha256(bytes(blob)).hexdigest() != json.loads(man.read_text())["sha256"]
    data.write_bytes(bytes(blob[:-1]))
    with pytest.raises(DatasetError, match=f"{len(blob) - 1} bytes, its manifest"):
        check_prepared(data, man, hash_max_bytes=0)
    man.write_text("{")
    with pytest.raises(DatasetError, match=r"manifest .* is unreadable"):
        check_prepared(data, man)


# ---- item 4: the train log survives reruns; the stale-lock hint of `make run` -----------


def test_train_cli_appends_a_marker_per_run(tmp_path, caplog):
    from orthskip.cli import main
    from orthskip.stages.prepare import prepare_dataset

    caplog.set_level(logging.INFO)  # main's basicConfig(INFO) is a no-op under pytest

    cfg = _one_cell_config()
    spec = {k: v for k, v in cfg["datasets"]["circles"].items() if k != "source"}
    data, man = tmp_path / "c.pt", tmp_path / "c.manifest.json"
    prepare_dataset("circles", spec, data, man)
    out = tmp_path / "cell"
    cell = "circles/mlp/identity/d1/s0"
    for epochs in (2, 3):  # the second run continues the finished one for an epoch more
        cfg["train"]["epochs"] = epochs
        path = write_config(tmp_path, cfg)
        argv = ["train", "--configfile", str(path), "--cell", cell, "--data", str(data),
                "--manifest", str(man), "--out", str(out)]  # fmt: skip
        assert main(argv) == 0
    log = (out / "train.log").read_text()
    markers = [line for line in log.splitlines() if line.startswith("==== orthskip train")]
    assert len(markers) == 4, log
    assert markers[0].startswith(f"==== orthskip train {cell} started 20")
    assert markers[0].endswith("Z (fresh)")
    assert markers[1] == f"==== orthskip train {cell} finished: status ok"
    assert markers[2].endswith("Z (resume from epoch 2)")
    assert "resumed circles/mlp/identity/d1/s0 at epoch 2" in log  # train's own log records


def test_train_rule_keeps_the_log_of_every_run(trained):
    """Snakemake deletes the rule's log before a rerun; the cell's train.log keeps both."""
    snakemake(trained, f"{ONE_CELL}/status.json", "--forcerun", "train", cfg=_one_cell_config(),
              cores=1)  # fmt: skip
    rule_log = (trained / "results/logs/train/circles/mlp/identity/d1/s0.log").read_text()
    assert rule_log.count("==== orthskip train circles/mlp/identity/d1/s0 started") == 1
    log = (trained / ONE_CELL / "train.log").read_text()
    assert log.count("==== orthskip train circles/mlp/identity/d1/s0 started") == 2
    assert "(fresh)" in log and "(resume from epoch 2)" in log


def test_make_run_prints_the_unlock_fix_on_a_stale_lock(tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    write_config(work, _one_cell_config())
    locks = work / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    # what a killed `snakemake` leaves: its lock files, naming the files it would write
    (locks / "0.output.lock").write_text("results/metrics/summary.json\n")
    venv = Path(sys.executable).parents[1]
    smk = f"--directory {work} --configfile {work / 'config.yaml'}"
    proc = subprocess.run(  # -o: the shared environment counts as installed, never rebuilt
        ["make", "-s", "-C", str(REPO), "run", f"VENV={venv}", "-o", str(venv / ".installed"),
         f"SMK_ARGS={smk}", f"SMK_DIR={work}/", "CORES=1"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "Directory cannot be locked" in proc.stdout + proc.stderr
    assert "still locked by an earlier Snakemake run that was killed" in proc.stderr
    assert f"snakemake --unlock {smk}" in proc.stderr
    assert "    make run" in proc.stderr
    assert not (work / "results").exists()


def test_make_check_prints_the_yaml_location(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_YAML)
    venv = Path(sys.executable).parents[1]
    proc = subprocess.run(
        ["make", "-s", "-C", str(REPO), "check", f"VENV={venv}", "-o", str(venv / ".installed"),
         f"CONFIG={path}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0
    assert f"{path}:3:5: YAML syntax error" in proc.stderr


# ---- issue 32 item 4: a truncated snapshots.pt is named, and costs no other member anything --

PACK = "results/cells/circles/mlp/identity"


def _family_config() -> dict:
    """One pack (execution.pack: family) of two members: d1/s0 and d3/s0."""
    cfg = tiny_config(execution={"pack": "family"})
    cfg["grid"][0].update(variants=["identity"], depths=[1, 3], seeds=[0])
    return cfg


def test_truncated_snapshots_is_named_and_keeps_the_other_members_outputs(tmp_path):
    """The issue: the family pack's metrics job died with `OSError: [Errno 22]` (no file
    named) and Snakemake deleted the 3 healthy members' metrics and warp files."""
    work = tmp_path / "w"
    bad, good = f"{PACK}/d1/s0", f"{PACK}/d3/s0"
    outs = [f"{cell}/{name}" for cell in (bad, good) for name in ("metrics.parquet",
                                                                  "warp.parquet")]  # fmt: skip
    snakemake(work, *outs, cfg=_family_config(), cores=1)
    snap = work / bad / "snapshots.pt"
    whole = snap.read_bytes()
    snap.write_bytes(whole[: len(whole) // 2])  # a truncated copy
    before = _snapshot(work / "results")

    for args in (["-n"], [f"{bad}/metrics.parquet"], []):  # the plan, the target, a plain run
        proc = snakemake(work, *args, cfg=_family_config(), cores=1, check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0, out
        assert f"snapshots {bad}/snapshots.pt is truncated or corrupt" in out, out
        assert f"delete it and ask for it again (`snakemake --cores 1 {bad}/snapshots.pt`" in out
        assert "from the cell's last.pt, without retraining" in out, out
        assert "extract_metrics" not in out.split("DatasetError")[0]  # no job was planned
        assert _snapshot(work / "results") == before  # every member keeps its outputs

    # the fix the message gives: delete it; the train job rewrites it from last.pt
    snap.unlink()
    snakemake(work, f"{bad}/snapshots.pt", cfg=_family_config(), cores=1)
    rerun = (work / "results/logs/train" / f"{bad.removeprefix('results/cells/')}.log").read_text()
    assert "(resume from epoch 2)" in rerun, rerun  # rewritten from last.pt, not retrained
    assert snap.read_bytes() == whole  # the same bytes: the metrics made from it still hold
    dry = snakemake(work, "-n", *outs, cfg=_family_config(), cores=1)
    assert "Nothing to be done" in dry.stdout + dry.stderr


def test_metrics_pack_names_every_bad_member_before_any_work(tmp_path):
    """Inside a job (a file broken after planning): every bad member named, nothing written."""
    from orthskip.config.grid import cell_config, pack_cells, prepare_config
    from orthskip.errors import DatasetError
    from orthskip.stages.metrics import metrics_pack

    cfg = prepare_config(_family_config())
    members = [cell_config(cfg, c) for c in pack_cells("circles/mlp/identity", ("d1/s0", "d3/s0"))]
    snaps = [tmp_path / "a.pt", tmp_path / "b.pt"]
    torch.save({"states": {}}, snaps[0])
    snaps[0].write_bytes(snaps[0].read_bytes()[:-40])
    snaps[1].write_bytes(b"not a zip archive")
    outs = [tmp_path / "m1.parquet", tmp_path / "m2.parquet"]
    warps = [tmp_path / "w1.parquet", tmp_path / "w2.parquet"]
    with pytest.raises(DatasetError) as err:
        metrics_pack(members, tmp_path / "data.pt", tmp_path / "m.json", snaps, outs, warps)
    for path in snaps:
        assert f"snapshots {path} is truncated or corrupt" in str(err.value)
    assert not any(p.exists() for p in outs + warps)


# ---- issue 32 item 8: a YAML error in the default config/config.yaml names line and column --


def test_yaml_error_in_the_default_configfile_names_file_line_and_column(tmp_path):
    work = tmp_path / "w"
    (work / "config").mkdir(parents=True)
    (work / "config/config.yaml").write_text(
        "datasets:\n  circles: {source: circles}\ngrid:\n  - arch: mlp\n    datasets: [circles\n"
    )
    proc = snakemake(work, "-n", check=False)  # no --configfile: the embedded default
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "config/config.yaml:6:1: YAML syntax error" in out, out
    assert "started at line 5, column 15" in out, out
    assert "not valid JSON or YAML" not in out
    (work / "config/config.yaml").write_text("datasets:\n\tcircles: {}\n")  # a tab indent
    proc = snakemake(work, "-n", check=False)
    assert "config/config.yaml:2:1: YAML syntax error" in proc.stdout + proc.stderr


# ---- issue 32 item 7: checkpoints are byte-reproducible ------------------------------------


def test_save_torch_writes_equal_tensors_as_equal_bytes(tmp_path):
    import zipfile

    from orthskip.io import load_torch, save_torch

    obj = {"states": {0: {"w": torch.arange(6.0).reshape(2, 3)}}, "epochs": [0]}
    path = tmp_path / "snapshots.pt"
    save_torch(path, obj)
    first = path.read_bytes()
    save_torch(path, obj)  # rewritten: another temporary file each time
    assert path.read_bytes() == first
    assert {n.split("/")[0] for n in zipfile.ZipFile(path).namelist()} == {"archive"}
    assert torch.equal(load_torch(path)["states"][0]["w"], obj["states"][0]["w"])


# ---- issue 32 item 5: a plain rerun notices a missing file -----------------------------------


def test_plain_rerun_plans_every_missing_file_again(tmp_path):
    """A deleted status.json (or any file a cell promises) was not made again by a plain
    rerun while what was made from it stayed up to date."""
    from tests.workflow import job_counts

    work, cfg = tmp_path / "w", _family_config()
    snakemake(work, "results/metrics/cells.parquet", cfg=cfg, cores=1)

    def planned() -> set[str]:
        counts = job_counts(snakemake(work, "-n", cfg=cfg, cores=1).stdout)
        return {rule.rstrip("_0123456789") for rule in counts}

    assert not {"train", "extract_metrics", "aggregate"} & planned()  # the rest is figures
    makers = {"status.json": "train", "history.parquet": "train", "snapshots.pt": "train",
              "metrics.parquet": "extract_metrics", "warp.parquet": "extract_metrics"}  # fmt: skip
    for name, rule in makers.items():
        path = work / PACK / "d3/s0" / name
        aside = path.rename(path.with_suffix(".aside"))
        assert rule in planned(), name
        aside.rename(path)
    for name in ("cells", "history", "layers", "warp"):
        path = work / f"results/metrics/{name}.parquet"
        aside = path.rename(path.with_suffix(".aside"))
        assert "aggregate" in planned(), name
        aside.rename(path)
