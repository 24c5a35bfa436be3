"""Constraints between options that a registry enforces when it builds, stated once.

An option table (``orthskip.config.options``) says what one value may be; a
:class:`Constraint` says what a value may be given the others and the data (``heads``
divides ``width``, ``patch`` divides the image size, ``n_train`` holds every class). Each
registry declares its constraints beside its options, torch-free (``ArchSpec.constraints``
per architecture, ``KindOptions.constraints`` per skip kind: ``orthskip.nn.arch_specs``,
``orthskip.nn.skip_specs``; ``DATASET_CONSTRAINTS`` per source; ``OPTIM_CONSTRAINTS``:
``orthskip.nn.optim_specs``); the builder calls :func:`enforce` on them, and so does the config
check (``orthskip.config.grid.check_cells``) for every cell before any job starts, with the
data's shape known from the dataset's spec (``orthskip.data.spec.data_shape``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from orthskip.errors import ConfigError


@dataclass(frozen=True)
class DataShape:
    """What a model is built for: one example's input shape and the number of outputs
    (classes, or the target dimension of a regression set)."""

    input_shape: tuple[int, ...]
    n_outputs: int

    def describe(self) -> str:
        dims = "x".join(str(d) for d in self.input_shape)
        return f"{len(self.input_shape)}-D inputs of shape {dims}, {self.n_outputs} outputs"


@dataclass(frozen=True)
class Constraint:
    """One rule. ``key``: the option it is about (named in the error; None when the data do
    not fit, e.g. an architecture that needs images). ``test(options, data)`` returns None
    when the rule holds, else what is wrong and what is allowed; ``data`` is None for rules
    that do not depend on the data (dataset specs, the optimizer)."""

    name: str
    key: str | None
    rule: str
    test: Callable[[Mapping[str, Any], DataShape | None], str | None]


def violations(
    constraints: Iterable[Constraint], options: Mapping[str, Any], data: DataShape | None
) -> list[tuple[Constraint, str]]:
    """Each broken constraint with what is wrong, in declaration order."""
    out = []
    for c in constraints:
        why = c.test(options, data)
        if why:
            out.append((c, why))
    return out


def enforce(
    constraints: Iterable[Constraint],
    options: Mapping[str, Any],
    data: DataShape | None,
    where: str,
    *,
    key_of: Callable[[str], str] | None = None,
    data_key: str | None = None,
    context: str = "",
) -> None:
    """Raise ConfigError for the first broken constraint, naming its key.

    ``where``: the section the options come from (``model.vit``); ``key_of`` maps an option
    to the config key it was set by (a variant's override, say), ``data_key`` is named for
    rules about the data; ``context`` says which cell, when several share the options.
    """
    for c, why in violations(constraints, options, data):
        if c.key is None:
            key, value = data_key or where, ""
        else:
            key = key_of(c.key) if key_of else f"{where}.{c.key}"
            value = f" = {options.get(c.key)!r}"
        raise ConfigError(f"config key '{key}'{value}{context}: {why}")


def divisors(n: int) -> str:
    """``1, 2, 4, 8``: the values that divide n (for a message's allowed values)."""
    return ", ".join(str(d) for d in range(1, n + 1) if n % d == 0)
