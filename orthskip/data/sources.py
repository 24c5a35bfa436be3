"""The registry of dataset sources: name → builder, parameters and default augmentation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from orthskip.config.options import Option
from orthskip.data.raw import RawSplit
from orthskip.data.spec import PARAMS


def _lazy(module: str, func: str) -> Callable[[dict[str, Any]], RawSplit]:
    # scikit-learn takes seconds to import: only a prepare job pays for it, not every
    # training job that merely loads a prepared file.
    def build(spec: dict[str, Any]) -> RawSplit:
        import importlib

        return getattr(importlib.import_module(f"orthskip.data.{module}"), func)(spec)

    build.__name__ = func
    return build


def _vision(source: str) -> Callable[[dict[str, Any]], RawSplit]:
    # torchvision is imported only when a vision set is prepared (it is slow to import
    # and needs orthskip.data.tv_compat on CPU-only torch).
    def build(spec: dict[str, Any]) -> RawSplit:
        from orthskip.data import vision

        return vision.load_torchvision(source, spec)

    build.__name__ = source
    return build


@dataclass(frozen=True)
class Source:
    name: str
    kind: str  # "synthetic", "sklearn" or "torchvision"
    build: Callable[[dict[str, Any]], RawSplit]
    params: dict[str, Option]


_BUILDERS: dict[str, tuple[str, Callable[[dict[str, Any]], RawSplit]]] = {
    "circles": ("synthetic", _lazy("synthetic", "circles")),
    "moons": ("synthetic", _lazy("synthetic", "moons")),
    "blobs": ("synthetic", _lazy("synthetic", "blobs")),
    "parity": ("synthetic", _lazy("synthetic", "parity")),
    "gaussian_mixture": ("synthetic", _lazy("synthetic", "gaussian_mixture")),
    "diffeo": ("synthetic", _lazy("synthetic", "diffeo")),
    "digits": ("sklearn", _lazy("sklearn_sets", "digits")),
    "mnist": ("torchvision", _vision("mnist")),
    "fashion_mnist": ("torchvision", _vision("fashion_mnist")),
    "cifar10": ("torchvision", _vision("cifar10")),
    "cifar100": ("torchvision", _vision("cifar100")),
    "stl10": ("torchvision", _vision("stl10")),
}

SOURCES: dict[str, Source] = {
    name: Source(name, kind, build, PARAMS[name]) for name, (kind, build) in _BUILDERS.items()
}
assert set(SOURCES) == set(PARAMS)
