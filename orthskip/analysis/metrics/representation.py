"""Conditioning of hidden representations (Oyedotun et al., Fig. 9)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def representation_matrix(h: Tensor) -> Tensor:
    """Block output as a float64 (samples, features) matrix, columns centred.

    (N, C, H, W) → (N·H·W, C): every spatial position of every sample is one row, the channel
    vector its features. (N, T, d) (ViT tokens) → (N·T, d): every token is one row. (N, D)
    stays as is. Other ranks: features are dim 1, the rest rows.
    """
    h = h.detach().to("cpu", torch.float64)
    if h.ndim == 1:
        h = h[:, None]
    elif h.ndim == 3:
        h = h.reshape(-1, h.shape[-1])
    elif h.ndim > 2:
        h = torch.movedim(h, 1, -1).reshape(-1, h.shape[1])
    return h - h.mean(dim=0, keepdim=True)


def sigma_floor(svals: Tensor, n_features: int, dtype: torch.dtype) -> float:
    """Singular values at or below this are zero: √C · eps(dtype) · σ_max.

    The activations are stored in `dtype`; rounding perturbs the matrix by at most
    eps·‖H‖_F ≤ eps·√C·σ_max in spectral norm, so (Weyl) smaller singular values are
    indistinguishable from 0.
    """
    return math.sqrt(n_features) * torch.finfo(dtype).eps * float(svals.max())


def repr_condition(h: Tensor) -> dict[str, float]:
    """cond and eff_rank of a block output on the probe batch.

    cond = σ_max / σ_min of the centred (N·H·W, C) matrix, where σ_min is the min(rows, C)-th
    singular value; cond = inf when σ_min ≤ sigma_floor (singular), NaN for an all-zero output.
    eff_rank = exp(entropy of p_i = σ_i / Σσ) (Roy & Vetterli 2007), in [1, min(rows, C)].
    """
    dtype = h.dtype if h.dtype.is_floating_point else torch.float32
    m = representation_matrix(h)
    if not torch.isfinite(m).all():  # an exploding net: a result to record, not a crash
        return {"cond": math.nan, "eff_rank": math.nan}
    svals = torch.linalg.svdvals(m)
    smax = float(svals.max()) if svals.numel() else 0.0
    if smax == 0.0:
        return {"cond": math.nan, "eff_rank": math.nan}
    floor = sigma_floor(svals, m.shape[1], dtype)
    smin = float(svals.min())
    cond = math.inf if smin <= floor else smax / smin
    p = svals / svals.sum()
    p = p[p > 0]
    eff_rank = float(torch.exp(-(p * p.log()).sum()))
    return {"cond": cond, "eff_rank": eff_rank}
