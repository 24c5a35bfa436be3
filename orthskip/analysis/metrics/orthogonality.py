"""Orthogonality of skip matrices: defect from the manifold and distance from the identity."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from orthskip.nn.orth import orth_defect  # the metric is the library's one definition

__all__ = ["as_matrix", "dist_identity", "dist_init", "orth_defect"]


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
        "fro_rel": fro / math.sqrt(n),
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
