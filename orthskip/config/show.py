"""``orthskip config show``: the effective config, whole or of one cell, as YAML.

The whole config is the file with the schema's defaults filled in; a cell's config is
what its jobs receive (``config.cell_config``). With origins, each leaf is annotated with
the key of the file it came from, or ``default`` (schema or library default).
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Any

import yaml

from orthskip.config.grid import Cell, cell_config, cells, load_config
from orthskip.errors import ConfigError

DEFAULT = "default"
Origins = dict[tuple[str, ...], str]


def _lookup(raw: Any, path: tuple[str, ...]) -> bool:
    for key in path:
        if not isinstance(raw, dict) or key not in raw:
            return False
        raw = raw[key]
    return True


def _leaves(data: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Key paths of the leaves: non-empty mappings are walked, lists are leaves."""
    if isinstance(data, dict) and data:
        return [p for k, v in data.items() for p in _leaves(v, (*prefix, str(k)))]
    return [prefix]


def _origin(raw: dict[str, Any], source: str, candidates: list[tuple[str, ...]]) -> str:
    """The first candidate key path the file sets, as ``FILE: key.path``, else default."""
    for path in candidates:
        if _lookup(raw, path):
            return f"{source}: {'.'.join(path)}"
    return DEFAULT


def config_origins(raw: dict[str, Any], cfg: dict[str, Any], source: str) -> Origins:
    return {path: _origin(raw, source, [path]) for path in _leaves(cfg)}


def cell_origins(raw: dict[str, Any], cell_cfg: dict[str, Any], source: str) -> Origins:
    """Where each leaf of a cell config comes from: the variant's override first, then
    the global section (per architecture / per skip kind where the config has those)."""
    c = cell_cfg["cell"]
    variant = ("variants", c["variant"])
    out: Origins = {}
    for path in _leaves(cell_cfg):
        section, rest = path[0], path[1:]
        if section == "cell":  # the grid names the cell; a named variant, its kind
            out[path] = f"{source}: grid"
            if rest == ("skip",) and _lookup(raw, (*variant, "skip")):
                out[path] = f"{source}: {'.'.join((*variant, 'skip'))}"
            continue
        global_path = {
            "dataset": ("datasets", c["dataset"]),
            "model": ("model", c["arch"]),
            "skip_options": ("skip_options", c["skip"]),
        }.get(section, (section,))
        candidates = [(*global_path, *rest)]
        if section != "dataset":
            candidates.insert(0, (*variant, section, *rest))
        out[path] = _origin(raw, source, candidates)
    return out


def _scalar(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=math.inf, sort_keys=False)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def to_yaml(data: dict[str, Any], origins: Origins | None = None) -> str:
    """YAML of ``data``; with ``origins``, each leaf on one line with ``# origin``."""
    if origins is None:
        return yaml.safe_dump(data, sort_keys=False, width=100)
    lines: list[str] = []

    def emit(node: dict[str, Any], prefix: tuple[str, ...], indent: str) -> None:
        for key, value in node.items():
            path = (*prefix, str(key))
            if isinstance(value, dict) and value:
                lines.append(f"{indent}{_scalar(key)}:")
                emit(value, path, indent + "  ")
            else:
                lines.append(f"{indent}{_scalar(key)}: {_scalar(value)}  # {origins[path]}")

    emit(data, (), "")
    return "\n".join(lines) + "\n"


def effective(configfile: Path, cell: str | None = None) -> tuple[dict[str, Any], Origins]:
    """The validated config of ``configfile`` with defaults (or one cell's), and origins."""
    cfg = load_config(configfile)
    with configfile.open() as fh:
        raw = yaml.safe_load(fh) or {}
    source = str(configfile)
    if cell is None:
        return cfg, config_origins(raw, cfg, source)
    parsed = Cell.parse(cell)
    grid = cells(cfg)
    if parsed not in grid:
        paths = [c.path for c in grid]
        close = difflib.get_close_matches(parsed.path, paths, n=3)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise ConfigError(
            f"cell {cell} is not in the grid of {configfile} ({len(grid)} cells{hint}); "
            f"list them with: orthskip config cells --configfile {configfile}"
        )
    cell_cfg = cell_config(cfg, parsed).as_dict()
    return cell_cfg, cell_origins(raw, cell_cfg, source)


def show(configfile: Path, cell: str | None = None, origin: bool = False) -> str:
    data, origins = effective(configfile, cell)
    return to_yaml(data, origins if origin else None)


def list_cells(configfile: Path) -> str:
    return "".join(f"{c.path}\n" for c in cells(load_config(configfile)))
