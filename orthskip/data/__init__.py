"""Datasets: synthetic sets, scikit-learn digits, torchvision image sets; load and augment.

Public API (docs/interfaces.md, "orthskip.data"): ``Prepared``, ``SOURCES`` (one
``Source`` per source; ``register_source`` adds one), ``SOURCE_PARAMS``, ``validate_spec``,
``resolve_spec``, ``load_prepared``, ``augment_batch``. Building a prepared set is the prepare stage
(``orthskip.stages.prepare.prepare_dataset``).
"""

from orthskip.data.augment import AUGMENTS, augment_batch
from orthskip.data.prepared import Prepared, load_prepared, read_manifest
from orthskip.data.spec import (
    SOURCE_PARAMS,
    SOURCES,
    Source,
    register_source,
    resolve_spec,
    validate_spec,
)

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
