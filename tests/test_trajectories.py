"""Trajectories toward I: the figure dist_identity_epochs and the table start_end_distance,
checked against values computed independently from the fixture's layers.parquet."""

from __future__ import annotations

import statistics

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from fixture_results import HAAR, SNAPSHOTS

from orthskip import results
from orthskip.figures import style
from orthskip.figures.trajectories import dist_identity_epochs
from orthskip.stages.tables import make_table
from orthskip.tables.start_end import far_start_variants, start_end_distance_frame


@pytest.fixture(scope="module")
def layers(metrics_dir) -> pd.DataFrame:
    return pd.read_parquet(metrics_dir / "layers.parquet")


def _cell_means(layers, variant, depth, metric, epoch, dataset="moons"):
    """Per seed: plain mean over the cell's block skip rows (the mlp has no transitions)."""
    g = layers[(layers["dataset"] == dataset) & (layers["variant"] == variant)
               & (layers["depth"] == depth) & (layers["metric"] == metric)
               & (layers["stat"] == "fro_rel") & (layers["epoch"] == epoch)]  # fmt: skip
    return [statistics.fmean(s["value"]) for _, s in g.groupby("seed")]


def test_only_the_haar_variant_starts_far(layers):
    far = far_start_variants(layers)
    assert ("moons", "mlp", HAAR) in far
    learned = {v for _, _, v in far} & {"orth_learned", "orth_manifold", "linear"}
    assert not learned  # these start at I


def test_start_end_frame_matches_plain_python(layers):
    f = start_end_distance_frame(layers).set_index(["dataset", "variant", "depth"])
    for variant in (HAAR, "orth_learned", "orth_fixed"):
        for depth in (4, 16):
            r = f.loc[("moons", variant, depth)]
            for fam in ("dist_identity", "dist_init"):
                for when, epoch in (("start", SNAPSHOTS[0]), ("end", SNAPSHOTS[-1])):
                    vals = _cell_means(layers, variant, depth, fam, epoch)
                    assert r[f"{fam}_{when}_mean"] == pytest.approx(statistics.fmean(vals))
                    assert r[f"{fam}_{when}_std"] == pytest.approx(statistics.stdev(vals))
            assert r["n_seeds"] == 3 and r["m"] == depth
            assert bool(r["far_start"]) == (variant != "orth_learned")  # orth_fixed: Haar Q
    # the Haar start moves toward I: end < start, significantly
    haar = f.loc[("moons", HAAR, 8)]
    assert haar["diff"] < 0 and haar["p_value"] < 0.05
    assert haar["diff"] == pytest.approx(haar["dist_identity_end_mean"]
                                         - haar["dist_identity_start_mean"])  # fmt: skip
    # transition blocks are left out of the CNN's means
    cnn = f.loc[("digits", "orth_learned", 8)]
    g = layers[(layers["dataset"] == "digits") & (layers["variant"] == "orth_learned")
               & (layers["depth"] == 8) & (layers["metric"] == "dist_identity")
               & (layers["stat"] == "fro_rel") & (layers["epoch"] == SNAPSHOTS[-1])
               & ~layers["param"].str.match(r"blocks\.[12]\.")]  # fmt: skip
    assert cnn["dist_identity_end_mean"] == pytest.approx(
        statistics.fmean(g.groupby("seed")["value"].mean())
    )


def test_start_end_table_rows(metrics_dir, layers, tmp_path):
    md = tmp_path / "t.md"
    make_table("start_end_distance", metrics_dir, md, tmp_path / "t.tex")
    vals = _cell_means(layers, HAAR, 16, "dist_identity", SNAPSHOTS[-1])
    expected = f"{statistics.fmean(vals):.3f} ± {statistics.stdev(vals):.3f}"
    row = next(ln for ln in md.read_text().splitlines()
               if ln.startswith(f"| moons | mlp | {HAAR} | far (Haar) | 16 |"))  # fmt: skip
    assert expected in row


def test_figure_lines_are_the_seed_means_per_epoch(metrics_dir, layers):
    with style.style():
        fig = dist_identity_epochs(metrics_dir)
    axes = {a.get_title(): a for a in fig.axes}
    assert {"moons: identity start", "moons: Haar start", "digits: Haar start"} <= set(axes)
    haar_gids = {ln.get_gid() for ln in axes["moons: Haar start"].lines}
    id_gids = {ln.get_gid() for ln in axes["moons: identity start"].lines}
    assert haar_gids == {f"{HAAR}|{d}" for d in (4, 8, 16)}
    assert "orth_learned|8" in id_gids and "linear|4" in id_gids
    assert not any(g.startswith("orth_fixed") for g in haar_gids | id_gids)  # frozen: not drawn
    # digits has no Haar start: the panel says so
    assert any("no Haar start" in t.get_text() for t in axes["digits: Haar start"].texts)
    line = next(ln for ln in axes["moons: Haar start"].lines if ln.get_gid() == f"{HAAR}|8")
    assert list(line.get_xdata()) == list(SNAPSHOTS)
    expected = [statistics.fmean(_cell_means(layers, HAAR, 8, "dist_identity", e))
                for e in SNAPSHOTS]  # fmt: skip
    assert list(line.get_ydata()) == pytest.approx(expected)
    assert expected[-1] < expected[0]  # falls toward I
    plt.close(fig)


def test_dist_per_epoch_last_epoch_is_dist_identity_per_cell(layers):
    pe = results.dist_per_epoch(layers)
    last = pe[pe["epoch"] == pe.groupby(results.CELL_COLUMNS)["epoch"].transform("max")]
    pc = results.dist_identity_per_cell(layers)
    merged = last.merge(pc, on=results.CELL_COLUMNS, suffixes=("", "_pc"))
    assert len(merged) == len(pc) > 0
    assert merged["value"].tolist() == pytest.approx(merged["value_pc"].tolist())
    assert (merged["n_blocks"] == merged["n_blocks_pc"]).all()
