"""Dataset specs: the parameters each source accepts, their defaults, and validation.

A spec is one entry of ``config["datasets"][name]``: an optional ``source`` (defaults to
the dataset's name) plus that source's parameters. ``PARAMS`` is the single table of
each source's options (type, default, range, description): the config schema's
``datasets`` section is generated from it (``orthskip.config.schema``) and
``validate_spec`` checks a spec against the same schema.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orthskip.config.constraints import Constraint, DataShape, enforce
from orthskip.config.options import Option, check, defaults, table_schema, unknown
from orthskip.errors import ConfigError

# The training augmentations a spec may name (orthskip.data.augment applies them); "none"
# or null for none.
AUGMENTS = ("cifar",)


def _count(default: int | None, description: str, lo: int = 1, hi: int | None = None,
           nullable: bool = False) -> Option:  # fmt: skip
    return Option("integer", default, description, minimum=lo, maximum=hi, nullable=nullable)


def _num(default: float, description: str, **bounds: float) -> Option:
    return Option("number", default, description, **bounds)


# Synthetic sets default to 1000/1000 points: the embedded grid trains hundreds of
# cells on 2 CPU cores in minutes.
# The largest seed each generator takes: scikit-learn's RandomState 2**32 - 1, torch's
# Generator 2**64 - 1 (numpy's default_rng takes any; its sets share the synthetic bound).
SKLEARN_SEED_MAX = 2**32 - 1
TORCH_SEED_MAX = 2**64 - 1
_N = {
    "n_train": _count(1000, "training points"),
    "n_test": _count(1000, "test points"),
    "seed": _count(0, "seed of the generator", lo=0, hi=SKLEARN_SEED_MAX),
}
_NOISE = {"noise": _num(0.1, "standard deviation of the Gaussian noise", minimum=0)}
# (training, test) images of each torchvision set: a larger subset cannot be drawn
VISION_SIZES: dict[str, tuple[int, int]] = {
    "mnist": (60000, 10000),
    "fashion_mnist": (60000, 10000),
    "cifar10": (50000, 10000),
    "cifar100": (50000, 10000),
    "stl10": (5000, 8000),
}
DIGITS_SIZE = 1797


def _vision(source: str) -> dict[str, Option]:
    n_train, n_test = VISION_SIZES[source]
    return {
        "root": Option(
            "string", None, "directory of the torchvision files (null: data/raw)", nullable=True
        ),
        "download": Option("boolean", False, "download the files when they are missing"),
        "n_train": _count(
            None, "training images kept, a seeded subset (null: all)", hi=n_train, nullable=True
        ),
        "n_test": _count(
            None, "test images kept, a seeded subset (null: all)", hi=n_test, nullable=True
        ),
        "seed": _count(0, "picks the n_train/n_test subset", lo=0, hi=TORCH_SEED_MAX),
    }


def _augment(default: str | None) -> dict[str, Option]:
    text = "training augmentation: cifar (4-pixel pad, crop, flip) or none/null"
    return {"augment": Option("string", default, text, choices=(*AUGMENTS, "none", None))}


PARAMS: dict[str, dict[str, Option]] = {
    "circles": {
        **_N,
        **_NOISE,
        "factor": _num(
            0.5, "inner/outer circle radius ratio", exclusive_minimum=0, exclusive_maximum=1
        ),
    },
    "moons": {**_N, **_NOISE},
    "blobs": {
        **_N,
        "dim": _count(2, "input dimension"),
        "n_classes": _count(3, "number of blobs (classes)", lo=2),
        "cluster_std": _num(1.0, "standard deviation of each blob", exclusive_minimum=0),
    },
    "parity": {
        **_N,
        "dim": _count(12, "number of bits", lo=2, hi=1024),
        "noise": _num(0.0, "standard deviation of the Gaussian noise", minimum=0),
    },
    "gaussian_mixture": {
        **_N,
        "dim": _count(2, "input dimension"),
        "n_classes": _count(2, "number of classes", lo=2),
        "components_per_class": _count(2, "Gaussian components per class"),
        "spread": _num(3.0, "scale of the component means", exclusive_minimum=0),
        "cluster_std": _num(1.0, "standard deviation of each component", exclusive_minimum=0),
    },
    # regression on a known diffeomorphism h of R^d (orthskip.data.diffeo); map_seed fixes h
    "diffeo": {
        **_N,
        "d": _count(2, "dimension of the diffeomorphism h of R^d", lo=2, hi=16),
        "map_seed": _count(0, "draws the rotations of h", lo=0, hi=TORCH_SEED_MAX),
        "alpha": _num(0.8, "radial warp (< 2 keeps h invertible)", minimum=0, exclusive_maximum=2),
        "beta": _num(1.5, "swirl angle at 0, radians", minimum=0),
        "gamma": _num(0.5, "shear strength", minimum=0),
    },
    "digits": {
        "n_test": _count(360, "test images of the 1797", hi=DIGITS_SIZE - 1),
        "seed": _count(0, "seed of the train/test split", lo=0, hi=SKLEARN_SEED_MAX),
    },
    "mnist": {**_vision("mnist"), **_augment(None)},
    "fashion_mnist": {**_vision("fashion_mnist"), **_augment(None)},
    "cifar10": {**_vision("cifar10"), **_augment("cifar")},
    "cifar100": {**_vision("cifar100"), **_augment("cifar")},
    # 96×96: the same 4-pixel pad + crop + flip (the seed codebase's choice is not stated)
    "stl10": {**_vision("stl10"), **_augment("cifar")},
}

SOURCE_NAMES: tuple[str, ...] = tuple(PARAMS)
#: What each source is: generated here (``synthetic``), shipped with scikit-learn
#: (``sklearn``) or one of torchvision's image sets (``torchvision``, read from files).
SOURCE_KINDS: dict[str, str] = {
    **dict.fromkeys(("circles", "moons", "blobs", "parity", "gaussian_mixture", "diffeo"),
                    "synthetic"),
    "digits": "sklearn",
    **dict.fromkeys(VISION_SIZES, "torchvision"),
}  # fmt: skip
assert set(SOURCE_KINDS) == set(PARAMS)
_SYNTHETIC_CLASSES = {"circles": 2, "moons": 2, "parity": 2}
#: sources whose targets are real vectors (MSE), not class labels
REGRESSION_SOURCES: tuple[str, ...] = ("diffeo",)

#: ``{source: {key: default}}`` (``source`` itself is always allowed).
SOURCE_PARAMS: dict[str, dict[str, Any]] = {src: defaults(t) for src, t in PARAMS.items()}
SOURCE_DESCRIPTION = "the generator or torchvision class (default: the dataset's name)"


def source_schema(src: str) -> dict[str, Any]:
    """The JSON schema of a spec of source ``src`` (its title names the source in messages)."""
    out = table_schema(PARAMS[src], f"parameters of source {src}")
    source = {"description": SOURCE_DESCRIPTION, "const": src}
    return {
        "title": f"source {src!r}",
        **out,
        "properties": {"source": source, **out["properties"]},
    }


def source_of(name: str, spec: dict | None) -> str:
    """The source a dataset entry uses: ``spec["source"]``, else the entry's own name."""
    src = (spec or {}).get("source", name)
    if src not in PARAMS:
        key = f"datasets.{name}.source" if spec and "source" in spec else f"datasets.{name}"
        raise unknown(key, src, SOURCE_NAMES, "dataset source", "allowed sources")
    return src


def validate_spec(name: str, spec: dict | None) -> None:
    """Raise ConfigError naming the key and the allowed keys/values if ``spec`` is bad."""
    if spec is not None and not isinstance(spec, dict):
        raise ConfigError(f"datasets.{name}: expected a mapping of parameters, got {spec!r}")
    check(source_schema(source_of(name, spec)), spec or {}, f"datasets.{name}")
    check_classes(name, spec)


def _enough(key: str) -> Constraint:
    """A stratified split (the synthetic classification sets, digits) puts every class in
    both splits; torchvision subsets are drawn at random, not stratified."""

    def test(full: Mapping[str, Any], data: DataShape | None) -> str | None:
        k = None if full["source"] in VISION_SIZES else _classes(full)
        n = full.get(key)
        if k is None or n is None or n >= k:
            return None
        return f"{n} is fewer than the {k} classes; expected an integer >= {k}"

    return Constraint(f"{key}_holds_every_class", key, f"{key} >= the number of classes", test)


# What preparing a dataset needs of its spec beyond the option tables (a resolved spec:
# ``resolve_spec``); also checked by the config check before any job.
DATASET_CONSTRAINTS: tuple[Constraint, ...] = (_enough("n_train"), _enough("n_test"))


def _classes(full: Mapping[str, Any]) -> int | None:
    """The number of classes of a resolved spec (None: a regression set)."""
    src = full["source"]
    if src in REGRESSION_SOURCES:
        return None
    if src in _SYNTHETIC_CLASSES:
        return _SYNTHETIC_CLASSES[src]
    if "n_classes" in full:
        return int(full["n_classes"])
    return {"cifar100": 100}.get(src, 10)  # digits, MNIST, Fashion-MNIST, CIFAR-10, STL-10


def check_classes(name: str, spec: dict | None) -> None:
    """What the schema cannot say (DATASET_CONSTRAINTS): every class in both splits."""
    enforce(DATASET_CONSTRAINTS, resolve_spec(name, spec, _validated=True), None,
            f"datasets.{name}")  # fmt: skip


_IMAGES = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28),
           "cifar10": (3, 32, 32), "cifar100": (3, 32, 32), "stl10": (3, 96, 96)}  # fmt: skip


def data_shape(name: str, spec: dict | None) -> DataShape:
    """The input shape and outputs of dataset ``name`` as prepared, from its spec alone (so
    the config check can check a model against it before the set is prepared)."""
    full = resolve_spec(name, spec, _validated=True)
    src = full["source"]
    if src in _IMAGES:
        shape: tuple[int, ...] = _IMAGES[src]
    else:
        shape = (int(full.get("dim", full.get("d", 2))),)
    outputs = _classes(full)
    return DataShape(shape, int(full["d"]) if outputs is None else outputs)


def train_size(name: str, spec: dict | None) -> int:
    """Training examples of dataset ``name`` as prepared (before the validation split)."""
    full = resolve_spec(name, spec, _validated=True)
    src = full["source"]
    if src == "digits":
        return DIGITS_SIZE - int(full["n_test"])
    if src in VISION_SIZES and full["n_train"] is None:
        return VISION_SIZES[src][0]
    return int(full["n_train"])


def validation_size(n: int, fraction: float) -> int:
    """Examples a validation split of ``fraction`` takes from n training examples: the rule
    of ``orthskip.training.solo.validation_split`` (a test keeps the two equal)."""
    return round(n * fraction)


def resolve_spec(name: str, spec: dict | None, *, _validated: bool = False) -> dict[str, Any]:
    """The spec with every default filled in and ``source`` set (validated first)."""
    if not _validated:
        validate_spec(name, spec)
    src = source_of(name, spec)
    full: dict[str, Any] = {"source": src, **SOURCE_PARAMS[src]}
    full.update({k: v for k, v in (spec or {}).items() if k != "source"})
    if full.get("augment") == "none":
        full["augment"] = None
    return full
