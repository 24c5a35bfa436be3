"""Figures: each one is drawn from the fixture Parquet files and from nothing at all."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from fixture_results import DIVERGED, write_fixture

from orthskip.errors import ConfigError
from orthskip.figures import FIGURES, make_figure, style
from orthskip.figures.accuracy import accuracy_vs_depth
from orthskip.figures.orthogonality import dist_identity
from orthskip.stats import loglog_slope


@pytest.fixture(scope="module")
def metrics_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("metrics")
    write_fixture(d)
    return d


def _check_outputs(pdf: Path, png: Path) -> np.ndarray:
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 2000
    img = mpimg.imread(png)
    h, w = img.shape[:2]
    assert 200 <= w <= 2000 and 150 <= h <= 6000  # single column at 200 dpi: ~700 px wide
    assert img[..., :3].std() > 0.05  # something is drawn
    return img


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_figure_from_fixture(name, metrics_dir, tmp_path):
    pdf, png = tmp_path / f"{name}.pdf", tmp_path / f"{name}.png"
    make_figure(name, metrics_dir, pdf, png)
    _check_outputs(pdf, png)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([pdf.name, png.name])


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_figure_without_data_says_so(name, tmp_path):
    pdf, png = tmp_path / f"{name}.pdf", tmp_path / f"{name}.png"
    make_figure(name, tmp_path / "empty", pdf, png)
    _check_outputs(pdf, png)


def test_unknown_figure_names_allowed_values(tmp_path):
    with pytest.raises(ConfigError, match="accuracy_vs_depth"):
        make_figure("nope", tmp_path, tmp_path / "a.pdf", tmp_path / "a.png")


def test_one_distinct_colour_per_skip_kind():
    kinds = ["identity", "none", "linear", "orth_fixed", "orth_learned", "orth_manifold",
             "procrustes", "orth_jacobian"]  # fmt: skip
    colours = [style.skip_color(k) for k in kinds]
    assert len(set(colours)) == len(kinds)
    assert style.ordered_skips(reversed(kinds)) == kinds


def test_accuracy_marks_the_diverged_cell(metrics_dir):
    with style.style():
        fig = accuracy_vs_depth(metrics_dir)
    ds, _, skip, depth, _ = DIVERGED
    ax = next(a for a in fig.axes if a.get_title() == ds)
    crosses = [ln for ln in ax.lines if ln.get_marker() == "X"]
    assert len(crosses) == 1
    assert crosses[0].get_color() == style.skip_color(skip)
    assert crosses[0].get_xdata()[0] == pytest.approx(depth, rel=0.2)
    plt.close(fig)


def test_dist_identity_prints_the_fitted_slope(metrics_dir):
    layers = pd.read_parquet(metrics_dir / "layers.parquet")
    with style.style():
        fig = dist_identity(metrics_dir)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    # independent fit: per cell, mean ‖Q − I‖₂ over its blocks at the last epoch
    g = layers[(layers["dataset"] == "moons") & (layers["skip"] == "orth_manifold")
               & (layers["metric"] == "dist_identity") & (layers["stat"] == "spec")]  # fmt: skip
    g = g[g["epoch"] == g["epoch"].max()]
    per_cell = g.groupby(["depth", "seed"])["value"].mean().reset_index()
    fit = loglog_slope(per_cell["depth"], per_cell["value"])  # mlp: blocks m = depth
    assert any(t.startswith(f"fit slope {fit.slope:.2f} [{fit.lo:.2f}, {fit.hi:.2f}]")
               for t in texts)  # fmt: skip
    assert any(re.search(r"log m / m: -0\.50", t) for t in texts)
    plt.close(fig)


def test_repr_condition_marks_infinite_values(metrics_dir):
    from fixture_results import INFINITE_REPR

    from orthskip.figures.conditioning import INF_MARKER, repr_condition

    layers = pd.read_parquet(metrics_dir / "layers.parquet")
    ds, _arch, skip, depth, seed = INFINITE_REPR
    c = layers[(layers["dataset"] == ds) & (layers["skip"] == skip) & (layers["depth"] == depth)
               & (layers["seed"] == seed) & (layers["metric"] == "repr_condition")
               & (layers["stat"] == "cond")]  # fmt: skip
    c = c[c["epoch"] == c["epoch"].max()]
    inf_blocks = sorted(c.loc[np.isposinf(c["value"]), "layer_index"])
    assert inf_blocks  # the fixture does contain +inf
    with style.style():
        fig = repr_condition(metrics_dir)
    ax = next(a for a in fig.axes if a.get_title().startswith(ds) and a.get_yscale() == "log")
    marks = [ln for ln in ax.lines if ln.get_marker() == INF_MARKER]
    assert len(marks) == 1 and marks[0].get_color() == style.skip_color(skip)
    assert sorted(marks[0].get_xdata()) == inf_blocks
    plt.close(fig)


def test_decision_regions_draws_points_in_the_panel_coordinates(metrics_dir):
    from orthskip.figures.decision import decision_regions

    warp = pd.read_parquet(metrics_dir / "warp.parquet")
    with style.style():
        fig = decision_regions(metrics_dir)
    axes = [a for a in fig.axes if a.get_title()]
    first = axes[0]  # identity, deepest depth, seed 0: input space
    assert first.get_title() == "moons d16 s0: input"
    sel = (warp["skip"] == "identity") & (warp["depth"] == 16) & (warp["seed"] == 0)
    train0 = warp[sel & (warp["grid"] == "train") & (warp["block"] == 0)]
    pts = np.vstack([c.get_offsets() for c in first.collections if c.get_offsets().size > 2])
    assert np.allclose(np.sort(pts[:, 0]), np.sort(train0["x"]))
    last = next(a for a in axes if a.get_title() == "after block 16 of 16")
    train16 = warp[sel & (warp["grid"] == "train") & (warp["block"] == 16)]
    pts = np.vstack([c.get_offsets() for c in last.collections])
    assert np.allclose(np.sort(pts[:, 1]), np.sort(train16["y"]))
    plt.close(fig)


def test_decision_regions_without_2d_data(metrics_dir, tmp_path):
    import shutil

    for name in ("cells", "history", "layers"):
        shutil.copy(metrics_dir / f"{name}.parquet", tmp_path / f"{name}.parquet")
    pdf, png = tmp_path / "d.pdf", tmp_path / "d.png"
    make_figure("decision_regions", tmp_path, pdf, png)
    _check_outputs(pdf, png)


def test_all_issue_figures_are_registered():
    assert set(FIGURES) == {"accuracy_vs_depth", "training_curves", "dist_identity",
                            "grad_norm_ratio", "weight_condition", "repr_condition",
                            "jacobian_spread", "decision_regions"}  # fmt: skip


def test_style_covers_every_registered_skip_kind():
    # style.py keeps its own list (plot jobs must not import torch for it): keep them in step.
    from orthskip.figures import style
    from orthskip.skips import SKIPS

    assert tuple(SKIPS) == style.SKIP_ORDER
    for table in (style.SKIP_COLORS, style.SKIP_MARKERS, style.SKIP_LABELS):
        assert set(table) == set(SKIPS)
    assert len(set(style.SKIP_COLORS.values())) == len(SKIPS)  # one colour per kind
