"""The whole DAG on a tiny grid: Parquet columns, figures, tables, report; a rerun is a no-op."""

from __future__ import annotations

import pandas as pd

from orthskip.stages.figures import FIGURES, PER_SETTING
from orthskip.stages.tables import TABLES
from tests.workflow import snakemake, tiny_config


def test_whole_pipeline_then_nothing_to_do(tmp_path):
    cfg = tiny_config()
    snakemake(tmp_path, cfg=cfg)
    snakemake(tmp_path, "--report", "results/report.html", cfg=cfg)
    res = tmp_path / "results"
    cells = pd.read_parquet(res / "metrics/cells.parquet")
    assert len(cells) == 4 and set(cells["status"]) == {"ok"}
    assert {"test_acc", "n_params", "config_hash", "code_version", "device"} <= set(cells.columns)
    assert {"variant", "val_acc", "best_val_epoch", "test_acc_at_best_val", "clipped_frac"} <= set(
        cells.columns
    )
    assert "best_test_acc" not in cells.columns
    layers = pd.read_parquet(res / "metrics/layers.parquet")
    need = {"dataset", "arch", "skip", "depth", "seed", "epoch", "layer_index", "layer_name",
            "metric", "stat", "value", "exact", "config_hash"}  # fmt: skip
    assert need <= set(layers.columns)
    assert {
        "orth_defect",
        "dist_identity",
        "sv_reshaped",
        "grad_norm_ratio",
        "repr_condition",
    } <= set(layers["metric"])
    history = pd.read_parquet(res / "metrics/history.parquet")
    assert len(history) == 4 * (cfg["train"]["epochs"] + 1)
    assert {"variant", "val_acc", "val_loss", "clipped_frac"} <= set(history.columns)
    findings = (res / "tables/findings.md").read_text()
    assert "circles" in findings and "identity" in findings
    # per-setting report figures: one file per (dataset, arch) (issue 30: renamed)
    for name in FIGURES:
        for ext in ("pdf", "png"):
            path = f"{name}/circles/mlp.{ext}" if name in PER_SETTING else f"{name}.{ext}"
            assert (res / f"figures/{path}").stat().st_size > 5000
    # the approximation stage: both identity cells (depths 1 and 3), both kinds, three phases
    approx = pd.read_parquet(res / "metrics/approx.parquet")
    assert len(approx) == 2 * 2 * 3 and set(approx["variant"]) == {"identity"}
    assert set(approx["depth"]) == {1, 3} and (approx["status"] == "ok").all()
    tuned = approx[approx["phase"] == "finetuned"]
    assert set(tuned["finetune_epochs"]) == {5}  # the schema's default approx.epochs
    assert tuned["score"].between(0, 1).all()
    table = (res / "tables/orthogonal_approximation.md").read_text()
    assert "| circles | mlp | 3 | orth_learned | yes |" in table
    assert "Orthogonal approximation of the identity nets" in findings
    for name in TABLES:
        for ext in ("md", "tex"):
            assert (res / f"tables/{name}.{ext}").stat().st_size > 100
    report = (res / "report.html").read_text(errors="replace")
    assert len(report) > 100_000 and "accuracy_vs_depth" in report
    # A second run plans nothing.
    dry = snakemake(tmp_path, "-n", cfg=cfg)
    assert "Nothing to be done" in dry.stdout + dry.stderr
