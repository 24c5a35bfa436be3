"""Issue 32, items 1-3: what a builder enforces is checked before any job, naming the key.

1. every constraint a model, skip kind, dataset source or the optimizer declares is enforced
   by the config check, and a config the check accepts builds;
2. seeds are bounded by what the generators take (cell seeds through the training engine's
   derived seeds);
3. a split that leaves fewer training examples than a batch (or no validation example when
   one is asked for) is a config error naming the keys and the sizes.
"""

from __future__ import annotations

import copy
import itertools
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
import torch

from orthskip.config.grid import prepare_config
from orthskip.errors import ConfigError
from tests.workflow import REPO, tiny_config, write_config


def _grid(arch: str, dataset: str, depth: int, **extra: Any) -> dict[str, Any]:
    cfg = tiny_config(**extra)
    cfg["grid"] = [
        {"arch": arch, "datasets": [dataset], "variants": ["identity"], "depths": [depth],
         "seeds": [0]}
    ]  # fmt: skip
    return cfg


def _vit(**opts: Any) -> dict[str, Any]:
    return _grid("vit", "digits", 1, model={"vit": {"width": 8, "heads": 2, "patch": 2, **opts}})


def _rejected(cfg: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as err:
        prepare_config(copy.deepcopy(cfg))
    return str(err.value)


# ---- item 1 ---------------------------------------------------------------------------------


def test_issue_vit_heads_and_patch_on_digits_fail_orthskip_check(tmp_path):
    """The issue's config: width 10, heads 3, patch 3 on 8x8 digits passed `orthskip check`
    and failed in the train job."""
    cfg = _vit(width=10, heads=3, patch=3)
    proc = subprocess.run(
        [sys.executable, "-m", "orthskip", "check", str(write_config(tmp_path, cfg))],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0, proc.stdout
    assert "model.vit.heads" in proc.stderr and "must divide" in proc.stderr, proc.stderr
    assert "grid[0]" in proc.stderr
    cfg["model"]["vit"]["heads"] = 2
    message = _rejected(cfg)
    assert "model.vit.patch" in message and "8x8" in message and "1, 2, 4, 8" in message


# A config that breaks each declared constraint, and the key its message must name. Keyed by
# (registry, owner, constraint name): a constraint declared without an entry here fails the
# test below, so every new constraint gets a config-check test.
def _variant_heads() -> dict[str, Any]:
    cfg = _vit(width=12, heads=3)
    cfg["variants"] = {"wide": {"skip": "identity", "model": {"heads": 5}}}
    cfg["grid"][0]["variants"] = ["wide"]
    return cfg


def _image(arch: str, depth: int) -> Callable[[], dict[str, Any]]:
    return lambda: _grid(arch, "circles", depth)


VIOLATIONS: dict[tuple[str, str, str], tuple[Callable[[], dict[str, Any]], str]] = {
    ("model", "mlp", "stem_identity_width"): (
        lambda: tiny_config(model={"mlp": {"width": 8, "stem": "identity"}}),
        "model.mlp.stem",
    ),
    ("model", "mlp", "head_identity_width"): (
        lambda: tiny_config(model={"mlp": {"width": 8, "head": "identity"}}),
        "model.mlp.head",
    ),
    ("model", "cifar_resnet", "image_input"): (_image("cifar_resnet", 8), "grid[0].datasets"),
    ("model", "cifar_preresnet", "image_input"): (
        _image("cifar_preresnet", 8),
        "grid[0].datasets",
    ),
    ("model", "resnet", "image_input"): (_image("resnet", 10), "grid[0].datasets"),
    ("model", "vit", "image_input"): (_image("vit", 1), "grid[0].datasets"),
    ("model", "vit", "heads_divide_width"): (lambda: _vit(width=10, heads=3), "model.vit.heads"),
    ("model", "vit", "patch_divides_image"): (lambda: _vit(patch=3), "model.vit.patch"),
    ("model", "vit", "sincos_width"): (
        lambda: _vit(width=10, heads=2, pos_embed="sincos"),
        "model.vit.pos_embed",
    ),
    ("dataset", "*", "n_train_holds_every_class"): (
        lambda: tiny_config(datasets={"circles": {"source": "circles", "n_train": 1}}),
        "datasets.circles.n_train",
    ),
    ("dataset", "*", "n_test_holds_every_class"): (
        lambda: tiny_config(
            datasets={
                "circles": {"source": "circles", "n_train": 96},
                "digits": {"source": "digits", "n_test": 5},
            }
        ),
        "datasets.digits.n_test",
    ),
    ("optimizer", "*", "nesterov_sgd"): (
        lambda: tiny_config(
            train={**tiny_config()["train"], "optimizer": {"nesterov": True, "momentum": 0.0}}
        ),
        "train.optimizer.nesterov",
    ),
}


def _declared() -> dict[tuple[str, str, str], Any]:
    """Every constraint the registries say they enforce at build time."""
    from orthskip.data.spec import DATASET_CONSTRAINTS
    from orthskip.nn.arch_specs import MODEL_CONSTRAINTS
    from orthskip.nn.optim_specs import OPTIM_CONSTRAINTS
    from orthskip.nn.skips import SKIPS

    out = {}
    for arch, constraints in MODEL_CONSTRAINTS.items():
        out.update({("model", arch, c.name): c for c in constraints})
    for kind, cls in SKIPS.items():
        out.update({("skip", kind, c.name): c for c in cls.constraints})
    out.update({("dataset", "*", c.name): c for c in DATASET_CONSTRAINTS})
    out.update({("optimizer", "*", c.name): c for c in OPTIM_CONSTRAINTS})
    return out


def test_every_declared_build_constraint_is_enforced_by_the_config_check():
    declared = _declared()
    assert set(declared) == set(VIOLATIONS), (
        "constraints without a violating example here (add one): "
        f"{sorted(set(declared) - set(VIOLATIONS))}; stale examples: "
        f"{sorted(set(VIOLATIONS) - set(declared))}"
    )
    for ident, (make, key) in VIOLATIONS.items():
        message = _rejected(make())
        assert f"'{key}'" in message, (ident, message)
        assert declared[ident].key is None or declared[ident].key in key, ident


def test_variant_override_is_named_as_the_key_that_broke_the_constraint():
    message = _rejected(_variant_heads())
    assert "'variants.wide.model.heads' = 5" in message and "grid[0]" in message, message


def test_the_builder_enforces_the_same_declared_constraints():
    """One source of truth: build_model raises the declared constraint's message."""
    from orthskip.nn.models import build_model

    cases = [
        ("vit", (1, 8, 8), 10, {"width": 10, "heads": 3}, "model.vit.heads"),
        ("vit", (1, 8, 8), 10, {"width": 8, "heads": 2, "patch": 3}, "model.vit.patch"),
        ("vit", (2,), 2, {"width": 8, "heads": 2}, "needs image inputs"),
        ("mlp", (2,), 2, {"width": 8, "head": "identity"}, "model.mlp.head"),
        ("cifar_resnet", (2,), 2, {}, "needs image inputs"),
    ]
    for arch, shape, classes, opts, words in cases:
        depth = 8 if arch == "cifar_resnet" else 1
        with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
            build_model(arch, depth, "identity", shape, classes, opts)


# Shapes of the prepared sets the sweep uses (test_data_shape_matches_the_prepared_data checks
# the library's own table against real prepared data).
SHAPES = {"circles": ((2,), 2), "digits": ((1, 8, 8), 10)}


def _sweep() -> list[tuple[str, str, int, dict[str, Any]]]:
    out = []
    for width, heads, patch, pos in itertools.product(
        (8, 10), (2, 3), (2, 3), ("learned", "sincos")
    ):
        opts = {"width": width, "heads": heads, "patch": patch, "pos_embed": pos}
        out += [("vit", ds, 1, opts) for ds in SHAPES]
    for width, stem, head in itertools.product((0, 2), ("linear", "identity"),
                                               ("linear", "identity")):  # fmt: skip
        out += [("mlp", ds, 1, {"width": width, "stem": stem, "head": head}) for ds in SHAPES]
    for arch, depth, stem in (("cifar_resnet", 8, None), ("cifar_preresnet", 8, None),
                              ("resnet", 10, "cifar"), ("resnet", 10, "imagenet")):  # fmt: skip
        opts = {"width": 4, **({"stem": stem} if stem else {})}
        out += [(arch, ds, depth, opts) for ds in SHAPES]
    return out


def test_every_config_the_check_accepts_builds():
    """Whatever the declarations say: a cell the config check accepts does not fail with a
    config error when its model is built (the bug: the check said ok, the job failed)."""
    from orthskip.nn.models import build_model
    from orthskip.nn.skips import SKIPS

    accepted = 0
    for arch, ds, depth, opts in _sweep():
        cfg = _grid(arch, ds, depth, model={arch: opts})
        cfg["grid"][0]["variants"] = list(SKIPS) if arch != "vit" else ["identity", "procrustes"]
        try:
            prepare_config(cfg)
        except ConfigError:
            continue
        accepted += 1
        shape, classes = SHAPES[ds]
        for kind in cfg["grid"][0]["variants"]:
            torch.manual_seed(0)
            build_model(arch, depth, kind, shape, classes, opts, {kind: {}})
    assert accepted >= 15  # the sweep is not vacuous


def test_data_shape_matches_the_prepared_data():
    """The shapes the config check uses (from a spec alone) are those of the prepared sets."""
    from orthskip.data.sources import SOURCES
    from orthskip.data.spec import data_shape, resolve_spec, train_size

    specs = {
        "circles": {"n_train": 40, "n_test": 20},
        "moons": {"n_train": 40, "n_test": 20},
        "blobs": {"n_train": 40, "n_test": 20, "dim": 5, "n_classes": 4},
        "parity": {"n_train": 40, "n_test": 20, "dim": 6},
        "gaussian_mixture": {"n_train": 40, "n_test": 20, "dim": 3, "n_classes": 3},
        "diffeo": {"n_train": 40, "n_test": 20, "d": 3},
        "digits": {"n_test": 300},
    }
    for src, spec in specs.items():
        raw = SOURCES[src].build(resolve_spec(src, spec))
        shape = data_shape(src, spec)
        assert shape.input_shape == tuple(raw.x_train.shape[1:]), src
        outputs = raw.y_train.shape[1] if raw.y_train.ndim == 2 else len(raw.classes)
        assert shape.n_outputs == outputs, src
        assert train_size(src, spec) == len(raw.x_train), src


# ---- item 2 ---------------------------------------------------------------------------------


def test_seed_beyond_the_generators_is_refused_naming_grid_seeds(tmp_path):
    cfg = tiny_config()
    cfg["grid"][0]["seeds"] = [0, 2**64]
    message = _rejected(cfg)
    assert "grid[0].seeds[1]" in message and str(2**64) in message, message
    proc = subprocess.run(
        [sys.executable, "-m", "orthskip", "check", str(write_config(tmp_path, cfg))],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0 and "grid[0].seeds" in proc.stderr, proc.stderr


def test_largest_accepted_seed_is_the_largest_the_training_engine_can_use():
    from orthskip.config.grid import MAX_SEED
    from orthskip.training.runstate import streams, validation_split

    ok = tiny_config()
    ok["grid"][0]["seeds"] = [MAX_SEED]
    prepare_config(ok)
    streams(MAX_SEED, torch.device("cpu"))  # every generator the engine seeds from it
    validation_split(10, 0.5, MAX_SEED)
    torch.manual_seed(MAX_SEED)
    assert MAX_SEED < 2**63  # the int64 seed column of the result tables
    bad = tiny_config()
    bad["grid"][0]["seeds"] = [MAX_SEED + 1]
    assert "grid[0].seeds[0]" in _rejected(bad)
    with pytest.raises((ValueError, RuntimeError, OverflowError)):  # the bound is tight
        validation_split(10, 0.5, MAX_SEED + 1)


def test_dataset_seed_is_bounded_by_scikit_learn():
    from orthskip.data.sources import SOURCES
    from orthskip.data.spec import resolve_spec

    cfg = tiny_config()
    cfg["datasets"]["circles"]["seed"] = 2**32
    assert "'datasets.circles.seed' = 4294967296" in _rejected(cfg)
    spec = {"n_train": 20, "n_test": 20, "seed": 2**32 - 1}
    SOURCES["circles"].build(resolve_spec("circles", spec))  # the largest one accepted works
    with pytest.raises(ValueError):  # and one more is what scikit-learn refuses
        SOURCES["circles"].build({**resolve_spec("circles", spec), "seed": 2**32})


# ---- item 3 ---------------------------------------------------------------------------------


def test_empty_training_split_is_a_config_error_naming_keys_and_sizes():
    """The issue: val_fraction 0.999 with 300 training points trained on nothing and was
    recorded as a diverged cell."""
    cfg = tiny_config()
    cfg["datasets"]["circles"]["n_train"] = 300
    cfg["train"]["val_fraction"] = 0.999
    message = _rejected(cfg)
    for words in ("'train.val_fraction' = 0.999", "'train.batch_size' = 32", "grid[0]",
                  "300 training examples", "leaves 0 to train on"):  # fmt: skip
        assert words in message, message


def test_training_split_smaller_than_a_batch_is_refused():
    cfg = tiny_config()  # 96 training points, val_fraction 0.1: 86 to train on
    cfg["variants"] = {"big": {"skip": "identity", "train": {"batch_size": 87}}}
    cfg["grid"][0]["variants"] = ["big"]
    message = _rejected(cfg)
    assert "'variants.big.train.batch_size' = 87" in message and "leaves 86" in message
    cfg["variants"]["big"]["train"]["batch_size"] = 86
    prepare_config(cfg)  # exactly one batch is enough


def test_empty_validation_split_when_one_is_asked_for_is_refused():
    cfg = tiny_config()
    cfg["train"]["val_fraction"] = 0.004  # round(96 * 0.004) = 0
    message = _rejected(cfg)
    assert "'train.val_fraction' = 0.004" in message and "validation" in message, message
    cfg["train"]["val_fraction"] = 0.0  # no validation split asked for: fine
    prepare_config(cfg)


@pytest.mark.parametrize("n", [1, 7, 96, 1437])
@pytest.mark.parametrize("fraction", [0.0, 0.004, 0.1, 0.5, 0.999])
def test_validation_size_is_the_training_engines(n, fraction):
    from orthskip.data.spec import validation_size
    from orthskip.training.runstate import validation_split

    assert validation_size(n, fraction) == len(validation_split(n, fraction, 3)[1])
