"""Datasets: synthetic sets, scikit-learn digits, torchvision image sets; load and augment.

Public API (docs/interfaces.md, "orthskip.data"): ``Prepared``, ``SOURCES`` (one
``Source`` per source; ``register_source`` adds one), ``SOURCE_PARAMS``, ``validate_spec``,
``resolve_spec``, ``load_prepared``, ``augment_batch``. Building a prepared set is the prepare stage
(``orthskip.stages.prepare.prepare_dataset``).

The specs (``orthskip.data.spec``) load without torch, so that checking a config and
planning a run (workflow/rules/common.smk) do not; the names that need torch (loading,
augmenting) are imported on first use.
"""

from typing import Any

from orthskip.data.spec import (
    SOURCE_PARAMS,
    SOURCES,
    Source,
    register_source,
    resolve_spec,
    validate_spec,
)


def __getattr__(name: str) -> Any:
    # imported on first use (torch); written out, so that the rules' code fingerprints
    # (workflow/lib/code_fingerprint.py) see these modules in their import closure
    if name in ("AUGMENTS", "augment_batch"):
        from orthskip.data import augment

        return getattr(augment, name)
    if name in ("Prepared", "load_prepared", "read_manifest"):
        from orthskip.data import prepared

        return getattr(prepared, name)
    raise AttributeError(f"module 'orthskip.data' has no attribute {name!r}")


__all__ = [
    "AUGMENTS",
    "SOURCES",
    "SOURCE_PARAMS",
    "Prepared",
    "Source",
    "augment_batch",
    "load_prepared",
    "read_manifest",
    "register_source",
    "resolve_spec",
    "validate_spec",
]
