"""A known smooth invertible map h: R^d → R^d: the regression target in the setting of the
Orthogonal Skip Connections paper.

h = R₂ ∘ shear ∘ swirl ∘ radial ∘ R₁ with
- R₁, R₂ ∈ SO(d): Haar rotations drawn from ``map_seed`` (det +1);
- radial: x ↦ g(r)·x, g(r) = 1 + α·exp(−r²/2), r = ‖x‖. Its Jacobian g·I + g′(r)·x xᵀ/r has
  eigenvalues g (d − 1 times) and (r g)′ = 1 + α·e^{−r²/2}(1 − r²), both > 0 for
  0 ≤ α < 2 (min over r of e^{−s/2}(1 − s) is −2e^{−3/2} ≈ −0.446), so r ↦ r g(r) is
  strictly increasing: invertible, det > 0;
- swirl: rotate the (x₁, x₂) plane by θ = β·exp(−r²/2), r = ‖x‖ (unchanged by the swirl);
  in cylindrical coordinates (ρ, φ, rest) ↦ (ρ, φ + θ, rest): triangular, det 1;
- shear: x_j += γ·tanh(x_{j−1}) for j = 2, …, d in turn: each step triangular with unit
  diagonal, det 1.
Every factor fixes 0, so h(0) = 0, and every factor has det > 0: h is positively oriented.
``inverse`` inverts each factor (the radial one by bisection + Newton on r), so tests can
check h⁻¹(h(x)) = x independently of a Newton solve of h(x) = y.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def haar_rotation(d: int, generator: torch.Generator) -> Tensor:
    """A Haar-distributed rotation in SO(d), float64 (QR of a Gaussian with sign fix)."""
    a = torch.randn(d, d, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r))
    if torch.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


@dataclass(frozen=True)
class Diffeo:
    r1: Tensor  # (d, d) rotations
    r2: Tensor
    alpha: float  # radial strength, 0 ≤ α < 2
    beta: float  # swirl angle at the origin (radians)
    gamma: float  # shear strength

    @property
    def dim(self) -> int:
        return int(self.r1.shape[0])

    # ---- factors; x is (..., d), any float dtype

    def _radial(self, x: Tensor) -> Tensor:
        r2 = (x * x).sum(-1, keepdim=True)
        return x * (1 + self.alpha * torch.exp(-r2 / 2))

    def _radial_inv(self, y: Tensor) -> Tensor:
        # solve r·g(r) = s for r ∈ [s / (1 + α), s] (g ∈ [1, 1 + α]); the map is monotone
        s = torch.linalg.vector_norm(y, dim=-1, keepdim=True)
        lo, hi = s / (1 + self.alpha), s.clone()
        for _ in range(60):  # bisection: 2^-60 of the bracket, below float64 rounding
            mid = (lo + hi) / 2
            above = mid * (1 + self.alpha * torch.exp(-mid * mid / 2)) > s
            hi = torch.where(above, mid, hi)
            lo = torch.where(above, lo, mid)
        r = (lo + hi) / 2
        g = 1 + self.alpha * torch.exp(-r * r / 2)
        return torch.where(s > 0, y / g, y)

    def _swirl(self, x: Tensor, sign: float = 1.0) -> Tensor:
        r2 = (x * x).sum(-1)
        theta = sign * self.beta * torch.exp(-r2 / 2)
        c, s = torch.cos(theta), torch.sin(theta)
        x1, x2 = x[..., 0], x[..., 1]
        rot = torch.stack([c * x1 - s * x2, s * x1 + c * x2], dim=-1)
        return torch.cat([rot, x[..., 2:]], dim=-1)

    def _shear(self, x: Tensor) -> Tensor:
        cols = list(x.unbind(-1))
        for j in range(1, len(cols)):
            cols[j] = cols[j] + self.gamma * torch.tanh(cols[j - 1])
        return torch.stack(cols, dim=-1)

    def _shear_inv(self, y: Tensor) -> Tensor:
        cols = list(y.unbind(-1))
        for j in range(len(cols) - 1, 0, -1):
            cols[j] = cols[j] - self.gamma * torch.tanh(cols[j - 1])
        return torch.stack(cols, dim=-1)

    # ---- the map

    def __call__(self, x: Tensor) -> Tensor:
        x = x @ self.r1.to(x.dtype).T
        x = self._radial(x)
        x = self._swirl(x)
        x = self._shear(x)
        return x @ self.r2.to(x.dtype).T

    def inverse(self, y: Tensor) -> Tensor:
        y = y @ self.r2.to(y.dtype)  # R₂ᵀ: rows times R₂ = (R₂ᵀ yᵀ)ᵀ
        y = self._shear_inv(y)
        y = self._swirl(y, sign=-1.0)  # the swirl keeps r, so rotating back by −θ(r) inverts it
        y = self._radial_inv(y)
        return y @ self.r1.to(y.dtype)


def make_diffeo(d: int, alpha: float, beta: float, gamma: float, map_seed: int) -> Diffeo:
    if d < 2:
        raise ValueError(f"the map needs d >= 2 (a rotation plane), got {d}")
    if not 0 <= alpha < 2:
        raise ValueError(f"radial strength alpha must be in [0, 2) to stay invertible, got {alpha}")
    gen = torch.Generator().manual_seed(map_seed)
    return Diffeo(haar_rotation(d, gen), haar_rotation(d, gen), alpha, beta, gamma)
