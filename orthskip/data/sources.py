"""The registry of dataset sources: name → builder, parameters and default augmentation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from orthskip.config.options import Option
from orthskip.data.raw import RawSplit
from orthskip.data.spec import PARAMS, SOURCE_KINDS


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
    kind: str  # spec.SOURCE_KINDS: "synthetic", "sklearn" or "torchvision"
    build: Callable[[dict[str, Any]], RawSplit]
    params: dict[str, Option]


_BUILDERS: dict[str, Callable[[dict[str, Any]], RawSplit]] = {
    "circles": _lazy("synthetic", "circles"),
    "moons": _lazy("synthetic", "moons"),
    "blobs": _lazy("synthetic", "blobs"),
    "parity": _lazy("synthetic", "parity"),
    "gaussian_mixture": _lazy("synthetic", "gaussian_mixture"),
    "diffeo": _lazy("synthetic", "diffeo"),
    "digits": _lazy("sklearn_sets", "digits"),
    **{name: _vision(name) for name, kind in SOURCE_KINDS.items() if kind == "torchvision"},
}

SOURCES: dict[str, Source] = {
    name: Source(name, SOURCE_KINDS[name], build, PARAMS[name]) for name, build in _BUILDERS.items()
}
assert set(SOURCES) == set(PARAMS)
