"""Loading and checking the pipeline config; cells and their effective configs.

The JSON schema (workflow/schemas/config.schema.yaml) checks structure and types and
fills defaults; this module checks what the schema cannot know: names that live in the
library's registries and depths an architecture can build. Every message names the
key and the allowed values, and all of it runs before any job starts.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from orthskip.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMA = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"
TOP_KEYS = ("datasets", "grid", "model", "skip_options", "train", "metrics")
GRID_KEYS = ("arch", "datasets", "skips", "depths", "seeds")


@dataclass(frozen=True, order=True)
class Cell:
    dataset: str
    arch: str
    skip: str
    depth: int
    seed: int

    @property
    def path(self) -> str:
        """Directory of the cell below results/cells/."""
        return f"{self.dataset}/{self.arch}/{self.skip}/d{self.depth}/s{self.seed}"

    @classmethod
    def parse(cls, text: str) -> Cell:
        """Parse ``dataset/arch/skip/dDEPTH/sSEED`` (the form of :attr:`path`)."""
        parts = text.strip("/").split("/")
        if len(parts) != 5 or parts[3][:1] != "d" or parts[4][:1] != "s":
            raise ConfigError(f"cell {text!r}: expected dataset/arch/skip/dDEPTH/sSEED")
        try:
            return cls(parts[0], parts[1], parts[2], int(parts[3][1:]), int(parts[4][1:]))
        except ValueError as err:
            raise ConfigError(f"cell {text!r}: depth and seed must be integers") from err

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _allowed(values: Any) -> str:
    return ", ".join(sorted(str(v) for v in values))


def _unknown(kind: str, key: str, value: Any, allowed: Any) -> ConfigError:
    close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(
        f"config key '{key}': unknown {kind} {value!r}{hint}; allowed: {_allowed(allowed)}"
    )


def check_top_keys(cfg: dict[str, Any]) -> None:
    if not isinstance(cfg, dict):
        raise ConfigError("config must be a mapping with keys: " + _allowed(TOP_KEYS))
    for key in cfg:
        if key not in TOP_KEYS:
            raise _unknown("top-level key", key, key, TOP_KEYS)
    for key in ("datasets", "grid"):
        if key not in cfg:
            raise ConfigError(f"config key '{key}' is required")


def check_grid(cfg: dict[str, Any]) -> None:
    """Registry and range checks of the grid, with messages naming the key."""
    from orthskip.data import SOURCES
    from orthskip.models import ARCHS, check_depth
    from orthskip.skips import SKIPS

    datasets = cfg.get("datasets") or {}
    if not isinstance(datasets, dict) or not datasets:
        raise ConfigError("config key 'datasets': expected a non-empty mapping name -> spec")
    for name, spec in datasets.items():
        if not isinstance(spec, dict) or "source" not in spec:
            raise ConfigError(f"config key 'datasets.{name}': expected a mapping with 'source'")
        if spec["source"] not in SOURCES:
            raise _unknown("dataset source", f"datasets.{name}.source", spec["source"], SOURCES)
    grid = cfg.get("grid")
    if not isinstance(grid, list) or not grid:
        raise ConfigError("config key 'grid': expected a non-empty list of grid entries")
    for i, entry in enumerate(grid):
        where = f"grid[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"config key '{where}': expected a mapping")
        for key in entry:
            if key not in GRID_KEYS:
                raise _unknown("key", f"{where}.{key}", key, GRID_KEYS)
        for key in GRID_KEYS:
            if key not in entry:
                raise ConfigError(f"config key '{where}.{key}' is required")
        for key in ("datasets", "skips", "depths", "seeds"):
            if not isinstance(entry[key], list) or not entry[key]:
                raise ConfigError(
                    f"config key '{where}.{key}': expected a non-empty list, got {entry[key]!r}"
                )
        if entry["arch"] not in ARCHS:
            raise _unknown("architecture", f"{where}.arch", entry["arch"], ARCHS)
        for ds in entry["datasets"]:
            if ds not in datasets:
                raise _unknown("dataset", f"{where}.datasets", ds, datasets)
        for skip in entry["skips"]:
            if skip not in SKIPS:
                raise _unknown("skip kind", f"{where}.skips", skip, SKIPS)
        for depth in entry["depths"]:
            if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
                raise ConfigError(
                    f"config key '{where}.depths': depth {depth!r} is not allowed; "
                    "depths are integers >= 1"
                )
            try:
                check_depth(entry["arch"], depth)
            except ConfigError as err:
                raise ConfigError(f"config key '{where}.depths': {err}") from None
        for seed in entry["seeds"]:
            if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
                raise ConfigError(
                    f"config key '{where}.seeds': seed {seed!r} is not allowed; "
                    "seeds are integers >= 0"
                )


def check_options(cfg: dict[str, Any]) -> None:
    """Dataset specs, model and skip options against the registries' known keys."""
    from orthskip.data import validate_spec
    from orthskip.models import validate_model_options
    from orthskip.skips import validate_skip_options

    for name, spec in cfg["datasets"].items():
        validate_spec(name, spec)
    for arch, opts in cfg.get("model", {}).items():
        validate_model_options(arch, opts)
    validate_skip_options(cfg.get("skip_options", {}))
    epochs = cfg["train"]["epochs"]
    for e in cfg["train"]["snapshot_epochs"]:
        if e > epochs:
            raise ConfigError(
                f"config key 'train.snapshot_epochs': epoch {e} is after the last epoch "
                f"(train.epochs = {epochs}); allowed: 0..{epochs}"
            )


def prepare_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Check ``cfg`` completely and fill defaults in place; returns it.

    Called by the Snakefile (so a bad config fails before any job starts) and by the CLI.
    """
    from snakemake.utils import validate

    check_top_keys(cfg)
    check_grid(cfg)
    try:
        validate(cfg, str(SCHEMA))
    except Exception as err:  # snakemake wraps jsonschema errors in WorkflowError
        raise ConfigError(f"config does not match {SCHEMA.name}: {err}") from None
    check_options(cfg)
    return cfg


def load_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    with path.open() as fh:
        cfg = yaml.safe_load(fh) or {}
    return prepare_config(cfg)


def cells(cfg: dict[str, Any]) -> list[Cell]:
    """Every cell of the grid, sorted and without duplicates."""
    found = {
        Cell(ds, entry["arch"], skip, int(depth), int(seed))
        for entry in cfg["grid"]
        for ds in entry["datasets"]
        for skip in entry["skips"]
        for depth in entry["depths"]
        for seed in entry["seeds"]
    }
    return sorted(found)


def cell_config(cfg: dict[str, Any], cell: Cell) -> dict[str, Any]:
    """The part of the config one cell depends on (its hash decides reruns and resumes)."""
    return {
        "cell": cell.as_dict(),
        "dataset": copy.deepcopy(cfg["datasets"][cell.dataset]),
        "model": copy.deepcopy(cfg.get("model", {}).get(cell.arch, {})),
        "skip_options": copy.deepcopy(cfg.get("skip_options", {}).get(cell.skip, {})),
        "train": copy.deepcopy(cfg["train"]),
        "metrics": copy.deepcopy(cfg["metrics"]),
    }


def config_hash(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def resume_key(cell_cfg: dict[str, Any]) -> str:
    """Hash of everything that must match for training to continue from a checkpoint.

    Epoch counts and snapshot epochs are left out so that a finished run can be
    continued for more epochs.
    """
    stripped = copy.deepcopy(cell_cfg)
    stripped["train"].pop("epochs", None)
    stripped["train"].pop("snapshot_epochs", None)
    stripped.pop("metrics", None)
    return config_hash(stripped)
