"""Gradient-norm ratio per block (norm preservation, Zaeemzadeh et al.)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def block_activations(model: nn.Module, x: Tensor) -> tuple[list[Tensor], Tensor]:
    """Run head(blocks(stem(x))) step by step; return [x_0, …, x_L] and the logits.

    x_l is the input of block l and x_{l+1} its output. x_0 (the stem output) is made a leaf
    that requires grad so that ∂E/∂x_0 exists even when the stem has no parameters.
    """
    h = model.stem(x).detach().requires_grad_(True)
    acts = [h]
    for block in model.blocks:
        h = block(h)
        acts.append(h)
    return acts, model.head(h)


def _ratio(num: float, den: float) -> float:
    if den == 0.0:
        return math.nan if num == 0.0 else math.inf
    return num / den


def grad_norm_ratios(acts: list[Tensor], logits: Tensor, y: Tensor) -> list[float]:
    """‖∂E/∂x_l‖ / ‖∂E/∂x_{l+1}‖ for every block l, E = mean cross-entropy on the batch
    (integer labels y) or, for regression targets (float y), the mean squared error.

    Norms are Frobenius norms over the whole batch tensor. A ratio of 1 means the block
    preserves the norm of the backward signal; inf / NaN (zero gradients) are kept.
    """
    loss = F.mse_loss(logits, y) if y.is_floating_point() else F.cross_entropy(logits, y)
    grads = torch.autograd.grad(loss, acts, allow_unused=True)
    norms = [
        0.0 if g is None else float(torch.linalg.vector_norm(g.detach().double())) for g in grads
    ]
    return [_ratio(norms[i], norms[i + 1]) for i in range(len(acts) - 1)]


def grad_norm_ratio(model: nn.Module, x: Tensor, y: Tensor) -> list[float]:
    """Gradient-norm ratio of every block of a ResidualNet on the batch (x, y), in eval mode."""
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            acts, logits = block_activations(model, x)
            return grad_norm_ratios(acts, logits, y)
    finally:
        model.train(was_training)
