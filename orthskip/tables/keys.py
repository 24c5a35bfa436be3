"""The keys tables group by and the order they list variants in."""

from __future__ import annotations

import pandas as pd

from orthskip import results
from orthskip.figures.style import ordered_variants

ROW_KEYS = ["dataset", "arch", "depth"]


def variant_order(df: pd.DataFrame) -> dict[str, int]:
    """Each variant's position in legends and tables (baselines first; a variant right after
    its kind)."""
    return {v: k for k, v in enumerate(ordered_variants(results.variant_kinds(df)))}
