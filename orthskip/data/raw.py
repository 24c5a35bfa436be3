"""The in-memory form every source builder returns, before normalisation and saving."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class RawSplit:
    """Unnormalised arrays: uint8 images (N, C, H, W) or float32 vectors (N, D).

    Classification: int64 labels (N,) and the class names. Regression (``task``): float32
    targets (N, D_out) and no classes.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[str]
    # Extra provenance for the manifest (e.g. sha256 of the source files read).
    provenance: dict = field(default_factory=dict)
    task: str = "classification"  # or "regression"
