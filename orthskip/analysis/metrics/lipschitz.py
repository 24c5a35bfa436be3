"""A lower bound on the Lipschitz constant of a residual branch F_i (‖h_i − W_i‖_L in the
Orthogonal Skip Connections paper).

For a block y = S(x) + F(x) with a linear skip, h_i − W_i = F_i, and for a map that is
differentiable almost everywhere on a convex set, Lip(F) = sup_x σ_max(∂F/∂x). We take the
maximum of σ_max over a finite set of points (the probe inputs of the block and points on
segments between random pairs of them, which reach the space in between), each σ_max by power
iteration on JᵀJ with one jvp and one vjp per step (or, for small branches, exactly from the
dense per-sample Jacobians: the same number, faster). Both the finite point set and the power
iteration (‖J v‖ ≤ σ_max for unit v) can only under-estimate: the result is a lower bound.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import jvp, vjp

from orthskip.analysis.metrics.jacobian import _dense_svals

BranchFn = Callable[[Tensor], Tensor]


def branch_of(block: nn.Module) -> tuple[BranchFn, BranchFn] | None:
    """(F, to_branch_input) for a block, or None when the block has no branch.

    ``to_branch_input`` maps the block's input x to where F is evaluated
    (``Block.branch_input``): x itself, or z = S(x) in a pre-map block (procrustes:
    y = z + F(z)). A Jacobian block (orth_jacobian, y = S(x), no branch): None. A
    post-activation (CIFAR ResNet: y = ReLU(S(x) + F(x))) is not part of F; the bound is that
    of the branch module as built.
    """
    branch = getattr(block, "branch", None)
    if branch is None:
        return None
    return branch, getattr(block, "branch_input", lambda x: x)


def segment_points(x: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """n points (1 − t)·x_a + t·x_b, (a, b) a random pair of distinct rows, t ~ U(0, 1)."""
    if n <= 0 or len(x) < 2:
        return x[:0]
    a = torch.randint(len(x), (n,), generator=generator)
    shift = torch.randint(1, len(x), (n,), generator=generator)
    b = (a + shift) % len(x)  # b ≠ a
    t = torch.rand(n, generator=generator, dtype=torch.float64).to(x.dtype)
    t = t.reshape(n, *([1] * (x.ndim - 1))).to(x.device)
    return (1 - t) * x[a.to(x.device)] + t * x[b.to(x.device)]


def sigma_max_power(
    f: BranchFn, x: Tensor, steps: int, generator: torch.Generator, tol: float = 1e-7
) -> Tensor:
    """Per-sample σ_max(∂f(x_i)/∂x_i) by power iteration on JᵀJ, batched over the samples.

    f must map samples independently (eval mode), so the batch Jacobian is block-diagonal and
    one jvp / vjp acts on every sample at once. Returns ‖J v‖ for the final unit v (float64,
    shape (N,)): a lower bound on each σ_max, which it reaches as steps grow unless v starts
    orthogonal to the top right-singular vector (probability 0 for a random start). Stops
    early when no sample's estimate moves by more than ``tol`` (relative).
    """
    x = x.detach()
    n = x.shape[0]
    _, vjp_fn = vjp(f, x)

    def j_fwd(v: Tensor) -> Tensor:
        with warnings.catch_warnings():
            # torch registers its jvp decompositions with torch.jit.script on first use
            warnings.filterwarnings(
                "ignore", "`torch.jit.script` is deprecated", DeprecationWarning
            )
            return jvp(f, (x,), (v,))[1]

    def unit(v: Tensor) -> Tensor:
        norm = torch.linalg.vector_norm(v.reshape(n, -1), dim=1).clamp_min(1e-300)
        return v / norm.reshape(n, *([1] * (v.ndim - 1)))

    v = unit(torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device))
    sigma = torch.zeros(n, dtype=torch.float64, device=x.device)
    with torch.no_grad():
        for _ in range(max(1, steps)):
            u = j_fwd(v)
            new = torch.linalg.vector_norm(u.reshape(n, -1), dim=1).double()
            moved = (new - sigma).abs().max() <= tol * new.max().clamp_min(1e-300)
            sigma = new
            w = vjp_fn(u)[0]
            if bool(moved) or not bool(
                (torch.linalg.vector_norm(w.reshape(n, -1), dim=1) > 0).any()
            ):
                break
            v = unit(w)
    # the estimate belongs to the last v: recompute ‖J v‖ so that it is a true lower bound
    with torch.no_grad():
        sigma = torch.linalg.vector_norm(j_fwd(v).reshape(n, -1), dim=1).double()
    return sigma.cpu()


def branch_lipschitz(
    block: nn.Module,
    x: Tensor,
    *,
    segments: int = 64,
    steps: int = 30,
    seed: int = 0,
    dense_max_dim: int = 64,
) -> tuple[dict[str, float], str] | None:
    """Lower bound on Lip(F) of the block's branch over its inputs x (the probe's block inputs).

    Stats: ``max`` (over x and ``segments`` points between random pairs of x: the bound),
    ``max_probe`` (over x only), ``mean`` (mean σ_max over all points), and the method:
    ``dense_jacobian`` (exact σ_max per point) when the branch's input and output both have
    ≤ ``dense_max_dim`` numbers per sample, else ``power_iteration`` (``steps`` steps). None
    when the block has no branch (orth_jacobian). The block must be in eval mode.
    """
    found = branch_of(block)
    if found is None:
        return None
    f, to_input = found
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        z = to_input(x.detach())
    pts = torch.cat([z, segment_points(z, segments, gen)])
    with torch.no_grad():
        d_out = f(z[:1]).numel()
    dense = max(z[0].numel(), d_out) <= dense_max_dim
    method = "dense_jacobian" if dense else "power_iteration"
    try:
        sig = (
            _dense_svals(f, pts).max(dim=1).values if dense else sigma_max_power(f, pts, steps, gen)
        )
    except torch.linalg.LinAlgError:
        sig = torch.full((len(pts),), math.nan, dtype=torch.float64)
    if not bool(torch.isfinite(sig).all()):
        return {"max": math.nan, "max_probe": math.nan, "mean": math.nan}, method
    stats = {
        "max": float(sig.max()),
        "max_probe": float(sig[: len(z)].max()),
        "mean": float(sig.mean()),
    }
    return stats, method
