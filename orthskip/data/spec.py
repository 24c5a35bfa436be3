"""Dataset specs: the parameters each source accepts, their defaults, and validation.

A spec is one entry of ``config["datasets"][name]``: an optional ``source`` (defaults to
the dataset's name) plus that source's parameters. ``SOURCE_PARAMS`` is the single table
of allowed keys and defaults; the config schema and ``validate_spec`` both read it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from orthskip.errors import ConfigError

AUGMENT_KINDS = ("cifar", None)


@dataclass(frozen=True)
class Param:
    default: Any
    check: Callable[[Any], bool]
    expected: str  # what the check accepts, for error messages


def _int(lo: int, hi: int | None = None, *, optional: bool = False) -> Callable[[Any], bool]:
    def check(v: Any) -> bool:
        if v is None:
            return optional
        return (
            isinstance(v, int) and not isinstance(v, bool) and v >= lo and (hi is None or v <= hi)
        )

    return check


def _num(lo: float, hi: float | None = None, *, lo_open: bool = False) -> Callable[[Any], bool]:
    def check(v: Any) -> bool:
        if not isinstance(v, int | float) or isinstance(v, bool):
            return False
        above = v > lo if lo_open else v >= lo
        return above and (hi is None or v < hi)

    return check


def _bool(v: Any) -> bool:
    return isinstance(v, bool)


def _path(v: Any) -> bool:
    return v is None or isinstance(v, str)


def _augment(v: Any) -> bool:
    return v in AUGMENT_KINDS or v == "none"


def _p(default: Any, check: Callable[[Any], bool], expected: str) -> Param:
    return Param(default, check, expected)


# Synthetic sets default to 1000/1000 points: the embedded grid trains hundreds of
# cells on 2 CPU cores in minutes.
_N = {
    "n_train": _p(1000, _int(1), "an integer >= 1"),
    "n_test": _p(1000, _int(1), "an integer >= 1"),
    "seed": _p(0, _int(0), "an integer >= 0"),
}
_NOISE = {"noise": _p(0.1, _num(0.0), "a number >= 0")}
_VISION = {
    "root": _p(None, _path, "a directory path (string) or null"),
    "download": _p(False, _bool, "true or false"),
    "n_train": _p(None, _int(1, optional=True), "an integer >= 1 or null (all)"),
    "n_test": _p(None, _int(1, optional=True), "an integer >= 1 or null (all)"),
    "seed": _p(0, _int(0), "an integer >= 0 (picks the n_train/n_test subset)"),
}


def _augment_param(default: str | None) -> dict[str, Param]:
    return {"augment": _p(default, _augment, "'cifar' or 'none'/null")}


PARAMS: dict[str, dict[str, Param]] = {
    "circles": {**_N, **_NOISE, "factor": _p(0.5, _num(0.0, 1.0, lo_open=True), "0 < factor < 1")},
    "moons": {**_N, **_NOISE},
    "blobs": {
        **_N,
        "dim": _p(2, _int(1), "an integer >= 1"),
        "n_classes": _p(3, _int(2), "an integer >= 2"),
        "cluster_std": _p(1.0, _num(0.0, lo_open=True), "a number > 0"),
    },
    "parity": {
        **_N,
        "dim": _p(12, _int(2, 1024), "an integer in [2, 1024]"),
        "noise": _p(0.0, _num(0.0), "a number >= 0"),
    },
    "gaussian_mixture": {
        **_N,
        "dim": _p(2, _int(1), "an integer >= 1"),
        "n_classes": _p(2, _int(2), "an integer >= 2"),
        "components_per_class": _p(2, _int(1), "an integer >= 1"),
        "spread": _p(3.0, _num(0.0, lo_open=True), "a number > 0"),
        "cluster_std": _p(1.0, _num(0.0, lo_open=True), "a number > 0"),
    },
    # regression on a known diffeomorphism h of R^d (orthskip.data.diffeo); map_seed fixes h
    "diffeo": {
        **_N,
        "d": _p(2, _int(2, 16), "an integer in [2, 16]"),
        "map_seed": _p(0, _int(0), "an integer >= 0 (draws the rotations of h)"),
        "alpha": _p(
            0.8, _num(0.0, 2.0), "a number in [0, 2) (radial warp; < 2 keeps h invertible)"
        ),
        "beta": _p(1.5, _num(0.0), "a number >= 0 (swirl angle at 0, radians)"),
        "gamma": _p(0.5, _num(0.0), "a number >= 0 (shear strength)"),
    },
    "digits": {
        "n_test": _p(360, _int(1, 1796), "an integer in [1, 1796]"),
        "seed": _p(0, _int(0), "an integer >= 0"),
    },
    "mnist": {**_VISION, **_augment_param(None)},
    "fashion_mnist": {**_VISION, **_augment_param(None)},
    "cifar10": {**_VISION, **_augment_param("cifar")},
    "cifar100": {**_VISION, **_augment_param("cifar")},
    # 96×96: the same 4-pixel pad + crop + flip (the seed codebase's choice is not stated)
    "stl10": {**_VISION, **_augment_param("cifar")},
}

SOURCE_NAMES: tuple[str, ...] = tuple(PARAMS)
_SYNTHETIC_CLASSES = {"circles": 2, "moons": 2, "parity": 2}
#: sources whose targets are real vectors (MSE), not class labels
REGRESSION_SOURCES: tuple[str, ...] = ("diffeo",)

#: ``{source: {key: default}}`` for the config schema (``source`` itself is always allowed).
SOURCE_PARAMS: dict[str, dict[str, Any]] = {
    src: {k: p.default for k, p in params.items()} for src, params in PARAMS.items()
}


def source_of(name: str, spec: dict | None) -> str:
    """The source a dataset entry uses: ``spec["source"]``, else the entry's own name."""
    src = (spec or {}).get("source", name)
    if src not in PARAMS:
        key = f"datasets.{name}.source" if spec and "source" in spec else f"datasets.{name}"
        raise ConfigError(
            f"{key}: unknown dataset source {src!r}; allowed sources: {', '.join(SOURCE_NAMES)}"
        )
    return src


def validate_spec(name: str, spec: dict | None) -> None:
    """Raise ConfigError naming the key and the allowed keys/values if ``spec`` is bad."""
    if spec is not None and not isinstance(spec, dict):
        raise ConfigError(f"datasets.{name}: expected a mapping of parameters, got {spec!r}")
    src = source_of(name, spec)
    params = PARAMS[src]
    for key, value in (spec or {}).items():
        if key == "source":
            continue
        if key not in params:
            raise ConfigError(
                f"datasets.{name}.{key}: unknown key for source {src!r}; "
                f"allowed keys: source, {', '.join(params)}"
            )
        if not params[key].check(value):
            raise ConfigError(
                f"datasets.{name}.{key}: expected {params[key].expected}, got {value!r}"
            )
    full = resolve_spec(name, spec, _validated=True)
    k = _SYNTHETIC_CLASSES.get(src) or full.get("n_classes")
    if k is not None:
        # the stratified split puts every class in both splits
        for key in ("n_train", "n_test"):
            if full[key] < k:
                raise ConfigError(
                    f"datasets.{name}.{key}: {full[key]} is fewer than the {k} classes; "
                    f"expected an integer >= {k}"
                )


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
