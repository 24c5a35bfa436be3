"""Singular values of a block's input–output Jacobian (dynamical isometry, as in the
Orthogonal-Jacobian paper).

The block maps a batch to a batch sample by sample (eval mode), so the Jacobian of the batch
map is block-diagonal; its extreme singular values are the max / min over the samples of each
sample's Jacobian ∂y_i/∂x_i. For σ_min we take the min(d_in, d_out)-th singular value, with a
relative floor below which it counts as 0 (:func:`jacobian_floor`).
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor, nn
from torch.func import jacrev, jvp, vjp, vmap


def _dense_svals(block: nn.Module, x: Tensor) -> Tensor:
    """Per-sample full Jacobians; (N, min(d_in, d_out)) singular values.

    Samples are independent (eval mode), so ∂(Σ_i y_i[k])/∂x_j = ∂y_j[k]/∂x_j: one batched
    backward pass over the d_out unit cotangents gives every sample's Jacobian at once.
    """
    n, d_in = x.shape[0], x[0].numel()
    with torch.enable_grad():
        xx = x.detach().requires_grad_(True)
        y = block(xx)
        d_out = y[0].numel()
        eye = torch.eye(d_out, dtype=y.dtype, device=y.device)
        cot = eye[:, None, :].expand(d_out, n, d_out).reshape(d_out, *y.shape)
        try:
            (jac,) = torch.autograd.grad(y, xx, cot, is_grads_batched=True)
            jac = jac.reshape(d_out, n, d_in).transpose(0, 1)
        except RuntimeError:  # an op without a batching rule for its backward
            jac = vmap(jacrev(lambda xi: block(xi.unsqueeze(0)).squeeze(0)))(x)
            jac = jac.reshape(n, d_out, d_in)
    return torch.linalg.svdvals(jac.detach().to("cpu", torch.float64))


def _bidiag_svals(block: nn.Module, x: Tensor, steps: int, generator: torch.Generator) -> Tensor:
    """Golub–Kahan–Lanczos bidiagonalisation, batched over samples, full reorthogonalisation.

    Runs on K = J (if d_in ≤ d_out) or K = Jᵀ, started on K's smaller side from a random unit
    vector, and returns the singular values of the (k+1)×k bidiagonal B with K V_k = U_{k+1} B.
    Since V_k has orthonormal columns these are the singular values of K V_k: the largest is a
    lower bound on σ_max(K) and the smallest an upper bound on σ_min(K) (Ritz values).
    """
    y, vjp_fn = vjp(block, x)
    n = x.shape[0]
    d_in, d_out = x[0].numel(), y[0].numel()

    def j_fwd(v: Tensor) -> Tensor:  # J v, batched: (N, d_in) → (N, d_out)
        with warnings.catch_warnings():
            # torch registers its jvp decompositions with torch.jit.script on first use
            warnings.filterwarnings(
                "ignore", "`torch.jit.script` is deprecated", DeprecationWarning
            )
            return jvp(block, (x,), (v.reshape(x.shape),))[1].reshape(n, -1)

    def j_bwd(u: Tensor) -> Tensor:  # Jᵀ u: (N, d_out) → (N, d_in)
        return vjp_fn(u.reshape(y.shape))[0].reshape(n, -1)

    fwd, bwd, d_small, d_big = (j_fwd, j_bwd, d_in, d_out)
    if d_in > d_out:
        fwd, bwd, d_small, d_big = (j_bwd, j_fwd, d_out, d_in)
    k = min(steps, d_small)
    dtype, device = x.dtype, x.device
    vs = torch.zeros(n, k + 1, d_small, dtype=dtype, device=device)
    us = torch.zeros(n, k + 1, d_big, dtype=dtype, device=device)
    alphas = torch.zeros(n, k, dtype=torch.float64, device=device)
    betas = torch.zeros(n, k, dtype=torch.float64, device=device)

    def randn(shape: tuple[int, ...]) -> Tensor:  # CPU generator: same draws on every device
        return torch.randn(shape, generator=generator, dtype=dtype).to(device)

    def orth(w: Tensor, basis: Tensor) -> Tensor:
        for _ in range(2):  # twice is enough (Kahan–Parlett)
            w = w - torch.einsum("nkd,nk->nd", basis, torch.einsum("nkd,nd->nk", basis, w))
        return w

    def normalise(w: Tensor, basis: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
        # on breakdown (‖w‖ ≈ 0 at float precision) continue from a fresh random direction
        # with coefficient 0: the relation K V = U B still holds
        norm = torch.linalg.vector_norm(w, dim=1)
        broken = norm <= 1e-6 * scale.clamp_min(torch.finfo(dtype).tiny)
        if bool(broken.any()):
            fresh = orth(randn(tuple(w.shape)), basis)
            fresh = fresh / torch.linalg.vector_norm(fresh, dim=1, keepdim=True)
            w = torch.where(broken[:, None], fresh, w / norm.clamp_min(1e-300)[:, None])
            norm = torch.where(broken, torch.zeros_like(norm), norm)
            return w, norm
        return w / norm[:, None], norm

    v = randn((n, d_small))
    vs[:, 0] = v / torch.linalg.vector_norm(v, dim=1, keepdim=True)
    scale = torch.zeros(n, dtype=dtype, device=device)
    with torch.no_grad():
        for j in range(k):
            u = fwd(vs[:, j])
            if j > 0:
                u = u - betas[:, j - 1, None].to(dtype) * us[:, j - 1]
            u = orth(u, us[:, :j])
            scale = torch.maximum(scale, torch.linalg.vector_norm(u, dim=1))
            us[:, j], a = normalise(u, us[:, :j], scale)
            alphas[:, j] = a.double()
            w = bwd(us[:, j]) - a[:, None] * vs[:, j]
            w = orth(w, vs[:, : j + 1])
            vs[:, j + 1], b = normalise(w, vs[:, : j + 1], scale)
            betas[:, j] = b.double()
    bmat = torch.zeros(n, k + 1, k, dtype=torch.float64)
    idx = torch.arange(k)
    bmat[:, idx, idx] = alphas.cpu()
    bmat[:, idx + 1, idx] = betas.cpu()
    return torch.linalg.svdvals(bmat.cpu())


def jacobian_floor(d_in: int, d_out: int, dtype: torch.dtype) -> float:
    """Relative floor for σ_min of the dense path: √min(d_in, d_out) · eps(dtype).

    The Jacobian is computed in the block's dtype; its rounding error is at most about
    eps·‖J‖_F ≤ eps·√d·σ_max in spectral norm, so (Weyl) singular values below
    floor·σ_max are indistinguishable from 0 (post-activation ReLU blocks have exact zeros,
    which the SVD returns as 1e-65 … 1e-143 noise).
    """
    return math.sqrt(min(d_in, d_out)) * torch.finfo(dtype).eps


def jacobian_sv(
    block: nn.Module,
    x: Tensor,
    *,
    steps: int = 24,
    dense_max_dim: int = 1024,
    seed: int = 0,
) -> tuple[dict[str, float], bool]:
    """Extreme singular values of the block Jacobian on the batch x, and whether they are exact.

    If d_in and d_out are both ≤ dense_max_dim the per-sample Jacobians are formed in full
    (exact=True): stats max, min, cond, where min is set to 0 (and cond to inf) when it is
    ≤ jacobian_floor · max. Otherwise `steps` Golub–Kahan–Lanczos steps (one jvp and one vjp
    each; exact=False) give Ritz values: stats max (≤ true σ_max) and min_upper_bound
    (≥ true σ_min). The Ritz σ_min is not an estimate of σ_min (≈0.39 for a block whose
    σ_min is 0), so no `min` or `cond` is reported on that path.
    The block must be in eval mode (no batch statistics, no buffer updates).
    """
    x = x.detach()
    with torch.no_grad():
        d_out = block(x[:1]).numel()
    d_in = x[0].numel()
    exact = max(d_in, d_out) <= dense_max_dim
    nan = (
        {"max": math.nan, "min": math.nan, "cond": math.nan}
        if exact
        else {"max": math.nan, "min_upper_bound": math.nan}
    )
    try:
        if exact:
            svals = _dense_svals(block, x)
        else:
            gen = torch.Generator().manual_seed(seed)
            svals = _bidiag_svals(block, x, steps, gen)
    except torch.linalg.LinAlgError:  # non-finite Jacobian of an exploding net
        return nan, exact
    smax, smin = float(svals.max()), float(svals.min())
    if not (math.isfinite(smax) and math.isfinite(smin)):
        return nan, exact
    if not exact:
        return {"max": smax, "min_upper_bound": smin}, exact
    dtype = x.dtype if x.dtype.is_floating_point else torch.float32
    if smin <= jacobian_floor(d_in, d_out, dtype) * smax:
        smin = 0.0
    if smax == 0.0:
        cond = math.nan
    else:
        cond = math.inf if smin == 0.0 else smax / smin
    return {"max": smax, "min": smin, "cond": cond}, exact
