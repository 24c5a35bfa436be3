"""The number formats every table and findings.md share: one for p-values, one for a
number that may be missing, one for mean ± std."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

MISSING = "–"


def p_value(p: float) -> str:
    """A p-value as the tables print it: three decimals, ``<0.001`` below that, and
    ``–`` where no test was made (NaN)."""
    if not np.isfinite(p):
        return MISSING
    return "<0.001" if p < 1e-3 else f"{p:.3f}"


def num(v: float, fmt: str = ".2f") -> str:
    return f"{v:{fmt}}" if np.isfinite(v) else MISSING


def pm(mean: float, std: float, fmt: str = ".3f") -> str:
    """mean ± std; the mean alone where std is undefined (one seed)."""
    if not np.isfinite(mean):
        return MISSING
    return f"{mean:{fmt}}" + (f" ± {std:{fmt}}" if np.isfinite(std) else "")


def interval(lo: float, hi: float, fmt: str = ".2f") -> str:
    return f"[{lo:{fmt}}, {hi:{fmt}}]" if np.isfinite(lo) and np.isfinite(hi) else MISSING


def span(values: Iterable[float], fmt: str = ".0f") -> str:
    """ "lo to hi" of the values, or the one value where they are all equal."""
    vals = [float(v) for v in values]
    lo, hi = min(vals), max(vals)
    return f"{lo:{fmt}}" if f"{lo:{fmt}}" == f"{hi:{fmt}}" else f"{lo:{fmt}} to {hi:{fmt}}"
