"""One registry entry per variation point: a toy registered from this module goes through
config validation (``prepare_config``), a tiny training and, where it applies, the figures,
with no other file changed."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from orthskip.analysis.metrics.extract import FAMILIES, MetricFamily, register_family
from orthskip.config.options import Option
from orthskip.errors import ConfigError
from tests.registry import one_cell, tiny_cell, train, use_registered_schema


def _toy_norm(probe, site, rows) -> None:
    """‖W‖_F times the family's option, per skip matrix."""
    value = float(torch.linalg.matrix_norm(site.tensor.detach())) * probe.options["toy_scale"]
    rows.add(site, "toy_norm", {"value": value}, shape=tuple(site.tensor.shape))


TOY_FAMILY = MetricFamily("toy_norm", "skip", _toy_norm, {
    "toy_scale": Option("number", 1.0, "what toy_norm multiplies ‖W‖_F by", minimum=0),
})  # fmt: skip


@pytest.fixture
def toy_family(monkeypatch):
    monkeypatch.delitem(FAMILIES, TOY_FAMILY.name, raising=False)
    register_family(TOY_FAMILY)
    yield TOY_FAMILY
    FAMILIES.pop(TOY_FAMILY.name, None)


def test_a_metric_family_is_one_registry_entry(toy_family, monkeypatch, tmp_path) -> None:
    """The toy family's name and option reach the schema, a cell's config and its metrics."""
    from orthskip.stages.metrics import cell_metrics

    use_registered_schema(monkeypatch)
    cfg = tiny_cell(variants=["linear"])
    cfg["metrics"] = {"families": ["toy_norm", "orth_defect"], "toy_scale": 2.0,
                      "probe_size": 16}  # fmt: skip
    cell_cfg = one_cell(cfg)
    assert cell_cfg.metrics["toy_scale"] == 2.0
    with pytest.raises(ConfigError, match="toy_scale"):
        one_cell({**cfg, "metrics": {"toy_scale": -1.0}})
    with pytest.raises(ConfigError, match="toy_nrom"):
        one_cell({**cfg, "metrics": {"families": ["toy_nrom"]}})

    data, manifest, cell = train(cell_cfg, tmp_path)
    out = tmp_path / "metrics.parquet"
    cell_metrics(cell_cfg, data, manifest, cell / "snapshots.pt", out, tmp_path / "warp.pq")
    df = pd.read_parquet(out)
    assert set(df["metric"]) == {"toy_norm", "orth_defect"}
    toy = df[df["metric"] == "toy_norm"]
    # two blocks, every snapshot; a linear skip starts at I (‖I‖_F = √8 at width 8)
    assert len(toy) == 2 * df["epoch"].nunique()
    first = toy[toy["epoch"] == toy["epoch"].min()]
    assert first["value"].to_numpy() == pytest.approx(2.0 * 8**0.5)
