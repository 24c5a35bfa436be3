"""Config checking: bad input fails before any job starts, naming the key and allowed values."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest

from orthskip.config.grid import (
    Cell,
    approx_cells,
    approx_defaults,
    cell_config,
    cells,
    load_config,
    prepare_config,
    read_pack_config,
    resume_key,
)
from orthskip.errors import ConfigError
from tests.workflow import snakemake, tiny_config


def _bad(path: list, value) -> dict:
    cfg = tiny_config()
    node = cfg
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return cfg


BAD_INPUTS = [
    # (config, words the message must contain)
    (
        _bad(["grid", 0, "variants"], ["identity", "orthogonal"]),
        ["grid[0].variants", "orthogonal", "orth_learned", "identity"],
    ),
    (_bad(["grid", 0, "datasets"], ["circle"]), ["grid[0].datasets", "circle", "circles"]),
    (_bad(["grid", 0, "depths"], [0, 2]), ["grid[0].depths", "0", ">= 1"]),
    (_bad(["grid", 0, "seeds"], []), ["grid[0].seeds", "non-empty"]),
    (_bad(["grid", 0, "arch"], "mlpp"), ["grid[0].arch", "mlpp", "mlp", "cifar_resnet"]),
]


def _misspelt_top_key() -> dict:
    cfg = tiny_config()
    cfg["trian"] = cfg.pop("train")
    return cfg


BAD_INPUTS.append((_misspelt_top_key(), ["trian", "train", "allowed"]))


def _with_variants(variants: dict, listed: list[str]) -> dict:
    cfg = tiny_config()
    cfg["variants"] = variants
    cfg["grid"][0]["variants"] = listed
    return cfg


BAD_INPUTS += [
    # a variant's override of a train key, checked where it lands
    (
        _with_variants(
            {"fast": {"skip": "identity", "train": {"optimizer": {"lr": -1}}}}, ["fast"]
        ),
        ["variants.fast.train.optimizer.lr", "-1"],
    ),
    (
        _with_variants({"fast": {"skip": "identity", "train": {"epochz": 3}}}, ["fast"]),
        ["variants.fast.train", "epochz"],
    ),
    (
        _with_variants(
            {"haar": {"skip": "orth_learned", "skip_options": {"init": "haarr"}}}, ["haar"]
        ),
        ["variants.haar", "init", "haar"],
    ),
    (
        _with_variants({"wide": {"skip": "identity", "model": {"widht": 4}}}, ["wide"]),
        ["variants.wide", "model.mlp.widht", "width"],
    ),
    (_with_variants({"x": {"skip": "orthogonal"}}, ["x"]), ["variants.x.skip", "orth_learned"]),
    (
        _with_variants({"linear": {"skip": "identity"}}, ["linear"]),
        ["variants.linear", "skip kind"],
    ),
    (
        _with_variants({"Bad-Name": {"skip": "identity"}}, ["identity"]),
        ["variants", "Bad-Name", "[a-z0-9_]+"],
    ),
    (_with_variants({}, ["fast"]), ["grid[0].variants", "fast", "allowed", "orth_learned"]),
    (
        _bad(["datasets"], {"my circles": {"source": "circles"}}),
        ["datasets", "my circles", "[A-Za-z0-9_-]+"],
    ),
    (_bad(["datasets"], {"c;rm": {"source": "circles"}}), ["datasets", "c;rm", "must match"]),
]


BAD_INPUTS += [
    # the approximation stage's section: typed, closed, and its filters must select cells
    (tiny_config(approx={"epochz": 3}), ["approx.epochz", "epochs", "allowed"]),
    (tiny_config(approx={"epochs": 0}), ["approx", "epochs", "minimum of 1"]),
    (
        tiny_config(approx={"kinds": ["orth_manifold"]}),
        ["approx", "kinds", "orth_manifold", "orth_fixed"],
    ),
    (
        tiny_config(approx={"variants": ["orth_learned"]}),
        ["approx.variants", "orth_learned", "not identity", "allowed: identity"],
    ),
    (tiny_config(approx={"depths": [2]}), ["approx.depths", "2", "allowed: 1, 3"]),
]


@pytest.mark.parametrize(("cfg", "words"), BAD_INPUTS)
def test_bad_config_is_refused_by_the_library(cfg, words):
    with pytest.raises(ConfigError) as err:
        prepare_config(copy.deepcopy(cfg))
    for word in words:
        assert word in str(err.value)


def test_bad_config_fails_in_snakemake_before_any_job_and_keeps_results(tmp_path):
    # A finished result from an earlier run must survive a failed run.
    keep = tmp_path / "results" / "metrics" / "cells.parquet"
    keep.parent.mkdir(parents=True)
    keep.write_bytes(b"earlier result")
    for cfg, words in BAD_INPUTS:
        proc = snakemake(tmp_path, cfg=cfg, check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0
        for word in words:
            assert word in out, out[-3000:]
        assert "rule train" not in out and "localrule" not in out
    assert keep.read_bytes() == b"earlier result"
    assert not (tmp_path / "results" / "data").exists()


def test_defaults_are_filled_and_cells_enumerated():
    cfg = prepare_config(tiny_config())
    assert cfg["train"]["optimizer"]["skip_weight_decay"] == 0.0
    assert cfg["train"]["schedule"]["name"] == "cosine"
    found = cells(cfg)
    assert len(found) == 4 and found == sorted(found)
    assert Cell.parse(found[0].path) == found[0]


def test_approx_cells_are_the_identity_kind_cells_kept_by_the_filters():
    raw = tiny_config()
    raw["variants"] = {"identity_lr": {"skip": "identity", "train": {"optimizer": {"lr": 0.1}}}}
    raw["grid"][0].update(variants=["identity", "orth_learned", "identity_lr"], seeds=[0, 1])
    cfg = prepare_config(copy.deepcopy(raw))
    assert cfg["approx"] == {"enabled": True, "epochs": 5, "kinds": ["orth_fixed", "orth_learned"],
                             "correction": True, "archs": None, "datasets": None,
                             "variants": None, "depths": None, "seeds": None}  # fmt: skip
    assert approx_defaults() == cfg["approx"]  # what the CLI by hand falls back to
    found = approx_cells(cfg)
    assert found == sorted(c for c in cells(cfg) if c.variant != "orth_learned")
    assert len(found) == 2 * 2 * 2  # 2 identity-kind variants × 2 depths × 2 seeds
    only = {"variants": ["identity_lr"], "depths": [3], "seeds": [1]}
    kept = approx_cells(prepare_config({**copy.deepcopy(raw), "approx": only}))
    assert kept == [Cell("circles", "mlp", "identity_lr", 3, 1)]
    assert approx_cells(prepare_config({**copy.deepcopy(raw), "approx": {"enabled": False}})) == []
    # each filter matches something, but not together
    raw["grid"].append({"arch": "cifar_resnet", "datasets": ["digits"], "variants": ["identity"],
                        "depths": [8], "seeds": [0]})  # fmt: skip
    with pytest.raises(ConfigError, match=r"'approx\.archs', 'approx\.depths'.*select no"):
        prepare_config({**raw, "approx": {"archs": ["cifar_resnet"], "depths": [3]}})


def test_snapshot_after_last_epoch_is_refused():
    cfg = tiny_config()
    cfg["train"]["snapshot_epochs"] = [0, 5]
    with pytest.raises(ConfigError, match=r"train\.snapshot_epochs"):
        prepare_config(cfg)


def test_resume_key_ignores_epoch_count_but_not_the_recipe():
    cfg = prepare_config(tiny_config())
    cell = cells(cfg)[0]
    a = cell_config(cfg, cell)
    b = replace(a, train={**a.train, "epochs": 10})
    c = replace(a, train={**a.train, "optimizer": {**a.train["optimizer"], "lr": 0.2}})
    assert resume_key(a) == resume_key(b) and a.hash != b.hash
    assert resume_key(a) != resume_key(c)


def test_shipped_configs_plan_their_grids_in_snakemake(tmp_path):
    from tests.workflow import REPO

    # (cells, packs, approx): one train job per pack: config.yaml packs across kinds
    # (execution.pack: kinds): 150 circles mlp cells in 1 pack, the rate cells in 1 per
    # dataset and recipe (160 + 80 diffeo2, 90 + 30 diffeo3), and families (cells that
    # differ in seed or depth) for the rest: 16 cifar_resnet cells in 8, 4 vit cells in 4;
    # the others, the cells that differ only in seed. One approx_cell job per identity cell
    # of the stage (config.yaml: 18 mlp ones, 3 depths x 3 seeds x 2 datasets, circles'
    # identity and diffeo2's rate_identity;
    # paper.yaml: every identity cell, (2 datasets x 5 depths + 2 x 2) x 5 seeds; rate.yaml:
    # 5 datasets x 11 depths x 10 seeds)
    for name, n_cells, n_packs, n_approx in (
        ("config.yaml", 530, 17, 18),
        ("paper.yaml", 630, 126, 70),
        ("rate.yaml", 6710, 671, 550),
    ):
        cfg = load_config(REPO / "config" / name)
        assert len(cells(cfg)) == n_cells
        assert len(approx_cells(cfg)) == n_approx, name
        proc = snakemake(tmp_path, "-n", "--configfile", str(REPO / "config" / name))
        rows = [ln.split() for ln in proc.stdout.splitlines()]
        rows = rows[: next(i for i, r in enumerate(rows) if r[:1] == ["total"])]  # 1st table
        counts = {r[0]: int(r[1]) for r in rows if len(r) == 2 and r[1].isdigit()}
        train = sum(n for rule, n in counts.items() if rule.split("_")[0] == "train")
        assert train == n_packs, name
        assert counts["approx_cell"] == n_approx and counts["aggregate_approx"] == 1, name


def test_variant_overrides_reach_only_its_cells_and_its_path():
    cfg = tiny_config()
    cfg["variants"] = {
        "orth_learned_haar": {"skip": "orth_learned", "skip_options": {"init": "haar"}},
        "identity_lr": {"skip": "identity", "train": {"optimizer": {"lr": 0.2}}},
    }
    cfg["grid"][0]["variants"] = ["identity", "orth_learned", "orth_learned_haar", "identity_lr"]
    cfg["grid"][0]["depths"] = [1]
    cfg = prepare_config(cfg)
    by_variant = {c.variant: cell_config(cfg, c) for c in cells(cfg)}
    assert set(by_variant) == {"identity", "orth_learned", "orth_learned_haar", "identity_lr"}
    haar = by_variant["orth_learned_haar"]
    assert haar.skip == "orth_learned" and haar.cell.variant == "orth_learned_haar"
    assert haar.skip_options["init"] == "haar"
    assert by_variant["orth_learned"].skip_options.get("init", "identity") == "identity"
    fast = by_variant["identity_lr"]
    assert fast.train["optimizer"]["lr"] == 0.2 and fast.skip == "identity"
    # the rest of the section is the global one, defaults included
    assert fast.train["optimizer"]["momentum"] == cfg["train"]["optimizer"]["momentum"]
    assert by_variant["identity"].train["optimizer"]["lr"] == cfg["train"]["optimizer"]["lr"]
    cell = next(c for c in cells(cfg) if c.variant == "orth_learned_haar")
    assert cell.path == "circles/mlp/orth_learned_haar/d1/s0" and Cell.parse(cell.path) == cell


def test_old_skips_key_says_it_was_renamed():
    cfg = tiny_config()
    cfg["grid"][0]["skips"] = cfg["grid"][0].pop("variants")
    with pytest.raises(ConfigError, match=r"grid\[0\]\.skips.*grid\[0\]\.variants"):
        prepare_config(cfg)


def test_configfile_stands_alone_paper_grid_has_no_clipping(tmp_path):
    """--configfile replaces the embedded default: nothing of config/config.yaml leaks in."""

    from tests.workflow import REPO

    (tmp_path / "config").mkdir()
    # the embedded default where the Snakefile looks for it, with clipping switched on
    default = (REPO / "config" / "config.yaml").read_text() + "\n"
    (tmp_path / "config" / "config.yaml").write_text(
        default.replace("  val_fraction: 0.1\n", "  val_fraction: 0.1\n  grad_clip: 1.0\n")
    )
    target = "results/cells/cifar10/cifar_resnet/identity/d20/s0/status.json"
    proc = snakemake(
        tmp_path, target, "-n", "-p", "--configfile", str(REPO / "config" / "paper.yaml")
    )
    out = proc.stdout + proc.stderr
    line = next(ln for ln in out.splitlines() if "orthskip train-pack --pack-config" in ln)
    stdin = line.split("<<< ")[1].split(" > ")[0].strip("'")
    members = [m.as_dict() for m in read_pack_config(stdin)]
    cfg = next(m for m in members if m["cell"]["seed"] == 0)
    assert cfg["train"]["grad_clip"] is None and cfg["train"]["optimizer"]["lr"] == 0.1
    assert cfg["train"]["epochs"] == 200 and cfg["cell"]["variant"] == "identity"
    # and without --configfile the default (here: with clipping) is the config
    proc = snakemake(tmp_path, "-n", "-p", "results/cells/circles/mlp/identity/d2/s0/status.json")
    line = next(ln for ln in proc.stdout.splitlines() if "orthskip train-pack" in ln)
    stdin = line.split("<<< ")[1].split(" > ")[0].strip("'")
    assert {m.train["grad_clip"] for m in read_pack_config(stdin)} == {1.0}


# ---- one source of truth: the registries' option tables and the schema ---------------------


def test_committed_schema_is_generated_from_the_registries():
    """The schema's registry sections are what orthskip.config.schema writes from the
    option tables; after changing a registry, `orthskip config schema --write`."""
    from orthskip.cli import main
    from orthskip.config.schema import SCHEMA, expected_text

    assert SCHEMA.read_text() == expected_text()
    assert main(["config", "schema"]) == 0


def test_every_schema_key_has_a_description():
    from orthskip.config.grid import load_schema as load

    missing: list[str] = []

    def walk(node: dict, where: str) -> None:
        for key, sub in (node.get("properties") or {}).items():
            if "description" not in sub:
                missing.append(f"{where}.{key}".lstrip("."))
            walk(sub, f"{where}.{key}")
        for key in ("items", "additionalProperties", "then"):
            if isinstance(node.get(key), dict):
                walk(node[key], f"{where}.<{key}>")
        for i, sub in enumerate(node.get("allOf") or []):
            walk(sub, f"{where}.<allOf[{i}]>")

    walk(load(), "")
    assert not missing


def test_library_defaults_are_the_pipeline_defaults():
    """A library call without a config gets what a config run gets (the optimizer's
    defaults once disagreed: lr 0.1 / weight_decay 0 in the library, 0.05 / 1e-4 in the
    schema)."""
    from orthskip.nn.models import MODEL_OPTIONS, model_options
    from orthskip.nn.optim_specs import optim_options
    from orthskip.nn.skips import SKIP_OPTIONS, skip_options

    cfg = prepare_config(tiny_config(train={}))
    assert optim_options(None) == cfg["train"]["optimizer"]
    assert optim_options(None)["lr"] == 0.05 and optim_options(None)["weight_decay"] == 1e-4
    cell_cfg = cell_config(cfg, cells(cfg)[0])
    assert cell_cfg.model == model_options("mlp", cfg["model"].get("mlp")) != {}
    assert set(MODEL_OPTIONS["mlp"]) == set(cell_cfg.model)
    assert skip_options("orth_manifold", None) == SKIP_OPTIONS["orth_manifold"]


def test_schema_and_library_give_the_same_message():
    """A bad option is named the same way by the config check and by a library call."""
    from orthskip.nn.models import validate_model_options

    cfg = tiny_config(model={"mlp": {"norm": "group"}})
    with pytest.raises(ConfigError) as from_config:
        prepare_config(cfg)
    with pytest.raises(ConfigError) as from_library:
        validate_model_options("mlp", {"norm": "group"})
    assert str(from_config.value) == str(from_library.value)
    assert "model.mlp.norm" in str(from_config.value) and "'batch', 'layer'" in str(
        from_config.value
    )


def test_a_prepared_configs_cells_and_models_are_not_checked_again(monkeypatch):
    """prepare_config checks every option once; resolving each cell's config and building its
    model (every arch and variant of the default) check none again, while the library's
    build_model, called directly, still checks what it is given."""
    from types import SimpleNamespace

    import orthskip.nn.arch_specs as arch_specs
    import orthskip.nn.skip_specs as skip_specs
    from orthskip.data.spec import data_shape
    from orthskip.nn.models import build_cell_model, build_model

    checked: list[str] = []
    for module in (arch_specs, skip_specs):
        real = module.check_options

        def counted(table, values, where, real=real):
            checked.append(where)
            return real(table, values, where)

        monkeypatch.setattr(module, "check_options", counted)
    cfg = load_config("config/config.yaml")
    assert any(w.startswith("skip_options.") for w in checked)
    assert any(w.startswith("model.") for w in checked)
    checked.clear()
    shallowest: dict[tuple[str, str, str], Cell] = {}
    for cell in cells(cfg):
        key = (cell.dataset, cell.arch, cell.variant)
        if key not in shallowest or cell.depth < shallowest[key].depth:
            shallowest[key] = cell
    kinds = set()
    for cell in shallowest.values():
        shape = data_shape(cell.dataset, cfg["datasets"][cell.dataset])
        cell_cfg = cell_config(cfg, cell)
        data = SimpleNamespace(input_shape=shape.input_shape, num_classes=shape.n_outputs)
        build_cell_model(cell_cfg, data)
        kinds.add((cell.arch, cell_cfg.skip))
    assert checked == [] and len(kinds) >= 15
    with pytest.raises(ConfigError, match=r"skip_options\.orth_learned"):
        build_model("mlp", 2, "orth_learned", (2,), 2, {}, {"orth_learned": {"map": "bogus"}})
    assert checked
