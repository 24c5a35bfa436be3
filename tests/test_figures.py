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
