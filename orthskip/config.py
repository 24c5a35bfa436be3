"""Loading and checking the pipeline config; cells and their effective configs.

The JSON schema (workflow/schemas/config.schema.yaml) checks structure and types and
fills defaults; this module checks what the schema cannot know: names that live in the
library's registries and depths an architecture can build. Every message names the
key and the allowed values, and all of it runs before any job starts.

A *variant* is a name, a skip kind and overrides of the cell-level sections
(``skip_options``, ``model``, ``train``, ``metrics``), defined under ``variants:``; a bare
skip kind is the variant of its own name with no overrides. The variant name is the
cell's path segment; the kind stays in the ``skip`` field of the cell's config.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from orthskip.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMA = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"
TOP_KEYS = (
    "datasets", "variants", "grid", "model", "skip_options", "train", "metrics", "execution",
    "approx",
)  # fmt: skip
# Sections whose keys check_schema_keys checks against the schema before validation.
CLOSED_SECTIONS = ("train", "metrics", "approx")
# approx.<key> filters of the identity cells the approximation stage takes (null: all).
APPROX_FILTERS = {"archs": "arch", "datasets": "dataset", "variants": "variant",
                  "depths": "depth", "seeds": "seed"}  # fmt: skip
GRID_KEYS = ("arch", "datasets", "variants", "depths", "seeds")
# Sections of the config that a variant may override for its cells.
VARIANT_KEYS = ("skip", "skip_options", "model", "train", "metrics")
# Names that become path segments and wildcards: the Snakefile constrains its wildcards
# with these same patterns, so a name that passes here always matches a rule.
NAME_PATTERNS = {"dataset": r"[A-Za-z0-9_-]+", "variant": r"[a-z0-9_]+"}
WILDCARD_PATTERNS = {**NAME_PATTERNS, "arch": r"[a-z0-9_]+", "depth": r"[0-9]+", "seed": r"[0-9]+"}


@dataclass(frozen=True, order=True)
class Cell:
    dataset: str
    arch: str
    variant: str
    depth: int
    seed: int

    @property
    def path(self) -> str:
        """Directory of the cell below results/cells/."""
        return f"{self.dataset}/{self.arch}/{self.variant}/d{self.depth}/s{self.seed}"

    @classmethod
    def parse(cls, text: str) -> Cell:
        """Parse ``dataset/arch/variant/dDEPTH/sSEED`` (the form of :attr:`path`)."""
        parts = text.strip("/").split("/")
        if len(parts) != 5 or parts[3][:1] != "d" or parts[4][:1] != "s":
            raise ConfigError(f"cell {text!r}: expected dataset/arch/variant/dDEPTH/sSEED")
        try:
            return cls(parts[0], parts[1], parts[2], int(parts[3][1:]), int(parts[4][1:]))
        except ValueError as err:
            raise ConfigError(f"cell {text!r}: depth and seed must be integers") from err

    @property
    def pack(self) -> str:
        """The pack key: the cell's path without the seed (cells that differ only in seed)."""
        return f"{self.dataset}/{self.arch}/{self.variant}/d{self.depth}"

    @classmethod
    def of(cls, cell: dict[str, Any]) -> Cell:
        """The cell of a cell config's ``cell`` entry (which also names the skip kind)."""
        return cls(*(cell[f] for f in ("dataset", "arch", "variant", "depth", "seed")))

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
    check_schema_keys(cfg)


def check_schema_keys(cfg: dict[str, Any]) -> None:
    """Unknown keys in the schema's closed sections (``additionalProperties: false``).

    Runs before the schema validation so that a misspelt key is named with the allowed
    keys and a did-you-mean, not with the schema dump jsonschema prints. Values of the
    wrong type are left to the validation. A variant's ``train``/``metrics`` overrides are
    checked against those sections too. The grid and ``variants:`` keys have their own
    checks with their own messages (check_grid).
    """
    schema = _schema()
    overrides = [(f"variants.{name}", spec) for name, spec in (cfg.get("variants") or {}).items()]
    for where, spec in [("", cfg), *overrides]:
        if not isinstance(spec, dict):
            continue  # check_variants names it
        for section in CLOSED_SECTIONS:
            if section in spec and (where == "" or section != "approx"):
                path = f"{where}.{section}" if where else section
                _closed_keys(schema["properties"][section], spec[section], path)


def _closed_keys(schema: dict[str, Any], value: Any, where: str) -> None:
    props = schema.get("properties") or {}
    extra = schema.get("additionalProperties", True)
    if isinstance(value, dict):
        for key, sub in value.items():
            path = f"{where}.{key}" if where else str(key)
            if key in props:
                _closed_keys(props[key], sub, path)
            elif extra is False:
                raise _unknown("key", path, key, props)
            elif isinstance(extra, dict):
                _closed_keys(extra, sub, path)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            _closed_keys(schema["items"], item, f"{where}[{i}]")


def _check_name(kind: str, key: str, name: Any) -> None:
    pattern = NAME_PATTERNS[kind]
    if not isinstance(name, str) or not re.fullmatch(pattern, name):
        raise ConfigError(
            f"config key '{key}': {kind} name {name!r} is not allowed; names become paths "
            f"and wildcards and must match {pattern}"
        )


def check_variants(cfg: dict[str, Any]) -> None:
    """Definitions under ``variants:``: a valid name, a known kind, known sections only."""
    from orthskip.skips import SKIPS

    variants = cfg.get("variants") or {}
    if not isinstance(variants, dict):
        raise ConfigError("config key 'variants': expected a mapping name -> definition")
    for name, spec in variants.items():
        where = f"variants.{name}"
        _check_name("variant", "variants", name)
        if name in SKIPS:
            raise ConfigError(
                f"config key '{where}': {name!r} is the name of a skip kind (the bare variant); "
                "give the variant another name"
            )
        if not isinstance(spec, dict) or "skip" not in spec:
            raise ConfigError(f"config key '{where}': expected a mapping with 'skip'")
        for key in spec:
            if key not in VARIANT_KEYS:
                raise _unknown("key", f"{where}.{key}", key, VARIANT_KEYS)
        if spec["skip"] not in SKIPS:
            raise _unknown("skip kind", f"{where}.skip", spec["skip"], SKIPS)
        for key in VARIANT_KEYS[1:]:
            if not isinstance(spec.get(key, {}), dict):
                raise ConfigError(f"config key '{where}.{key}': expected a mapping")


def variant_names(cfg: dict[str, Any]) -> list[str]:
    """Every name a grid entry may list: the skip kinds and the defined variants."""
    from orthskip.skips import SKIPS

    return [*SKIPS, *(cfg.get("variants") or {})]


def variant_of(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    """The definition of variant ``name``: ``{"skip": kind, <overrides>}``."""
    return (cfg.get("variants") or {}).get(name) or {"skip": name}


def check_grid(cfg: dict[str, Any]) -> None:
    """Registry and range checks of the grid, with messages naming the key."""
    from orthskip.data import SOURCES
    from orthskip.models import ARCHS, check_depth

    datasets = cfg.get("datasets") or {}
    if not isinstance(datasets, dict) or not datasets:
        raise ConfigError("config key 'datasets': expected a non-empty mapping name -> spec")
    for name, spec in datasets.items():
        _check_name("dataset", "datasets", name)
        if not isinstance(spec, dict) or "source" not in spec:
            raise ConfigError(f"config key 'datasets.{name}': expected a mapping with 'source'")
        if spec["source"] not in SOURCES:
            raise _unknown("dataset source", f"datasets.{name}.source", spec["source"], SOURCES)
    check_variants(cfg)
    names = variant_names(cfg)
    grid = cfg.get("grid")
    if not isinstance(grid, list) or not grid:
        raise ConfigError("config key 'grid': expected a non-empty list of grid entries")
    for i, entry in enumerate(grid):
        where = f"grid[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"config key '{where}': expected a mapping")
        if "skips" in entry:
            raise ConfigError(
                f"config key '{where}.skips' is now '{where}.variants' (skip kinds and the "
                "names defined under 'variants:'); rename it"
            )
        for key in entry:
            if key not in GRID_KEYS:
                raise _unknown("key", f"{where}.{key}", key, GRID_KEYS)
        for key in GRID_KEYS:
            if key not in entry:
                raise ConfigError(f"config key '{where}.{key}' is required")
        for key in ("datasets", "variants", "depths", "seeds"):
            if not isinstance(entry[key], list) or not entry[key]:
                raise ConfigError(
                    f"config key '{where}.{key}': expected a non-empty list, got {entry[key]!r}"
                )
        if entry["arch"] not in ARCHS:
            raise _unknown("architecture", f"{where}.arch", entry["arch"], ARCHS)
        for ds in entry["datasets"]:
            if ds not in datasets:
                raise _unknown("dataset", f"{where}.datasets", ds, datasets)
        for variant in entry["variants"]:
            if variant not in names:
                raise _unknown("skip kind or variant", f"{where}.variants", variant, names)
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


def _schema() -> dict[str, Any]:
    with SCHEMA.open() as fh:
        return yaml.safe_load(fh)


def _check_section(schema: dict[str, Any], section: str, value: Any, where: str) -> None:
    """A variant's merged section against the schema's definition of that section."""
    import jsonschema

    sub = schema["properties"][section]
    errors = sorted(jsonschema.Draft202012Validator(sub).iter_errors(value), key=str)
    if errors:
        err = errors[0]
        path = ".".join(str(k) for k in (where, *err.absolute_path))
        raise ConfigError(f"config key '{path}': {err.message}")


def check_options(cfg: dict[str, Any]) -> None:
    """Dataset specs, model and skip options against the registries' known keys.

    Runs after the schema filled the defaults. Each variant's overrides are merged into
    the sections they override and checked there, so a bad override names its own key.
    """
    from orthskip.data import validate_spec
    from orthskip.models import validate_model_options
    from orthskip.skips import validate_skip_options

    for name, spec in cfg["datasets"].items():
        validate_spec(name, spec)
    for arch, opts in cfg.get("model", {}).items():
        validate_model_options(arch, opts)
    validate_skip_options(cfg.get("skip_options", {}))
    _check_epochs(cfg["train"], "train")
    check_approx(cfg)
    schema = _schema()
    used = {(e["arch"], v) for e in cfg["grid"] for v in e["variants"]}
    for name, spec in (cfg.get("variants") or {}).items():
        where = f"variants.{name}"
        kind = spec["skip"]
        for section in ("train", "metrics"):
            if section in spec:
                merged = deep_merge(cfg[section], spec[section])
                _check_section(schema, section, merged, f"{where}.{section}")
        _check_epochs(deep_merge(cfg["train"], spec.get("train", {})), f"{where}.train")
        opts = deep_merge(cfg.get("skip_options", {}).get(kind, {}), spec.get("skip_options", {}))
        try:
            validate_skip_options({kind: opts})
            for arch in sorted(a for a, v in used if v == name):
                validate_model_options(
                    arch, deep_merge(cfg.get("model", {}).get(arch, {}), spec.get("model", {}))
                )
        except ConfigError as err:
            raise ConfigError(f"config key '{where}': {err}") from None


def _check_epochs(train: dict[str, Any], where: str) -> None:
    epochs = train["epochs"]
    for e in train["snapshot_epochs"]:
        if e > epochs:
            raise ConfigError(
                f"config key '{where}.snapshot_epochs': epoch {e} is after the last epoch "
                f"({where}.epochs = {epochs}); allowed: 0..{epochs}"
            )


def _identity_cells(cfg: dict[str, Any]) -> list[Cell]:
    return [c for c in cells(cfg) if variant_of(cfg, c.variant)["skip"] == "identity"]


def check_approx(cfg: dict[str, Any]) -> None:
    """Every value of an ``approx`` filter must select some identity cell of the grid (a typo
    or a non-identity variant would silently drop the stage), and given filters together
    must select at least one. Runs after the schema filled the section's defaults."""
    section = cfg.get("approx") or {}
    if not section.get("enabled", True):
        return
    pool = _identity_cells(cfg)
    given = {k: v for k, v in section.items() if k in APPROX_FILTERS and v is not None}
    for key, values in given.items():
        field = APPROX_FILTERS[key]
        allowed = sorted({getattr(c, field) for c in pool})
        for value in values:
            if value in allowed:
                continue
            why = "no identity cell of the grid has it"
            if key == "variants" and value in variant_names(cfg):
                why = f"its skip kind is {variant_of(cfg, value)['skip']!r}, not identity"
            raise ConfigError(
                f"config key 'approx.{key}': {value!r} selects nothing ({why}); allowed: "
                + (_allowed(allowed) or "none (the grid has no identity-kind cell)")
            )
    if given and not approx_cells(cfg):
        raise ConfigError(
            "config keys 'approx." + "', 'approx.".join(given) + "': together they select no "
            "identity cell of the grid; widen them, or set approx.enabled: false"
        )


def approx_defaults() -> dict[str, Any]:
    """The ``approx`` section as the schema fills it when a config leaves it out."""
    props = _schema()["properties"]["approx"]["properties"]
    return {key: copy.deepcopy(spec.get("default")) for key, spec in props.items()}


def approx_cells(cfg: dict[str, Any]) -> list[Cell]:
    """The cells of the approximation stage: every grid cell whose variant's kind is identity,
    kept by the ``approx`` filters; none when ``approx.enabled`` is false."""
    section = cfg.get("approx") or {}
    if not section.get("enabled", True):
        return []
    keep = _identity_cells(cfg)
    for key, field in APPROX_FILTERS.items():
        if section.get(key) is not None:
            keep = [c for c in keep if getattr(c, field) in section[key]]
    return keep


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
    try:
        with path.open() as fh:
            cfg = yaml.safe_load(fh) or {}
    except yaml.MarkedYAMLError as err:
        raise ConfigError(_yaml_message(path, err)) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    return prepare_config(cfg)


def _yaml_message(path: Path, err: yaml.MarkedYAMLError) -> str:
    """``FILE:LINE:COLUMN: problem`` (1-based, as editors count), plus what YAML was in."""
    mark, cmark = err.problem_mark or err.context_mark, err.context_mark
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
    context = ""
    if err.context:
        at = f" started at line {cmark.line + 1}, column {cmark.column + 1}" if cmark else ""
        context = f" ({err.context}{at})"
    return f"{where}: YAML syntax error: {err.problem}{context}"


def cells(cfg: dict[str, Any]) -> list[Cell]:
    """Every cell of the grid, sorted and without duplicates."""
    found = {
        Cell(ds, entry["arch"], variant, int(depth), int(seed))
        for entry in cfg["grid"]
        for ds in entry["datasets"]
        for variant in entry["variants"]
        for depth in entry["depths"]
        for seed in entry["seeds"]
    }
    return sorted(found)


def packs(cfg: dict[str, Any]) -> dict[tuple[str, ...], list[str]]:
    """Members -> the keys of the packs with those members (one job per pack).

    A member is the rest of a cell's path below its pack key. ``execution.pack``:
    ``seeds`` (default): a pack is the cells that differ only in seed (key
    ``dataset/arch/variant/dDEPTH``, members ``sSEED``); ``family``: the cells that differ in
    seed or depth (key ``dataset/arch/variant``, members ``dDEPTH/sSEED``); ``none``: one
    cell per pack. The workflow defines one train (and one metrics) rule per members
    tuple, so that each rule's outputs name its members.
    """
    mode = cfg.get("execution", {}).get("pack", "seeds")
    members: dict[str, list[str]] = {}
    for c in cells(cfg):
        key, _, member = c.path.rpartition("/") if mode != "family" else _family(c)
        members.setdefault(key, []).append(member)
    out: dict[tuple[str, ...], list[str]] = {}
    for key, found in sorted(members.items()):
        ordered = sorted(found, key=_member_order)
        for group in [tuple(ordered)] if mode != "none" else [(m,) for m in ordered]:
            out.setdefault(group, []).append(key)
    return dict(sorted(out.items(), key=lambda kv: [_member_order(m) for m in kv[0]]))


def _family(c: Cell) -> tuple[str, str, str]:
    return f"{c.dataset}/{c.arch}/{c.variant}", "/", f"d{c.depth}/s{c.seed}"


def _member_order(member: str) -> tuple[int, ...]:
    """``sSEED`` or ``dDEPTH/sSEED`` in numeric order."""
    return tuple(int(part[1:]) for part in member.split("/"))


def pack_cells(key: str, members: tuple[str, ...]) -> list[Cell]:
    """The member cells of pack ``key`` (see :func:`packs`)."""
    return [Cell.parse(f"{key}/{m}") for m in members]


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``over`` merged in; nested mappings merge, the rest replaces."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def cell_config(cfg: dict[str, Any], cell: Cell) -> dict[str, Any]:
    """The part of the config one cell depends on (its hash decides reruns and resumes).

    The variant's overrides are merged into the sections they override; ``cell.skip``
    names the variant's kind; model and skip options are resolved against their defaults.
    """
    from orthskip.models import model_options
    from orthskip.skips import skip_options

    spec = variant_of(cfg, cell.variant)
    kind = spec["skip"]
    model = deep_merge(cfg.get("model", {}).get(cell.arch, {}), spec.get("model", {}))
    skip = deep_merge(cfg.get("skip_options", {}).get(kind, {}), spec.get("skip_options", {}))
    out = {
        "cell": {**cell.as_dict(), "skip": kind},
        "dataset": copy.deepcopy(cfg["datasets"][cell.dataset]),
        # resolved: a changed library default changes the hash and reruns the cell
        "model": model_options(cell.arch, model),
        "skip_options": skip_options(kind, {kind: skip}),
        "train": deep_merge(cfg["train"], spec.get("train", {})),
        "metrics": deep_merge(cfg["metrics"], spec.get("metrics", {})),
    }
    out["metrics"]["warp_seed"] = warp_seed_for(cfg, cell)  # null resolved per cell family
    return out


def warp_seed_for(cfg: dict[str, Any], cell: Cell) -> int:
    """The seed whose 2-D cells record decision-region grids, for ``cell``'s family.

    ``metrics.warp_seed`` (the variant's override first) when set; when null (the
    default), the smallest seed of the cell's family: the grid's cells that differ from
    ``cell`` only in seed. So every family gets its grids whatever its seeds are.
    """
    spec = variant_of(cfg, cell.variant)
    seed = deep_merge(cfg.get("metrics", {}), spec.get("metrics", {})).get("warp_seed")
    if seed is not None:
        return int(seed)
    family = [
        int(seed)
        for e in cfg["grid"]
        if e["arch"] == cell.arch and cell.dataset in e["datasets"]
        and cell.variant in e["variants"] and cell.depth in e["depths"]
        for seed in e["seeds"]
    ]  # fmt: skip
    return min(family, default=cell.seed)


def config_hash(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def resume_key(cell_cfg: dict[str, Any]) -> str:
    """Hash of everything that must match for training to continue from a checkpoint.

    Epoch counts and snapshot epochs are left out so that a finished run can be
    continued for more epochs, and how often checkpoints are written, which changes no result.
    """
    stripped = copy.deepcopy(cell_cfg)
    for key in ("epochs", "snapshot_epochs", "checkpoint_every_s"):
        stripped["train"].pop(key, None)
    stripped.pop("metrics", None)
    return config_hash(stripped)
