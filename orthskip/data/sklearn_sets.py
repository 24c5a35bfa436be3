"""scikit-learn's shipped ``digits`` set (no download): 1797 8x8 images, values 0..16."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from orthskip.data.raw import RawSplit


def digits(spec: dict[str, Any]) -> RawSplit:
    d = load_digits()
    images = d.images.astype(np.uint8)[:, None, :, :]  # (N, 1, 8, 8), exact: values are 0..16
    x_tr, x_te, y_tr, y_te = train_test_split(
        images,
        d.target,
        test_size=spec["n_test"],
        random_state=spec["seed"],
        stratify=d.target,
    )
    return RawSplit(
        x_train=np.ascontiguousarray(x_tr),
        y_train=y_tr.astype(np.int64),
        x_test=np.ascontiguousarray(x_te),
        y_test=y_te.astype(np.int64),
        classes=[str(int(c)) for c in d.target_names],
    )
