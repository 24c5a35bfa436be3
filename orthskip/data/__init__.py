"""Datasets: synthetic sets, scikit-learn digits, torchvision image sets; prepare and load.

Public API (docs/interfaces.md, "orthskip.data"): ``Prepared``, ``SOURCES``,
``SOURCE_PARAMS``, ``validate_spec``, ``resolve_spec``, ``prepare_dataset``,
``load_prepared``, ``augment_batch``.
"""

from orthskip.data.augment import AUGMENTS, augment_batch
from orthskip.data.prepare import Prepared, load_prepared, prepare_dataset, read_manifest
from orthskip.data.sources import SOURCES, Source
from orthskip.data.spec import SOURCE_NAMES, SOURCE_PARAMS, resolve_spec, validate_spec

__all__ = [
    "AUGMENTS",
    "SOURCES",
    "SOURCE_NAMES",
    "SOURCE_PARAMS",
    "Prepared",
    "Source",
    "augment_batch",
    "load_prepared",
    "prepare_dataset",
    "read_manifest",
    "resolve_spec",
    "validate_spec",
]
