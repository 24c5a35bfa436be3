"""Make ``import torchvision`` work when its C++ ops cannot load (CPU torch + CUDA wheel).

The package registry's torchvision 0.28.0 wheel is a CUDA build. With the CPU build of
torch its ``_C`` extension fails to load (silently), and ``torchvision/_meta_registrations``
then calls ``torch.library.register_fake("torchvision::nms")`` on an operator that was
never defined, so ``import torchvision`` raises
``RuntimeError: operator torchvision::nms does not exist`` (pytorch/vision#9085).

Datasets and transforms do not use the C++ ops. When, and only when, the import fails
that way, we define the schemas of the two ops that ``_meta_registrations`` registers
fakes for (``nms``, ``qnms``) in a ``torchvision`` library fragment and import again.
The ops then exist without kernels: calling them fails loudly, which is what the
unfixed import would do anyway. A working torchvision (CPU or CUDA build matching torch)
is imported untouched.

Import torchvision in this project through ``import_torchvision()``.
"""

from __future__ import annotations

import importlib
import sys
import threading
from types import ModuleType

import torch

# Kept alive at module level: the schemas are removed when the Library object dies.
_LIB: torch.library.Library | None = None
_LOCK = threading.Lock()
_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)


def _op_exists(name: str) -> bool:
    try:
        getattr(torch.ops.torchvision, name)
    except (AttributeError, RuntimeError):
        return False
    return True


def _define_missing_schemas() -> None:
    global _LIB
    if _LIB is None:
        _LIB = torch.library.Library("torchvision", "FRAGMENT")
    for schema in _SCHEMAS:
        if not _op_exists(schema.split("(", 1)[0]):
            _LIB.define(schema)


def patched() -> bool:
    """True if this module had to define the op schemas (torchvision's ops are missing)."""
    return _LIB is not None


def import_torchvision() -> ModuleType:
    """Import and return ``torchvision``, applying the compatibility step if needed."""
    with _LOCK:
        mod = sys.modules.get("torchvision")
        if mod is not None and hasattr(mod, "datasets"):
            return mod
        try:
            return importlib.import_module("torchvision")
        except RuntimeError as err:
            if "torchvision::nms" not in str(err) and "torchvision::qnms" not in str(err):
                raise
        # The failed import removed ``torchvision`` itself from sys.modules; its already
        # imported submodules (extension, _autograd_registrations) stay and are reused.
        ext = sys.modules.get("torchvision.extension")
        if ext is not None and ext._has_ops():
            raise RuntimeError("torchvision's C++ ops loaded but nms is missing: reinstall it")
        _define_missing_schemas()
        return importlib.import_module("torchvision")


import_torchvision()
