"""One registry entry per variation point: a toy registered from this module goes through
config validation (``prepare_config``), a tiny training and, where it applies, the figures,
with no other file changed."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from orthskip.analysis.metrics.extract import FAMILIES, MetricFamily, register_family
from orthskip.config.constraints import Constraint
from orthskip.config.options import Option
from orthskip.data.raw import RawSplit
from orthskip.data.spec import SOURCES, Source, register_source
from orthskip.errors import ConfigError
from orthskip.nn.arch_specs import ARCH_SPECS, ArchSpec
from orthskip.nn.models import ARCHS, Arch, Cost, Depths, ResidualNet, make_block, register_arch
from orthskip.nn.orth import eye_like
from orthskip.nn.skip_kinds import KINDS, SkipKind, register_kind
from orthskip.nn.skip_specs import KIND_OPTIONS, KindOptions, register_options
from orthskip.nn.skips import Skip
from tests.registry import (
    legend_entries,
    measure_and_draw,
    one_cell,
    tiny_cell,
    train,
    use_registered_schema,
)


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


# ---------------------------------------------------------------- skip kinds


class HalfSkip(Skip):
    """S(x) = scale · x (a frozen multiple of the identity: [I; 0] at a transition)."""

    kind = "toy_half"

    def build(self, options: dict[str, Any]) -> None:
        self.register_buffer("m", options["scale"] * eye_like(self.c_out, self.c_in))

    def linear_map(self) -> torch.Tensor:
        return self.m

    def matrices(self) -> dict[str, torch.Tensor]:
        return {"M": self.m}


TOY_KIND = SkipKind("toy_half", HalfSkip, "toy half", "#123456", "$h$", (0, (2, 5)))
# its options (torch-free, beside the kinds' presentation): HalfSkip.options_table reads them
TOY_OPTIONS = KindOptions({
    "scale": Option("number", 0.5, "the multiple of x", exclusive_minimum=0),
})  # fmt: skip


@pytest.fixture
def toy_kind():
    register_kind(TOY_KIND)
    register_options(TOY_KIND.name, TOY_OPTIONS)
    yield TOY_KIND
    KINDS.pop(TOY_KIND.name, None)
    KIND_OPTIONS.pop(TOY_KIND.name, None)


def test_a_skip_kind_is_one_registry_entry(toy_kind, monkeypatch, tmp_path) -> None:
    """The toy kind is a config choice with its options, trains, is measured, and the figures
    draw it in its own colour, marker and label."""
    from orthskip.figures import style
    from orthskip.nn.skips import SKIPS

    assert SKIPS["toy_half"] is HalfSkip and style.skip_order()[-1] == "toy_half"
    assert HalfSkip.options_table is TOY_OPTIONS.options  # one table, not a copy
    use_registered_schema(monkeypatch)
    cfg = tiny_cell(variants=["toy_half", "toy_third"])
    cfg["variants"] = {"toy_third": {"skip": "toy_half", "skip_options": {"scale": 0.25}}}
    cfg["skip_options"] = {"toy_half": {"scale": 0.75}}
    with pytest.raises(ConfigError, match="scale"):
        one_cell({**cfg, "skip_options": {"toy_half": {"scale": 0}}})
    with pytest.raises(ConfigError, match="toy_half"):
        one_cell({**cfg, "skip_options": {"toy_half": {"scael": 1.0}}})
    cfg["grid"][0]["variants"] = ["toy_half"]
    cell_cfg = one_cell(cfg)
    assert cell_cfg.skip == "toy_half" and cell_cfg.skip_options == {"scale": 0.75}

    data, manifest, cell = train(cell_cfg, tmp_path)
    fig, df = measure_and_draw(cell_cfg, data, manifest, cell, "accuracy_vs_depth")
    skip = df[(df["metric"] == "orth_defect") & (df["layer_kind"] == "skip")]
    assert len(skip) == 2 * df["epoch"].nunique()  # M of both blocks, every snapshot
    assert legend_entries(fig)["toy half"] == ("#123456", "$h$")
    assert style.variant_styles({"toy_half": "toy_half"})["toy_half"].linestyle == (0, (2, 5))


# ---------------------------------------------------------------- architectures


def _vector_input(cfg, data) -> str | None:
    if data is None or len(data.input_shape) == 1:
        return None
    return f"toy_pairs needs vector inputs; the dataset gives shape {data.input_shape}"


def _build_pairs(depth, skip, input_shape, num_classes, cfg, skip_cfg) -> ResidualNet:
    """depth/2 pairs of blocks, each block F = Linear–tanh–Linear on a stream of ``width``."""
    width = int(cfg["width"])

    def branch(c_in: int, c_out: int, stride: int) -> nn.Module:
        return nn.Sequential(nn.Linear(c_in, width), nn.Tanh(), nn.Linear(width, c_out))

    blocks = [make_block(f"pair{i // 2}.{i % 2}", skip, width, width, 1, branch, skip_cfg)
              for i in range(depth)]  # fmt: skip
    stem = nn.Linear(input_shape[0], width)
    return ResidualNet("toy_pairs", skip, stem, blocks, nn.Linear(width, num_classes))


TOY_ARCH = Arch(
    ArchSpec(
        "toy_pairs",
        {"width": Option("integer", 6, "stream width", minimum=2)},
        Depths("even integers >= 2 (pairs of blocks)", lambda d: d >= 2 and d % 2 == 0),
        Cost(2.0e-6, 4.0),
        (Constraint("vector_input", None, "toy_pairs needs vector inputs", _vector_input),),
    ),
    _build_pairs,
)


@pytest.fixture
def toy_arch():
    register_arch(TOY_ARCH)  # its spec (torch-free: the config's, the cluster's) and builder
    yield TOY_ARCH
    ARCHS.pop(TOY_ARCH.name, None)
    ARCH_SPECS.pop(TOY_ARCH.name, None)


def test_an_architecture_is_one_registry_entry(toy_arch, monkeypatch, tmp_path) -> None:
    """The toy architecture is a config choice with its options, depths and constraints, the
    cluster resources read its cost, it trains, is measured and drawn."""
    import cluster

    use_registered_schema(monkeypatch)
    cfg = tiny_cell(arch="toy_pairs", variants=["orth_learned"])
    cfg["model"] = {"toy_pairs": {"width": 4}}
    with pytest.raises(ConfigError, match=r"even integers >= 2"):
        one_cell({**cfg, "grid": [{**cfg["grid"][0], "depths": [3]}]})
    with pytest.raises(ConfigError, match=r"model\.toy_pairs\.width"):
        one_cell({**cfg, "model": {"toy_pairs": {"width": 1}}})
    digits = {**cfg, "datasets": {**cfg["datasets"], "circles": {"source": "digits"}}}
    with pytest.raises(ConfigError, match="toy_pairs needs vector inputs"):
        one_cell(digits)
    cell_cfg = one_cell(cfg)
    assert cell_cfg.model == {"width": 4}

    minutes = cluster.train_runtime_minutes("cifar10", "toy_pairs", 2, 100)
    per_epoch_s = 50_000 * 2 * 2.0e-6
    expected = 100 * per_epoch_s * cluster.SAFETY / 60 + cluster.OVERHEAD_MIN
    assert minutes == max(cluster.MIN_MINUTES, 5 * -(-expected // 5))
    assert cluster.train_mem_mb("mnist", "toy_pairs", 250) < cluster.train_mem_mb(
        "mnist", "mlp", 250
    )  # 4 MB per layer, not the default 8

    data, manifest, cell = train(cell_cfg, tmp_path)
    fig, df = measure_and_draw(cell_cfg, data, manifest, cell, "accuracy_vs_depth")
    assert df["layer_name"].drop_duplicates().tolist()[:2] == ["pair0.0", "pair0.1"]
    assert "orth. learned" in legend_entries(fig)
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["circles"]  # its panel


# ---------------------------------------------------------------- dataset sources


def _stripes(spec: dict[str, Any]) -> RawSplit:
    """Uniform points in [-1, 1]^dim, labelled by which of ``n_classes`` stripes of the
    first coordinate they fall in."""
    rng = np.random.default_rng(spec["seed"])
    n = spec["n_train"] + spec["n_test"]
    x = rng.uniform(-1, 1, (n, spec["dim"])).astype(np.float32)
    k = spec["n_classes"]
    y = np.minimum(((x[:, 0] + 1) / 2 * k).astype(np.int64), k - 1)
    cut = spec["n_train"]
    return RawSplit(x[:cut], y[:cut], x[cut:], y[cut:], [str(c) for c in range(k)])


TOY_SOURCE = Source(
    "toy_stripes",
    "synthetic",
    "classification",
    {
        "n_train": Option("integer", 120, "training points", minimum=1),
        "n_test": Option("integer", 60, "test points", minimum=1),
        "seed": Option("integer", 0, "seed of the generator", minimum=0),
        "dim": Option("integer", 3, "input dimension", minimum=1),
        "n_classes": Option("integer", 3, "stripes (classes)", minimum=2),
    },
    _stripes,
    lambda full: int(full["n_train"]),
    lambda full: (int(full["dim"]),),
    lambda full: int(full["n_classes"]),
)


@pytest.fixture
def toy_source():
    register_source(TOY_SOURCE)
    yield TOY_SOURCE
    SOURCES.pop(TOY_SOURCE.name, None)


def test_a_dataset_source_is_one_registry_entry(toy_source, monkeypatch, tmp_path) -> None:
    """The toy source is a config choice with its options; the config check, the cluster
    resources and the prepared set all read its entry; it trains, is measured and drawn."""
    import cluster

    from orthskip.data import load_prepared

    use_registered_schema(monkeypatch)
    cfg = tiny_cell(datasets=["stripes"])
    cfg["datasets"] = {"stripes": {"source": "toy_stripes", "dim": 4}}
    with pytest.raises(ConfigError, match=r"datasets\.stripes.*noise"):
        one_cell({**cfg, "datasets": {"stripes": {"source": "toy_stripes", "noise": 0.1}}})
    few = {"stripes": {"source": "toy_stripes", "n_test": 2}}
    with pytest.raises(ConfigError, match="fewer than the 3 classes"):
        one_cell({**cfg, "datasets": few})
    cell_cfg = one_cell(cfg)
    assert dict(cell_cfg.dataset) == {"source": "toy_stripes", "dim": 4}

    assert cluster.is_short("toy_stripes") and cluster.train_gpus("toy_stripes") == 0
    assert cluster.train_group("toy_stripes") == cluster.SHORT_GROUP

    data, manifest, cell = train(cell_cfg, tmp_path)
    prepared = load_prepared(data, manifest)
    assert tuple(prepared.input_shape) == (4,) and prepared.num_classes == 3
    assert len(prepared.x_train) == 120
    fig, df = measure_and_draw(cell_cfg, data, manifest, cell, "accuracy_vs_depth")
    assert set(df["dataset"]) == {"stripes"}
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["stripes"]
