"""Tables: numbers checked against values computed independently from the fixture."""

from __future__ import annotations

import math
import re
import statistics

import numpy as np
import pandas as pd
import pytest
from fixture_results import DIVERGED, HAAR
from scipy import stats as sps

from orthskip.errors import ConfigError
from orthskip.stages.tables import TABLES, make_table
from orthskip.tables.accuracy import accuracy_frame
from orthskip.tables.identity_rate import identity_rate_frame
from orthskip.tables.paired import paired_frame
from orthskip.tables.render import latex_escape


@pytest.fixture(scope="module")
def cells(metrics_dir) -> pd.DataFrame:
    return pd.read_parquet(metrics_dir / "cells.parquet")


def _md_rows(text: str) -> list[list[str]]:
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split(" | ")] for ln in lines]


def test_accuracy_frame_matches_plain_python(cells):
    # grouped by variant (changed from skip: orth_learned_haar is its own group)
    f = accuracy_frame(cells).set_index(["dataset", "arch", "depth", "variant"])
    assert (f.xs(HAAR, level="variant")["skip"] == "orth_learned").all()
    for key, g in cells.groupby(["dataset", "arch", "depth", "variant"]):
        ok = [100 * a for a, s in zip(g["test_acc"], g["status"], strict=True)
              if s == "ok" and math.isfinite(a)]  # fmt: skip
        r = f.loc[key]
        assert r["n"] == len(ok)
        assert r["n_diverged"] == len(g) - len(ok)
        assert r["mean"] == pytest.approx(statistics.fmean(ok))
        assert r["std"] == pytest.approx(statistics.stdev(ok))
        at_val = [100 * a for a, st in zip(g["test_acc_at_best_val"], g["status"], strict=True)
                  if st == "ok" and math.isfinite(a)]  # fmt: skip
        assert r["mean_at_best_val"] == pytest.approx(statistics.fmean(at_val))


def test_accuracy_table_bold_best_and_diverged_count(metrics_dir, cells, tmp_path):
    md, tex = tmp_path / "acc.md", tmp_path / "acc.tex"
    make_table("accuracy", metrics_dir, md, tex)
    rows = _md_rows(md.read_text())
    header, body = rows[0], rows[2:]
    assert header[:3] == ["dataset", "arch", "depth"]
    n_rows = cells.groupby(["dataset", "arch", "depth"]).ngroups
    assert len(body) == n_rows
    for row in body:
        dataset, arch, depth = row[0], row[1], int(row[2])
        g = cells[(cells["dataset"] == dataset) & (cells["arch"] == arch)
                  & (cells["depth"] == depth) & (cells["status"] == "ok")]  # fmt: skip
        means = g.groupby("variant")["test_acc"].mean() * 100
        best = means.idxmax()
        bold = [header[k] for k, c in enumerate(row) if c.startswith("**")]
        assert bold == [best]
        cell_text = row[header.index(best)]
        assert cell_text.startswith(f"**{means[best]:.2f} ± ")
    # the diverged seed is counted, not hidden
    ds, arch, skip, depth, _ = DIVERGED
    row = next(r for r in body if r[:3] == [ds, arch, str(depth)])
    assert row[header.index(skip)].endswith("(2; 1 div.)")
    # the variant has its own column, right after its kind
    assert header.index(HAAR) == header.index("orth_learned") + 1


def test_results_without_variant_column_group_by_skip(metrics_dir, tmp_path):
    for name in ("cells", "history", "layers", "warp"):
        df = pd.read_parquet(metrics_dir / f"{name}.parquet")
        df = df[df["variant"] == df["skip"]].drop(columns=["variant"])
        df.to_parquet(tmp_path / f"{name}.parquet")
    md = tmp_path / "acc.md"
    make_table("accuracy", tmp_path, md, tmp_path / "acc.tex")
    header = _md_rows(md.read_text())[0]
    assert "orth_learned" in header and HAAR not in header
    f = paired_frame(pd.read_parquet(tmp_path / "cells.parquet"))
    assert set(f["variant"]) == set(f["skip"]) and "identity" not in set(f["variant"])


def test_paired_frame_matches_hand_t_test(cells):
    f = paired_frame(cells).set_index(["dataset", "arch", "depth", "variant"])
    cases = [("digits", "cifar_resnet", 20, "none"), ("moons", "mlp", 8, "orth_learned"),
             ("moons", "mlp", 8, HAAR)]  # fmt: skip
    for key in cases:
        sel = (cells["dataset"] == key[0]) & (cells["arch"] == key[1]) & (cells["depth"] == key[2])
        a = cells[sel & (cells["variant"] == key[3])].set_index("seed")["test_acc"] * 100
        b = cells[sel & (cells["variant"] == "identity")].set_index("seed")["test_acc"] * 100
        d = (a - b).to_numpy()
        t = d.mean() / (d.std(ddof=1) / math.sqrt(d.size))
        r = f.loc[key]
        assert r["n_pairs"] == 3
        assert r["mean_diff"] == pytest.approx(d.mean())
        assert r["p_value"] == pytest.approx(2 * sps.t.sf(abs(t), d.size - 1))
        half = sps.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size)
        assert (r["ci_lo"], r["ci_hi"]) == pytest.approx((d.mean() - half, d.mean() + half))
    # the diverged run drops out of its pair
    ds, arch, skip, depth, _ = DIVERGED
    r = f.loc[(ds, arch, depth, skip)]
    assert r["n_pairs"] == 2 and r["n_diverged"] == 1
    assert "identity" not in f.index.get_level_values("variant")
    assert f.loc[("moons", "mlp", 8, HAAR), "skip"] == "orth_learned"


def test_identity_rate_matches_independent_fit(metrics_dir, cells, tmp_path):
    layers = pd.read_parquet(metrics_dir / "layers.parquet")
    f = identity_rate_frame(layers, cells).set_index(["dataset", "arch", "variant"])
    cell = ["dataset", "arch", "variant", "skip", "depth", "seed"]
    for key in [("moons", "mlp", "orth_learned"), ("digits", "cifar_resnet", "orth_learned"),
                ("moons", "mlp", HAAR)]:  # fmt: skip
        g = layers[(layers["dataset"] == key[0]) & (layers["arch"] == key[1])
                   & (layers["variant"] == key[2])]  # fmt: skip
        xs, ys = [], []
        for _, c in g.groupby(cell):
            last = c[c["epoch"] == c["epoch"].max()]
            trans = set(last.loc[last["layer_kind"] == "transition", "layer_index"])
            blocks = last.loc[last["layer_kind"].isin(["block", "transition"]), "layer_index"]
            # changed from spec: the non-saturating ‖Q − I‖_F/√n
            spec = last[(last["metric"] == "dist_identity") & (last["stat"] == "fro_rel")
                        & ~last["layer_index"].isin(trans)]  # fmt: skip
            xs.append(math.log(blocks.nunique()))
            ys.append(math.log(spec["value"].mean()))
        slope = np.polyfit(xs, ys, 1)[0]
        r = f.loc[key]
        assert r["slope"] == pytest.approx(slope, abs=1e-9)
        assert r["n_points"] == len(xs) == 9
        assert r["ci_lo"] < slope < r["ci_hi"]
    # the fixture's orth_learned decays like log m / m: the prediction lies inside the interval
    r = f.loc[("moons", "mlp", "orth_learned")]
    assert r["ci_lo"] < r["predicted"] < r["ci_hi"]
    # changed: only the learned orthogonal kinds and the linear control are fitted; a fixed
    # (frozen) skip and orth_jacobian's B are not what the rate question is about
    kinds = dict(zip(f.index.get_level_values("variant"), f["skip"], strict=True))
    assert set(kinds.values()) == {"linear", "orth_learned", "orth_manifold"}
    assert kinds[HAAR] == "orth_learned" and "orth_fixed" not in kinds
    md = tmp_path / "rate.md"
    make_table("identity_rate", metrics_dir, md, tmp_path / "rate.tex")
    text = md.read_text()
    assert "orth_fixed" not in text.split("\n\n")[0] and "control" in text


def _strip_math(tex: str) -> str:
    return re.sub(r"\$[^$]*\$", "", tex)


@pytest.mark.parametrize("name", sorted(TABLES))
def test_every_table_writes_valid_latex_and_markdown(name, metrics_dir, tmp_path):
    md, tex = tmp_path / f"{name}.md", tmp_path / f"{name}.tex"
    make_table(name, metrics_dir, md, tex)
    body = [ln for ln in tex.read_text().splitlines() if not ln.startswith("%")]
    assert body[0].startswith(r"\begin{tabular}{") and body[1] == r"\toprule"
    assert r"\midrule" in body and body[-1] == r"\end{tabular}"
    ncols = len(re.match(r"\\begin\{tabular\}\{(\w+)\}", body[0]).group(1))
    rows = [ln for ln in body if ln.endswith(r"\\")]
    assert len(rows) >= 2
    for ln in rows:
        assert _strip_math(ln).count("&") - _strip_math(ln).count(r"\&") == ncols - 1
        assert not re.search(r"(?<!\\)[_%#]", _strip_math(ln)), ln
    md_rows = _md_rows(md.read_text())
    assert len({len(r) for r in md_rows}) == 1 and len(md_rows) == len(rows) + 1
    # the same rows as a longtable beside it, the header once per page head
    long = [ln for ln in (tmp_path / f"{name}.long.tex").read_text().splitlines()
            if not ln.startswith("%")]  # fmt: skip
    assert long[0] == body[0].replace("tabular", "longtable") and long[-1] == r"\end{longtable}"
    header = rows[0]
    assert long.count(header) == 2 and r"\endhead" in long and r"\endlastfoot" in long
    assert [ln for ln in long if ln.endswith(r"\\") and "caption" not in ln
            and "Continued" not in ln and ln != header] == rows[1:]  # fmt: skip


def test_latex_escape():
    assert latex_escape("orth_learned 5% & #1") == r"orth\_learned 5\% \& \#1"
    assert latex_escape("1.0 ± 0.2") == r"1.0 $\pm$ 0.2"
    # whole formulas as mathematics, the text around them escaped
    assert latex_escape("mean ‖Q − I‖_F/√n of a_b") == r"mean $\|Q - I\|_F/\sqrt{n}$ of a\_b"
    assert latex_escape("ΔAIC C·m^(−a)") == r"$\Delta$AIC $C\,m^{-a}$"


def test_tables_without_data_still_write(tmp_path):
    for name in TABLES:
        md, tex = tmp_path / f"{name}.md", tmp_path / f"{name}.tex"
        make_table(name, tmp_path / "absent", md, tex)
        assert "no data for this table in this run" in md.read_text()
        assert r"\toprule" in tex.read_text()


def test_unknown_table_names_allowed_values(tmp_path):
    with pytest.raises(ConfigError, match="accuracy"):
        make_table("nope", tmp_path, tmp_path / "a.md", tmp_path / "a.tex")


def _regression_cells(rng: np.random.Generator) -> pd.DataFrame:
    """A regression setting whose identity variant has a recipe name (rate_identity), beside
    a classification one; every regression cell is ok, with test_acc NaN as training writes."""
    rows = []
    for variant, skip, shift in (("rate_identity", "identity", 0.0), ("rate_lin", "linear", -0.2)):
        for depth in (2, 8):
            for seed in range(4):
                r2 = 0.9 + shift + 0.01 * rng.standard_normal()
                rows.append(dict(dataset="diffeo2", arch="mlp", variant=variant, skip=skip,
                                 depth=depth, seed=seed, status="ok", task="regression",
                                 test_acc=np.nan, test_r2=r2, test_acc_at_best_val=np.nan,
                                 test_r2_at_best_val=r2))  # fmt: skip
    for variant in ("identity", "orth_fixed"):
        for seed in range(4):
            acc = 0.8 + 0.01 * rng.standard_normal()
            rows.append(dict(dataset="circles", arch="mlp", variant=variant, skip=variant,
                             depth=2, seed=seed, status="ok", task="classification",
                             test_acc=acc, test_r2=np.nan, test_acc_at_best_val=acc,
                             test_r2_at_best_val=np.nan))  # fmt: skip
    return pd.DataFrame(rows)


def test_regression_cells_are_scored_by_r2_against_their_identity_variant(tmp_path):
    from findings_md import findings_of, rows, section

    cells = _regression_cells(np.random.default_rng(3))
    acc = accuracy_frame(cells).set_index(["dataset", "depth", "variant"])
    for (ds, depth, variant), g in cells.groupby(["dataset", "depth", "variant"]):
        r = acc.loc[(ds, depth, variant)]
        want = g["test_r2"] if ds == "diffeo2" else 100 * g["test_acc"]
        assert r["n_diverged"] == 0 and r["n"] == len(g)  # R² counts: nothing "diverged"
        assert r["mean"] == pytest.approx(want.mean())
    f = paired_frame(cells).set_index(["dataset", "depth", "variant"])
    assert set(f.loc["diffeo2", "reference"]) == {"rate_identity"}
    assert set(f.loc["circles", "reference"]) == {"identity"}
    for depth in (2, 8):
        a = cells[(cells.variant == "rate_lin") & (cells.depth == depth)]["test_r2"].to_numpy()
        b = cells[(cells.variant == "rate_identity") & (cells.depth == depth)]["test_r2"]
        diff = a - b.to_numpy()
        r = f.loc[("diffeo2", depth, "rate_lin")]
        assert r["mean_diff"] == pytest.approx(diff.mean())
        assert r["p_value"] == pytest.approx(sps.ttest_rel(a, b.to_numpy()).pvalue)
    cells.to_parquet(tmp_path / "cells.parquet")
    acc = section(findings_of(tmp_path), "Test score vs identity (test R² / test accuracy (%))")
    stats = {(r["setting"], r["variant"], r["depth"]): (r["statistic"], r["value"])
             for r in rows(acc, "Significant") + rows(acc, "Not significant")}  # fmt: skip
    r2, value = stats[("diffeo2 / mlp", "rate_lin", "2")]
    assert r2 == "Δ test R²" and re.fullmatch(r"-0\.\d{3}", value)
    assert stats[("circles / mlp", "orth_fixed", "2")][0] == "Δ test acc (pp)"


# ---- the package's pieces on small frames ----------------------------------------------


def test_one_p_value_format():
    from orthskip.tables.formats import p_value

    cases = {0.0: "<0.001", 0.000999: "<0.001", 0.001: "0.001", 0.0456: "0.046", 1.0: "1.000",
             float("nan"): "–", float("inf"): "–"}  # fmt: skip
    assert {p: p_value(p) for p in cases} == cases


def test_renderers_on_a_two_by_two_table():
    from orthskip.tables.render import Table, render_latex, render_markdown

    t = Table.of_rows(["a_b", "Δ"], [["x|y", "1.0 ± 0.1"], ["z", "−2"]], bold={(1, 1)},
                      note="n ≥ 2", align="lr")  # fmt: skip
    assert render_markdown(t) == (
        "| a_b | Δ |\n| :--- | ---: |\n| x\\|y | 1.0 ± 0.1 |\n| z | **−2** |\n\nn ≥ 2\n"
    )
    assert render_latex(t) == (
        "% n >= 2\n\\begin{tabular}{lr}\n\\toprule\na\\_b & $\\Delta$ \\\\\n\\midrule\n"
        "x|y & 1.0 $\\pm$ 0.1 \\\\\nz & \\textbf{$-$2} \\\\\n\\bottomrule\n\\end{tabular}\n"
    )


def test_holm_is_applied_within_each_setting():
    """Two settings, two comparisons each: findings' p (Holm) is each setting's own Holm
    adjustment, written out here, not one over all four."""
    from orthskip.tables.findings import accuracy_findings

    accs = {("s1", "a"): [0.90, 0.91, 0.92, 0.93], ("s1", "b"): [0.80, 0.83, 0.79, 0.84],
            ("s1", "identity"): [0.91, 0.915, 0.925, 0.94],
            ("s2", "a"): [0.70, 0.74, 0.69, 0.75], ("s2", "b"): [0.60, 0.66, 0.61, 0.69],
            ("s2", "identity"): [0.71, 0.73, 0.70, 0.74]}  # fmt: skip
    cells = pd.DataFrame([dict(dataset=ds, arch="mlp", variant=v, skip=v, depth=4, seed=k,
                               test_acc=a, status="ok")
                          for (ds, v), xs in accs.items() for k, a in enumerate(xs)])  # fmt: skip
    f = accuracy_findings(cells).set_index(["dataset", "variant"])
    for ds in ("s1", "s2"):
        p = {v: sps.ttest_rel(accs[(ds, v)], accs[(ds, "identity")]).pvalue for v in "ab"}
        lo, hi = sorted(p, key=p.get)
        want = {lo: min(1.0, 2 * p[lo])}
        want[hi] = max(want[lo], min(1.0, p[hi]))
        for v in "ab":
            r = f.loc[(ds, v)]
            assert r["p_holm"] == pytest.approx(want[v])
            assert bool(r["significant"]) == (want[v] < 0.05) and bool(r["tested"])
            assert r["variant_diverged"] == r["reference_diverged"] == 0


def test_a_new_table_is_one_registry_entry(metrics_dir, tmp_path, monkeypatch):
    """The stage reads the files a table names, in that order, and renders what it returns."""
    from orthskip.stages import tables as stage
    from orthskip.tables.render import Table

    seen = []

    def counts(cells: pd.DataFrame, approx: pd.DataFrame) -> Table:
        seen.append((cells, approx))
        return Table.of_rows(["rows"], [[str(len(cells))], [str(len(approx))]])

    monkeypatch.setitem(stage.TABLES, "counts", stage.TableSpec(("cells", "approx"), counts))
    make_table("counts", metrics_dir, tmp_path / "c.md", tmp_path / "c.tex")
    cells, approx = (pd.read_parquet(metrics_dir / f"{n}.parquet") for n in ("cells", "approx"))
    pd.testing.assert_frame_equal(seen[0][0], cells)
    pd.testing.assert_frame_equal(seen[0][1], approx)
    assert _md_rows((tmp_path / "c.md").read_text())[2:] == [[str(len(cells))], [str(len(approx))]]


def test_findings_state_when_the_compared_runs_trained_for_other_budgets(tmp_path):
    """A stopping rule that ends a variant's runs before identity's: findings says so, with
    the median epochs of each side (diverged runs, which are not compared, left out); runs of
    one budget get no such sentence."""
    from findings_md import findings_of, section

    rows = []
    for variant, epochs in (("identity", 600), ("orth_learned", 240), ("linear", 600)):
        for seed in range(4):
            rows.append(dict(dataset="d", arch="mlp", variant=variant, skip=variant, depth=4,
                             seed=seed, test_acc=0.8 + 0.01 * seed, status="ok",
                             epochs=epochs + seed))  # fmt: skip
    rows.append(dict(dataset="d", arch="mlp", variant="orth_learned", skip="orth_learned",
                     depth=4, seed=4, test_acc=np.nan, status="diverged", epochs=3))  # fmt: skip
    pd.DataFrame(rows).to_parquet(tmp_path / "cells.parquet")
    acc = section(findings_of(tmp_path), "Test score vs identity")
    assert ("Budgets differ in d / mlp: the stopping rule ended runs at other epochs than "
            "identity's in 1 of 2 comparisons (median epochs per variant and depth: 242, "
            "against 602 for identity)") in acc  # fmt: skip
    same = pd.DataFrame(rows).assign(epochs=600)
    same.to_parquet(tmp_path / "cells.parquet")
    assert "Budgets differ" not in section(findings_of(tmp_path), "Test score vs identity")


def test_paired_frame_pairs_on_seed_and_counts_the_variants_lost():
    rows = []
    for seed, (ref, other) in enumerate([(0.9, 0.8), (0.92, 0.85), (0.91, np.nan)]):
        for variant, acc in (("identity", ref), ("x", other)):
            rows.append(dict(dataset="d", arch="a", depth=8, seed=seed, variant=variant,
                             skip=variant, test_acc=acc, status="ok"))  # fmt: skip
    # a seed of the variant without an identity run pairs with nothing
    rows.append(dict(dataset="d", arch="a", depth=8, seed=9, variant="x", skip="x",
                     test_acc=0.1, status="ok"))  # fmt: skip
    r = paired_frame(pd.DataFrame(rows)).iloc[0]
    assert r["variant"] == "x" and r["n_pairs"] == 2 and r["n_diverged"] == 1
    assert r["mean_diff"] == pytest.approx(100 * ((0.8 - 0.9) + (0.85 - 0.92)) / 2)
    assert r["n_matched"] == 0 and np.isnan(r["budget"])  # no epoch counts: last epochs


def _budget_runs() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Identity trained 10 epochs in every seed; variant ``early`` stopped at 4 + seed, and
    ``late`` ran 12 where identity stopped at 10: cells and each epoch's test accuracy."""
    rng = np.random.default_rng(7)
    cells, history = [], []
    runs = {"identity": lambda s: 10, "early": lambda s: 4 + s, "late": lambda s: 12}
    for variant, epochs in runs.items():
        for seed in range(4):
            acc = rng.uniform(0.5, 0.9, epochs(seed) + 1)
            for e, a in enumerate(acc):
                history.append(dict(dataset="d", arch="mlp", variant=variant, skip="x",
                                    depth=4, seed=seed, epoch=e, test_acc=a))  # fmt: skip
            cells.append(dict(dataset="d", arch="mlp", variant=variant, skip="x", depth=4,
                              seed=seed, epochs=epochs(seed), test_acc=acc[-1], status="ok",
                              recipe="sgd"))  # fmt: skip
    cells = pd.DataFrame(cells).assign(skip=lambda c: c["variant"].replace(
        {"early": "linear", "late": "orth_learned"}))  # fmt: skip
    return cells, pd.DataFrame(history)


def test_pairs_of_other_budgets_are_compared_at_the_shorter_runs_last_epoch():
    """Where a stopping rule ended one run of a pair first, the other's score is its
    history's at that epoch (whichever side stopped first); without a history the last
    epochs are compared, as where the budgets are equal."""
    cells, history = _budget_runs()
    h = history.set_index(["variant", "seed", "epoch"])["test_acc"]
    f = paired_frame(cells, history).set_index("variant")
    early = [h[("early", s, 4 + s)] - h[("identity", s, 4 + s)] for s in range(4)]
    late = [h[("late", s, 10)] - h[("identity", s, 10)] for s in range(4)]
    for variant, want, at in (("early", early, 5.5), ("late", late, 10.0)):
        r = f.loc[variant]
        assert r["mean_diff"] == pytest.approx(100 * np.mean(want), rel=1e-12)
        assert r["p_value"] == pytest.approx(sps.ttest_1samp(want, 0.0).pvalue, rel=1e-9)
        assert r["budget"] == at and r["n_matched"] == 4 and r["n_pairs"] == 4
    last = paired_frame(cells).set_index("variant").loc["early"]
    final = cells.set_index(["variant", "seed"])["test_acc"]
    want = [final[("early", s)] - final[("identity", s)] for s in range(4)]
    assert last["mean_diff"] == pytest.approx(100 * np.mean(want), rel=1e-12)
    assert last["n_matched"] == 0


def test_findings_say_how_other_budgets_and_recipes_were_compared(tmp_path):
    """With history.parquet the pairs of other budgets are compared at equal epochs and
    findings says so (no "Budgets differ" confound); a variant trained with another recipe
    than identity is named as a confound, and none is where the recipes agree."""
    from findings_md import findings_of, section

    cells, history = _budget_runs()
    cells.loc[cells["variant"] == "late", "recipe"] = "adamw"
    cells.to_parquet(tmp_path / "cells.parquet")
    history.to_parquet(tmp_path / "history.parquet")
    acc = section(findings_of(tmp_path), "Test score vs identity")
    assert ("Budgets matched in d / mlp: the stopping rule ended runs at other epochs than "
            "identity's in 2 of 2 comparisons (median epochs per variant and depth: 6 to "
            "12, against 10 for identity); each seed pair is compared at the shorter run's "
            "last epoch") in acc  # fmt: skip
    assert "Budgets differ" not in acc
    assert ("Recipes differ in d / mlp: late with “adamw”, against identity's “sgd” (1 of 2 "
            "comparisons); a difference there includes the recipe") in acc  # fmt: skip
    cells.assign(recipe="sgd").to_parquet(tmp_path / "cells.parquet")
    assert "Recipes differ" not in section(findings_of(tmp_path), "Test score vs identity")
