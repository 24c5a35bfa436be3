"""Orthogonality of skip matrices: defect from the manifold, distance from the identity, and the
rotation the skips carry together (their product) beside the rotation of h's best linear fit."""

from __future__ import annotations

import math

import torch
from torch import Tensor

# the library's one definition of each
from orthskip.nn.orth import identity_gap, orth_defect, polar

__all__ = [
    "as_matrix",
    "dist_identity",
    "dist_init",
    "linear_fit_rotation",
    "orth_defect",
    "rotation_angle",
    "skip_product",
]


def as_matrix(q: Tensor) -> Tensor:
    """A skip matrix as a 2-D float64 tensor; 1×1 conv kernels (C_out, C_in, 1, 1) are flattened."""
    q = q.detach().to("cpu", torch.float64)
    if q.ndim == 2:
        return q
    if q.ndim > 2:
        return q.reshape(q.shape[0], -1)
    raise ValueError(f"expected a matrix or a conv kernel, got shape {tuple(q.shape)}")


def dist_identity(q: Tensor) -> dict[str, float]:
    """Distance of a square matrix from the identity.

    spec: ‖Q − I‖₂ (saturates at 2 for any Q with an eigenvalue near −1, e.g. Haar-random Q);
    fro: ‖Q − I‖_F; fro_rel: ‖Q − I‖_F / √n, the RMS over eigen-directions for orthogonal Q
    (= √(mean 2 − 2 cos θ_k)), which does not saturate; angle: largest |arg λ| over the
    eigenvalues λ of Q (radians, in [0, π]; for Q ∈ SO(n) the largest principal rotation
    angle); mean_angle: mean |arg λ| over all n eigenvalues; det: det(Q).
    Rectangular matrices have no identity to compare with: ValueError.
    """
    q = as_matrix(q)
    if q.shape[0] != q.shape[1]:
        raise ValueError(f"dist_identity needs a square matrix, got shape {tuple(q.shape)}")
    n = q.shape[0]
    diff = q - torch.eye(n, dtype=q.dtype)
    angles = torch.angle(torch.linalg.eigvals(q)).abs()
    fro = float(torch.linalg.matrix_norm(diff, ord="fro"))
    return {
        "spec": float(torch.linalg.matrix_norm(diff, ord=2)),
        "fro": fro,
        "fro_rel": float(identity_gap(q)),
        "angle": float(angles.max()),
        "mean_angle": float(angles.mean()),
        "det": float(torch.linalg.det(q)),
    }


def dist_init(q: Tensor, q0: Tensor | None) -> dict[str, float]:
    """Distance of a skip matrix from the same matrix at the cell's first snapshot (epoch 0).

    fro_rel: ‖Q − Q₀‖_F / √n with n = min(rows, cols); spec: ‖Q − Q₀‖₂. NaN for both when Q₀
    is unknown (no epoch-0 snapshot) or has another shape.
    """
    q = as_matrix(q)
    if q0 is None or tuple(as_matrix(q0).shape) != tuple(q.shape):
        return {"fro_rel": math.nan, "spec": math.nan}
    diff = q - as_matrix(q0)
    return {
        "fro_rel": float(torch.linalg.matrix_norm(diff, ord="fro")) / math.sqrt(min(q.shape)),
        "spec": float(torch.linalg.matrix_norm(diff, ord=2)),
    }


def rotation_angle(q: Tensor) -> dict[str, float]:
    """How far a square (near-)orthogonal Q rotates, from the arguments θ of its eigenvalues.

    angle: √(Σ θ_k² / 2) over all n eigenvalues = ‖log Q‖_F / √2 for Q ∈ SO(n), the geodesic
    distance from I (each rotation plane has eigenvalues e^{±iθ} and counts once: in SO(2) it is
    |θ|); max_angle: the largest |θ| (in [0, π]); det: det(Q).
    """
    q = as_matrix(q)
    theta = torch.angle(torch.linalg.eigvals(q)).abs()
    return {
        "angle": float(torch.sqrt(theta.square().sum() / 2)),
        "max_angle": float(theta.max()),
        "det": float(torch.linalg.det(q)),
    }


def skip_product(matrices: list[Tensor]) -> Tensor | None:
    """Q_m ⋯ Q_1 of the blocks' skips in forward order, or None when it is not one map.

    The product is the network's skip path when every block has one square skip of the same
    size (the rate setting: blocks on R^d with identity stem and head); a block without a skip
    matrix (identity) or with another shape makes it undefined here.
    """
    mats = [as_matrix(q) for q in matrices]
    if not mats or any(q.shape != mats[0].shape or q.shape[0] != q.shape[1] for q in mats):
        return None
    product = torch.eye(mats[0].shape[0], dtype=torch.float64)
    for q in mats:
        product = q @ product
    return product


def linear_fit_rotation(x: Tensor, y: Tensor) -> dict[str, float]:
    """``rotation_angle`` of the orthogonal (polar) factor of the least-squares fit y ≈ A x + b.

    For a regression target h: R^d → R^d this is the rotation of h's best linear fit on the
    points given: what the skips' product could take over. NaN when y is not a d-vector per x.
    """
    x = x.detach().to("cpu", torch.float64).flatten(1)
    y = y.detach().to("cpu", torch.float64)
    nan = {"angle": math.nan, "max_angle": math.nan, "det": math.nan}
    if y.ndim != 2 or y.shape[1] != x.shape[1] or len(x) <= x.shape[1]:
        return nan
    design = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    coef = torch.linalg.lstsq(design, y).solution  # (d + 1, d): y ≈ design @ coef
    return rotation_angle(polar(coef[:-1].T))
