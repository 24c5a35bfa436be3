"""The orthogonal-approximation stage on a really trained identity MLP, and its table."""

from __future__ import annotations

import copy
import json
import math
import statistics
from dataclasses import replace

import pandas as pd
import pytest
import torch

from orthskip.analysis.approx import approximate
from orthskip.config.grid import cell_config, cells, prepare_config
from orthskip.data import load_prepared
from orthskip.io import load_torch
from orthskip.nn.models import build_cell_model
from orthskip.nn.optim import build_optimizer
from orthskip.results import APPROX_COLUMNS
from orthskip.results import APPROX_PHASES as PHASES
from orthskip.stages.approx import approximate_cell
from orthskip.stages.prepare import prepare_dataset
from orthskip.stages.tables import make_table
from orthskip.tables.approximation import orthogonal_approximation_frame
from orthskip.training import stacked
from orthskip.training.runstate import loss_module, lr_schedulers, streams, validation_split
from orthskip.training.stacked import finetune, train_cell
from tests.workflow import tiny_config

LIP = (16, 4, 20)  # (samples, segments, steps) of branch_lipschitz: small and quick


def _cell_cfg(skip: str = "identity", depth: int = 3) -> dict:
    lip = {"lipschitz_samples": LIP[0], "lipschitz_segments": LIP[1], "lipschitz_steps": LIP[2]}
    cfg = tiny_config(metrics={"probe_size": 32, **lip})
    cfg["grid"][0].update(variants=[skip], depths=[depth], seeds=[0])
    cfg["train"]["val_fraction"] = 0.25
    cfg = prepare_config(cfg)
    return cell_config(cfg, cells(cfg)[0])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny identity MLP trained on circles for 2 epochs: (cell_cfg, data, manifest, outdir)."""
    d = tmp_path_factory.mktemp("approx_stage")
    spec = {"source": "circles", "n_train": 96, "n_test": 64, "noise": 0.05}
    prepare_dataset("circles", spec, d / "circles.pt", d / "circles.json")
    cfg = _cell_cfg()
    assert train_cell(cfg, d / "circles.pt", d / "circles.json", d / "cell") == "ok"
    return cfg, d / "circles.pt", d / "circles.json", d / "cell"


@pytest.fixture(scope="module")
def rows(trained) -> pd.DataFrame:
    cfg, data, manifest, cell = trained
    out = cell.parent / "approx.parquet"
    approximate_cell(cfg, data, manifest, cell / "snapshots.pt", out, epochs=2)
    return pd.read_parquet(out)


def _probe_and_model(trained):
    cfg, data_path, manifest, cell = trained
    data = load_prepared(data_path, manifest)
    gen = torch.Generator().manual_seed(cfg.metrics["probe_seed"])
    idx = torch.randperm(len(data.x_test), generator=gen)[: cfg.metrics["probe_size"]]
    model = build_cell_model(cfg, data)
    model.load_state_dict(load_torch(cell / "snapshots.pt")["states"]["2"])
    return data, data.x_test[idx.sort().values], model.eval()


def test_one_row_per_kind_and_phase_with_the_cells_columns(rows, trained):
    cfg = trained[0]
    assert list(rows.columns[: len(APPROX_COLUMNS)]) == list(APPROX_COLUMNS)
    assert sorted(zip(rows["kind"], rows["phase"], strict=True)) == sorted(
        (k, p) for k in ("orth_fixed", "orth_learned") for p in PHASES
    )
    assert (rows["status"] == "ok").all() and (rows["score_name"] == "acc").all()
    cell = cfg.keys
    for key in ("dataset", "arch", "skip", "depth", "seed"):
        assert (rows[key] == cell[key]).all()
    assert (rows["variant"] == "identity").all() and (rows["source_epoch"] == 2).all()
    assert rows.set_index("phase").loc["finetuned", "finetune_epochs"].eq(2).all()


def test_before_is_the_trained_cells_test_score(rows, trained):
    status = json.loads((trained[3] / "status.json").read_text())
    before = rows[rows["phase"] == "before"]
    assert before["score"].tolist() == pytest.approx([status["test_acc"]] * 2, abs=1e-12)
    assert before["loss"].tolist() == pytest.approx([status["test_loss"]] * 2, rel=1e-9)
    assert (before["dist_identity"] == 0.0).all() and (before["n_swapped"] == 0).all()


def test_swapped_reproduces_before_with_the_correction_layer(rows):
    for _, g in rows.groupby("kind"):
        g = g.set_index("phase")
        assert g.loc["swapped", "score"] == pytest.approx(g.loc["before", "score"], abs=1e-9)
        assert g.loc["swapped", "loss"] == pytest.approx(g.loc["before", "loss"], rel=1e-5)
        assert g.loc["swapped", "n_swapped"] == 3


def test_swapped_stats_match_the_approximation_itself(rows, trained):
    """Means over blocks of orthskip.analysis.approx.approximate's own per-block numbers."""
    _, probe, model = _probe_and_model(trained)
    for kind, g in rows.groupby("kind"):
        _, per_block = approximate(model, probe, kind=kind, lipschitz=LIP)
        r = g.set_index("phase").loc["swapped"]
        # float32 activations: another CPU's kernels differ in the last bits (2e-9 seen on Intel)
        assert r["dist_identity"] == pytest.approx(per_block["dist_identity"].mean(), rel=1e-6)
        assert r["branch_lipschitz"] == pytest.approx(per_block["lip_new_branch"].mean(), rel=1e-6)
        # C_i = I − W_i at the swap: ‖C_i‖_F/√n = ‖W_i − I‖_F/√n
        assert r["correction_norm"] == pytest.approx(r["dist_identity"], rel=1e-6)
        assert r["dist_identity"] > 0  # the fit is not the identity


def test_finetuned_skips_stay_orthogonal(rows):
    tuned = rows[rows["phase"] == "finetuned"]
    assert (tuned["gram_err_max"] <= 1e-5).all()
    assert tuned["score"].between(0, 1).all()
    g = rows.set_index(["kind", "phase"])
    # frozen W: the distance cannot move; learnable W: it does
    assert g.loc[("orth_fixed", "finetuned"), "dist_identity"] == pytest.approx(
        g.loc[("orth_fixed", "swapped"), "dist_identity"], rel=1e-9
    )
    assert g.loc[("orth_learned", "finetuned"), "dist_identity"] != pytest.approx(
        g.loc[("orth_learned", "swapped"), "dist_identity"], rel=1e-6
    )


@pytest.mark.parametrize("kind", ["orth_fixed", "orth_learned"])
def test_finetune_trains_and_keeps_q_orthogonal(trained, kind):
    cfg = trained[0]
    data, probe, model = _probe_and_model(trained)
    new, _ = approximate(model, probe, kind=kind, lipschitz=(2, 0, 5))
    before = {k: v.detach().clone() for k, v in new.state_dict().items()}
    q0 = [b.skip.matrices()["Q"].detach().clone() for b in new.blocks]
    assert finetune(new, cfg, data, 2, {}) == "ok"
    after = new.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if "branch" in k)
    for block, q_start in zip(new.blocks, q0, strict=True):
        q = block.skip.matrices()["Q"].detach().double()
        eye = torch.eye(q.shape[0], dtype=torch.float64)
        assert float((q.T @ q - eye).abs().max()) <= 1e-5
        assert torch.equal(q.float(), q_start.float()) == (kind == "orth_fixed")


def test_finetune_a_net_whose_first_parameter_is_a_float64_skip_generator(tmp_path):
    """The rate nets have an identity stem: their first parameter is a block's float64
    orth_learned generator; fine-tuning trains in the data's dtype (float32), as the net's
    branches are."""
    spec = {"source": "diffeo", "d": 2, "n_train": 64, "n_test": 32}
    prepare_dataset("diffeo", spec, tmp_path / "h.pt", tmp_path / "h.json")
    raw = tiny_config()
    raw["datasets"] = {"diffeo": spec}
    raw["grid"] = [{"arch": "mlp", "datasets": ["diffeo"], "variants": ["orth_learned"],
                    "depths": [3], "seeds": [0]}]  # fmt: skip
    raw["model"] = {"mlp": {"width": 2, "hidden": 8, "stem": "identity", "head": "identity"}}
    cfg = prepare_config(raw)
    cell = cell_config(cfg, cells(cfg)[0])
    data = load_prepared(tmp_path / "h.pt", tmp_path / "h.json")
    net = build_cell_model(cell, data)
    assert next(net.parameters()).dtype == torch.float64  # the case: a skip generator first
    assert finetune(net, cell, data, 1, {}) == "ok"


def test_finetune_at_an_exploding_lr_ends_diverged(trained):
    cfg = trained[0]
    data, probe, model = _probe_and_model(trained)
    new, _ = approximate(model, probe, kind="orth_learned", lipschitz=(2, 0, 5))
    explode = {**cfg.train["optimizer"], "lr": 1e30}
    hot = replace(cfg, train={**cfg.train, "optimizer": explode, "grad_clip": None})
    assert finetune(new, hot, data, 2, {}) == "diverged"


def test_finetune_that_checks_at_the_epochs_end_catches_divergence(trained, monkeypatch):
    """On CUDA a pack of one checks its loss sum when the epoch ends (no per-step sync):
    fine-tuning, which has no end-of-epoch record, checks it too (the policy switched off
    here, on the CPU)."""
    monkeypatch.setattr(stacked, "checks_every_step", lambda pack: False)
    cfg = trained[0]
    data, probe, model = _probe_and_model(trained)
    new, _ = approximate(model, probe, kind="orth_fixed", lipschitz=(2, 0, 5))
    explode = {**cfg.train["optimizer"], "lr": 1e30}
    hot = replace(cfg, train={**cfg.train, "optimizer": explode, "grad_clip": None})
    assert finetune(new, hot, data, 2, {}) == "diverged"


def _plain_finetune(net, cfg, x, y, epochs: int) -> None:
    """Fine-tuning written out as the obvious loop: the cell's optimizer, schedule over the
    fine-tuning epochs, batch, loss and clipping; its data-order stream started afresh."""
    tcfg = cfg.train
    bundle = build_optimizer(net, tcfg["optimizer"], {})
    batch = int(tcfg["batch_size"])
    steps = max(math.ceil(len(x) / batch), 1)
    scheds = lr_schedulers(bundle.optimizers, steps, epochs, tcfg["schedule"])
    loss_fn = loss_module(tcfg, y.is_floating_point())
    params = [p for p in net.parameters() if p.requires_grad]
    data_gen, _ = streams(cfg.cell.seed, x.device)
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=data_gen)
        for b in range(steps):
            idx = perm[b * batch : (b + 1) * batch]
            loss = loss_fn(net(x[idx]), y[idx])
            bundle.zero_grad()
            loss.backward()
            if tcfg["grad_clip"]:
                torch.nn.utils.clip_grad_norm_(params, float(tcfg["grad_clip"]))
            bundle.step()
            for s in scheds:
                s.step()


@pytest.mark.parametrize("kind", ["orth_fixed", "orth_learned"])
def test_finetune_on_the_engine_is_the_plain_loop_in_float64(trained, kind):
    """The stage fine-tunes on the training engine (a pack of one): its weights after two
    epochs are those of the loop written out, to 1e-9 in float64."""
    cfg = trained[0]
    data, probe, model = _probe_and_model(trained)
    new, _ = approximate(model, probe, kind=kind, lipschitz=(2, 0, 5))
    engine, plain = copy.deepcopy(new).double(), copy.deepcopy(new).double()
    data64 = replace(data, x_train=data.x_train.double(), x_test=data.x_test.double())
    assert finetune(engine, cfg, data64, 2, {}) == "ok"
    tr, _ = validation_split(len(data.x_train), float(cfg.train["val_fraction"]), 0)
    _plain_finetune(plain, cfg, data.x_train[tr].double(), data.y_train[tr], 2)
    a, b = engine.state_dict(), plain.state_dict()
    moved = [k for k in b if not torch.equal(b[k], new.state_dict()[k].double())]
    assert moved  # the loop trained something
    for k in b:
        scale = max(float(b[k].abs().max()), 1e-6)
        assert float((a[k] - b[k]).abs().max()) / scale < 1e-9, k


def test_refuses_a_cell_without_identity_skips(trained, tmp_path):
    _, data, manifest, cell = trained
    with pytest.raises(ValueError, match="identity cell"):
        approximate_cell(_cell_cfg("orth_learned"), data, manifest, cell / "snapshots.pt",
                         tmp_path / "x.parquet", epochs=1)  # fmt: skip


def test_diverged_source_gives_nan_rows(trained, tmp_path):
    cfg, data, manifest, cell = trained
    snaps = load_torch(cell / "snapshots.pt")
    state = snaps["states"]["2"]
    key = next(k for k in state if state[k].is_floating_point())
    state[key] = torch.full_like(state[key], math.nan)
    torch.save(snaps, tmp_path / "snapshots.pt")
    out = tmp_path / "approx.parquet"
    approximate_cell(cfg, data, manifest, tmp_path / "snapshots.pt", out, epochs=1)
    df = pd.read_parquet(out)
    assert len(df) == 6 and (df["status"] == "source_not_finite").all()
    assert df["score"].isna().all()


def test_a_diverged_cell_is_not_approximated(trained, tmp_path):
    """Its last snapshot can be epoch 0 (untrained): the status file says not to use it."""
    cfg, data, manifest, cell = trained
    (tmp_path / "status.json").write_text(json.dumps({"status": "diverged"}))
    out = tmp_path / "approx.parquet"
    approximate_cell(cfg, data, manifest, cell / "snapshots.pt", out, epochs=1,
                     status=tmp_path / "status.json")  # fmt: skip
    df = pd.read_parquet(out)
    assert len(df) == 6 and (df["status"] == "source_diverged").all()
    assert df["score"].isna().all()
    # the real status.json of the trained cell ("ok") lets it through
    approximate_cell(cfg, data, manifest, cell / "snapshots.pt", out, epochs=0,
                     status=cell / "status.json")  # fmt: skip
    assert (pd.read_parquet(out)["status"] == "ok").all()


# ---------------------------------------------------------------- the table, from the fixture


def test_frame_matches_plain_python(metrics_dir):
    approx = pd.read_parquet(metrics_dir / "approx.parquet")
    f = orthogonal_approximation_frame(approx)
    keys = ["dataset", "arch", "depth", "kind", "correction", "phase"]
    assert len(f) == len(approx.groupby(keys))
    for key, g in approx.groupby(keys):
        r = f.set_index(keys).loc[key]
        acc = [100 * v for v in g["score"]]
        assert r["score_mean"] == pytest.approx(statistics.fmean(acc))
        assert r["score_std"] == pytest.approx(statistics.stdev(acc))
        assert r["dist_identity_mean"] == pytest.approx(statistics.fmean(g["dist_identity"]))
        assert r["n"] == r["n_total"] == 3
    # phases in order before, swapped, finetuned within each group
    first = f[(f["depth"] == 8) & (f["kind"] == "orth_learned")]
    assert first["phase"].tolist() == list(PHASES)


def test_table_renders_the_fixture(metrics_dir, tmp_path):
    md, tex = tmp_path / "a.md", tmp_path / "a.tex"
    make_table("orthogonal_approximation", metrics_dir, md, tex)
    approx = pd.read_parquet(metrics_dir / "approx.parquet")
    g = approx[(approx["depth"] == 8) & (approx["kind"] == "orth_learned")]
    tuned = [100 * v for v in g.loc[g["phase"] == "finetuned", "score"]]
    expected = f"{statistics.fmean(tuned):.2f} ± {statistics.stdev(tuned):.2f}"
    row = next(ln for ln in md.read_text().splitlines()
               if ln.startswith("| moons | mlp | 8 | orth_learned |"))  # fmt: skip
    assert expected in row and "| yes | acc (%) |" in row
    assert len(md.read_text().splitlines()[0].split(" | ")) == 15
    assert r"\toprule" in tex.read_text()


def test_table_without_the_file_says_no_data(metrics_dir, tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    (d / "cells.parquet").write_bytes((metrics_dir / "cells.parquet").read_bytes())
    make_table("orthogonal_approximation", d, tmp_path / "a.md", tmp_path / "a.tex")
    assert "no data for this table in this run" in (tmp_path / "a.md").read_text()


def test_cli_by_hand_takes_the_configs_approx_section(trained, tmp_path):
    """`orthskip approx-cell --configfile F --cell C` (the README's command): options not
    given come from F's approx section; given ones win."""
    import yaml

    from orthskip.cli import main

    _, data, manifest, cell = trained
    lip = {"lipschitz_samples": LIP[0], "lipschitz_segments": LIP[1], "lipschitz_steps": LIP[2]}
    raw = tiny_config(metrics={"probe_size": 32, **lip},
                      approx={"epochs": 1, "kinds": ["orth_learned"]})  # fmt: skip
    raw["grid"][0].update(variants=["identity"], depths=[3], seeds=[0])
    raw["train"]["val_fraction"] = 0.25
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    args = ["approx-cell", "--configfile", str(tmp_path / "c.yaml"), "--cell",
            "circles/mlp/identity/d3/s0", "--data", str(data), "--manifest", str(manifest),
            "--snapshots", str(cell / "snapshots.pt"),
            "--status", str(cell / "status.json")]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "a.parquet")]) == 0
    a = pd.read_parquet(tmp_path / "a.parquet")
    assert set(a["kind"]) == {"orth_learned"} and a["finetune_epochs"].max() == 1
    assert a["correction"].all()
    out_b = str(tmp_path / "b.parquet")
    assert main([*args, "--out", out_b, "--kinds", "orth_fixed", "--no-correction"]) == 0
    b = pd.read_parquet(out_b)
    assert set(b["kind"]) == {"orth_fixed"} and not b["correction"].any()
    # the same trained net before the swap
    before = [x.set_index("phase").loc["before", "score"] for x in (a, b)]
    assert before[0] == before[1]


def test_table_and_findings_count_diverged_fine_tuning(metrics_dir, tmp_path):
    """Fine-tuning that diverged (NaN score, status diverged) is counted, not averaged away."""
    import shutil

    from findings_md import findings_of, section
    from findings_md import rows as table_rows

    d = tmp_path / "m"
    shutil.copytree(metrics_dir, d)
    approx = pd.read_parquet(d / "approx.parquet")
    tuned8 = (approx["depth"] == 8) & (approx["phase"] == "finetuned")
    lost = tuned8 & ((approx["kind"] == "orth_learned") | (approx["seed"] == 0))
    approx.loc[lost, ["score", "loss", "dist_identity", "branch_lipschitz"]] = math.nan
    approx.loc[lost, "status"] = "diverged"
    approx.to_parquet(d / "approx.parquet")
    f = orthogonal_approximation_frame(approx).set_index(["depth", "kind", "phase"])
    assert f.loc[(8, "orth_learned", "finetuned"), ["n", "n_diverged"]].tolist() == [0, 3]
    assert f.loc[(8, "orth_fixed", "finetuned"), ["n", "n_diverged"]].tolist() == [2, 1]
    make_table("orthogonal_approximation", d, tmp_path / "a.md", tmp_path / "a.tex")
    rows = (tmp_path / "a.md").read_text().splitlines()
    learned = next(ln for ln in rows if ln.startswith("| moons | mlp | 8 | orth_learned |"))
    fixed = next(ln for ln in rows if ln.startswith("| moons | mlp | 8 | orth_fixed |"))
    assert learned.split(" | ")[8] == "diverged (3)"
    kept = 100 * approx.loc[tuned8 & ~lost & (approx["kind"] == "orth_fixed"), "score"]
    assert f"{statistics.fmean(kept):.2f} ± {statistics.stdev(kept):.2f} (1 div.)" in fixed
    table = table_rows(section(findings_of(d), "Orthogonal approximation"))
    row = next(
        r
        for r in table
        if (r["kind"], r["depth"], r["correction"]) == ("orth_learned", "8", "with")
    )
    assert row["score"] == "acc (%)" and row["seeds lost"] == "fine-tuning diverged in 3 of 3 seeds"
    assert row["before → swapped → fine-tuned"].endswith(" → –")  # no seed left to average
