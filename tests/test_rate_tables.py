"""The rate exponent by snapshot epoch and the skips' product rotation, on synthetic layers
with known answers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from orthskip.results import CELL_COLUMNS
from orthskip.stages.tables import TABLES, make_table
from orthskip.tables.findings import findings_frames
from orthskip.tables.findings_text import findings_markdown
from orthskip.tables.identity_rate import identity_rate_frame
from orthskip.tables.rate_by_epoch import rate_by_epoch_frame
from orthskip.tables.skip_rotation import skip_rotation_frame

DEPTHS = (2, 4, 8, 16, 32, 64, 128)
SEEDS = (0, 1, 2, 3)
# the exponent a of ‖Q − I‖ = C·m^(−a) at each snapshot: it moves with training
EXPONENT = {10: 0.3, 30: 0.55, 60: 0.7}


def _row(cell: dict, epoch: int, block: int, kind: str, param: str, metric: str, stat: str,
         value: float) -> dict:  # fmt: skip
    return {**cell, "epoch": epoch, "layer_index": block, "layer_name": f"blocks.{block}",
            "layer_kind": kind, "param": param, "shape": "2x2", "metric": metric, "stat": stat,
            "value": float(value), "exact": True, "method": "direct"}  # fmt: skip


def _layers(skip_product: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for m in DEPTHS:
        for seed in SEEDS:
            cell = dict(zip(CELL_COLUMNS, ("diffeo2", "mlp", "rate_orth_learned",
                                           "orth_learned", m, seed), strict=True))  # fmt: skip
            for epoch, a in EXPONENT.items():
                # per-seed level noise: the bootstrap has something to resample
                level = 0.4 * math.exp(rng.normal(0, 0.05))
                for b in range(m):
                    rows.append(_row(cell, epoch, b, "block", "", "grad_norm_ratio", "value", 1))
                    value = level * m ** (-a) * math.exp(rng.normal(0, 0.02))
                    param = f"blocks.{b}.skip.Q"
                    rows.append(_row(cell, epoch, b, "skip", param, "dist_identity", "fro_rel",
                                     value))  # fmt: skip
                if skip_product:
                    angle = 0.1 * math.log2(m) * (epoch / 60)
                    for stat, v in (("angle", angle), ("max_angle", angle), ("det", 1.0),
                                    ("fit_angle", 1.6)):  # fmt: skip
                        rows.append(_row(cell, epoch, -1, "skip_path", "blocks.*.skip",
                                         "skip_product", stat, v))  # fmt: skip
    return pd.DataFrame(rows)


def test_rate_by_epoch_recovers_the_exponent_of_each_snapshot():
    f = rate_by_epoch_frame(_layers())
    assert list(f["epoch"]) == sorted(EXPONENT)
    for r in f.itertuples():
        assert r.exponent == pytest.approx(EXPONENT[r.epoch], abs=0.02)
        assert r.exponent_lo <= r.exponent <= r.exponent_hi  # seeds resampled
        assert r.n_cells == len(DEPTHS) * len(SEEDS) and (r.m_min, r.m_max) == (2, 128)
        assert r.best == "power" and r.n_ended == 0
        assert r.final == (r.epoch == max(EXPONENT))


def test_rate_by_epoch_carries_a_stopped_cell_forward_and_skips_its_stop_epoch():
    # the cells at m = 128 stop at epoch 45 (a snapshot at their stop, none at 60): epoch 45
    # is no row (the others have no snapshot there), and at 60 they enter with their final
    # value, so every row fits the same 28 cells; the fit at 60 is the one of that table
    layers = _layers()
    deep = layers["depth"] == 128
    stopped = layers[deep & (layers["epoch"] == 30)].assign(epoch=45)
    layers = pd.concat([layers[~(deep & (layers["epoch"] == 60))], stopped], ignore_index=True)
    f = rate_by_epoch_frame(layers).set_index("epoch")
    assert list(f.index) == [10, 30, 60]
    assert (f["n_cells"] == len(DEPTHS) * len(SEEDS)).all()
    assert list(f["n_ended"]) == [0, 0, len(SEEDS)]
    assert list(f["final"]) == [False, False, True]  # every cell at its last snapshot
    by_hand = layers[deep & (layers["epoch"] == 45)].assign(epoch=60)
    same = pd.concat([layers[~deep | (layers["epoch"] < 45)], by_hand], ignore_index=True)
    again = rate_by_epoch_frame(same).set_index("epoch")
    assert f.loc[60, "exponent"] == again.loc[60, "exponent"]
    # the stopped deep cells sit at their epoch-30 distance: a is below the epoch-60 truth
    assert f.loc[60, "exponent"] < EXPONENT[60] - 0.02


def test_skip_rotation_is_seed_means_of_the_last_snapshot():
    layers = _layers(skip_product=True)
    f = skip_rotation_frame(layers).set_index("m")
    assert list(f.index) == list(DEPTHS)
    for m in DEPTHS:
        angle = 0.1 * math.log2(m)  # the last snapshot, epoch 60
        assert f.loc[m, "angle"] == pytest.approx(angle, abs=1e-12)
        assert f.loc[m, "share"] == pytest.approx(angle / 1.6, abs=1e-12)
        assert f.loc[m, "n_seeds"] == len(SEEDS)
        last = layers[(layers["depth"] == m) & (layers["epoch"] == 60)]
        dist = last[last["metric"] == "dist_identity"].groupby("seed")["value"].mean().mean()
        assert f.loc[m, "dist"] == pytest.approx(dist, rel=1e-12)


@pytest.mark.parametrize("name", ["rate_by_epoch", "skip_rotation"])
def test_the_tables_are_registered_and_write(name, tmp_path):
    assert name in TABLES
    _layers(skip_product=True).to_parquet(tmp_path / "layers.parquet")
    md, tex = tmp_path / f"{name}.md", tmp_path / f"{name}.tex"
    make_table(name, tmp_path, md, tex)
    text = md.read_text()
    assert "rate_orth_learned" in text and "no data" not in text
    if name == "rate_by_epoch":  # one row per snapshot, each with the frame's a
        frame = rate_by_epoch_frame(_layers())
        rows = [ln.split(" | ") for ln in text.splitlines() if "| rate_orth_learned |" in ln]
        assert [r[9] for r in rows] == [f"{a:.2f}" for a in frame["exponent"]]
        assert [r[3] for r in rows] == ["10", "30", "60, final"]


def test_findings_state_the_exponent_per_epoch_and_the_rotation_share():
    layers = _layers(skip_product=True)
    frames = findings_frames(layers, pd.DataFrame(), pd.DataFrame())
    budget = frames["rate_budget"].iloc[0]
    assert (budget["first_epoch"], budget["last_epoch"], budget["n_epochs"]) == (10, 60, 3)
    assert budget["a_first"] == pytest.approx(EXPONENT[10], abs=0.02)
    assert budget["a_last"] == pytest.approx(EXPONENT[60], abs=0.02)
    rot = frames["rotation"].iloc[0]
    assert (rot["m_min"], rot["m_max"]) == (2, 128)
    assert rot["share_min"] == pytest.approx(0.1 / 1.6) and rot["share_max"] == pytest.approx(
        0.7 / 1.6
    )
    text = findings_markdown(layers, pd.DataFrame(), pd.DataFrame())
    assert "## The exponent against training state" in text and "## Where the rotation goes" in text
    spread = budget["a_max"] - budget["a_min"]
    assert f"a moves by up to {spread:.2f}" in text


def _cells(converged_seeds: set[int]) -> pd.DataFrame:
    rows = []
    for m in DEPTHS:
        for seed in SEEDS:
            done = seed in converged_seeds
            rows.append({"dataset": "diffeo2", "arch": "mlp", "variant": "rate_orth_learned",
                         "skip": "orth_learned", "depth": m, "seed": seed, "status": "ok",
                         "stopped": "train_loss plateau" if done else None,
                         "converged": done})  # fmt: skip
    return pd.DataFrame(rows)


def test_rate_fits_keep_converged_and_capped_cells_apart():
    layers = _layers()
    f = identity_rate_frame(layers, _cells({0, 1}))
    assert sorted(f["converged"]) == [False, True]
    assert set(f["n_points"]) == {len(DEPTHS) * 2}  # two seeds each, never pooled
    for r in f.itertuples():  # each fitted on its own cells only
        assert r.n_seeds == 2
    pooled = identity_rate_frame(layers, _cells(set(SEEDS)))
    assert list(pooled["converged"]) == [True] and pooled["n_points"].iloc[0] == 28
    # findings say which is which
    text = findings_markdown(layers, _cells({0, 1}), pd.DataFrame())
    assert "| epoch cap |" in text and "| convergence |" in text
    assert "14 converged cell-points, 14 at the cap" in text


def test_stalled_cells_are_left_out_of_every_fit_and_counted():
    from orthskip.results import STALLED

    layers = _layers()
    cells = _cells({0, 1})
    dead = cells["seed"] == 2  # seed 2 stalled at every depth: in neither fit
    cells.loc[dead, "stopped"] = f"{STALLED}: best of the last 10 epochs 1.48, at init 1.05"
    cells["stalled"] = dead
    f = identity_rate_frame(layers, cells)
    assert sorted(f["converged"]) == [False, True]
    assert f.set_index("converged")["n_points"].to_dict() == {True: 14, False: 7}
    assert set(f["n_stalled"]) == {len(DEPTHS)}
    text = findings_markdown(layers, cells, pd.DataFrame())
    assert f"{len(DEPTHS)} stalled cells ({len(DEPTHS)} of rate_orth_learned)" in text
    # a cells table written before the flag: nothing is stalled, nothing dropped
    assert set(identity_rate_frame(layers, _cells({0, 1}))["n_stalled"]) == {0}


def test_status_files_give_the_converged_flag(tmp_path):
    import json

    from orthskip.results import read_status

    base = {"dataset": "d", "arch": "mlp", "variant": "v", "skip": "identity", "seed": 0,
            "epochs": 5, "n_params": 1, "n_skip_params": 0}  # fmt: skip
    cases = [("ok", "train_loss plateau", True), ("ok", None, False), ("diverged", None, False),
             ("ok", "train_loss stalled: 1.48, at init 1.05", False)]  # fmt: skip
    paths = []
    for depth, (status, stopped, _) in enumerate(cases, start=1):
        path = tmp_path / f"{depth}.json"  # written before the flag existed: no "converged"
        path.write_text(json.dumps({**base, "depth": depth, "status": status, "stopped": stopped}))
        paths.append(path)
    df = read_status(paths)
    assert df["converged"].tolist() == [c for *_, c in cases] and df["converged"].dtype == bool
    assert df["stalled"].tolist() == [False, False, False, True]


def _capped_cells(converged_seeds: set[int], cap: int = 60) -> pd.DataFrame:
    """``_cells`` with the epochs each ran: the converged stop before the cap, the rest run
    to it."""
    c = _cells(converged_seeds)
    return c.assign(epochs=np.where(c["converged"], cap // 2, cap))


def test_rate_by_epoch_figure_plots_the_tables_exponents_and_marks_the_cap(tmp_path):
    """issue 29 item 2: the figure draws, per variant, a at every snapshot epoch with its
    interval as error bars — the numbers of ``rate_by_epoch_frame`` — and the epoch cap."""
    import matplotlib.pyplot as plt

    from orthskip.figures import style
    from orthskip.figures.paper import rate_by_epoch
    from orthskip.stages.figures import PAPER_FIGURES

    assert PAPER_FIGURES["paper_rate_by_epoch"] is rate_by_epoch
    layers = _layers()
    layers.to_parquet(tmp_path / "layers.parquet")
    _capped_cells({0}).to_parquet(tmp_path / "cells.parquet")
    frame = rate_by_epoch_frame(layers)
    with style.style():
        fig = rate_by_epoch(tmp_path)
    try:
        ax = fig.axes[0]
        (bars,) = [c for c in ax.containers if c.get_label() == "rate_orth_learned"]
        line = bars.lines[0]
        assert list(line.get_xdata()) == list(frame["epoch"]) == sorted(EXPONENT)
        np.testing.assert_allclose(line.get_ydata(), frame["exponent"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(line.get_ydata(), list(EXPONENT.values()), atol=0.02)
        (segments,) = [c.get_segments() for c in bars.lines[2]]
        lo_hi = np.array([[s[0][1], s[1][1]] for s in segments])
        np.testing.assert_allclose(lo_hi, frame[["exponent_lo", "exponent_hi"]], atol=1e-12)
        assert (lo_hi[:, 1] > lo_hi[:, 0]).all()  # seeds resampled: a real interval
        # the cap: the epochs of the runs that did not converge, as a line and in the legend
        caps = [ln for ln in ax.lines if list(ln.get_xdata()) == [60, 60]]
        assert len(caps) == 1
        legend = [t.get_text() for lg in fig.legends for t in lg.get_texts()]
        assert "epoch cap (60)" in legend and "rate_orth_learned" in legend
        assert f"7 of {len(DEPTHS) * len(SEEDS)} runs converged" in ax.get_title()
    finally:
        plt.close(fig)


def test_training_state_counts_converged_runs_and_finds_the_cap():
    from orthskip.tables.rate_by_epoch import training_state

    capped = training_state(_capped_cells(set()), variant="rate_orth_learned")
    assert (capped.n_cells, capped.n_converged, capped.cap, capped.last) == (28, 0, 60, 60)
    assert not capped.converged
    done = training_state(_capped_cells(set(SEEDS)), dataset="diffeo2")
    assert (done.n_converged, done.cap, done.last) == (28, None, 30) and done.converged
    assert training_state(_capped_cells(set()), variant="other").n_cells == 0
    # results written before the flag: nothing counts as converged
    old = training_state(_capped_cells({0}).drop(columns="converged"))
    assert (old.n_converged, old.cap) == (0, 60)


def test_findings_state_a_per_recipe_and_how_much_the_recipe_moves_it():
    from orthskip.tables.findings import rate_findings

    base = _layers()
    other = base.assign(variant="rate_orth_learned_blockstep")
    fro = other["metric"] == "dist_identity"
    # a second recipe whose ‖Q − I‖ falls as m^(−(a + 0.3)) at every snapshot
    other.loc[fro, "value"] = other.loc[fro, "value"] * other.loc[fro, "depth"] ** (-0.3)
    layers = pd.concat([base, other], ignore_index=True)
    recipes = {
        "rate_orth_learned": "adamw lr 0.001, cap 60 epochs",
        "rate_orth_learned_blockstep": "adamw lr 0.01, skip step lr/m, cap 60 epochs",
    }
    cells = pd.concat([_cells(set()).assign(variant=v, recipe=r, skip_init="identity",
                                            stalled=False)
                       for v, r in recipes.items()], ignore_index=True)  # fmt: skip
    f = rate_findings(layers, cells)
    q = f[f["quantity"] == "dist_identity"].set_index("variant")
    assert q["exponent"]["rate_orth_learned_blockstep"] - q["exponent"]["rate_orth_learned"] == (
        pytest.approx(0.3, abs=0.02)
    )
    assert dict(q["recipe"]) == recipes
    text = findings_markdown(layers, cells, pd.DataFrame())
    spread = q["exponent"].max() - q["exponent"].min()
    assert f"The recipe moves a by {spread:.2f}." in text
    assert all(f"| {r} |" in text for r in recipes.values())
    assert "each interval covers seed noise under one recipe" in text
    # one recipe per kind and start: no such line
    one = findings_markdown(base, _cells(set()).assign(recipe="x", skip_init="identity"),
                            pd.DataFrame())  # fmt: skip
    assert "The recipe moves a" not in one
    # both recipes converged except the first's deepest cells: the recipes are compared on the
    # converged fits, and the cap's fit (other depths, another state) is listed, not compared
    conv = cells.assign(converged=~((cells["variant"] == "rate_orth_learned")
                                    & (cells["depth"] >= 64)))  # fmt: skip
    f = rate_findings(layers, conv)
    q = f[f["quantity"] == "dist_identity"]
    done = q[q["converged"]].set_index("variant")["exponent"]
    capped = q[~q["converged"]]
    assert list(capped["variant"]) == ["rate_orth_learned"]
    assert (int(capped["m_min"].iloc[0]), int(capped["m_max"].iloc[0])) == (64, 128)
    text = findings_markdown(layers, conv, pd.DataFrame())
    assert f"The recipe moves a by {done.max() - done.min():.2f}." in text
    assert "Not compared, the cells that reached the cap: a = " in text
    assert "(rate_orth_learned, at the cap, m = 64–128)" in text


def test_recipe_names_the_optimizer_step_rule_and_cap():
    from orthskip.results import recipe

    train = {"epochs": 60, "optimizer": {"name": "adamw", "lr": 0.01, "skip_lr": "per_block"},
             "schedule": {"name": "constant"}}  # fmt: skip
    assert recipe(train) == "adamw lr 0.01, skip step lr/m, cap 60 epochs"
    same = {**train, "optimizer": {"name": "sgd", "lr": 0.1, "skip_lr": "same"},
            "schedule": {"name": "cosine"}}  # fmt: skip
    assert recipe(same) == "sgd lr 0.1, cosine, cap 60 epochs"
    watched = {**train, "stop": {"patience": 10, "min_delta": 0.003, "watch": "skips"}}
    assert recipe(watched) == ("adamw lr 0.01, skip step lr/m, stop when the skips stop moving, "
                               "cap 60 epochs")  # fmt: skip
    sgd = {**train, "optimizer": {"name": "sgd", "lr": 0.05, "skip_lr": "per_block",
                                  "main_lr": "times_blocks"}}  # fmt: skip
    assert recipe(sgd) == "sgd lr 0.05, branch step lr·m, skip step lr/m, cap 60 epochs"
    off = {**train, "stop": {"patience": 0, "min_delta": 0.003, "watch": "skips"}}
    assert recipe(off) == recipe(train)  # a rule switched off is no part of the recipe
    assert recipe({}) == ""


def test_findings_count_the_converged_cells_of_the_fitted_variants_and_the_controls_apart():
    """The converged share per setting with a stopping rule: the cells of the variants the
    rate fits cover, and apart from them the controls (identity: nothing of it is fitted);
    a setting where no rule fired (a fixed budget) gets no count."""
    from orthskip.tables.findings import convergence_findings
    from orthskip.tables.findings_text import _convergence_text

    rows = []
    for ds, variant, conv in (("r", "lin", [1, 1, 1, 0]), ("r", "ident", [0, 0, 0, 0]),
                              ("r", "orth", [1, 1, 1, 1]), ("fixed", "lin", [0, 0])):  # fmt: skip
        rows += [dict(dataset=ds, arch="mlp", variant=variant, skip=variant, converged=bool(c))
                 for c in conv]  # fmt: skip
    rate = pd.DataFrame({"dataset": ["r", "r", "fixed"], "arch": "mlp",
                         "variant": ["lin", "orth", "lin"]})  # fmt: skip
    f = convergence_findings(pd.DataFrame(rows), rate)
    got = [tuple(r) for r in f[["dataset", "fitted", "converged", "n", "variants"]].to_numpy()]
    assert got == [("r", True, 7, 8, "lin, orth"), ("r", False, 0, 4, "ident")]
    assert list(f["capped"]) == [1, 4]  # no status, no stopping reason: not converged is capped
    # with them: a stalled or diverged run did not run to the cap
    cells = pd.DataFrame(rows).assign(status="ok", stopped=None, test_acc=0.9)
    cells["stopped"] = cells["stopped"].where(~cells["converged"], "train_loss plateau")
    ident = cells.index[cells["variant"] == "ident"]
    cells.loc[ident[0], "stopped"] = "train_loss stalled"
    cells.loc[ident[1], ["status", "test_acc"]] = ["diverged", np.nan]
    assert list(convergence_findings(cells, rate)["capped"]) == [1, 2]
    text = _convergence_text(f)
    assert "r / mlp 7 of 8 (87.5 %) of the fitted variants' cells and 0 of 4 (0.0 %)" in text
    assert "fixed" not in text
