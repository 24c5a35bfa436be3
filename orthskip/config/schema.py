"""The config schema's registry sections, generated from the registries' option tables.

workflow/schemas/config.schema.yaml is the one place for the keys of the pipeline itself
(grid, train, metrics, execution, approx); the sections whose keys belong to a registry
(``datasets`` per source, ``model`` per architecture, ``skip_options`` per kind,
``train.optimizer``) and the names it enumerates (architectures, skip kinds, dataset
sources, metric families, the approximation kinds, the name patterns) are written into it
from the library. A test checks that the committed file is what this module writes; after
changing a registry, regenerate it with ``python -m orthskip config schema --write``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

# Only the generator imports every registry: the config checks (orthskip.config.grid) validate
# against the committed file and read only the torch-free option tables (orthskip.nn.*_specs),
# so a stage's code fingerprint does not take in every registry's module.
from orthskip.analysis.approx import VARIANT_KINDS
from orthskip.analysis.metrics.extract import FAMILIES, family_option_table
from orthskip.config.grid import MAX_SEED, NAME_PATTERNS, SCHEMA, load_schema
from orthskip.config.options import table_schema
from orthskip.data.spec import SOURCE_DESCRIPTION, SOURCES, TORCH_SEED_MAX, source_schema
from orthskip.nn.arch_specs import ARCH_SPECS
from orthskip.nn.optim_specs import OPTIM_SPECS
from orthskip.nn.skip_kinds import KINDS
from orthskip.nn.skip_specs import SKIP_SPECS


def _datasets(section: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": section["description"],
        "type": "object",
        "minProperties": 1,
        "propertyNames": {"pattern": f"^{NAME_PATTERNS['dataset']}$"},
        "additionalProperties": {
            "description": "a dataset: its source and that source's parameters",
            "type": "object",
            "required": ["source"],
            "properties": {"source": {"description": SOURCE_DESCRIPTION, "enum": list(SOURCES)}},
            "allOf": [
                {"if": {"properties": {"source": {"const": src}}}, "then": source_schema(src)}
                for src in SOURCES
            ],
        },
    }


def _per_name(section: dict[str, Any], tables: dict[str, Any], what: str) -> dict[str, Any]:
    return {
        "description": section["description"],
        "type": "object",
        "default": {},
        "additionalProperties": False,
        "properties": {
            name: table_schema(t, f"options of {what} {name}") for name, t in tables.items()
        },
    }


def _with_family_options(metrics: dict[str, Any]) -> dict[str, Any]:
    """The ``metrics`` section's keys with the metric families' options (from the registry)
    right after ``families``, in registry order; the other keys as written."""
    table = family_option_table()
    out: dict[str, Any] = {}
    for key, sub in metrics.items():
        if key in table:
            continue
        out[key] = sub
        if key == "families":
            out.update({k: opt.schema() for k, opt in table.items()})
    return out


def generate(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its registry sections (re)written from the registries."""
    out = copy.deepcopy(schema)
    props = out["properties"]
    props["datasets"] = _datasets(props["datasets"])
    model_tables = {name: arch.options for name, arch in ARCH_SPECS.items()}
    props["model"] = _per_name(props["model"], model_tables, "architecture")
    props["skip_options"] = _per_name(props["skip_options"], SKIP_SPECS, "skip kind")
    train = props["train"]["properties"]
    train["optimizer"] = {**table_schema(OPTIM_SPECS, train["optimizer"]["description"]),
                          "default": {}}  # fmt: skip
    variants = props["variants"]
    variants["propertyNames"] = {"pattern": f"^{NAME_PATTERNS['variant']}$"}
    variants["additionalProperties"]["properties"]["skip"]["enum"] = list(KINDS)
    grid = props["grid"]["items"]["properties"]
    grid["arch"]["enum"] = list(ARCH_SPECS)
    grid["variants"]["items"]["pattern"] = f"^{NAME_PATTERNS['variant']}$"
    # seeds the generators take (MAX_SEED: the training engine's derived seeds fit)
    grid["seeds"]["items"]["maximum"] = MAX_SEED
    metrics = props["metrics"]["properties"]
    metrics["warp_seed"]["maximum"] = MAX_SEED
    metrics["probe_seed"]["maximum"] = TORCH_SEED_MAX
    metrics["families"]["items"]["enum"] = list(FAMILIES)
    props["metrics"]["properties"] = _with_family_options(metrics)
    approx_kinds = props["approx"]["properties"]["kinds"]
    approx_kinds["items"]["enum"] = list(VARIANT_KINDS)
    approx_kinds["default"] = list(VARIANT_KINDS)
    return out


def render(schema: dict[str, Any]) -> str:
    header = (
        "# Generated in part: see orthskip/config/schema.py (`orthskip config schema --write`).\n"
    )
    return header + yaml.safe_dump(schema, sort_keys=False, width=96, allow_unicode=True)


def expected_text(path: Path = SCHEMA) -> str:
    """What the committed schema file must read."""
    return render(generate(load_schema(path)))


def write(path: Path = SCHEMA) -> bool:
    """Regenerate ``path``; True when it changed."""
    text = expected_text(path)
    if path.read_text() == text:
        return False
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return True
