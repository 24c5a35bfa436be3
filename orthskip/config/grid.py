"""Loading and checking the pipeline config; cells and their effective configs.

The JSON schema (workflow/schemas/config.schema.yaml, whose registry sections are
generated from the library's option tables: ``orthskip.config.schema``) holds every key's
type, default, allowed values and description; :func:`prepare_config` fills its defaults
and checks a config against it once, then checks what a schema cannot say: the
cross-references (a grid's datasets and variants, depths an architecture can build, the
approx filters, a variant's overrides merged into the sections they override). Every
message names the key and the allowed values, and all of it runs before any job starts.

A *variant* is a name, a skip kind and overrides of the cell-level sections
(``skip_options``, ``model``, ``train``, ``metrics``), defined under ``variants:``; a bare
skip kind is the variant of its own name with no overrides. The variant name is the
cell's path segment; the kind stays in the ``skip`` field of the cell's config.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from orthskip.config.constraints import enforce
from orthskip.config.options import check, unknown
from orthskip.data.spec import check_classes, data_shape
from orthskip.errors import ConfigError
from orthskip.nn.arch_specs import ARCH_SPECS, check_depth, model_options, validate_model_options
from orthskip.nn.optim_specs import OPTIM_CONSTRAINTS, optim_options
from orthskip.nn.skip_kinds import KINDS
from orthskip.nn.skip_specs import (
    MATRIX_KINDS,
    SKIP_CONSTRAINTS,
    skip_options,
    validate_skip_options,
)
from orthskip.results import CELL_COLUMNS

# The registries' option tables and constraints come from their torch-free modules
# (orthskip.nn.skip_specs, arch_specs, optim_specs), so importing this module (for Cell,
# CellConfig, the grid, provenance's REPO_ROOT) does not load torch. The dataset specs are
# imported inside the checks: orthskip.data's package imports its torch modules.

REPO_ROOT = Path(__file__).resolve().parents[2]
# The config schema; its registry sections are written by orthskip.config.schema.
SCHEMA = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"
# Names that become path segments and wildcards.
NAME_PATTERNS = {"dataset": r"[A-Za-z0-9_-]+", "variant": r"[a-z0-9_]+"}
# approx.<key> filters of the identity cells the approximation stage takes (null: all).
APPROX_FILTERS = {"archs": "arch", "datasets": "dataset", "variants": "variant",
                  "depths": "depth", "seeds": "seed"}  # fmt: skip
# Top-level sections whose defaults each cell resolves through its registry (resolve_spec,
# model_options, skip_options): the config keeps them as written.
AS_WRITTEN = ("datasets", "model", "skip_options")
# The Snakefile constrains its wildcards with these patterns (NAME_PATTERNS, which the schema
# enforces, for the names a config chooses), so a name that passes validation matches a rule.
WILDCARD_PATTERNS = {**NAME_PATTERNS, "arch": r"[a-z0-9_]+", "depth": r"[0-9]+", "seed": r"[0-9]+"}
# The largest cell seed (grid[i].seeds; the schema's maximum, written by
# orthskip.config.schema): the training engine seeds torch Generators with
# seed * 1_000_003 + k, k <= 41 (orthskip.training.runstate.streams,
# orthskip.training.solo.validation_split), and a Generator takes seeds up to 2**64 - 1.
# It is below 2**63, so a seed also fits the int64 seed column of the result tables.
MAX_SEED = (2**64 - 1 - 41) // 1_000_003


# A cell's path (below results/cells/ and results/approx/), one segment per wildcard. The
# workflow's wildcard pattern of a cell is this text; Cell.path, Cell.parse, pack keys and
# their members are all made from it.
CELL_SEGMENTS: tuple[str, ...] = ("{dataset}", "{arch}", "{variant}", "d{depth}", "s{seed}")
CELL_PATH = "/".join(CELL_SEGMENTS)


def _segment_fields(text: str, segments: Sequence[str]) -> dict[str, str] | None:
    """The wildcards in ``text`` written as ``segments`` (a tail of CELL_SEGMENTS), as text;
    None when it does not have that form."""
    pieces = []
    for seg in segments:
        prefix, rest = seg.split("{")
        name, suffix = rest.split("}")
        pieces.append(f"{re.escape(prefix)}(?P<{name}>[^/]*){re.escape(suffix)}")
    found = re.fullmatch("/".join(pieces), text)
    return found.groupdict() if found else None


@dataclass(frozen=True, order=True)
class Cell:
    dataset: str
    arch: str
    variant: str
    depth: int
    seed: int

    @property
    def path(self) -> str:
        """Directory of the cell below results/cells/ (CELL_PATH)."""
        return CELL_PATH.format(**self.as_dict())

    def split(self, at: int) -> tuple[str, str]:
        """The path's first ``at`` segments and the rest (a pack key and a member)."""
        segments = self.path.split("/")
        return "/".join(segments[:at]), "/".join(segments[at:])

    @classmethod
    def parse(cls, text: str) -> Cell:
        """Parse a cell's path (the form of :attr:`path`: CELL_PATH)."""
        found = _segment_fields(text.strip("/"), CELL_SEGMENTS)
        if found is None:
            form = CELL_PATH.format(dataset="dataset", arch="arch", variant="variant",
                                    depth="DEPTH", seed="SEED")  # fmt: skip
            raise ConfigError(f"cell {text!r}: expected {form}")
        try:
            return cls(**{**found, "depth": int(found["depth"]), "seed": int(found["seed"])})
        except ValueError as err:
            raise ConfigError(f"cell {text!r}: depth and seed must be integers") from err

    @property
    def pack(self) -> str:
        """The pack key: the cell's path without the seed (cells that differ only in seed)."""
        return self.split(len(CELL_SEGMENTS) - 1)[0]

    @classmethod
    def of(cls, cell: dict[str, Any]) -> Cell:
        """The cell of a cell config's ``cell`` entry (which also names the skip kind)."""
        return cls(*(cell[f.name] for f in fields(cls)))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _allowed(values: Any) -> str:
    return ", ".join(sorted(str(v) for v in values))


def variant_names(cfg: dict[str, Any]) -> list[str]:
    """Every name a grid entry may list: the skip kinds and the defined variants."""
    return [*KINDS, *(cfg.get("variants") or {})]


def variant_of(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    """The definition of variant ``name``: ``{"skip": kind, <overrides>}``."""
    return (cfg.get("variants") or {}).get(name) or {"skip": name}


def check_references(cfg: dict[str, Any]) -> None:
    """What the schema cannot say: names that refer to other parts of the config or to a
    registry, depths an architecture can build, dataset class counts, variant overrides
    merged into the sections they override. Runs after the schema check."""
    for name, spec in cfg["datasets"].items():
        check_classes(name, spec)
    for name in cfg["variants"]:
        if name in KINDS:
            raise ConfigError(
                f"config key 'variants.{name}': {name!r} is the name of a skip kind (the bare "
                "variant); give the variant another name"
            )
    names = variant_names(cfg)
    for i, entry in enumerate(cfg["grid"]):
        where = f"grid[{i}]"
        for ds in entry["datasets"]:
            if ds not in cfg["datasets"]:
                raise unknown(f"{where}.datasets", ds, cfg["datasets"], "dataset")
        for variant in entry["variants"]:
            if variant not in names:
                raise unknown(f"{where}.variants", variant, names, "skip kind or variant")
        for depth in entry["depths"]:
            try:
                check_depth(entry["arch"], depth)
            except ConfigError as err:
                raise ConfigError(f"config key '{where}.depths': {err}") from None
    _check_epochs(cfg["train"], "train")
    check_overrides(cfg)
    check_cells(cfg)
    check_approx(cfg)


def check_cells(cfg: dict[str, Any]) -> None:
    """What each cell's builders enforce, checked for every (arch, dataset, variant) of the
    grid before any job: the constraints the architecture, the skip kind and the optimizer
    declare (``orthskip.config.constraints``) against the dataset's shape as its spec gives
    it, and a training split that holds at least a batch (and a validation split that is not
    empty when one is asked for). Messages name the key that set the value (a variant's
    override or the section) and the grid entry."""
    optim_options(cfg["train"]["optimizer"])  # the section itself, whichever variant uses it
    seen: set[tuple[str, str, str]] = set()
    for i, entry in enumerate(cfg["grid"]):
        arch = entry["arch"]
        for ds in entry["datasets"]:
            shape = data_shape(ds, cfg["datasets"][ds])
            for name in entry["variants"]:
                if (arch, ds, name) in seen:
                    continue
                seen.add((arch, ds, name))
                spec = variant_of(cfg, name)
                kind = spec["skip"]
                context = (
                    f" (grid[{i}]: arch {arch}, variant {name}, dataset {ds!r} with "
                    f"{shape.describe()})"
                )
                over = spec.get("model", {})
                model = model_options(arch, deep_merge(cfg["model"].get(arch, {}), over))
                enforce(ARCH_SPECS[arch].constraints, model, shape, f"model.{arch}",
                        key_of=_key_of(name, over, "model", f"model.{arch}"),
                        data_key=f"grid[{i}].datasets", context=context)  # fmt: skip
                over = spec.get("skip_options", {})
                opts = deep_merge(cfg["skip_options"].get(kind, {}), over)
                enforce(SKIP_CONSTRAINTS[kind], skip_options(kind, {kind: opts}), shape,
                        f"skip_options.{kind}", data_key=f"grid[{i}].datasets",
                        key_of=_key_of(name, over, "skip_options", f"skip_options.{kind}"),
                        context=context)  # fmt: skip
                over = spec.get("train", {})
                train = deep_merge(cfg["train"], over)
                opt_key = _key_of(name, over.get("optimizer", {}), "train.optimizer",
                                  "train.optimizer")  # fmt: skip
                enforce(OPTIM_CONSTRAINTS, optim_options(train["optimizer"]), None,
                        "train.optimizer", key_of=opt_key, context=context)  # fmt: skip
                _check_split(cfg, ds, train, _key_of(name, over, "train", "train"), context)


def _key_of(variant: str, over: Mapping[str, Any], section: str, base: str) -> Any:
    """The config key that set option ``k``: the variant's override, else the section."""

    def key_of(k: str) -> str:
        return f"variants.{variant}.{section}.{k}" if k in over else f"{base}.{k}"

    return key_of


def _check_split(
    cfg: dict[str, Any], ds: str, train: dict[str, Any], key_of: Any, context: str
) -> None:
    """A training split of at least one batch; a validation split, when asked for, not
    empty (it is evaluated whole, so it may be smaller than a batch)."""
    from orthskip.data.spec import train_size, validation_size  # lazy: as check_cells

    n = train_size(ds, cfg["datasets"][ds])
    fraction, batch = float(train["val_fraction"]), int(train["batch_size"])
    n_val = validation_size(n, fraction)
    n_train = n - n_val
    sizes = (
        f"dataset {ds!r} has {n} training examples; val_fraction {fraction} takes {n_val} "
        f"for validation and leaves {n_train} to train on"
    )
    if n_train < batch:
        raise ConfigError(
            f"config keys '{key_of('val_fraction')}' = {fraction} and "
            f"'{key_of('batch_size')}' = {batch}{context}: {sizes}, fewer than a batch of "
            f"{batch}; lower val_fraction"
            + (f", or batch_size to at most {n_train}" if n_train else "")
            + f", or give datasets.{ds} more training examples"
        )
    if fraction > 0 and n_val == 0:
        raise ConfigError(
            f"config key '{key_of('val_fraction')}' = {fraction}{context}: {sizes}, so the "
            f"validation split asked for is empty; raise val_fraction above "
            f"{0.5 / n:.3g}, or set it to 0 for no validation split"
        )


def check_overrides(cfg: dict[str, Any]) -> None:
    """Each variant's overrides merged into the sections they override, checked there (so a
    bad override names its own key)."""
    schema = load_schema()
    used = {(e["arch"], v) for e in cfg["grid"] for v in e["variants"]}
    for name, spec in cfg["variants"].items():
        where = f"variants.{name}"
        kind = spec["skip"]
        for section in ("train", "metrics"):
            if section in spec:
                merged = deep_merge(cfg[section], spec[section])
                check(schema["properties"][section], merged, f"{where}.{section}")
        _check_epochs(deep_merge(cfg["train"], spec.get("train", {})), f"{where}.train")
        opts = deep_merge(cfg["skip_options"].get(kind, {}), spec.get("skip_options", {}))
        try:
            validate_skip_options({kind: opts})
            for arch in sorted(a for a, v in used if v == name):
                validate_model_options(
                    arch, deep_merge(cfg["model"].get(arch, {}), spec.get("model", {}))
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
    section = cfg["approx"]  # filled by prepare_config
    if not section["enabled"]:
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
    props = load_schema()["properties"]["approx"]["properties"]
    return {key: copy.deepcopy(spec.get("default")) for key, spec in props.items()}


def approx_cells(cfg: dict[str, Any]) -> list[Cell]:
    """The cells of the approximation stage: every grid cell whose variant's kind is identity,
    kept by the ``approx`` filters; none when ``approx.enabled`` is false."""
    section = cfg["approx"]  # filled by prepare_config
    if not section["enabled"]:
        return []
    keep = _identity_cells(cfg)
    for key, field in APPROX_FILTERS.items():
        if section.get(key) is not None:
            keep = [c for c in keep if getattr(c, field) in section[key]]
    return keep


def load_schema(path: Path = SCHEMA) -> dict[str, Any]:
    # libyaml's safe loader where PyYAML has it (the same documents, ~10x faster: the schema
    # is read several times per check)
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with path.open() as fh:
        return yaml.load(fh, Loader=loader)


def fill_defaults(schema: dict[str, Any], cfg: dict[str, Any], top: bool = True) -> None:
    """Fill the schema's defaults into ``cfg`` in place, missing keys after the given ones
    in schema order (as Snakemake's validate does), except inside :data:`AS_WRITTEN`."""
    props = schema.get("properties") or {}
    for key, sub in props.items():
        if key not in cfg and "default" in sub:
            cfg[key] = copy.deepcopy(sub["default"])
    for key, sub in props.items():
        if isinstance(cfg.get(key), dict) and not (top and key in AS_WRITTEN):
            fill_defaults(sub, cfg[key], top=False)


def prepare_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Check ``cfg`` completely and fill defaults in place; returns it.

    Called by the Snakefile (so a bad config fails before any job starts) and by the CLI:
    one pass of the schema (every key's type, range and allowed values), then the
    cross-references (:func:`check_references`).
    """
    if not isinstance(cfg, dict):
        keys = _allowed(load_schema()["properties"])
        raise ConfigError(f"config must be a mapping with keys: {keys}")
    for i, entry in enumerate(cfg.get("grid") or []):
        if isinstance(entry, dict) and "skips" in entry:
            raise ConfigError(
                f"config key 'grid[{i}].skips' is now 'grid[{i}].variants' (skip kinds and the "
                "names defined under 'variants:'); rename it"
            )
    schema = load_schema()
    fill_defaults(schema, cfg)
    check(schema, cfg)
    check_references(cfg)
    return cfg


def load_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    return prepare_config(read_yaml(path))


def read_yaml(path: str | Path) -> Any:
    """A config file's content (``safe_load``); ConfigError naming FILE:LINE:COLUMN on a
    syntax error."""
    path = Path(path)
    try:
        with path.open() as fh:
            return yaml.safe_load(fh) or {}
    except yaml.MarkedYAMLError as err:
        raise ConfigError(_yaml_message(path, err)) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None


def check_yaml_syntax(path: str | Path) -> None:
    """For the Snakefile, before its ``configfile:`` directive (Snakemake reports a syntax
    error there only as "not valid JSON or YAML"): ConfigError naming FILE:LINE:COLUMN
    when ``path`` is not valid YAML. A missing file is left to Snakemake."""
    if Path(path).is_file():
        read_yaml(path)


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
    seed or depth (key ``dataset/arch/variant``, members ``dDEPTH/sSEED``); ``kinds``: as
    family, and across variants where they train as one computation per depth (the mlp's
    matrix skip kinds with the same dataset, model and train settings: key ``dataset/arch``,
    members ``VARIANT/dDEPTH/sSEED``; see :func:`kinds_signature`); ``none``: one cell per
    pack. The workflow defines one train (and one metrics) rule per members tuple, so that
    each rule's outputs name its members.
    """
    mode = cfg["execution"]["pack"]  # filled by prepare_config
    members: dict[tuple[str, str], list[str]] = {}
    for c in cells(cfg):
        sig = kinds_signature(cfg, c) if mode == "kinds" else None
        # the key keeps dataset/arch (across kinds), also the variant (family), also the
        # depth (seeds); the member is the rest of the path
        at = 2 if sig is not None else 3 if mode in ("family", "kinds") else 4
        key, member = c.split(at)
        members.setdefault((key, sig or ""), []).append(member)
    out: dict[tuple[str, ...], list[str]] = {}
    for (key, _), found in sorted(members.items()):
        ordered = sorted(found, key=_member_order)
        for group in [tuple(ordered)] if mode != "none" else [(m,) for m in ordered]:
            out.setdefault(group, []).append(key)
    return dict(sorted(out.items(), key=lambda kv: [_member_order(m) for m in kv[0]]))


def kinds_signature(cfg: dict[str, Any], c: Cell) -> str | None:
    """What a cell's variant must share with others to pack across kinds (the hash of its
    dataset, model and train settings), or None for a cell that packs only with its own
    variant: an arch or skip kind the hand-batched engine does not take
    (``orthskip.training.handmlp``)."""
    cc = cell_config(cfg, c)
    if c.arch != "mlp" or cc.skip not in MATRIX_KINDS:
        return None
    return config_hash({k: thaw(getattr(cc, k)) for k in ("dataset", "model", "train")})


def _member_order(member: str) -> tuple[int | str, ...]:
    """``sSEED``, ``dDEPTH/sSEED`` or ``VARIANT/dDEPTH/sSEED``: numbers, then the variant."""
    found = _segment_fields(member, CELL_SEGMENTS[-(member.count("/") + 1) :]) or {}
    numbers = [int(found[k]) for k in ("depth", "seed") if k in found]
    return (*numbers, *[found[k] for k in ("variant",) if k in found])


def pack_cells(key: str, members: tuple[str, ...]) -> list[Cell]:
    """The member cells of pack ``key`` (see :func:`packs`)."""
    return [Cell.parse(f"{key}/{m}") for m in members]


def pack_config_text(cfgs: Sequence[CellConfig]) -> str:
    """A pack's member configs as one JSON text, each distinct section written once:
    ``{"sections": {name: [value, ...]}, "members": [{"cell": {...}, name: index, ...}]}``.

    Members share most sections (the default's 160 rate cells have four distinct skip
    options and one of each other section), and the rules pass this text on the job's
    standard input and as a param: Snakemake stores both in every output's record under
    .snakemake/metadata, which the plain list of 160 full configs made 580 KB a record
    (665 MB for the default, slow to plan and published by DVC).
    :func:`read_pack_config` reads it back, and the plain list as well."""
    sections: dict[str, list[Any]] = {}
    seen: dict[str, dict[str, int]] = {}
    members = []
    for cfg in cfgs:
        blob = cfg.as_dict()
        member: dict[str, Any] = {"cell": blob.pop("cell")}
        for name, value in blob.items():
            key = json.dumps(value, sort_keys=True)
            index = seen.setdefault(name, {})
            if key not in index:
                index[key] = len(index)
                sections.setdefault(name, []).append(value)
            member[name] = index[key]
        members.append(member)
    return json.dumps({"sections": sections, "members": members}, sort_keys=True)


def read_pack_config(text: str) -> list[CellConfig]:
    """The member configs of :func:`pack_config_text`'s text, or of a JSON list of cell
    configs."""
    blob = json.loads(text)
    if isinstance(blob, list):
        return [CellConfig.of(m) for m in blob]
    sections = blob["sections"]
    return [
        CellConfig.of({k: v if k == "cell" else sections[k][v] for k, v in member.items()})
        for member in blob["members"]
    ]


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``over`` merged in; nested mappings merge, the rest replaces."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def freeze(value: Any) -> Any:
    """A read-only copy: mappings become read-only views, lists tuples, all the way down."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """The plain (JSON) form of a frozen value: dicts and lists."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [thaw(v) for v in value]
    return value


SECTIONS = ("dataset", "model", "skip_options", "train", "metrics")


@dataclass(frozen=True)
class CellConfig:
    """One cell's effective config: validated (``prepare_config``) and resolved
    (:func:`cell_config`) once, then read-only wherever it goes.

    ``cell`` is where the cell stands in the grid, ``skip`` its variant's kind; the sections
    are the dataset's spec and the model, skip, train and metrics options with the variant's
    overrides merged in and every default filled. It crosses process boundaries as JSON
    (:meth:`to_json`, :meth:`of`); its hash is that of the JSON form. ``metrics`` is None in
    a train job (:meth:`without_metrics`): a metrics setting must not retrain a cell.
    """

    cell: Cell
    skip: str
    dataset: Mapping[str, Any]
    model: Mapping[str, Any]
    skip_options: Mapping[str, Any]
    train: Mapping[str, Any]
    metrics: Mapping[str, Any] | None

    def __post_init__(self) -> None:
        for name in SECTIONS:
            object.__setattr__(self, name, freeze(getattr(self, name)))

    def without_metrics(self) -> CellConfig:
        return replace(self, metrics=None)

    @classmethod
    def of(cls, value: CellConfig | Mapping[str, Any] | str) -> CellConfig:
        """From the JSON form (text or parsed: {"cell": {..., "skip"}, sections...})."""
        if isinstance(value, CellConfig):
            return value
        blob = json.loads(value) if isinstance(value, str) else value
        return cls(Cell.of(blob["cell"]), blob["cell"]["skip"], *(blob.get(k) for k in SECTIONS))

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (plain dicts and lists)."""
        sections = {k: thaw(getattr(self, k)) for k in SECTIONS}
        return {"cell": self.keys, **{k: v for k, v in sections.items() if v is not None}}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True)

    @property
    def hash(self) -> str:
        """Decides reruns and resumes (``config_hash`` of the JSON form)."""
        return config_hash(self.as_dict())

    @property
    def keys(self) -> dict[str, Any]:
        """The cell's columns in every result table (CELL_COLUMNS, in that order): its
        wildcards and its skip kind."""
        values = {**self.cell.as_dict(), "skip": self.skip}
        return {c: values[c] for c in CELL_COLUMNS}


def cell_config(cfg: dict[str, Any], cell: Cell) -> CellConfig:
    """The part of the config one cell depends on (its hash decides reruns and resumes).

    The variant's overrides are merged into the sections they override; ``skip`` names the
    variant's kind; model and skip options are resolved against their defaults.
    """
    spec = variant_of(cfg, cell.variant)
    kind = spec["skip"]
    model = deep_merge(cfg.get("model", {}).get(cell.arch, {}), spec.get("model", {}))
    skip = deep_merge(cfg.get("skip_options", {}).get(kind, {}), spec.get("skip_options", {}))
    metrics = deep_merge(cfg["metrics"], spec.get("metrics", {}))
    metrics["warp_seed"] = warp_seed_for(cfg, cell)  # null resolved per cell family
    return CellConfig(
        cell=cell,
        skip=kind,
        dataset=cfg["datasets"][cell.dataset],
        # resolved: a changed library default changes the hash and reruns the cell
        model=model_options(cell.arch, model),
        skip_options=skip_options(kind, {kind: skip}),
        train=deep_merge(cfg["train"], spec.get("train", {})),
        metrics=metrics,
    )


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


def resume_key(cell_cfg: CellConfig) -> str:
    """Hash of everything that must match for training to continue from a checkpoint.

    Epoch counts and snapshot epochs are left out so that a finished run can be
    continued for more epochs, and how often checkpoints are written, which changes no result.
    """
    stripped = cell_cfg.without_metrics().as_dict()
    for key in ("epochs", "snapshot_epochs", "checkpoint_every_s"):
        stripped["train"].pop(key, None)
    return config_hash(stripped)
