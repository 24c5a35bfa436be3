"""Issue 18's done-when grid through the real Snakemake pipeline: a ViT and a ResNet-50.

vit (digits, depth 2) and resnet (depth 50, CIFAR stem, width 4) × identity, orth_learned,
orth_manifold, procrustes train, have their metrics extracted and aggregated; every cell ends
``ok`` or ``diverged``, and the trained orthogonal skips (rebuilt from each cell's last.pt) are
orthogonal to float precision, as the pipeline's own orth_defect rows say too.
"""

from __future__ import annotations

import json
import math

import pandas as pd
import torch

from orthskip.io import load_torch
from orthskip.nn.models import build_model
from tests.workflow import snakemake, tiny_config

KINDS = ["identity", "orth_learned", "orth_manifold", "procrustes"]
ORTH = {"orth_learned", "orth_manifold"}


def _defect(q: torch.Tensor) -> float:
    q = q.detach().double()
    q = q.T if q.shape[0] < q.shape[1] else q
    eye = torch.eye(q.shape[1], dtype=q.dtype)
    return float(torch.linalg.matrix_norm(q.T @ q - eye) / math.sqrt(q.shape[1]))


def test_vit_and_resnet50_grid_trains_through_the_pipeline(tmp_path):
    cfg = tiny_config(
        datasets={"digits": {"source": "digits", "n_test": 1600}},  # 197 training images
        grid=[
            {"arch": arch, "datasets": ["digits"], "variants": KINDS, "depths": [d], "seeds": [0]}
            for arch, d in (("vit", 2), ("resnet", 50))
        ],
        model={
            "vit": {"width": 8, "heads": 2, "patch": 2, "mlp_ratio": 2},
            "resnet": {"width": 4, "stem": "cifar"},
        },
    )
    cfg["train"].update({"epochs": 2, "batch_size": 64, "snapshot_epochs": [0, 2]})
    cfg["metrics"] = {"probe_size": 16, "jacobian_samples": 1, "lipschitz_samples": 2,
                      "lipschitz_segments": 0, "lipschitz_steps": 3}  # fmt: skip
    snakemake(tmp_path, "results/metrics/cells.parquet", cfg=cfg)
    res = tmp_path / "results"
    cells = pd.read_parquet(res / "metrics/cells.parquet")
    assert sorted(zip(cells["arch"], cells["variant"], strict=True)) == sorted(
        (arch, kind) for arch in ("vit", "resnet") for kind in KINDS
    )
    assert set(cells["status"]) <= {"ok", "diverged"}
    assert (cells.loc[cells["status"] == "ok", "test_acc"].between(0, 1)).all()
    # resnet-50 has 16 bottlenecks, the ViT 2 blocks × 2 sublayers: one skip each
    layers = pd.read_parquet(res / "metrics/layers.parquet")
    defects = layers[(layers["metric"] == "orth_defect") & layers["skip"].isin(ORTH)]
    for (arch, kind), rows in defects.groupby(["arch", "skip"]):
        assert rows["layer_name"].nunique() == (16 if arch == "resnet" else 4), (arch, kind)
        assert set(rows["epoch"]) == {0, 2}
        assert rows["value"].max() <= 1e-6, (arch, kind)
    assert set(map(tuple, defects[["arch", "skip"]].drop_duplicates().values)) == {
        (a, k) for a in ("vit", "resnet") for k in ORTH
    }
    # independently of the metrics code: the weights the pipeline saved last
    model_cfg = cfg["model"]
    for arch, depth in (("vit", 2), ("resnet", 50)):
        for kind in sorted(ORTH):
            cell = res / "cells" / "digits" / arch / kind / f"d{depth}" / "s0"
            status = json.loads((cell / "status.json").read_text())
            assert status["status"] in ("ok", "diverged")
            model = build_model(arch, depth, kind, (1, 8, 8), 10, model_cfg[arch], {})
            model.load_state_dict(load_torch(cell / "last.pt")["model"])
            qs = [q for b in model.blocks for q in b.skip_matrices().values()]
            assert len(qs) == (16 if arch == "resnet" else 4)
            assert max(_defect(q) for q in qs) <= 1e-6, (arch, kind)
            # trained: the skips moved away from their identity init
            moved = max(float((q.detach().double() - torch.eye(*q.shape)).norm()) for q in qs)
            assert moved > 1e-6, (arch, kind)
