"""Rate-model comparison (orthskip.analysis.stats) on data drawn from each model; Holm."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from orthskip.analysis.stats import (
    RATE_MODELS,
    compare_rate_models,
    holm,
    rate_model_curve,
)
from tests.helpers import power_exponent

DEPTHS = 2 ** np.arange(1, 9)  # m = 2 … 256
SEEDS = 5
NOISE = 0.10  # standard deviation of log y: "10 % log-noise"
HAAR_VARIANT = "orth_learned_haar"  # tests/fixture_results.py HAAR
TRUE = {
    "log_m_over_m": lambda m: 1.5 * np.log(m) / m,
    "inv_m": lambda m: 2.0 / m,
    "power": lambda m: 0.8 * m**-0.5,
    "constant": lambda m: 0.6 + 0 * m,
}


NESTED = [{"inv_m", "power"}, {"constant", "power"}]


def _draw(model: str, rng: np.random.Generator, noise: float = NOISE):
    m = np.repeat(DEPTHS, SEEDS).astype(float)
    seeds = np.tile(np.arange(SEEDS), DEPTHS.size)
    y = TRUE[model](m) * np.exp(rng.normal(0, noise, m.size))
    return m, y, seeds


def _pick_rate(model: str, criterion: str, draws: int = 50) -> float:
    rng = np.random.default_rng(123)
    hits = 0
    for _ in range(draws):
        m, y, s = _draw(model, rng)
        hits += compare_rate_models(m, y, s, criterion=criterion, n_boot=0).best == model
    return hits / draws


@pytest.mark.parametrize("criterion", ["aic", "bic"])
@pytest.mark.parametrize("model", RATE_MODELS)
def test_picks_the_generating_model_most_of_the_time(model, criterion) -> None:
    # measured (50 draws, 10 % log-noise, m = 2..256, 5 seeds): see the report / docs
    rate = _pick_rate(model, criterion)
    assert rate >= 0.8, f"{model} picked in {rate:.0%} of draws by {criterion}"


def test_noiseless_fits_are_exact_and_margin_is_large() -> None:
    m = np.repeat(DEPTHS, 2).astype(float)
    s = np.tile([0, 1], DEPTHS.size)
    for model, f in TRUE.items():
        r = compare_rate_models(m, f(m), s, n_boot=20)
        assert r.fits[model].rss == pytest.approx(0.0, abs=1e-20)
        assert rate_model_curve(model, r.fits[model], m) == pytest.approx(f(m), rel=1e-9)
        # non-nested rivals are far off; inv_m and constant are nested in the power law, so
        # noiseless data cannot rank those (both RSS are rounding error)
        rivals = [k for k in RATE_MODELS if k != model and {k, model} not in NESTED]
        assert all(r.fits[k].aic - r.fits[model].aic > 50 for k in rivals)
    r = compare_rate_models(m, TRUE["power"](m), s, n_boot=20)
    assert r.exponent == pytest.approx(0.5, abs=1e-12)
    assert r.fits["power"].c == pytest.approx(0.8, rel=1e-12)
    assert r.fits["inv_m"].c == pytest.approx(np.exp(np.mean(np.log(0.8 * m**-0.5 * m))))


def test_criteria_match_a_hand_computation() -> None:
    rng = np.random.default_rng(0)
    m, y, s = _draw("power", rng)
    r = compare_rate_models(m, y, s, n_boot=0)
    n = m.size
    a, log_c = np.polyfit(np.log(m), np.log(y), 1)
    rss = float(((np.log(y) - (log_c + a * np.log(m))) ** 2).sum())
    assert r.fits["power"].a == pytest.approx(-a)
    assert r.fits["power"].aic == pytest.approx(n * np.log(rss / n) + 6)
    assert r.fits["power"].bic == pytest.approx(n * np.log(rss / n) + 3 * np.log(n))
    rss_c = float(((np.log(y) - np.log(y).mean()) ** 2).sum())
    assert r.fits["constant"].aic == pytest.approx(n * np.log(rss_c / n) + 4)
    aics = sorted(f.aic for f in r.fits.values())
    assert r.margin == pytest.approx(aics[1] - aics[0])
    assert (r.m_min, r.m_max, r.n_points, r.n_seeds) == (2, 256, n, SEEDS)
    assert power_exponent(m, y) == pytest.approx(-a)


def test_bootstrap_interval_over_seeds_covers_the_true_exponent() -> None:
    rng = np.random.default_rng(7)
    covered = 0
    for _ in range(20):
        m, y, s = _draw("power", rng)
        r = compare_rate_models(m, y, s, n_boot=300, rng_seed=1)
        assert r.exponent_lo <= r.exponent <= r.exponent_hi
        covered += r.exponent_lo <= 0.5 <= r.exponent_hi
    # a percentile bootstrap over 5 seeds undercovers somewhat; 95 % nominal
    assert covered >= 15


def test_bootstrap_resamples_whole_seeds() -> None:
    # one seed shifted by a constant factor: resampling seeds cannot change the exponent
    m = np.repeat(DEPTHS, 3).astype(float)
    s = np.tile([0, 1, 2], DEPTHS.size)
    y = m**-0.7 * np.where(s == 1, 2.0, 1.0)
    r = compare_rate_models(m, y, s, n_boot=200)
    assert r.exponent_lo == pytest.approx(0.7) and r.exponent_hi == pytest.approx(0.7)


def test_m_equal_one_and_bad_points_are_left_out() -> None:
    m = np.array([1, 1, 2, 4, 8, 16, 32, np.nan, 64], dtype=float)
    y = np.array([0.3, 0.3, 0.5, 0.25, 0.125, 0.0625, -1.0, 0.1, 1 / 64])
    r = compare_rate_models(m, y, n_boot=0)
    assert (r.m_min, r.m_max, r.n_points, r.n_seeds) == (2, 64, 5, 0)
    assert r.best == "inv_m" and np.isnan(r.exponent_lo)
    few = compare_rate_models([2, 4], [1.0, 0.5])
    assert few.best == "" and np.isnan(few.margin)
    with pytest.raises(ValueError, match="criterion"):
        compare_rate_models(m, y, criterion="r2")


def test_holm_matches_hand_computation() -> None:
    p = np.array([0.01, 0.04, np.nan, 0.03, 0.5])
    # sorted finite: 0.01, 0.03, 0.04, 0.5 → ×4, ×3, ×2, ×1, running max
    expected = np.array([0.04, 0.09, np.nan, 0.09, 0.5])
    np.testing.assert_allclose(holm(p), expected)
    assert holm([0.9, 0.8]).tolist() == [1.0, 1.0]
    assert np.isnan(holm([np.nan])).all()


# ---------------------------------------------------------------- the identity_rate table


def _cell_points(layers, variant, metric, stat):
    """Independent per-cell means at the last snapshot, non-transition blocks (plain pandas)."""
    cell = ["dataset", "arch", "variant", "skip", "depth", "seed"]
    g = layers[(layers["dataset"] == "moons") & (layers["variant"] == variant)]
    ms, ys, ss = [], [], []
    for key, c in g.groupby(cell):
        last = c[c["epoch"] == c["epoch"].max()]
        blocks = last.loc[last["layer_kind"].isin(["block", "transition"]), "layer_index"]
        v = last[(last["metric"] == metric) & (last["stat"] == stat)]["value"]
        ms.append(blocks.nunique())
        ys.append(v.mean())
        ss.append(key[-1])
    return np.array(ms), np.array(ys), np.array(ss)


@pytest.mark.parametrize(
    ("quantity", "metric", "stat"),
    [
        ("dist_identity", "dist_identity", "fro_rel"),
        ("branch_lipschitz", "branch_lipschitz", "max"),
    ],
)
def test_identity_rate_frame_names_the_fixture_models(metrics_dir, quantity, metric, stat):
    import pandas as pd

    from orthskip.tables.identity_rate import identity_rate_frame

    layers = pd.read_parquet(metrics_dir / "layers.parquet")
    cells = pd.read_parquet(metrics_dir / "cells.parquet")
    f = identity_rate_frame(layers, cells, quantity).set_index(["dataset", "arch", "variant"])
    assert f["converged"].all()  # every fixture cell of a rate kind ended by the stopping rule
    assert set(f["quantity"]) == {quantity}
    assert set(f["skip"]) == {"linear", "orth_learned", "orth_manifold"}
    for variant in ("orth_learned", "orth_manifold", "linear"):
        m, y, s = _cell_points(layers, variant, metric, stat)
        ref = compare_rate_models(m, y, s)
        r = f.loc[("moons", "mlp", variant)]
        assert r["best"] == ref.best and r["margin"] == pytest.approx(ref.margin)
        assert r["exponent"] == pytest.approx(ref.exponent)
        assert r["exponent_lo"] == pytest.approx(ref.exponent_lo)
        assert r["aic_power"] == pytest.approx(ref.fits["power"].aic)
        assert (r["m_min"], r["m_max"], r["n_seeds"]) == (4, 16, 3)
    # the fixture draws orth_learned ∝ log m / m, orth_manifold ∝ m^-0.8 (Lip: m^-0.7), linear
    # constant; 5 % log-noise, m = 4, 8, 16, 3 seeds
    assert f.loc[("moons", "mlp", "orth_learned"), "best"] == "log_m_over_m"
    assert f.loc[("moons", "mlp", "orth_manifold"), "best"] == "power"
    assert f.loc[("moons", "mlp", "linear"), "best"] == "constant"
    r = f.loc[("moons", "mlp", "orth_manifold")]
    true_a = 0.8 if quantity == "dist_identity" else 0.7
    assert r["exponent_lo"] <= true_a + 0.02 and true_a - 0.02 <= r["exponent_hi"]


def test_identity_rate_table_has_a_row_per_quantity(metrics_dir, tmp_path):
    from orthskip.stages.tables import make_table

    md = tmp_path / "rate.md"
    make_table("identity_rate", metrics_dir, md, tmp_path / "rate.tex")
    lines = [ln for ln in md.read_text().splitlines() if ln.startswith("| moons | mlp")]
    assert len(lines) == 8  # 4 variants × 2 quantities
    learned = [ln for ln in lines if "| orth_learned |" in ln]
    assert len(learned) == 2 and all("C·log m / m |" in ln for ln in learned)
    assert all("**0.0**" in ln for ln in lines)
    tex = (tmp_path / "rate.tex").read_text()
    assert r"\textbf{0.0}" in tex and "≥" not in tex.split("\\begin{tabular}")[1]


def test_dist_identity_figure_overlays_the_fitted_models(metrics_dir):
    import matplotlib.pyplot as plt
    import pandas as pd
    from matplotlib.collections import PolyCollection

    from orthskip.figures import style
    from orthskip.figures.orthogonality import dist_identity
    from orthskip.tables.identity_rate import identity_rate_frame

    with style.style():
        fig = dist_identity(metrics_dir)
    ax = next(
        a
        for a in fig.axes
        if a.get_title() == "moons: orth. learned" and a.get_xlabel() == "blocks m"
    )
    f = identity_rate_frame(
        pd.read_parquet(metrics_dir / "layers.parquet"),
        pd.read_parquet(metrics_dir / "cells.parquet"),
    )
    r = f.set_index(["dataset", "arch", "variant"]).loc[("moons", "mlp", "orth_learned")]
    text = "\n".join(t.get_text() for t in ax.texts)
    assert f"best: C·log m / m (ΔAIC {r['margin']:.1f})" in text
    assert f"a = {r['exponent']:.2f} [{r['exponent_lo']:.2f}, {r['exponent_hi']:.2f}]" in text
    # four model curves on [m_min, m_max], the best one thicker; the exponent's fan
    curves = [ln for ln in ax.lines if len(ln.get_xdata()) == 60]
    assert len(curves) == 4
    assert max(ln.get_linewidth() for ln in curves) == curves[0].get_linewidth()  # log m / m
    assert curves[0].get_xdata()[0] == pytest.approx(4) and curves[0].get_xdata()[-1] == 16
    m = np.asarray(curves[0].get_xdata())
    expected = r["c_log_m_over_m"] * np.log(m) / m
    np.testing.assert_allclose(curves[0].get_ydata(), expected, rtol=1e-12)
    assert any(isinstance(c, PolyCollection) for c in ax.collections)
    plt.close(fig)


# ---------------------------------------------------------------- the regression task


def _h(d: int, **kw):
    from orthskip.data.diffeo import make_diffeo

    args = {"alpha": 0.8, "beta": 1.5, "gamma": 0.5, "map_seed": 0, **kw}
    return make_diffeo(d, args["alpha"], args["beta"], args["gamma"], args["map_seed"])


def _newton_solve(h, y, steps: int = 60):
    """Solve h(x) = y from x = y by damped Newton with jacrev Jacobians (independent of
    h.inverse): halve the step until the residual falls."""
    import torch
    from torch.func import jacrev

    x = y.clone()
    for _ in range(steps):
        r = h(x) - y
        if float(r.norm()) < 1e-13:
            break
        step = torch.linalg.solve(jacrev(h)(x), r)
        t = 1.0
        while float((h(x - t * step) - y).norm()) > float(r.norm()) and t > 1e-6:
            t /= 2
        x = x - t * step
    return x


@pytest.mark.parametrize("d", [2, 3])
def test_diffeo_fixes_0_is_positively_oriented_and_invertible(d) -> None:
    import torch
    from torch.func import jacrev, vmap

    h = _h(d)
    assert torch.equal(
        h(torch.zeros(1, d, dtype=torch.float64)), torch.zeros(1, d, dtype=torch.float64)
    )
    gen = torch.Generator().manual_seed(1)
    x = 2.0 * torch.randn(2000, d, generator=gen, dtype=torch.float64)
    dets = torch.linalg.det(vmap(jacrev(h))(x))
    assert float(dets.min()) > 0  # det Dh > 0 on every point
    # at the origin (r = 0): Dh = R₂ · shear′ · swirl′ · (1 + α) R₁, det = (1 + α)^d
    jac0 = jacrev(h)(torch.zeros(d, dtype=torch.float64))
    assert float(torch.linalg.det(jac0)) == pytest.approx(1.8**d, rel=1e-12)
    # invertible: the analytic inverse and an independent Newton solve agree
    y = h(x)
    assert torch.allclose(h.inverse(y), x, atol=1e-10)
    for k in range(0, 2000, 97):
        assert torch.allclose(_newton_solve(h, y[k]), x[k], atol=1e-9)
    # not the identity or a rotation: a real warp (Jacobians vary, det ≠ 1 away from 0)
    assert float(dets.max() - dets.min()) > 0.5


def test_diffeo_is_injective_on_a_grid() -> None:
    import torch

    h = _h(2, alpha=1.9, beta=3.0, gamma=1.0)  # strong warps, still invertible
    lin = torch.linspace(-3, 3, 61, dtype=torch.float64)
    grid = torch.cartesian_prod(lin, lin)
    img = h(grid)
    dist = torch.cdist(img, img) + torch.eye(len(grid), dtype=torch.float64) * 1e9
    # distinct grid nodes (spacing 0.1) never collapse: min image distance bounded away from 0
    assert float(dist.min()) > 1e-3
    assert torch.allclose(h.inverse(img), grid, atol=1e-9)


def test_diffeo_spec_validation() -> None:
    from orthskip.data import resolve_spec, validate_spec
    from orthskip.errors import ConfigError

    full = resolve_spec("rate2", {"source": "diffeo"})
    assert full == {"source": "diffeo", "n_train": 1000, "n_test": 1000, "seed": 0, "d": 2,
                    "map_seed": 0, "alpha": 0.8, "beta": 1.5, "gamma": 0.5}  # fmt: skip
    for bad, key in [({"d": 1}, "d"), ({"alpha": 2.0}, "alpha"), ({"gamma": -1}, "gamma"),
                     ({"n_train": 0}, "n_train"), ({"width": 3}, "width")]:  # fmt: skip
        with pytest.raises(ConfigError, match=f"datasets.rate2.{key}"):
            validate_spec("rate2", {"source": "diffeo", **bad})


def test_diffeo_prepared_round_trip(tmp_path) -> None:
    import torch

    from orthskip.data import load_prepared, read_manifest
    from orthskip.stages.prepare import prepare_dataset

    spec = {"source": "diffeo", "d": 3, "n_train": 50, "n_test": 20, "seed": 4, "map_seed": 2}
    out, man = tmp_path / "r.pt", tmp_path / "r.json"
    prepare_dataset("rate3", spec, out, man)
    info = read_manifest(man)
    assert info["task"] == "regression" and info["output_dim"] == info["num_classes"] == 3
    assert info["classes"] == [] and "class_counts_train" not in info
    p = load_prepared(out, man)
    assert p.task == "regression" and p.num_classes == 3 and p.input_shape == (3,)
    assert p.y_train.dtype == torch.float32 and p.y_train.shape == (50, 3)
    assert p.x_test.shape == (20, 3) and p.meta["mean"] == [0.0] * 3 and p.meta["std"] == [1.0] * 3
    # not normalised: the stored x are the N(0, I) draws and y = h(x) to float32 precision
    h = _h(3, map_seed=2)
    np.testing.assert_allclose(p.y_train.numpy(), h(p.x_train.double()).numpy(), atol=1e-5)
    rng = np.random.default_rng(4)
    np.testing.assert_allclose(p.x_train.numpy(), rng.standard_normal((70, 3))[:50], rtol=1e-6)
    # byte-identical on a second prepare; a classification set still loads as before
    prepare_dataset("rate3", spec, tmp_path / "b.pt", tmp_path / "b.json")
    assert (tmp_path / "b.pt").read_bytes() == out.read_bytes()
    prepare_dataset("m", {"source": "moons", "n_train": 20, "n_test": 10}, tmp_path / "m.pt",
                    tmp_path / "m.json")  # fmt: skip
    c = load_prepared(tmp_path / "m.pt", tmp_path / "m.json")
    assert c.task == "classification" and c.y_train.dtype == torch.int64 and c.num_classes == 2


# ---------------------------------------------------------------- findings.md


def _holm_by_hand(ps: list[float]) -> list[float]:
    """Holm's step-down adjustment written out: the k-th smallest of n p-values times
    (n − k), capped at 1, never below the one before it."""
    order = sorted(range(len(ps)), key=lambda k: ps[k])
    out, running = [0.0] * len(ps), 0.0
    for rank, k in enumerate(order):
        running = max(running, min(1.0, (len(ps) - rank) * ps[k]))
        out[k] = running
    return out


def test_findings_on_the_fixture(metrics_dir, tmp_path):
    from findings_md import findings_of, rows, section
    from scipy import stats as sps

    from orthskip.stages.tables import write_findings
    from orthskip.tables.identity_rate import identity_rate_frame

    text = findings_of(metrics_dir)
    assert text.startswith("# Findings")
    # the rate: the fixture's orth_learned falls like log m / m, with the frame's margin
    layers = pd.read_parquet(metrics_dir / "layers.parquet")
    cells = pd.read_parquet(metrics_dir / "cells.parquet")
    f = identity_rate_frame(layers, cells).set_index(["dataset", "variant"])
    rate = {(r["setting"], r["quantity"], r["variant"]): r for r in rows(section(text, "Rate"))}
    assert {s for s, _, _ in rate} == {"moons / mlp", "digits / cifar_resnet"}
    r = f.loc[("moons", "orth_learned")]
    row = rate[("moons / mlp", "‖Q − I‖_F/√n", "orth_learned")]
    assert row == {"setting": "moons / mlp", "quantity": "‖Q − I‖_F/√n",
                   "variant": "orth_learned", "recipe": "sgd lr 0.1, cosine, cap 4 epochs",
                   "trained to": "convergence", "m": "4–16",
                   "best model": "C·log m / m",
                   "ΔAIC to runner-up": f"{r['margin']:.1f}", "a": f"{r['exponent']:.2f}",
                   "95 % CI of a": f"[{r['exponent_lo']:.2f}, {r['exponent_hi']:.2f}]",
                   "seeds": "3"}  # fmt: skip
    # Haar start: start → end from the raw rows, and the verdict
    starts = section(text, "Starts far from I")
    g = layers[(layers["variant"] == HAAR_VARIANT) & (layers["metric"] == "dist_identity")
               & (layers["stat"] == "fro_rel") & (layers["depth"] == 8)]  # fmt: skip
    start = g[g["epoch"] == 0].groupby("seed")["value"].mean()
    end = g[g["epoch"] == 4].groupby("seed")["value"].mean()
    moved = rows(starts, "Significant")
    assert [(r["variant"], r["m"]) for r in moved] == [(HAAR_VARIANT, m) for m in ("4", "8", "16")]
    m8 = next(r for r in moved if r["m"] == "8")
    assert m8["‖Q − I‖_F/√n start → end"] == f"{start.mean():.3f} → {end.mean():.3f}"
    p8 = sps.ttest_rel(end, start).pvalue
    assert m8["p"] == ("<0.001" if p8 < 1e-3 else f"{p8:.3f}")
    assert m8["direction"] == "toward I" and rows(starts, "Not significant") == []
    assert f"{HAAR_VARIANT} (moons / mlp) at 3 of 3 depths" in starts
    assert "orth_fixed" not in starts  # a frozen skip is not a learned start
    # accuracy: Holm over each setting's paired t-tests, computed here from cells.parquet
    cells = pd.read_parquet(metrics_dir / "cells.parquet")
    acc = section(text, "Test score vs identity")
    want_sig, want_rest = set(), set()
    for (ds, arch), c in cells.groupby(["dataset", "arch"]):
        c = c.copy()
        c.loc[c["status"] != "ok", "test_acc"] = np.nan
        ref = c[c["variant"] == "identity"].set_index(["depth", "seed"])["test_acc"]
        keys, ps = [], []
        for (variant, depth), v in c[c["variant"] != "identity"].groupby(["variant", "depth"]):
            a = v.set_index(["depth", "seed"])["test_acc"]
            both = pd.concat([a, ref.loc[a.index]], axis=1).dropna()
            keys.append((f"{ds} / {arch}", variant, str(depth)))
            ps.append(sps.ttest_rel(both.iloc[:, 0], both.iloc[:, 1]).pvalue)
        adj = _holm_by_hand(ps)
        want_sig |= {k for k, p in zip(keys, adj, strict=True) if p < 0.05}
        want_rest |= {k for k, p in zip(keys, adj, strict=True) if p >= 0.05}
        np.testing.assert_allclose(adj, holm(ps))
    sig, rest = rows(acc, "Significant"), rows(acc, "Not significant")
    assert {(r["setting"], r["variant"], r["depth"]) for r in sig} == want_sig
    assert {(r["setting"], r["variant"], r["depth"]) for r in rest} == want_rest
    assert ("moons / mlp", "none", "16") in want_sig  # the fixture's plain nets degrade
    assert rows(acc, "Not tested") == []
    assert "moons / mlp 1 of 21" in acc
    out = tmp_path / "findings.md"
    write_findings(metrics_dir, out)
    assert out.read_text() == text


def test_findings_without_results(tmp_path):
    from findings_md import findings_of

    assert "No results in this run." in findings_of(tmp_path / "absent")


def _cells_frame(spec: dict[tuple[str, int], list[float]], dataset: str = "c") -> pd.DataFrame:
    """cells.parquet rows: (variant, depth) -> test accuracy per seed (NaN: diverged)."""
    rows = []
    for (variant, depth), accs in spec.items():
        for seed, acc in enumerate(accs):
            rows.append({"dataset": dataset, "arch": "mlp", "variant": variant, "skip": variant,
                         "depth": depth, "seed": seed, "test_acc": acc,
                         "status": "ok" if np.isfinite(acc) else "diverged"})  # fmt: skip
    return pd.DataFrame(rows)


def test_findings_list_comparisons_without_a_test_as_not_tested(tmp_path):
    """A side that diverged in every seed (or a single seed) leaves no paired test: "not tested
    (diverged: …)", never "not significant"; Holm counts only the comparisons tested."""
    from findings_md import findings_of, rows, section
    from scipy import stats as sps

    nan = float("nan")
    spec = {
        ("identity", 2): [0.95, 0.96, 0.97],
        ("identity", 8): [0.95, 0.96, nan],  # one identity seed lost
        ("linear", 2): [0.94, 0.965, 0.96],
        ("linear", 8): [nan, nan, nan],  # every seed diverged
        ("none", 2): [0.60, 0.62, 0.61],
        ("none", 8): [0.50, 0.52, 0.53],
    }
    one_seed = {("identity", 8): [0.9], ("none", 8): [0.5]}
    cells = pd.concat([_cells_frame(spec), _cells_frame(one_seed, "d")], ignore_index=True)
    cells.to_parquet(tmp_path / "cells.parquet")
    acc = section(findings_of(tmp_path), "Test score vs identity")
    untested = {(r["setting"], r["variant"], r["depth"]): r["why"]
                for r in rows(acc, "Not tested")}  # fmt: skip
    assert untested == {
        ("c / mlp", "linear", "8"): "diverged: linear 3 of 3 seeds, identity 1 of 3 seeds",
        ("d / mlp", "none", "8"): "1 seed pair: no test",
    }
    # Holm over the three tested comparisons, computed here
    ps = {}
    for variant, depth in (("linear", 2), ("none", 2), ("none", 8)):
        a, b = np.array(spec[(variant, depth)]), np.array(spec[("identity", depth)])
        ok = np.isfinite(a) & np.isfinite(b)
        ps[(variant, depth)] = sps.ttest_rel(a[ok], b[ok]).pvalue
    adj = dict(zip(ps, _holm_by_hand(list(ps.values())), strict=True))
    tested = rows(acc, "Significant") + rows(acc, "Not significant")
    by_key = {(r["variant"], int(r["depth"])): r for r in tested}
    assert set(by_key) == set(ps) and all(r["setting"] == "c / mlp" for r in tested)
    for key, p in adj.items():
        assert by_key[key]["p (Holm)"] == (f"{p:.3f}" if p >= 1e-3 else "<0.001")
        assert (by_key[key] in rows(acc, "Significant")) == (p < 0.05)
    none8 = by_key[("none", 8)]
    assert none8["value"] == f"{100 * (np.mean([0.50, 0.52]) - 0.955):+.2f}"
    assert none8["pairs"] == "2" and none8["diverged, left out"] == "identity 1 of 3 seeds"
    n_sig = sum(p < 0.05 for p in adj.values())
    assert f"c / mlp {n_sig} of 3, d / mlp 0 of 0" in acc and "2 not tested" in acc


def test_findings_quote_the_orthogonal_approximation(metrics_dir):
    from findings_md import findings_of, rows, section

    part = section(findings_of(metrics_dir), "Orthogonal approximation")
    approx = pd.read_parquet(metrics_dir / "approx.parquet")
    a = approx[(approx["kind"] == "orth_learned") & (approx["depth"] == 8)]
    mean = a.groupby("phase")[["score", "dist_identity"]].mean()
    table = rows(part)
    row = next(r for r in table if (r["kind"], r["depth"]) == ("orth_learned", "8"))
    assert row["setting"] == "moons / mlp" and row["correction"] == "with"
    assert row["epochs"] == "2" and row["score"] == "acc (%)"
    assert row["before → swapped → fine-tuned"] == " → ".join(
        f"{100 * mean.loc[p, 'score']:.2f}" for p in ("before", "swapped", "finetuned")
    )
    assert row["‖W − I‖ swapped → fine-tuned"] == (f"{mean.loc['swapped', 'dist_identity']:.3f}"
        f" → {mean.loc['finetuned', 'dist_identity']:.3f}")  # fmt: skip
    # no approximation rows for digits
    assert {r["setting"] for r in table} == {"moons / mlp"}
    # ‖W − I‖ at the swap vs m: the fixture's log m / m, one point per cell
    sw = approx[(approx["phase"] == "swapped") & (approx["kind"] == "orth_fixed")]
    slope = np.polyfit(np.log(sw["n_swapped"]), np.log(sw["dist_identity"]), 1)[0]
    fit = rows(part.split("swapped blocks")[1])
    assert fit == [{"setting": "moons / mlp", "m": "4–16", "cells": "9",
                    "log–log slope": f"{slope:.2f}", "95 % CI": fit[0]["95 % CI"],
                    "log m / m": fit[0]["log m / m"]}]  # fmt: skip
