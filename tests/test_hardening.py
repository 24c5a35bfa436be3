"""Hardening found by the acceptance tests (issue 19, items 2-5).

Each test here failed before its change: a corrupt prepared dataset stopped before any job
(item 2), YAML locations and allowed keys in config messages (item 3), the train log kept
across reruns and the stale-lock hint of `make run` (item 4), decision grids whatever the
seeds and a figure message that names the cause (item 5).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from orthskip.config import cell_config, cells, load_config, prepare_config, warp_seed_for
from orthskip.errors import ConfigError
from tests.workflow import REPO, SNAKEMAKE, snakemake, tiny_config

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
        [*SNAKEMAKE[:1], "-m", "orthskip", "check", str(path)],
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
            "allowed: betas, lr, momentum, name, nesterov, skip_weight_decay, weight_decay",
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
        assert cell_config(cfg, cell)["metrics"]["warp_seed"] == 7
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
    from orthskip.aggregate import aggregate
    from orthskip.cell_metrics import cell_metrics
    from orthskip.data import prepare_dataset
    from orthskip.figures.decision import _why_empty, decision_regions
    from orthskip.train import train_cell

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
