"""Config checking: bad input fails before any job starts, naming the key and allowed values."""

from __future__ import annotations

import copy

import pytest

from orthskip.config import Cell, cell_config, cells, config_hash, prepare_config, resume_key
from orthskip.errors import ConfigError
from tests.workflow import snakemake, tiny_config


def _bad(path: list, value) -> dict:
    cfg = tiny_config()
    node = cfg
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return cfg


BAD_INPUTS = [
    # (config, words the message must contain)
    (
        _bad(["grid", 0, "skips"], ["identity", "orthogonal"]),
        ["grid[0].skips", "orthogonal", "orth_learned", "identity"],
    ),
    (_bad(["grid", 0, "datasets"], ["circle"]), ["grid[0].datasets", "circle", "circles"]),
    (_bad(["grid", 0, "depths"], [0, 2]), ["grid[0].depths", "0", ">= 1"]),
    (_bad(["grid", 0, "seeds"], []), ["grid[0].seeds", "non-empty"]),
    (_bad(["grid", 0, "arch"], "mlpp"), ["grid[0].arch", "mlpp", "mlp", "cifar_resnet"]),
]


def _misspelt_top_key() -> dict:
    cfg = tiny_config()
    cfg["trian"] = cfg.pop("train")
    return cfg


BAD_INPUTS.append((_misspelt_top_key(), ["trian", "train", "allowed"]))


@pytest.mark.parametrize(("cfg", "words"), BAD_INPUTS)
def test_bad_config_is_refused_by_the_library(cfg, words):
    with pytest.raises(ConfigError) as err:
        prepare_config(copy.deepcopy(cfg))
    for word in words:
        assert word in str(err.value)


def test_bad_config_fails_in_snakemake_before_any_job_and_keeps_results(tmp_path):
    # A finished result from an earlier run must survive a failed run.
    keep = tmp_path / "results" / "metrics" / "cells.parquet"
    keep.parent.mkdir(parents=True)
    keep.write_bytes(b"earlier result")
    for cfg, words in BAD_INPUTS:
        proc = snakemake(tmp_path, cfg=cfg, check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0
        for word in words:
            assert word in out, out[-3000:]
        assert "rule train" not in out and "localrule" not in out
    assert keep.read_bytes() == b"earlier result"
    assert not (tmp_path / "results" / "data").exists()


def test_defaults_are_filled_and_cells_enumerated():
    cfg = prepare_config(tiny_config())
    assert cfg["train"]["optimizer"]["skip_weight_decay"] == 0.0
    assert cfg["train"]["schedule"]["name"] == "cosine"
    found = cells(cfg)
    assert len(found) == 4 and found == sorted(found)
    assert Cell.parse(found[0].path) == found[0]


def test_snapshot_after_last_epoch_is_refused():
    cfg = tiny_config()
    cfg["train"]["snapshot_epochs"] = [0, 5]
    with pytest.raises(ConfigError, match=r"train\.snapshot_epochs"):
        prepare_config(cfg)


def test_resume_key_ignores_epoch_count_but_not_the_recipe():
    cfg = prepare_config(tiny_config())
    cell = cells(cfg)[0]
    a = cell_config(cfg, cell)
    b = copy.deepcopy(a)
    b["train"]["epochs"] = 10
    c = copy.deepcopy(a)
    c["train"]["optimizer"]["lr"] = 0.2
    assert resume_key(a) == resume_key(b) and config_hash(a) != config_hash(b)
    assert resume_key(a) != resume_key(c)


def test_shipped_configs_plan_their_grids_in_snakemake(tmp_path):
    from tests.workflow import REPO

    for name, train_jobs in (("config.yaml", 106), ("paper.yaml", 560)):
        proc = snakemake(tmp_path, "-n", "--configfile", str(REPO / "config" / name))
        out = proc.stdout + proc.stderr
        line = next(ln for ln in out.splitlines() if ln.split()[:1] == ["train"])
        assert int(line.split()[1]) == train_jobs, line
