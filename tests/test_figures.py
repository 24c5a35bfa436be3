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
from fixture_results import DIVERGED, HAAR

from orthskip.analysis.stats import loglog_slope
from orthskip.errors import ConfigError
from orthskip.figures import style
from orthskip.figures.accuracy import accuracy_vs_depth
from orthskip.figures.orthogonality import dist_identity
from orthskip.stages.figures import FIGURES, make_figure


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
    # independent fit: per cell, mean ‖Q − I‖_F/√n over its blocks at the last epoch
    # (changed from ‖Q − I‖₂, which saturates at 2)
    g = layers[(layers["dataset"] == "moons") & (layers["skip"] == "orth_manifold")
               & (layers["metric"] == "dist_identity") & (layers["stat"] == "fro_rel")]  # fmt: skip
    g = g[g["epoch"] == g["epoch"].max()]
    per_cell = g.groupby(["depth", "seed"])["value"].mean().reset_index()
    fit = loglog_slope(per_cell["depth"], per_cell["value"])  # mlp: blocks m = depth
    assert any(t.startswith(f"fit slope {fit.slope:.2f} [{fit.lo:.2f}, {fit.hi:.2f}]")
               for t in texts)  # fmt: skip
    assert any(re.search(r"log m / m: -0\.50", t) for t in texts)
    plt.close(fig)


def test_dist_identity_draws_the_bands_its_legend_promises(metrics_dir):
    from matplotlib.collections import PolyCollection

    with style.style():
        fig = dist_identity(metrics_dir)
    labels = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert "95 % t-band over seeds" in labels and "mean ± 95 % t-interval" in labels
    per_block = [a for a in fig.axes if a.get_xlabel() == "block"]
    assert per_block and all(
        any(isinstance(c, PolyCollection) for c in a.collections) for a in per_block
    )
    vs_depth = [a for a in fig.axes if a.get_xlabel() == "blocks m"]
    assert all(a.containers for a in vs_depth)  # error bars
    # the y label names the non-saturating distance, not ‖Q − I‖₂
    assert all("‖Q − I‖_F / √n" in a.get_ylabel() for a in per_block + vs_depth)
    # no rate fit for a frozen skip
    fixed = next(a for a in vs_depth if a.get_title() == "moons: orth. fixed")
    assert any("no rate fit" in t.get_text() for t in fixed.texts)
    plt.close(fig)


def test_variant_is_its_own_group_with_its_kinds_colour(metrics_dir):
    with style.style():
        fig = accuracy_vs_depth(metrics_dir)
    ax = next(a for a in fig.axes if a.get_title() == "moons")
    lines = {c.get_label(): c.lines[0] for c in ax.containers}  # errorbar: label on container
    assert HAAR in lines and "orth. learned" in lines
    assert lines[HAAR].get_color() == style.skip_color("orth_learned")
    assert lines[HAAR].get_marker() != lines["orth. learned"].get_marker()
    labels = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert labels.index(HAAR) == labels.index("orth. learned") + 1  # kind order, then name
    plt.close(fig)
    with style.style():
        fig = dist_identity(metrics_dir)
    titled = [a for a in fig.axes if a.get_title() == f"moons: {HAAR}"]
    assert len(titled) == 2
    assert all(a.title.get_color() == style.skip_color("orth_learned") for a in titled)
    plt.close(fig)


def test_variant_styles_order_and_markers():
    kinds = {"orth_learned_haar": "orth_learned", "identity": "identity",
             "orth_learned": "orth_learned", "orth_learned_eye": "orth_learned"}  # fmt: skip
    st = style.variant_styles(kinds)
    assert list(st) == ["identity", "orth_learned", "orth_learned_eye", "orth_learned_haar"]
    assert {s.color for v, s in st.items() if v != "identity"} == {"#009E73"}
    markers = [s.marker for s in st.values()]
    assert len(set(markers)) == 4 and "X" not in markers
    assert st["orth_learned"].label == "orth. learned" and st["orth_learned_haar"].label == HAAR


@pytest.mark.parametrize("name", ["dist_identity", "decision_regions", "weight_condition"])
def test_figures_are_byte_reproducible(name, metrics_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    outs = []
    for k in range(2):
        pdf, png = tmp_path / f"{k}.pdf", tmp_path / f"{k}.png"
        make_figure(name, metrics_dir, pdf, png)
        outs.append((pdf.read_bytes(), png.read_bytes()))
    assert outs[0][0] == outs[1][0] and outs[0][1] == outs[1][1]
    assert b"CreationDate" not in outs[0][0]
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    pdf, png = tmp_path / "e.pdf", tmp_path / "e.png"
    make_figure(name, metrics_dir, pdf, png)
    assert b"D:20231114" in pdf.read_bytes()  # the date SOURCE_DATE_EPOCH names


def test_results_without_variant_column_still_draw(metrics_dir, tmp_path):
    for n in ("cells", "history", "layers", "warp"):
        df = pd.read_parquet(metrics_dir / f"{n}.parquet")
        df[df["variant"] == df["skip"]].drop(columns=["variant"]).to_parquet(
            tmp_path / f"{n}.parquet"
        )
    for name in FIGURES:
        pdf, png = tmp_path / f"{name}.pdf", tmp_path / f"{name}.png"
        make_figure(name, tmp_path, pdf, png)
        _check_outputs(pdf, png)


def test_no_figure_or_table_reads_best_test_acc():
    # nothing is selected on the test set: the column is gone from cells.parquet
    root = Path(__file__).resolve().parents[1] / "orthskip"
    sources = [
        *sorted((root / "figures").glob("*.py")),
        *sorted((root / "tables").glob("*.py")),
        root / "stages" / "tables.py",
        root / "results.py",
    ]
    assert all("best_test_acc" not in p.read_text() for p in sources)


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
    from orthskip.stages.figures import PAPER_FIGURES

    # the whole-run figures of the report (dist_identity_epochs: trajectories toward I); the
    # paper figures under the names the paper's \includegraphics use
    assert set(FIGURES) - set(PAPER_FIGURES) == {"accuracy_vs_depth", "training_curves",
                            "dist_identity", "grad_norm_ratio", "weight_condition",
                            "repr_condition", "jacobian_spread", "decision_regions",
                            "dist_identity_epochs"}  # fmt: skip
    # paper_rate_by_epoch: a against the training state
    assert set(PAPER_FIGURES) == {"paper_rate", "paper_rate_by_epoch", "paper_accuracy_depth",
                                  "paper_start_end", "paper_approximation", "paper_grad_ratio",
                                  "paper_conditioning"}  # fmt: skip


def test_style_covers_every_registered_skip_kind():
    # style.py reads the torch-free kinds registry (plot jobs must not import torch), the
    # same entries the model side builds SKIPS from
    from orthskip.figures import style
    from orthskip.nn.skips import SKIPS

    assert tuple(SKIPS) == style.skip_order()
    colors = {k: style.skip_color(k) for k in SKIPS}
    for table in (colors, {k: style.skip_marker(k) for k in SKIPS},
                  {k: style.skip_label(k) for k in SKIPS}):  # fmt: skip
        assert set(table) == set(SKIPS)
    assert len(set(colors.values())) == len(SKIPS)  # one colour per kind
    assert style.UNKNOWN_COLOR not in colors.values()


# ---------------------------------------------------------------- print layout (issue 30)

MIN_FONT_PT = 6.0
MAX_WIDTH_IN, MAX_HEIGHT_IN = 7.0, 9.0
PAPER_WIDTHS_IN = (3.4, 7.0)  # one column or the whole page
TOL_PX = 0.5  # anti-aliasing slack: bboxes that merely touch do not collide


@pytest.fixture(scope="module")
def rate_metrics_dir(tmp_path_factory):
    """The fixture with the rate setting added (diffeo2/mlp, m = 2…256, the rate_* variants)."""
    from fixture_results import write_fixture

    d = tmp_path_factory.mktemp("rate_metrics")
    write_fixture(d, rate=True)
    return d


def _drawn_texts(fig) -> list:
    """Every text a reader sees: figure and axes texts, titles, labels, legends, and the tick
    labels matplotlib actually draws (ticks outside the view keep stale labels: skipped)."""
    from matplotlib.text import Text

    all_ticks, drawn = set(), set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            for tk in axis.get_major_ticks() + axis.get_minor_ticks():
                all_ticks.update({id(tk.label1), id(tk.label2)})
            if ax.axison and axis.get_visible():  # an axis turned off draws no tick labels
                for tk in axis._update_ticks():  # the ticks inside the view, as draw() uses
                    drawn.update({id(tk.label1), id(tk.label2)})
    return [
        t
        for t in fig.findobj(Text)
        if t.get_visible()
        and t.get_text().strip()
        and (id(t) not in all_ticks or id(t) in drawn)
        and not (t.axes is not None and not t.axes.get_visible())
    ]


def layout_problems(fig, paper: bool = False) -> list[str]:
    """What a reader of the printed figure would object to, one line each (empty: none)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    problems = []
    w, h = fig.get_size_inches()
    if w > MAX_WIDTH_IN + 1e-6 or h > MAX_HEIGHT_IN + 1e-6:
        problems.append(f"size {w:.2f} x {h:.2f} in exceeds {MAX_WIDTH_IN} x {MAX_HEIGHT_IN}")
    if paper and not any(abs(w - pw) < 1e-6 for pw in PAPER_WIDTHS_IN):
        problems.append(f"paper width {w:.2f} in is neither column nor page width")
    fig_box = fig.bbox
    texts = _drawn_texts(fig)
    boxes = [t.get_window_extent(renderer) for t in texts]
    for t, b in zip(texts, boxes, strict=True):
        if t.get_fontsize() < MIN_FONT_PT - 1e-6:
            problems.append(f"{t.get_text()!r}: {t.get_fontsize():.1f} pt < {MIN_FONT_PT} pt")
        if (b.x0 < fig_box.x0 - TOL_PX or b.y0 < fig_box.y0 - TOL_PX
                or b.x1 > fig_box.x1 + TOL_PX or b.y1 > fig_box.y1 + TOL_PX):  # fmt: skip
            problems.append(f"{t.get_text()!r} is cut by the figure edge")
    for i in range(len(texts)):
        for j in range(i + 1, len(texts)):
            a, b = boxes[i], boxes[j]
            dx = min(a.x1, b.x1) - max(a.x0, b.x0)
            dy = min(a.y1, b.y1) - max(a.y0, b.y0)
            if dx > TOL_PX and dy > TOL_PX:
                problems.append(f"{texts[i].get_text()!r} overlaps {texts[j].get_text()!r}")
    return problems


def _settings(metrics_dir: Path) -> list[tuple[str, str]]:
    cells = pd.read_parquet(metrics_dir / "cells.parquet")
    return sorted(set(map(tuple, cells[["dataset", "arch"]].astype(str).to_numpy())))


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_every_figure_prints_legibly(name, rate_metrics_dir):
    """Each figure as the workflow draws it (a per-setting one once per setting): no text on
    another, none cut by the edge, none below 6 pt, at most 7 x 9 in (paper: 3.4 or 7 wide)."""
    from orthskip.stages.figures import PER_SETTING, draw_figure

    settings = _settings(rate_metrics_dir) if name in PER_SETTING else [None]
    found = []
    for setting in settings:
        with style.style():  # drawn as the stage draws it: inside the style
            fig = draw_figure(name, rate_metrics_dir, setting)
            try:
                problems = layout_problems(fig, name.startswith("paper_"))
            finally:
                plt.close(fig)
        found += [f"{setting}: {p}" for p in problems]
    assert not found, f"{name}: {len(found)} problems, e.g.\n" + "\n".join(found[:12])


def test_every_variant_in_a_figure_has_its_own_marker_and_line_style():
    # issue 30: rate_linear and rate_orth_learned_haar were both dashed, and three
    # orth_learned variants differed only by shade
    from fixture_results import RATE_VARIANTS, VARIANT_KIND

    kinds = {k: k for k in style.skip_order()} | VARIANT_KIND | RATE_VARIANTS
    st = style.variant_styles(kinds)
    assert len({s.marker for s in st.values()}) == len(st)
    assert len({str(s.linestyle) for s in st.values()}) == len(st)
    assert st["rate_linear"].linestyle != st["rate_orth_learned_haar"].linestyle


def test_a_per_setting_figure_draws_only_its_setting(rate_metrics_dir, tmp_path):
    from orthskip.stages.figures import PER_SETTING, draw_figure

    assert "dist_identity" in PER_SETTING
    with style.style():
        fig = draw_figure("dist_identity", rate_metrics_dir, ("diffeo2", "mlp"))
    titles = {a.get_title() for a in fig.axes if a.get_title()}
    plt.close(fig)
    assert titles == {f"diffeo2: {v}" for v in
                      ("rate_linear", "rate_orth_learned", "rate_orth_learned_haar")}  # fmt: skip


def test_figure_cli_takes_one_setting(rate_metrics_dir, tmp_path):
    from orthskip.cli import main

    pdf, png = tmp_path / "g.pdf", tmp_path / "g.png"
    argv = ["figure", "grad_norm_ratio", "--metrics-dir", str(rate_metrics_dir), "--pdf",
            str(pdf), "--png", str(png), "--dataset", "moons", "--arch", "mlp"]  # fmt: skip
    assert main(argv) == 0
    _check_outputs(pdf, png)
    assert main(argv[:-2]) != 0  # --dataset without --arch: refused


def test_a_setting_without_the_figures_metrics_gets_no_file():
    from orthskip.stages.figures import setting_draws

    rate_recipe = frozenset({"orth_defect", "dist_identity", "dist_init", "branch_lipschitz",
                             "grad_norm_ratio"})  # fmt: skip
    assert not setting_draws("weight_condition", [rate_recipe])
    assert setting_draws("dist_identity", [rate_recipe])
    assert setting_draws("weight_condition", [rate_recipe, None])  # None: every family
    assert setting_draws("training_curves", [frozenset()])  # history is always there


@pytest.mark.parametrize("name", ["paper_conditioning", "paper_grad_ratio", "paper_accuracy_depth"])
def test_a_paper_figure_of_one_setting_is_column_wide_and_legible(name, rate_metrics_dir):
    # one panel makes a column-wide figure: its title must fit 3.4 in (a real run found one
    # that did not)
    from orthskip.stages.figures import draw_figure

    with style.style():
        fig = draw_figure(name, rate_metrics_dir, ("moons", "mlp"))
        try:
            assert fig.get_figwidth() == pytest.approx(style.COLUMN_WIDTH_IN)
            assert layout_problems(fig, paper=True) == []
        finally:
            plt.close(fig)


def test_paper_rate_fits_the_converged_runs_and_draws_the_capped_apart(tmp_path):
    # issue 29: converged cells and cells at the cap are never mixed in a fit — the figure
    # fits a variant's converged runs (as identity_rate does) and marks the others
    from fixture_results import write_fixture

    from orthskip import results
    from orthskip.analysis.stats import compare_rate_models
    from orthskip.figures.paper import rate

    write_fixture(tmp_path, rate=True)
    cells = pd.read_parquet(tmp_path / "cells.parquet")
    learned = cells["variant"] == "rate_orth_learned"
    deepest = learned & (cells["depth"] == cells.loc[learned, "depth"].max())
    cells = cells.assign(converged=~deepest)
    cells.to_parquet(tmp_path / "cells.parquet")
    dist = results.dist_identity_per_cell(pd.read_parquet(tmp_path / "layers.parquet"))
    pc = dist[(dist["variant"] == "rate_orth_learned") & (dist["dataset"] == "diffeo2")]
    kept = pc[pc["depth"] < pc["depth"].max()]
    want = compare_rate_models(kept["m"], kept["value"], kept["seed"])
    mixed = compare_rate_models(pc["m"], pc["value"], pc["seed"])
    assert abs(want.exponent - mixed.exponent) >= 0.005  # the test can tell them apart
    fig = rate(tmp_path)
    labels = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().texts]
    a = f"a = {want.exponent:.2f} [{want.exponent_lo:.2f}, {want.exponent_hi:.2f}]"
    assert any(a in t for t in labels), (a, labels)
    n = int(deepest.sum())
    assert f"rate_orth_learned: {n} runs at the cap, not fitted" in labels
    assert "rate_orth_learned, converged (mean ± 95 % CI)" in labels
