"""Option tables: each option's type, default, allowed values and description in one place.

The registries (model options per architecture, skip options per kind, the optimizer,
dataset parameters per source) each hold a table of :class:`Option`; the sections of the
config schema (workflow/schemas/config.schema.yaml) for them are generated from those
tables (``orthskip.config.schema``), and every check, of a whole config or of one library
call, runs the same JSON schema through :func:`check`, whose messages name the full key
path, the value and what is allowed.
"""

from __future__ import annotations

import copy
import difflib
import functools
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema

from orthskip.errors import ConfigError

JSON_TYPES = {"integer": "an integer", "number": "a number", "boolean": "true or false",
              "string": "a string", "object": "a mapping", "array": "a list",
              "null": "null"}  # fmt: skip


@dataclass(frozen=True)
class Option:
    """One option: ``type`` is a JSON schema type (integer, number, boolean, string)."""

    type: str
    default: Any
    description: str
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None
    exclusive_maximum: float | None = None
    nullable: bool = False
    odd: bool = False  # a centred k×k kernel
    extra: Mapping[str, Any] | None = None  # more schema keywords (items of a list)

    def schema(self) -> dict[str, Any]:
        """The option's JSON schema fragment."""
        out: dict[str, Any] = {"description": self.description}
        if self.choices is not None:
            out["enum"] = list(self.choices)
        else:
            out["type"] = [self.type, "null"] if self.nullable else self.type
        bounds = {"minimum": self.minimum, "maximum": self.maximum,
                  "exclusiveMinimum": self.exclusive_minimum,
                  "exclusiveMaximum": self.exclusive_maximum}  # fmt: skip
        out.update({k: v for k, v in bounds.items() if v is not None})
        if self.odd:
            out["not"] = {"multipleOf": 2}
        out.update(copy.deepcopy(dict(self.extra or {})))
        out["default"] = copy.deepcopy(self.default)
        return out


Table = Mapping[str, Option]


class RegistryView(Mapping[str, Any]):
    """A live view of one thing per entry of a registry (a test may register more), in
    registry order: ``view[name]`` is ``of(name)`` for every name in ``registry``."""

    def __init__(self, registry: Mapping[str, Any], of: Callable[[str], Any]) -> None:
        self._registry, self._of = registry, of

    def __getitem__(self, name: str) -> Any:
        if name not in self._registry:
            raise KeyError(name)
        return self._of(name)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._registry))

    def __len__(self) -> int:
        return len(self._registry)


def defaults(table: Table) -> dict[str, Any]:
    return {key: copy.deepcopy(opt.default) for key, opt in table.items()}


def table_schema(table: Table, description: str) -> dict[str, Any]:
    """A closed mapping of the table's options."""
    return {
        "description": description,
        "type": "object",
        "additionalProperties": False,
        "properties": {key: opt.schema() for key, opt in table.items()},
    }


# ---- messages ------------------------------------------------------------------------------


def _bound(schema: Mapping[str, Any], name: str) -> str:
    """``>= 1``, ``> 0``, or with both ends ``with 0 < factor < 1``."""
    lo = [
        (schema[k], op) for k, op in (("minimum", ">="), ("exclusiveMinimum", ">")) if k in schema
    ]
    hi = [
        (schema[k], op) for k, op in (("maximum", "<="), ("exclusiveMaximum", "<")) if k in schema
    ]
    if lo and hi:
        (low, low_op), (high, high_op) = lo[0], hi[0]
        return f"with {low} {low_op.replace('>', '<')} {name or 'x'} {high_op} {high}"
    return " and ".join(f"{op} {value}" for value, op in lo + hi)


def expected(schema: Mapping[str, Any], name: str = "") -> str:
    """What a schema fragment accepts, in words: ``an integer >= 1``, ``one of [...]``."""
    if "enum" in schema:
        return f"one of {schema['enum']}"
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else list(types)
    main = [t for t in types if t != "null"]
    if not main:
        return "null" if types else "any value"
    text = " or ".join(JSON_TYPES[t] for t in main)
    if schema.get("not") == {"multipleOf": 2}:
        text = text.replace("an integer", "an odd integer")
    bound = _bound(schema, name)
    text += f" {bound}" if bound else ""
    if "array" in main:
        if schema.get("minItems") == schema.get("maxItems") is not None:
            text = f"a list of {schema['minItems']}"
        elif schema.get("minItems"):
            text = "a non-empty list"
        if isinstance(schema.get("items"), Mapping):
            text += f", each {expected(schema['items'])}"
    if "null" in types:
        text += " or null"
    return text


def key_path(prefix: str, path: Iterable[Any]) -> str:
    """``a.b[0].c`` from a prefix and the keys / list indices below it."""
    out = prefix
    for key in path:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else str(key))
    return out


def unknown(where: str, value: Any, allowed: Iterable[Any], what: str = "key",
            label: str = "allowed") -> ConfigError:  # fmt: skip
    """``config key 'where': unknown <what> 'value' (did you mean ...?); allowed: ...``."""
    names = [str(a) for a in allowed]
    close = difflib.get_close_matches(str(value), names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(
        f"config key '{where}': unknown {what} {value!r}{hint}; "
        f"{label}: {', '.join(sorted(names)) or 'none'}"
    )


def _short(value: Any) -> str:
    text = json.dumps(value, default=str) if isinstance(value, dict | list) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def schema_error(err: Any, prefix: str = "") -> ConfigError:
    """A ConfigError from a jsonschema ValidationError: the key path, the value, the rule."""
    where = key_path(prefix, err.absolute_path)
    # the bound's name: the innermost key (``seeds`` for grid[0].seeds[1], not the index)
    name = next((str(k) for k in reversed(err.absolute_path) if isinstance(k, str)), "")
    if err.validator == "additionalProperties" and isinstance(err.instance, Mapping):
        allowed = err.schema.get("properties") or {}
        extra = [k for k in err.instance if k not in allowed]
        # a dataset spec's schema is titled by its source: the keys depend on it
        label = f"allowed keys of {err.schema['title']}" if "title" in err.schema else "allowed"
        return unknown(key_path(where, [extra[0]]), extra[0], allowed, label=label)
    if "propertyNames" in err.schema_path:
        return ConfigError(
            f"config key '{where}': name {err.instance!r} is not allowed; names become paths "
            f"and wildcards and must match {err.schema.get('pattern')}"
        )
    if err.validator == "required" and isinstance(err.instance, Mapping):
        missing = [k for k in err.validator_value if k not in err.instance]
        return ConfigError(f"config key '{key_path(where, missing[:1])}' is required")
    if err.validator == "enum":
        close = difflib.get_close_matches(str(err.instance), [str(e) for e in err.validator_value])
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return ConfigError(
            f"config key '{where}' = {err.instance!r}{hint}: expected {expected(err.schema)}"
        )
    # jsonschema's own words say which rule failed (but not for `not`: its words are a dump)
    why = "" if err.validator == "not" else f" ({err.message})"
    return ConfigError(
        f"config key '{where}' = {_short(err.instance)}: expected {expected(err.schema, name)}{why}"
    )


@functools.cache
def _validator_class() -> Any:
    """Draft 2020-12 that also takes a frozen cell config's read-only mappings as objects and
    its tuples as arrays (``orthskip.config.grid.freeze``)."""
    base = jsonschema.Draft202012Validator
    checker = base.TYPE_CHECKER.redefine_many({
        "object": lambda _, v: isinstance(v, Mapping),
        "array": lambda _, v: isinstance(v, list | tuple),
    })  # fmt: skip
    return jsonschema.validators.extend(base, type_checker=checker)


@functools.cache
def _validator(blob: str) -> Any:
    return _validator_class()(json.loads(blob))


def check(schema: Mapping[str, Any], value: Any, prefix: str = "") -> None:
    """Raise the first error of ``value`` against ``schema`` (ConfigError, see schema_error)."""
    validator = _validator(json.dumps(schema, sort_keys=True))
    errors = sorted(validator.iter_errors(value), key=lambda e: [str(k) for k in e.path])
    if errors:
        raise schema_error(errors[0], prefix)


def check_options(table: Table, values: Any, where: str) -> None:
    """Check the values given for ``table`` (unknown keys, types, ranges, choices)."""
    check(table_schema(table, where), values, where)
