"""``orthskip config show``: the effective config (whole or one cell) and each value's origin."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from orthskip.cli import main
from orthskip.config.grid import Cell, cell_config, load_config
from tests.workflow import REPO, tiny_config, write_config

PAPER = REPO / "config" / "paper.yaml"
PAPER_CELL = "cifar10/cifar_resnet/identity/d20/s0"


def _origins(text: str) -> dict[str, str]:
    """Leaf key path -> origin comment, from the indented ``--origin`` output."""
    out, stack = {}, []
    for line in text.splitlines():
        depth = (len(line) - len(line.lstrip())) // 2
        key, _, rest = line.strip().partition(":")
        stack[depth:] = [key]
        if "  # " in rest:
            out[".".join(stack)] = rest.rsplit("  # ", 1)[1]
    return out


def test_paper_cell_is_the_paper_recipe_without_clipping():
    proc = subprocess.run(
        [sys.executable, "-m", "orthskip", "config", "show", "--configfile", "config/paper.yaml",
         "--cell", PAPER_CELL],
        cwd=REPO, capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    shown = yaml.safe_load(proc.stdout)
    assert shown["train"]["grad_clip"] is None
    assert shown["train"]["optimizer"] | {"skip_weight_decay": 0.0} == {
        "name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": False, "weight_decay": 1e-4,
        "skip_weight_decay": 0.0, "skip_lr": "same", "main_lr": "same", "betas": [0.9, 0.999],
    }  # fmt: skip
    assert shown["train"]["schedule"]["milestones"] == [100, 150]
    assert shown == cell_config(load_config(PAPER), Cell.parse(PAPER_CELL)).as_dict()


def test_origin_names_the_file_key_or_default(capsys):
    args = ["config", "show", "--configfile", str(PAPER), "--cell", PAPER_CELL, "--origin"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert yaml.safe_load(text) == cell_config(load_config(PAPER), Cell.parse(PAPER_CELL)).as_dict()
    origins = _origins(text)
    assert origins["train.optimizer.lr"] == f"{PAPER}: train.optimizer.lr"
    assert origins["train.grad_clip"] == "default"
    assert origins["model.width"] == f"{PAPER}: model.cifar_resnet.width"
    assert origins["dataset.root"] == f"{PAPER}: datasets.cifar10.root"
    assert origins["cell.depth"] == f"{PAPER}: grid"


def test_variant_overrides_are_their_own_origin(tmp_path, capsys):
    cfg = tiny_config(
        variants={"haar": {"skip": "orth_learned", "skip_options": {"init": "haar"},
                           "train": {"optimizer": {"lr": 0.2}}}},
    )  # fmt: skip
    cfg["grid"][0]["variants"] = ["identity", "haar"]
    path = write_config(tmp_path, cfg)
    cell = "circles/mlp/haar/d3/s0"
    assert main(["config", "show", "--configfile", str(path), "--cell", cell, "--origin"]) == 0
    text = capsys.readouterr().out
    origins = _origins(text)
    shown = yaml.safe_load(text)
    assert shown["train"]["optimizer"]["lr"] == 0.2
    assert origins["train.optimizer.lr"] == f"{path}: variants.haar.train.optimizer.lr"
    assert shown["skip_options"]["init"] == "haar"
    assert origins["skip_options.init"] == f"{path}: variants.haar.skip_options.init"
    assert origins["cell.skip"] == f"{path}: variants.haar.skip"
    assert origins["train.epochs"] == f"{path}: train.epochs"
    # The identity cell does not see the variant's override.
    main(["config", "show", "--configfile", str(path), "--cell", "circles/mlp/identity/d3/s0"])
    assert yaml.safe_load(capsys.readouterr().out)["train"]["optimizer"]["lr"] == 0.05


def test_whole_config_defaults_to_config_yaml(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    assert main(["config", "show", "--origin"]) == 0
    text = capsys.readouterr().out
    assert yaml.safe_load(text) == load_config(REPO / "config" / "config.yaml")
    origins = _origins(text)
    assert origins["train.epochs"] == "config/config.yaml: train.epochs"
    assert "default" in origins.values()  # schema defaults are filled in and marked


def test_a_cell_not_in_the_grid_says_how_to_list_cells(tmp_path, capsys):
    path = write_config(tmp_path, tiny_config())
    rc = main(["config", "show", "--configfile", str(path), "--cell", "circles/mlp/identity/d2/s0"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "circles/mlp/identity/d2/s0 is not in the grid" in err
    assert f"orthskip config cells --configfile {path}" in err
    assert "closest: circles/mlp/identity/d" in err
    assert main(["config", "cells", "--configfile", str(path)]) == 0
    assert capsys.readouterr().out.split() == [
        "circles/mlp/identity/d1/s0", "circles/mlp/identity/d3/s0",
        "circles/mlp/orth_learned/d1/s0", "circles/mlp/orth_learned/d3/s0",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("cell", "words"),
    [("circles/mlp", "expected dataset/arch/variant/dDEPTH/sSEED"),
     ("circles/mlp/identity/dx/s0", "depth and seed must be integers")],
)  # fmt: skip
def test_a_malformed_cell_names_the_expected_form(tmp_path, capsys, cell, words):
    path = write_config(tmp_path, tiny_config())
    assert main(["config", "show", "--configfile", str(path), "--cell", cell]) == 2
    assert f"cell {cell!r}: {words}" in capsys.readouterr().err


def test_grid_summary_states_each_variants_own_recipe():
    # the report's landing text: every variant of every grid entry, with the recipe its
    # cells train with — a variant's overrides, not the top-level train section
    from orthskip.config.grid import prepare_config
    from orthskip.config.summary import grid_summary

    cfg = tiny_config()
    cfg["variants"] = {"fast": {"skip": "orth_learned", "train": {
        "epochs": 4, "optimizer": {"name": "adamw", "lr": 0.003},
        "stop": {"patience": 2, "min_delta": 0.01}}}}  # fmt: skip
    cfg["grid"][0]["variants"] = ["identity", "orth_learned", "fast"]
    lines = grid_summary(prepare_config(cfg))
    assert lines == [
        "mlp on circles with variants identity, orth_learned; depths 1, 3; seeds 0; "
        "2 epochs, batch size 32, sgd (lr 0.05)",
        "mlp on circles with variants fast (orth_learned); depths 1, 3; seeds 0; up to 4 "
        "epochs (stops at a training-loss plateau: patience 2, min_delta 0.01), batch size "
        "32, adamw (lr 0.003)",
    ]
