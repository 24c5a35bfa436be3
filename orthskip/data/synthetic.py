"""Synthetic sets, generated from the spec's seed: classification sets by scikit-learn, and
the regression set ``diffeo`` (targets y = h(x) of a known diffeomorphism, orthskip.data.diffeo).

Every classification set draws ``n_train + n_test`` points in one call and splits them with
a stratified ``train_test_split`` seeded by the same seed, so a spec fixes the split.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn import datasets as skd
from sklearn.model_selection import train_test_split

from orthskip.data.diffeo import make_diffeo
from orthskip.data.raw import RawSplit


def _split(x: np.ndarray, y: np.ndarray, spec: dict[str, Any]) -> RawSplit:
    strat = y if np.bincount(y).min() >= 2 else None
    x_tr, x_te, y_tr, y_te = train_test_split(
        x,
        y,
        train_size=spec["n_train"],
        test_size=spec["n_test"],
        random_state=spec["seed"],
        stratify=strat,
    )
    n_classes = int(y.max()) + 1
    return RawSplit(
        x_train=np.ascontiguousarray(x_tr, dtype=np.float32),
        y_train=y_tr.astype(np.int64),
        x_test=np.ascontiguousarray(x_te, dtype=np.float32),
        y_test=y_te.astype(np.int64),
        classes=[str(c) for c in range(n_classes)],
    )


def _total(spec: dict[str, Any]) -> int:
    return spec["n_train"] + spec["n_test"]


def circles(spec: dict[str, Any]) -> RawSplit:
    x, y = skd.make_circles(
        n_samples=_total(spec),
        noise=spec["noise"],
        factor=spec["factor"],
        random_state=spec["seed"],
    )
    return _split(x, y, spec)


def moons(spec: dict[str, Any]) -> RawSplit:
    x, y = skd.make_moons(n_samples=_total(spec), noise=spec["noise"], random_state=spec["seed"])
    return _split(x, y, spec)


def blobs(spec: dict[str, Any]) -> RawSplit:
    x, y = skd.make_blobs(
        n_samples=_total(spec),
        n_features=spec["dim"],
        centers=spec["n_classes"],
        cluster_std=spec["cluster_std"],
        random_state=spec["seed"],
    )
    return _split(x, y, spec)


def gaussian_mixture(spec: dict[str, Any]) -> RawSplit:
    """``n_classes * components_per_class`` isotropic Gaussians in ``dim`` dimensions.

    Centres are drawn N(0, spread² I); component k belongs to class k mod n_classes, so
    each class is itself a mixture (not linearly separable for components_per_class > 1).
    """
    rng = np.random.default_rng(spec["seed"])
    n_comp = spec["n_classes"] * spec["components_per_class"]
    centres = rng.normal(scale=spec["spread"], size=(n_comp, spec["dim"]))
    x, comp = skd.make_blobs(
        n_samples=_total(spec),
        centers=centres,
        cluster_std=spec["cluster_std"],
        random_state=spec["seed"],
    )
    return _split(x, comp % spec["n_classes"], spec)


def parity(spec: dict[str, Any]) -> RawSplit:
    """Bits in {0, 1}^dim labelled by their parity (XOR), plus optional Gaussian noise.

    When 2^dim holds enough points, train and test are distinct bit strings (sampled
    without replacement), so test accuracy measures generalisation, not memory.
    """
    rng = np.random.default_rng(spec["seed"])
    dim, total = spec["dim"], _total(spec)
    if dim <= 30 and 2**dim >= total:
        codes = rng.choice(2**dim, size=total, replace=False)
        bits = (codes[:, None] >> np.arange(dim)[None, :]) & 1
    else:
        bits = rng.integers(0, 2, size=(total, dim))
    y = bits.sum(axis=1) % 2
    x = bits.astype(np.float64)
    if spec["noise"] > 0:
        x = x + rng.normal(scale=spec["noise"], size=x.shape)
    return _split(x, y, spec)


def diffeo(spec: dict[str, Any]) -> RawSplit:
    """Regression on y = h(x), h the diffeomorphism of ``orthskip.data.diffeo`` fixed by
    (d, alpha, beta, gamma, map_seed); inputs x ~ N(0, I_d) drawn from ``seed`` (train first,
    then test). Computed in float64, stored float32."""
    h = make_diffeo(spec["d"], spec["alpha"], spec["beta"], spec["gamma"], spec["map_seed"])
    rng = np.random.default_rng(spec["seed"])
    x = rng.standard_normal((_total(spec), spec["d"]))
    y = h(torch.from_numpy(x)).numpy()
    n = spec["n_train"]
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    return RawSplit(
        x_train=f32(x[:n]), y_train=f32(y[:n]), x_test=f32(x[n:]), y_test=f32(y[n:]),
        classes=[], provenance={"map": "R2 . shear . swirl . radial . R1"}, task="regression",
    )  # fmt: skip
