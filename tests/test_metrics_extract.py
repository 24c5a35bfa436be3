"""extract_metrics on toy ResidualNets: rows, columns, finiteness, eval mode, schema."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from orthskip.analysis.metrics import FAMILIES, extract_metrics
from orthskip.results import (
    COLUMNS,
    METRIC_COLUMNS,
    SCHEMA,
    SchemaError,
    to_table,
)
from tests.helpers import select_probe, with_cell_columns, write_cell_metrics
from tests.toy_models import toy_cnn, toy_mlp

CELL = dict(
    dataset="circles",
    arch="mlp",
    variant="orth_learned",
    skip="orth_learned",
    depth=3,
    seed=0,
    epoch=2,
    config_hash="abc123",
    code_version="deadbeef",
    torch_version=torch.__version__,
    device="cpu",
)


@pytest.fixture(scope="module")
def mlp_metrics() -> pd.DataFrame:
    torch.manual_seed(0)
    model = toy_mlp(d_in=2, width=6, depth=3)
    x = torch.randn(64, 2)
    y = (x[:, 0] > 0).long()
    return extract_metrics(model, x, y)


@pytest.fixture(scope="module")
def cnn_setup():
    torch.manual_seed(1)
    model = toy_cnn(c=3, classes=3)
    x = torch.randn(12, 3, 8, 8)
    y = torch.randint(0, 3, (12,))
    return model, x, y


def test_mlp_columns_and_dtypes(mlp_metrics: pd.DataFrame) -> None:
    df = mlp_metrics
    assert tuple(df.columns) == METRIC_COLUMNS
    assert df["layer_index"].dtype == np.int64
    assert df["value"].dtype == np.float64
    assert df["exact"].dtype == bool
    assert set(df["metric"]) <= set(FAMILIES)


def test_mlp_rows(mlp_metrics: pd.DataFrame) -> None:
    df = mlp_metrics
    blocks = df[df["layer_kind"] == "block"]
    for fam, stats in [
        ("grad_norm_ratio", {"value"}),
        ("repr_condition", {"cond", "eff_rank"}),
        ("jacobian_sv", {"max", "min", "cond"}),  # cond added with the σ_min floor
    ]:
        sub = blocks[blocks["metric"] == fam]
        assert sorted(sub["layer_index"].unique()) == [0, 1, 2]
        assert set(sub["stat"]) == stats
        assert len(sub) == 3 * len(stats)
    skip = df[df["layer_kind"] == "skip"]
    assert set(skip["param"]) == {f"blocks.{i}.skip.Q" for i in range(3)}
    assert set(skip[skip["metric"] == "dist_identity"]["stat"]) == {
        "spec", "fro", "fro_rel", "angle", "mean_angle", "det"
    }  # fmt: skip
    assert "dist_init" not in set(df["metric"])  # only with initial_skips
    # 2 linear layers per branch + the skip's Linear, the stem and the head
    lin = df[(df["layer_kind"] == "linear") & (df["metric"] == "sv_reshaped")]
    assert lin["param"].nunique() == 3 * 3 + 2
    assert set(lin.loc[lin["param"] == "stem.weight", "layer_index"]) == {-1}
    assert set(lin.loc[lin["param"] == "head.weight", "layer_index"]) == {3}
    # no convs in an MLP
    assert not df["metric"].isin(["sv_operator", "sv_hosvd"]).any()


def test_mlp_orthogonal_skips(mlp_metrics: pd.DataFrame) -> None:
    df = mlp_metrics
    defect = df[(df["metric"] == "orth_defect")]["value"]
    assert len(defect) == 3
    assert (defect < 1e-5).all()  # float32 parametrization: exact to float precision
    det = df[(df["metric"] == "dist_identity") & (df["stat"] == "det")]["value"]
    assert np.allclose(np.abs(det), 1.0, atol=1e-5)


def test_mlp_values_finite_except_documented(mlp_metrics: pd.DataFrame) -> None:
    df = mlp_metrics
    # repr cond may legitimately be inf (singular representation), and so may the block
    # Jacobian's cond (post-activation ReLU: σ_min = 0 below the floor); everything else is finite
    rest = df[~(df["metric"].isin(["repr_condition", "jacobian_sv"]) & (df["stat"] == "cond"))]
    assert np.isfinite(rest["value"]).all()
    cond = df[(df["metric"] == "repr_condition") & (df["stat"] == "cond")]["value"]
    assert ((cond >= 1) | np.isinf(cond)).all()


def test_cnn_rows_and_operator(cnn_setup) -> None:
    model, x, y = cnn_setup
    df = extract_metrics(model, x, y)
    kinds = df.drop_duplicates("layer_index").set_index("layer_index")
    assert df[(df["metric"] == "grad_norm_ratio")]["layer_kind"].tolist() == [
        "block",
        "transition",
        "block",
    ]
    convs = df[df["layer_kind"] == "conv"]["param"].unique()
    assert len(convs) == 1 + 2 * 3  # stem + two convs in each of three blocks
    op = df[df["metric"] == "sv_operator"]
    assert set(op["stat"]) == {"max", "min", "cond"}
    assert len(op) == 3 * len(convs)
    # changed: zero padding everywhere, now computed exactly from the operator matrix
    assert op["exact"].all() and set(op["method"]) == {"dense_svd"}
    circ = df[df["metric"] == "sv_operator_circular"]
    assert len(circ) == 3 * len(convs) and set(circ["method"]) == {"fft_circular"}
    assert not circ["exact"].any()  # the surrogate of zero padding: σ_max is a bound
    both = op.merge(circ, on=["param", "stat"], suffixes=("_op", "_circ"))
    mx = both[both["stat"] == "max"]
    assert (mx["value_circ"] >= mx["value_op"] * (1 - 1e-9)).all()
    hosvd = df[df["metric"] == "sv_hosvd"]
    assert set(hosvd["stat"]) == {f"mode{k}_cond" for k in range(4)}
    # transition skip is 6×3 semi-orthogonal: orth_defect yes, dist_identity no
    trans = df[df["param"] == "blocks.1.skip.Q"]
    assert set(trans["metric"]) == {"orth_defect", "sv_reshaped"}
    assert trans[trans["metric"] == "orth_defect"]["value"].iloc[0] < 1e-5
    jac_cond = (df["metric"] == "jacobian_sv") & (df["stat"] == "cond")  # inf at σ_min = 0
    assert np.isfinite(df[(df["metric"] != "repr_condition") & ~jac_cond]["value"]).all()
    assert len(kinds) == 5  # stem, 3 blocks, head


def test_operator_exact_for_circular_stem() -> None:
    torch.manual_seed(2)
    model = toy_cnn(c=2, circular=True)
    df = extract_metrics(model, torch.randn(4, 3, 8, 8), torch.zeros(4, dtype=torch.long))
    stem = df[(df["param"] == "stem.weight") & (df["metric"] == "sv_operator")]
    assert stem["exact"].all() and len(stem) == 3
    assert set(stem["method"]) == {"fft"}
    circ = df[(df["param"] == "stem.weight") & (df["metric"] == "sv_operator_circular")]
    assert circ["exact"].all()
    assert np.allclose(circ.sort_values("stat")["value"], stem.sort_values("stat")["value"])


def test_eval_mode_restored_and_buffers_untouched(cnn_setup) -> None:
    model, x, y = cnn_setup
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    extract_metrics(model, x, y)
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())


def test_families_filter_and_unknown(cnn_setup) -> None:
    model, x, y = cnn_setup
    df = extract_metrics(model, x, y, families=["orth_defect", "sv_reshaped"])
    assert set(df["metric"]) == {"orth_defect", "sv_reshaped"}
    with pytest.raises(ValueError, match="unknown metric families"):
        extract_metrics(model, x, y, families=["orth_defekt"])


def test_schema_roundtrip_keeps_inf_and_nan(tmp_path, mlp_metrics: pd.DataFrame) -> None:
    df = with_cell_columns(mlp_metrics, **CELL)
    assert tuple(df.columns) == COLUMNS
    df.loc[0, "value"] = math.inf
    df.loc[1, "value"] = math.nan
    path = tmp_path / "metrics.parquet"
    write_cell_metrics(path, df)
    table = pq.read_table(path)
    assert table.schema.equals(SCHEMA, check_metadata=False)
    back = table.to_pandas()
    assert len(back) == len(df)
    assert back.loc[0, "value"] == math.inf
    assert math.isnan(back.loc[1, "value"])
    assert table.column("value").null_count == 0
    assert back["depth"].dtype == np.int64 and (back["depth"] == 3).all()


def test_schema_rejects_bad_tables(mlp_metrics: pd.DataFrame) -> None:
    df = with_cell_columns(mlp_metrics, **CELL)
    with pytest.raises(SchemaError, match="missing columns \\['seed'\\]"):
        to_table(df.drop(columns=["seed"]))
    with pytest.raises(SchemaError, match="'depth'"):
        to_table(df.assign(depth="3"))
    with pytest.raises(SchemaError, match="'value'"):
        to_table(df.assign(value="1.0"))
    with pytest.raises(SchemaError, match="'exact'"):
        to_table(df.assign(exact=1))
    with pytest.raises(SchemaError, match="unexpected columns \\['extra'\\]"):
        to_table(df.assign(extra=1))
    bad = df.copy()
    bad["layer_name"] = bad["layer_name"].astype(object)
    bad.loc[0, "layer_name"] = None
    with pytest.raises(SchemaError, match="'layer_name'"):
        to_table(bad)


def test_docs_query_example_answers_the_question(tmp_path, monkeypatch, capsys) -> None:
    """The pandas example in docs/metrics.md runs on a layers.parquet and gives the right means."""
    import pyarrow as pa

    doc = (Path(__file__).resolve().parents[1] / "docs" / "metrics.md").read_text()
    code = doc.split("```python\n", 1)[1].split("```", 1)[0]
    frames = []
    for dataset, skip in [
        ("circles", "orth_learned"),
        ("circles", "linear"),
        ("moons", "orth_learned"),
    ]:
        for depth in (2, 3):
            for seed in (0, 1):
                torch.manual_seed(100 * depth + seed)
                model = toy_mlp(width=4, depth=depth, skip="orth" if "orth" in skip else "linear")
                x = torch.randn(32, 2)
                for epoch in (0, 5):
                    with torch.no_grad():  # a different network at each snapshot
                        for p in model.parameters():
                            p.add_(0.05 * torch.randn_like(p))
                    m = extract_metrics(model, x, (x[:, 0] > 0).long(), families=["dist_identity"])
                    cell = {**CELL, "dataset": dataset, "skip": skip, "depth": depth}
                    frames.append(with_cell_columns(m, **{**cell, "seed": seed, "epoch": epoch}))
    layers = pd.concat(frames, ignore_index=True)
    out = tmp_path / "results" / "metrics" / "layers.parquet"
    out.parent.mkdir(parents=True)
    pq.write_table(pa.concat_tables([to_table(f) for f in frames]), out)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "docs/metrics.md", "exec"), namespace)
    by_depth = namespace["by_depth"]
    assert list(by_depth.index) == [2, 3]
    assert (by_depth["count"] == 2).all()
    sel = layers[
        (layers["dataset"] == "circles")
        & (layers["skip"] == "orth_learned")
        & (layers["stat"] == "spec")
        & (layers["epoch"] == 5)
    ]
    for depth in (2, 3):
        per_seed = [
            sel[(sel["depth"] == depth) & (sel["seed"] == s)]["value"].mean() for s in (0, 1)
        ]
        assert by_depth.loc[depth, "mean"] == pytest.approx(np.mean(per_seed), rel=1e-12)
    assert "mean" in capsys.readouterr().out


def test_dist_init_against_the_initial_skips() -> None:
    torch.manual_seed(3)
    model = toy_mlp(d_in=2, width=5, depth=3)
    q0 = {f"blocks.{i}.{k}": m.detach().double().clone()
          for i, b in enumerate(model.blocks) for k, m in b.skip_matrices().items()}  # fmt: skip
    x = torch.randn(16, 2)
    y = (x[:, 0] > 0).long()
    df = extract_metrics(model, x, y, families=["dist_init"], initial_skips=q0)
    assert set(df["stat"]) == {"fro_rel", "spec"} and (df["value"].abs() < 1e-12).all()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    df = extract_metrics(model, x, y, families=["dist_init"], initial_skips=q0)
    for param, ref in q0.items():
        i = int(param.split(".")[1])
        q = model.blocks[i].skip_matrices()["skip.Q"].detach().double()
        got = df[df["param"] == param].set_index("stat")["value"]
        assert got["fro_rel"] == pytest.approx(float((q - ref).norm()) / math.sqrt(5), rel=1e-9)
        assert got["spec"] == pytest.approx(float(torch.linalg.matrix_norm(q - ref, 2)), rel=1e-9)
        assert got["fro_rel"] > 1e-4
    # epoch 0 missing: NaN rows, so the gap shows
    df = extract_metrics(model, x, y, families=["dist_init"], initial_skips={})
    assert len(df) == 2 * 3 and df["value"].isna().all()


def test_variant_column_defaults_to_the_skip_kind(mlp_metrics: pd.DataFrame) -> None:
    bare = {k: v for k, v in CELL.items() if k != "variant"}
    df = with_cell_columns(mlp_metrics, **bare)
    assert (df["variant"] == "orth_learned").all()
    df = with_cell_columns(mlp_metrics, **bare, variant="orth_learned_haar")
    assert (df["variant"] == "orth_learned_haar").all() and (df["skip"] == "orth_learned").all()
    assert to_table(df).schema.field("variant").type == "string"


def test_select_probe_is_fixed_by_seed() -> None:
    x = torch.arange(100.0)[:, None]
    y = torch.arange(100) % 3
    px, py, idx = select_probe(x, y, 16, seed=3)
    _, _, idx2 = select_probe(x, y, 16, seed=3)
    _, _, idx3 = select_probe(x, y, 16, seed=4)
    assert torch.equal(idx, idx2) and not torch.equal(idx, idx3)
    assert len(set(idx.tolist())) == 16 and torch.equal(idx, idx.sort().values)
    assert torch.equal(px[:, 0].long(), idx) and torch.equal(py, idx % 3)
    assert len(select_probe(x, y, 500)[2]) == 100
    with pytest.raises(ValueError, match="probe size"):
        select_probe(x, y, 0)


def test_every_row_records_its_shape():
    torch.manual_seed(0)
    model = toy_mlp(d_in=2, width=8, depth=3)
    df = extract_metrics(model, torch.randn(16, 2), torch.randint(0, 2, (16,)))
    assert (df["shape"] != "").all()
    skip = df[df["layer_kind"] == "skip"]
    assert set(skip["shape"]) == {"8x8"}
    block = df[df["metric"] == "grad_norm_ratio"]
    assert set(block["shape"]) == {"8"}  # one sample's block output
    stem = df[(df["param"] == "stem.weight") & (df["metric"] == "sv_reshaped")]
    assert set(stem["shape"]) == {"8x2"}


def test_config_families_are_the_extractor_families_and_reach_the_metrics(tmp_path) -> None:
    """The schema's `metrics.families` enum is FAMILIES (one list), and cell_metrics computes
    only the families a cell's config names."""
    import yaml

    from orthskip.config.grid import cell_config, cells, prepare_config
    from orthskip.config.schema import SCHEMA
    from orthskip.io import save_torch
    from orthskip.stages.metrics import cell_metrics
    from orthskip.stages.prepare import prepare_dataset

    enum = yaml.safe_load(SCHEMA.read_text())["properties"]["metrics"]["properties"]["families"]
    assert enum["items"]["enum"] == list(FAMILIES)
    cfg = prepare_config(
        {
            "datasets": {"c": {"source": "circles", "n_train": 64, "n_test": 64}},
            "grid": [
                {
                    "arch": "mlp",
                    "datasets": ["c"],
                    "variants": ["orth_learned"],
                    "depths": [3],
                    "seeds": [0],
                }
            ],
            "model": {"mlp": {"width": 4}},
            # 58 training points after the validation split: a batch must fit (issue 32)
            "train": {"batch_size": 32},
            "metrics": {"families": ["dist_identity", "branch_lipschitz"], "probe_size": 16},
        }
    )
    cell_cfg = cell_config(cfg, cells(cfg)[0])
    data = (tmp_path / "c.pt", tmp_path / "c.json")
    prepare_dataset("c", cfg["datasets"]["c"], *data)
    torch.manual_seed(0)
    from orthskip.data import load_prepared
    from orthskip.nn.models import build_cell_model

    model = build_cell_model(cell_cfg, load_prepared(*data))
    save_torch(tmp_path / "snap.pt", {"states": {"0": model.state_dict()}})
    cell_metrics(cell_cfg, *data, tmp_path / "snap.pt", tmp_path / "m.parquet", tmp_path / "w.pq")
    assert set(pd.read_parquet(tmp_path / "m.parquet")["metric"]) == {
        "dist_identity",
        "branch_lipschitz",
    }
    with pytest.raises(Exception, match="families"):
        prepare_config({**cfg, "metrics": {"families": ["orth_defekt"]}})
