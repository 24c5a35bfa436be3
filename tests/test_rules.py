"""Rule-level tests: each rule runs alone through real Snakemake on tiny inputs.

Upstream inputs are made by the library beforehand, and ``--allowed-rules`` keeps
Snakemake from running any other rule; each test asserts on the outputs' contents.
"""

from __future__ import annotations

import hashlib
import json
import statistics

import pandas as pd
import pytest
import torch

from orthskip.config.grid import cell_config, cells, prepare_config
from orthskip.io import load_torch
from orthskip.stages.prepare import prepare_dataset
from orthskip.training.stacked import train_cell
from tests.fixture_results import fixture_frames, write_fixture
from tests.workflow import snakemake, tiny_config

CELL = "circles/mlp/orth_learned/d3/s0"


def _prepare(workdir, cfg, name="circles"):
    out = workdir / "results" / "data"
    prepare_dataset(name, cfg["datasets"][name], out / f"{name}.pt", out / f"{name}.manifest.json")


def _train(workdir, cfg, cell):
    cc = cell_config(cfg, cell)
    data = workdir / "results" / "data"
    train_cell(
        cc,
        data / f"{cell.dataset}.pt",
        data / f"{cell.dataset}.manifest.json",
        workdir / "results" / "cells" / cell.path,
    )


def test_prepare_dataset_rule(tmp_path):
    snakemake(
        tmp_path,
        "results/data/circles.pt",
        "results/data/digits.pt",
        "--allowed-rules",
        "prepare_dataset",
        cfg=tiny_config(),
    )
    data = tmp_path / "results" / "data"
    for name, n_train, shape in (("circles", 96, [2]), ("digits", None, [1, 8, 8])):
        manifest = json.loads((data / f"{name}.manifest.json").read_text())
        blob = (data / f"{name}.pt").read_bytes()
        assert manifest["sha256"] == hashlib.sha256(blob).hexdigest()
        assert manifest["input_shape"] == shape
        tensors = torch.load(data / f"{name}.pt", weights_only=True)
        assert len(tensors["x_train"]) == manifest["n_train"]
        if n_train is not None:
            assert manifest["n_train"] == n_train
    assert (tmp_path / "results/logs/prepare_dataset/circles.log").exists()


def test_train_rule(tmp_path):
    cfg = prepare_config(tiny_config())
    _prepare(tmp_path, cfg)
    snakemake(
        tmp_path,
        f"results/cells/{CELL}/status.json",
        "--allowed-rules",
        "train",
        cfg=tiny_config(),
    )
    cell_dir = tmp_path / "results" / "cells" / CELL
    status = json.loads((cell_dir / "status.json").read_text())
    history = pd.read_parquet(cell_dir / "history.parquet")
    assert status["status"] == "ok" and status["epochs"] == 2
    assert (status["skip"], status["depth"], status["seed"]) == ("orth_learned", 3, 0)
    assert list(history["epoch"]) == [0, 1, 2]
    assert set(history["skip"]) == {"orth_learned"} and history["test_acc"].between(0, 1).all()
    assert status["test_acc"] == history["test_acc"].iloc[-1]
    snaps = load_torch(cell_dir / "snapshots.pt")["states"]
    assert sorted(snaps, key=int) == ["0", "1", "2"]
    assert (cell_dir / "last.pt").exists()
    assert "epoch 2/2" in (tmp_path / "results/logs/train" / f"{CELL}.log").read_text()


def test_extract_metrics_rule(tmp_path):
    cfg = prepare_config(tiny_config())
    _prepare(tmp_path, cfg)
    cell = next(c for c in cells(cfg) if c.path == CELL)
    _train(tmp_path, cfg, cell)
    snakemake(
        tmp_path,
        f"results/cells/{CELL}/metrics.parquet",
        "--allowed-rules",
        "extract_metrics",
        cfg=tiny_config(),
    )
    cell_dir = tmp_path / "results" / "cells" / CELL
    layers = pd.read_parquet(cell_dir / "metrics.parquet")
    assert set(layers["epoch"]) == {0, 1, 2}
    assert (layers[["dataset", "arch", "skip"]] == ["circles", "mlp", "orth_learned"]).all().all()
    assert set(layers["depth"]) == {3} and set(layers["seed"]) == {0}
    families = set(layers["metric"])
    assert {"orth_defect", "dist_identity", "sv_reshaped", "grad_norm_ratio"} <= families
    assert "repr_condition" in families
    defect = layers[layers["metric"] == "orth_defect"]["value"]
    assert len(defect) == 3 * 3 and (defect < 1e-5).all()  # 3 blocks x 3 snapshots, orthogonal
    warp = pd.read_parquet(cell_dir / "warp.parquet")
    assert set(warp["grid"]) == {"decision", "warp", "train"}
    assert set(warp["block"]) == {0, 1, 2, 3}  # input plane + one per block


def test_aggregate_rule(tmp_path):
    cfg = prepare_config(tiny_config())
    _prepare(tmp_path, cfg)
    from orthskip.stages.metrics import cell_metrics

    for cell in cells(cfg):
        _train(tmp_path, cfg, cell)
        d = tmp_path / "results" / "cells" / cell.path
        data = tmp_path / "results" / "data"
        cell_metrics(
            cell_config(cfg, cell),
            data / "circles.pt",
            data / "circles.manifest.json",
            d / "snapshots.pt",
            d / "metrics.parquet",
            d / "warp.parquet",
        )
    snakemake(
        tmp_path, "results/metrics/cells.parquet", "--allowed-rules", "aggregate", cfg=tiny_config()
    )
    out = tmp_path / "results" / "metrics"
    agg = pd.read_parquet(out / "cells.parquet")
    assert len(agg) == len(cells(cfg)) == 4
    for _, row in agg.iterrows():
        d = tmp_path / "results" / "cells" / f"circles/mlp/{row['skip']}/d{row['depth']}/s0"
        status = json.loads((d / "status.json").read_text())
        assert row["test_acc"] == status["test_acc"] and row["status"] == "ok"
    history = pd.read_parquet(out / "history.parquet")
    assert len(history) == 4 * 3
    layers = pd.read_parquet(out / "layers.parquet")
    assert set(layers["skip"]) == {"identity", "orth_learned"}
    assert len(pd.read_parquet(out / "warp.parquet")) > 0


@pytest.fixture
def fixture_workdir(tmp_path):
    write_fixture(tmp_path / "results" / "metrics")
    return tmp_path


def test_figure_rule(fixture_workdir):
    targets = [f"results/figures/{n}.{e}" for n in ("accuracy_vs_depth", "dist_identity")
               for e in ("pdf", "png")]  # fmt: skip
    snakemake(fixture_workdir, *targets, "--allowed-rules", "figure", cfg=tiny_config())
    for t in targets:
        blob = (fixture_workdir / t).read_bytes()
        assert len(blob) > 5000
        assert blob.startswith(b"%PDF" if t.endswith("pdf") else b"\x89PNG")


def test_figure_setting_rule(fixture_workdir):
    # a per-setting report figure (issue 30): one file per (dataset, arch)
    targets = [f"results/figures/grad_norm_ratio/moons/mlp.{e}" for e in ("pdf", "png")]
    snakemake(fixture_workdir, *targets, "--allowed-rules", "figure_setting", cfg=tiny_config())
    for t in targets:
        blob = (fixture_workdir / t).read_bytes()
        assert len(blob) > 5000
        assert blob.startswith(b"%PDF" if t.endswith("pdf") else b"\x89PNG")


def test_table_rule(fixture_workdir):
    snakemake(
        fixture_workdir,
        "results/tables/accuracy.md",
        "results/tables/accuracy.tex",
        "--allowed-rules",
        "table",
        cfg=tiny_config(),
    )
    md = (fixture_workdir / "results/tables/accuracy.md").read_text()
    tex = (fixture_workdir / "results/tables/accuracy.tex").read_text()
    assert "\\toprule" in tex and "\\bottomrule" in tex
    c = fixture_frames()["cells"]
    ok = c[(c["dataset"] == "moons") & (c["depth"] == 8) & (c["variant"] == "orth_learned")]
    accs = [100 * a for a in ok["test_acc"]]
    expected = f"{statistics.fmean(accs):.2f} ± {statistics.stdev(accs):.2f} (3)"
    row = next(line for line in md.splitlines() if line.startswith("| moons | mlp | 8 |"))
    assert expected in row


def test_findings_rule(fixture_workdir):
    """The rule writes what the findings code makes of the same files."""
    from tests.findings_md import findings_of

    snakemake(fixture_workdir, "results/tables/findings.md", "--allowed-rules", "findings",
              cfg=tiny_config())  # fmt: skip
    text = (fixture_workdir / "results/tables/findings.md").read_text()
    assert text == findings_of(fixture_workdir / "results/metrics")
    assert "### Significant after Holm" in text and "| moons / mlp | none | 16 |" in text


def test_approx_rules_one_job_per_selected_identity_cell_then_the_table(tmp_path):
    """Two trained identity seeds at depth 3 (depth 1 filtered out by approx.depths): one
    approx_cell job each, concatenated, and the table drawn from those rows."""
    raw = tiny_config(approx={"epochs": 2, "depths": [3]})
    raw["grid"][0].update(variants=["identity"], depths=[1, 3], seeds=[0, 1])
    cfg = prepare_config(raw)
    _prepare(tmp_path, cfg)
    for cell in cells(cfg):
        _train(tmp_path, cfg, cell)
    # the other aggregated files the table rule takes, from the fixture (it reads only approx)
    metrics = tmp_path / "results" / "metrics"
    write_fixture(metrics)
    (metrics / "approx.parquet").unlink()
    table = "results/tables/orthogonal_approximation.md"
    snakemake(tmp_path, "results/metrics/approx.parquet", table, "--allowed-rules",
              "approx_cell", "aggregate_approx", "table", cfg=raw)  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "results/approx").rglob("*.parquet")) == [
        "s0.parquet",
        "s1.parquet",
    ]
    assert not (tmp_path / "results/approx/circles/mlp/identity/d1").exists()
    rows = pd.read_parquet(metrics / "approx.parquet")
    assert len(rows) == 2 * 2 * 3  # seeds × kinds × phases
    assert set(rows["depth"]) == {3} and set(rows["seed"]) == {0, 1}
    assert (rows["status"] == "ok").all() and (rows["correction"]).all()
    assert set(rows.loc[rows["phase"] == "finetuned", "finetune_epochs"]) == {2}
    before_acc = []
    for seed, g in rows.groupby("seed"):
        status = json.loads(
            (tmp_path / f"results/cells/circles/mlp/identity/d3/s{seed}/status.json").read_text()
        )
        g = g.set_index(["kind", "phase"])["score"]
        for kind in ("orth_fixed", "orth_learned"):
            assert g[(kind, "before")] == pytest.approx(status["test_acc"], abs=1e-12)
            assert g[(kind, "swapped")] == pytest.approx(status["test_acc"], abs=1e-9)
        before_acc.append(100 * status["test_acc"])
        log = tmp_path / f"results/logs/approx/circles/mlp/identity/d3/s{seed}.log"
        assert "orth_learned finetuned" in log.read_text()
    md = (tmp_path / table).read_text()
    row = next(ln for ln in md.splitlines() if ln.startswith("| circles | mlp | 3 | orth_fixed"))
    want = f"{statistics.fmean(before_acc):.2f} ± {statistics.stdev(before_acc):.2f}"
    assert want in row and "moons" not in md  # the real rows, not the fixture's


def test_approx_stage_switched_off_gives_an_empty_table(tmp_path):
    """No approx_cell job (test_config checks the plan): the concatenation has no input."""
    raw = tiny_config(approx={"enabled": False})
    write_fixture(tmp_path / "results" / "metrics")
    (tmp_path / "results/metrics/approx.parquet").unlink()
    snakemake(tmp_path, "results/tables/orthogonal_approximation.md", "--allowed-rules",
              "aggregate_approx", "table", cfg=raw)  # fmt: skip
    from orthskip.results import APPROX_COLUMNS

    empty = pd.read_parquet(tmp_path / "results/metrics/approx.parquet")
    assert empty.empty and list(empty.columns) == list(APPROX_COLUMNS)
    md = (tmp_path / "results/tables/orthogonal_approximation.md").read_text()
    assert "no data" in md
