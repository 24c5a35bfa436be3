"""Dataset specs: the parameters each source accepts, their defaults, and validation.

A spec is one entry of ``config["datasets"][name]``: an optional ``source`` (defaults to
the dataset's name) plus that source's parameters. Each source is one :class:`Source` in
``SOURCES`` (``register_source`` adds one): its options (type, default, range,
description), its builder and what its prepared data are (size, shape, outputs); the config
schema's ``datasets`` section is generated from it (``orthskip.config.schema``),
``validate_spec`` checks a spec against the same schema, and the config check and the
cluster's resource estimates read the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orthskip.config.constraints import Constraint, DataShape, enforce
from orthskip.config.options import Option, Table, check, defaults, table_schema, unknown
from orthskip.errors import ConfigError

if TYPE_CHECKING:
    from orthskip.data.raw import RawSplit

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
DIGITS_SIZE = 1797


def _vision(n_train: int, n_test: int) -> dict[str, Option]:
    """A torchvision set's options, of a set of (n_train, n_test) images: a larger subset
    cannot be drawn."""
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


@dataclass(frozen=True)
class Source:
    """A dataset source: where its data come from (``kind``: ``synthetic``, generated here;
    ``sklearn``, shipped with scikit-learn; ``torchvision``, image files), its ``task``
    (``classification``: class labels, or ``regression``: real target vectors, MSE), its
    options (the dataset spec's parameters: the schema's source), its builder, and what a
    resolved spec gives once prepared: ``size`` training examples (before the validation
    split), inputs of ``shape`` and ``outputs`` (classes; a regression's target dimension).
    The config check and the cluster's resource estimates read these without preparing.
    ``stratified``: every class is in both splits (a random subset need not hold them)."""

    name: str
    kind: str
    task: str
    options: Table
    build: Callable[[dict[str, Any]], RawSplit]
    size: Callable[[Mapping[str, Any]], int]
    shape: Callable[[Mapping[str, Any]], tuple[int, ...]]
    outputs: Callable[[Mapping[str, Any]], int]
    stratified: bool = True

    def classes(self, full: Mapping[str, Any]) -> int | None:
        """The number of classes of a resolved spec (None: a regression set)."""
        return None if self.task == "regression" else self.outputs(full)


#: Every source, in the order of the config's choices. ``register_source`` adds one.
SOURCES: dict[str, Source] = {}


def register_source(source: Source) -> Source:
    if source.name in SOURCES:
        raise ValueError(f"dataset source {source.name!r} is registered already")
    if source.task not in ("classification", "regression"):
        raise ValueError(f"source {source.name}: task {source.task!r} is not classification "
                         "or regression")  # fmt: skip
    SOURCES[source.name] = source
    return source


class _PerSource(Mapping[str, Any]):
    """A live view of one thing per registered source."""

    def __init__(self, of: Callable[[Source], Any]) -> None:
        self._of = of

    def __getitem__(self, name: str) -> Any:
        return self._of(SOURCES[name])

    def __iter__(self) -> Iterator[str]:
        return iter(list(SOURCES))

    def __len__(self) -> int:
        return len(SOURCES)


def _lazy(module: str, func: str) -> Callable[[dict[str, Any]], RawSplit]:
    # scikit-learn takes seconds to import: only a prepare job pays for it, not every
    # training job that merely loads a prepared file.
    def build(spec: dict[str, Any]) -> RawSplit:
        import importlib

        return getattr(importlib.import_module(f"orthskip.data.{module}"), func)(spec)

    build.__name__ = func
    return build


def _vision_build(source: str) -> Callable[[dict[str, Any]], RawSplit]:
    # torchvision is imported only when a vision set is prepared (it is slow to import
    # and needs orthskip.data.tv_compat on CPU-only torch).
    def build(spec: dict[str, Any]) -> RawSplit:
        from orthskip.data import vision

        return vision.load_torchvision(source, spec)

    build.__name__ = source
    return build


def _n_train(full: Mapping[str, Any]) -> int:
    return int(full["n_train"])


def _vector(full: Mapping[str, Any]) -> tuple[int, ...]:
    return (int(full.get("dim", full.get("d", 2))),)


def _fixed(n: int) -> Callable[[Mapping[str, Any]], int]:
    return lambda full: n


def _synthetic(name: str, options: Table, outputs: Callable[[Mapping[str, Any]], int],
               task: str = "classification") -> Source:  # fmt: skip
    return Source(name, "synthetic", task, options, _lazy("synthetic", name), _n_train,
                  _vector, outputs)  # fmt: skip


def _n_classes(full: Mapping[str, Any]) -> int:
    return int(full["n_classes"])


def _torchvision(name: str, sizes: tuple[int, int], default_augment: str | None,
                 shape: tuple[int, int, int], classes: int) -> Source:  # fmt: skip
    def size(full: Mapping[str, Any]) -> int:  # n_train null: every training image
        return sizes[0] if full["n_train"] is None else int(full["n_train"])

    return Source(
        name, "torchvision", "classification", {**_vision(*sizes), **_augment(default_augment)},
        _vision_build(name), size, lambda full: shape, _fixed(classes), stratified=False,
    )  # fmt: skip


for _source in (
    _synthetic("circles", {
        **_N,
        **_NOISE,
        "factor": _num(
            0.5, "inner/outer circle radius ratio", exclusive_minimum=0, exclusive_maximum=1
        ),
    }, _fixed(2)),
    _synthetic("moons", {**_N, **_NOISE}, _fixed(2)),
    _synthetic("blobs", {
        **_N,
        "dim": _count(2, "input dimension"),
        "n_classes": _count(3, "number of blobs (classes)", lo=2),
        "cluster_std": _num(1.0, "standard deviation of each blob", exclusive_minimum=0),
    }, _n_classes),
    _synthetic("parity", {
        **_N,
        "dim": _count(12, "number of bits", lo=2, hi=1024),
        "noise": _num(0.0, "standard deviation of the Gaussian noise", minimum=0),
    }, _fixed(2)),
    _synthetic("gaussian_mixture", {
        **_N,
        "dim": _count(2, "input dimension"),
        "n_classes": _count(2, "number of classes", lo=2),
        "components_per_class": _count(2, "Gaussian components per class"),
        "spread": _num(3.0, "scale of the component means", exclusive_minimum=0),
        "cluster_std": _num(1.0, "standard deviation of each component", exclusive_minimum=0),
    }, _n_classes),
    # regression on a known diffeomorphism h of R^d (orthskip.data.diffeo); map_seed fixes h
    _synthetic("diffeo", {
        **_N,
        "d": _count(2, "dimension of the diffeomorphism h of R^d", lo=2, hi=16),
        "map_seed": _count(0, "draws the rotations of h", lo=0, hi=TORCH_SEED_MAX),
        "alpha": _num(0.8, "radial warp (< 2 keeps h invertible)", minimum=0, exclusive_maximum=2),
        "beta": _num(1.5, "swirl angle at 0, radians", minimum=0),
        "gamma": _num(0.5, "shear strength", minimum=0),
    }, lambda full: int(full["d"]), task="regression"),
    Source("digits", "sklearn", "classification", {
        "n_test": _count(360, "test images of the 1797", hi=DIGITS_SIZE - 1),
        "seed": _count(0, "seed of the train/test split", lo=0, hi=SKLEARN_SEED_MAX),
    }, _lazy("sklearn_sets", "digits"), lambda full: DIGITS_SIZE - int(full["n_test"]),
        lambda full: (1, 8, 8), _fixed(10)),
    # (training, test) images, default augmentation, image shape, classes
    _torchvision("mnist", (60000, 10000), None, (1, 28, 28), 10),
    _torchvision("fashion_mnist", (60000, 10000), None, (1, 28, 28), 10),
    _torchvision("cifar10", (50000, 10000), "cifar", (3, 32, 32), 10),
    _torchvision("cifar100", (50000, 10000), "cifar", (3, 32, 32), 100),
    # 96×96: the same 4-pixel pad + crop + flip (the seed codebase's choice is not stated)
    _torchvision("stl10", (5000, 8000), "cifar", (3, 96, 96), 10),
):  # fmt: skip
    register_source(_source)

#: Per source: what it is (``Source.kind``) and its options' defaults
#: (``{source: {key: default}}``; ``source`` itself is always allowed).
SOURCE_KINDS: Mapping[str, str] = _PerSource(lambda src: src.kind)
SOURCE_PARAMS: Mapping[str, dict[str, Any]] = _PerSource(lambda src: defaults(src.options))
SOURCE_DESCRIPTION = "the generator or torchvision class (default: the dataset's name)"


def source_schema(src: str) -> dict[str, Any]:
    """The JSON schema of a spec of source ``src`` (its title names the source in messages)."""
    out = table_schema(SOURCES[src].options, f"parameters of source {src}")
    source = {"description": SOURCE_DESCRIPTION, "const": src}
    return {
        "title": f"source {src!r}",
        **out,
        "properties": {"source": source, **out["properties"]},
    }


def source_of(name: str, spec: dict | None) -> str:
    """The source a dataset entry uses: ``spec["source"]``, else the entry's own name."""
    src = (spec or {}).get("source", name)
    if src not in SOURCES:
        key = f"datasets.{name}.source" if spec and "source" in spec else f"datasets.{name}"
        raise unknown(key, src, SOURCES, "dataset source", "allowed sources")
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
        source = SOURCES[full["source"]]
        k = source.classes(full) if source.stratified else None
        n = full.get(key)
        if k is None or n is None or n >= k:
            return None
        return f"{n} is fewer than the {k} classes; expected an integer >= {k}"

    return Constraint(f"{key}_holds_every_class", key, f"{key} >= the number of classes", test)


# What preparing a dataset needs of its spec beyond the option tables (a resolved spec:
# ``resolve_spec``); also checked by the config check before any job.
DATASET_CONSTRAINTS: tuple[Constraint, ...] = (_enough("n_train"), _enough("n_test"))


def check_classes(name: str, spec: dict | None) -> None:
    """What the schema cannot say (DATASET_CONSTRAINTS): every class in both splits."""
    enforce(DATASET_CONSTRAINTS, resolve_spec(name, spec, _validated=True), None,
            f"datasets.{name}")  # fmt: skip


def data_shape(name: str, spec: dict | None) -> DataShape:
    """The input shape and outputs of dataset ``name`` as prepared, from its spec alone (so
    the config check can check a model against it before the set is prepared)."""
    full = resolve_spec(name, spec, _validated=True)
    source = SOURCES[full["source"]]
    return DataShape(tuple(source.shape(full)), int(source.outputs(full)))


def train_size(name: str, spec: dict | None) -> int:
    """Training examples of dataset ``name`` as prepared (before the validation split)."""
    full = resolve_spec(name, spec, _validated=True)
    return int(SOURCES[full["source"]].size(full))


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
