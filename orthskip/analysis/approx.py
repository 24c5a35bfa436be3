"""Orthogonal approximation of a trained identity-skip net (the seed codebase's open experiment).

For each residual block h_i(x) = post(x + F_i(x)) of a net trained with identity skips, fit the
orthogonal W_i closest to h_i on the probe data (orthogonal Procrustes of the block's inputs X_i
to its outputs H_i), then rebuild the net with skips W_i: ``orth_fixed`` (W_i frozen) or
``orth_learned`` (initialised at W_i, learnable).

The branch. W_i x + F′_i(x) = x + F_i(x) needs F′_i(x) = F_i(x) + (I − W_i) x, which is not a
branch of the same architecture (its last layer cannot absorb a term linear in the block's
*input*). Two choices, both provided:

- ``correction=True`` (default): keep F_i and add a linear layer C_i, initialised to I − W_i, in
  parallel inside the branch: F′_i(x) = F_i(x) + C_i x. The rebuilt net then reproduces the
  identity net exactly (to float rounding) before fine-tuning, so the effect of fine-tuning is
  not confounded with a damage done by the swap; C_i is an ordinary trainable layer (it can
  shrink as W_i takes over, and ‖C_i‖ says how much of the skip's job the branch still does).
- ``correction=False``: keep F′_i = F_i; the net changes by (W_i − I) x per block, and the
  accuracy right after the swap measures how much that costs.

Only non-transition blocks are swapped (their identity skip is square); transition blocks (CNNs)
keep their skip and are reported as not swapped. orth_jacobian-style blocks have no branch and
cannot come from an identity net.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from orthskip.analysis.metrics.lipschitz import branch_lipschitz
from orthskip.analysis.metrics.orthogonality import dist_identity
from orthskip.nn.skips import make_skip

VARIANT_KINDS = ("orth_fixed", "orth_learned")


def procrustes_fit(x: Tensor, h: Tensor, *, special: bool = True) -> Tensor:
    """argmin over orthogonal W of Σ_k ‖W x_k − h_k‖², x and h (N, n) rows (= ‖W Xᵀ − Hᵀ‖_F).

    With M = Σ_k h_k x_kᵀ = U Σ Vᵀ, the optimum over O(n) is W = U Vᵀ (the polar factor of M).
    ``special``: the optimum over SO(n) instead (Kabsch): when det(U Vᵀ) < 0, the sign of the
    last column of U (the smallest singular value's) is flipped, the smallest change of the
    objective that restores det +1. Returns float64; NaN inputs give a NaN matrix.
    """
    x = x.detach().to("cpu", torch.float64).reshape(x.shape[0], -1)
    h = h.detach().to("cpu", torch.float64).reshape(h.shape[0], -1)
    if x.shape != h.shape:
        raise ValueError(f"procrustes_fit: x {tuple(x.shape)} and h {tuple(h.shape)} differ")
    u, _, vh = torch.linalg.svd(h.T @ x)
    w = u @ vh
    if special and torch.linalg.det(w) < 0:
        u = u.clone()
        u[:, -1] = -u[:, -1]
        w = u @ vh
    return w


class CorrectedBranch(nn.Module):
    """F′(x) = F(x) + C x, C a bias-free linear map on features / channels (a 1×1 conv)."""

    def __init__(self, branch: nn.Module, correction: Tensor) -> None:
        super().__init__()
        self.branch = branch
        self.correction = nn.Parameter(correction.clone())

    def forward(self, x: Tensor) -> Tensor:
        c = self.correction.to(x.dtype)
        # feature maps: channels are dim 1; vectors and ViT tokens (N, T, d): the last dim
        lin = torch.einsum("oc,nchw->nohw", c, x) if x.dim() == 4 else x @ c.T
        return self.branch(x) + lin


def _as_rows(t: Tensor) -> Tensor:
    """(N, C) vectors as they are; (N, C, H, W) feature maps as (N·H·W, C) channel vectors;
    ViT tokens (N, T, d) as (N·T, d): the skip acts per token on the width-d stream."""
    if t.dim() == 4:
        return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])
    if t.dim() == 3:
        return t.reshape(-1, t.shape[-1])
    return t.reshape(t.shape[0], -1)


def _orth_skip(kind: str, w: Tensor, skip_cfg: dict | None, template: nn.Module) -> nn.Module:
    n = w.shape[0]
    skip = make_skip(kind, n, n, 1, skip_cfg, getattr(template, "in_size", None))
    with torch.no_grad():
        if kind == "orth_fixed":
            skip.Q.copy_(w.to(skip.Q.dtype))
        else:  # the parametrization's right inverse resets its base to w (X = 0 is w exactly)
            skip.q.weight = w.to(skip.q.weight.dtype)
    return skip


def block_io(model: nn.Module, probe_x: Tensor) -> list[tuple[Tensor, Tensor]]:
    """(input, output) of every block on the probe batch, eval mode, no gradients."""
    was = model.training
    model.eval()
    out = []
    try:
        with torch.no_grad():
            x = model.stem(probe_x)
            for block in model.blocks:
                y = block(x)
                out.append((x, y))
                x = y
    finally:
        model.train(was)
    return out


def approximate(
    model: nn.Module,
    probe_x: Tensor,
    *,
    kind: str = "orth_fixed",
    correction: bool = True,
    special: bool = True,
    skip_cfg: dict | None = None,
    lipschitz: tuple[int, int, int] = (32, 32, 30),
) -> tuple[nn.Module, pd.DataFrame]:
    """The identity net ``model`` rebuilt with orthogonal skips W_i fitted on ``probe_x``.

    Returns (new_model, per_block_stats); ``model`` is not modified. Per block: ``swapped``,
    ``dist_identity`` ‖W − I‖_F/√n, ``det``, ``fit_rel`` ‖W X + F(X) − H‖_F/‖H‖_F (the branch
    unchanged: the mismatch ``correction=False`` leaves; 0 by construction with the correction,
    which this column ignores), ``procrustes_rel`` ‖W X − H‖_F/‖H‖_F and ``identity_rel``
    ‖X − H‖_F/‖H‖_F (≥ procrustes_rel when I is admissible), ``lip_branch`` / ``lip_new_branch``
    (branch_lipschitz ``max`` of F_i and of F′_i on the probe block inputs; ``lipschitz`` =
    (samples, segments, steps)). ``kind``: orth_fixed (frozen) or orth_learned.
    """
    if kind not in VARIANT_KINDS:
        raise ValueError(f"kind {kind!r}: expected one of {VARIANT_KINDS}")
    if getattr(model, "skip_kind", "identity") != "identity":
        raise ValueError(f"approximate needs an identity-skip net, got {model.skip_kind!r}")
    io = block_io(model, probe_x)
    new = copy.deepcopy(model)
    new.eval()
    rows: list[dict[str, Any]] = []
    samples, segments, steps = lipschitz
    for i, (block, (x, y)) in enumerate(zip(new.blocks, io, strict=True)):
        row: dict[str, Any] = {"block": i, "name": str(block.name), "swapped": False}
        if bool(block.transition) or block.branch is None:
            rows.append(row)
            continue
        xr, yr = _as_rows(x), _as_rows(y)
        w = procrustes_fit(xr, yr, special=special)
        with torch.no_grad():
            fx = _as_rows(block.branch(x)).double()
        xr, yr = xr.double(), yr.double()
        h_norm = float(torch.linalg.matrix_norm(yr))
        eye = torch.eye(w.shape[0], dtype=torch.float64)
        lip_old = branch_lipschitz(block, x[:samples], segments=segments, steps=steps, seed=i)
        block.skip = _orth_skip(kind, w, skip_cfg, block.skip)
        if correction:
            block.branch = CorrectedBranch(block.branch, (eye - w).to(x.dtype))
        lip_new = branch_lipschitz(block, x[:samples], segments=segments, steps=steps, seed=i)
        dist = dist_identity(w)
        row.update(
            swapped=True,
            dist_identity=dist["fro_rel"],
            det=dist["det"],
            fit_rel=float(torch.linalg.matrix_norm(xr @ w.T + fx - yr)) / h_norm,
            procrustes_rel=float(torch.linalg.matrix_norm(xr @ w.T - yr)) / h_norm,
            identity_rel=float(torch.linalg.matrix_norm(xr - yr)) / h_norm,
            lip_branch=lip_old[0]["max"] if lip_old else math.nan,
            lip_new_branch=lip_new[0]["max"] if lip_new else math.nan,
        )
        rows.append(row)
    new.skip_kind = kind
    new.train(model.training)
    return new, pd.DataFrame(rows)
