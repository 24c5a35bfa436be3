"""Orthogonality, gradient flow, Jacobian and representation metrics vs slow references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import jacrev

from orthskip.analysis.metrics import (
    dist_identity,
    dist_init,
    grad_norm_ratio,
    jacobian_sv,
    orth_defect,
    repr_condition,
)
from tests.toy_models import toy_cnn, toy_mlp

# --- orthogonality ---------------------------------------------------------------------------


def rotation(n: int, theta: float) -> torch.Tensor:
    q = torch.eye(n, dtype=torch.float64)
    c, s = math.cos(theta), math.sin(theta)
    q[:2, :2] = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    return q


def test_dist_identity_of_a_rotation() -> None:
    theta = 0.7
    d = dist_identity(rotation(5, theta))
    assert d["spec"] == pytest.approx(2 * math.sin(theta / 2), rel=1e-12)
    assert d["fro"] == pytest.approx(math.sqrt(2) * 2 * math.sin(theta / 2), rel=1e-12)
    assert d["angle"] == pytest.approx(theta, rel=1e-12)
    assert d["det"] == pytest.approx(1.0, abs=1e-12)
    assert orth_defect(rotation(5, theta)) < 1e-15
    ident = dist_identity(torch.eye(4))
    assert ident == {
        "spec": 0.0, "fro": 0.0, "fro_rel": 0.0, "angle": 0.0, "mean_angle": 0.0, "det": 1.0
    }  # fmt: skip


def so4_rotation(theta1: float, theta2: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """P·diag(R(θ₁), R(θ₂))·Pᵀ with a random orthogonal P: principal angles θ₁, θ₂ (twice each)."""
    blocks = np.zeros((4, 4))
    for k, t in enumerate((theta1, theta2)):
        c, s = math.cos(t), math.sin(t)
        blocks[2 * k : 2 * k + 2, 2 * k : 2 * k + 2] = [[c, -s], [s, c]]
    p = np.linalg.qr(np.random.default_rng(seed).standard_normal((4, 4)))[0]
    return p @ blocks @ p.T, blocks


@pytest.mark.parametrize("theta1,theta2", [(0.3, 1.1), (2.9, 3.1), (0.0, 0.5)])
def test_dist_identity_in_so4_known_angles(theta1: float, theta2: float) -> None:
    q, _ = so4_rotation(theta1, theta2)
    d = dist_identity(torch.from_numpy(q))
    # eigenvalues e^{±iθ₁}, e^{±iθ₂}: ‖Q − I‖_F² = Σ |e^{iθ} − 1|² = Σ (2 − 2 cos θ)
    fro2 = 2 * (2 - 2 * math.cos(theta1)) + 2 * (2 - 2 * math.cos(theta2))
    assert d["fro_rel"] == pytest.approx(math.sqrt(fro2 / 4), rel=1e-12, abs=1e-15)
    assert d["fro"] == pytest.approx(math.sqrt(fro2), rel=1e-12, abs=1e-15)
    assert d["mean_angle"] == pytest.approx((theta1 + theta2) / 2, rel=1e-9, abs=1e-12)
    assert d["angle"] == pytest.approx(max(theta1, theta2), rel=1e-9, abs=1e-12)
    assert d["spec"] == pytest.approx(2 * math.sin(max(theta1, theta2) / 2), rel=1e-12)
    assert d["det"] == pytest.approx(1.0, abs=1e-12)


def test_fro_rel_does_not_saturate_where_spec_does() -> None:
    # a Haar-like start moving toward I: spec stays at ~2 while fro_rel and mean_angle fall
    far, _ = so4_rotation(3.1, 3.1)
    half, _ = so4_rotation(3.1, 0.3)
    a, b = dist_identity(torch.from_numpy(far)), dist_identity(torch.from_numpy(half))
    assert a["spec"] == pytest.approx(b["spec"], abs=1e-12) and a["spec"] > 1.99
    assert b["fro_rel"] < 0.8 * a["fro_rel"]
    assert b["mean_angle"] < 0.6 * a["mean_angle"]


def test_dist_init_vs_numpy() -> None:
    rng = np.random.default_rng(2)
    q0, _ = so4_rotation(0.4, 2.0, seed=1)
    q = q0 + 0.1 * rng.standard_normal((4, 4))
    d = dist_init(torch.from_numpy(q), torch.from_numpy(q0))
    assert d["fro_rel"] == pytest.approx(np.linalg.norm(q - q0, "fro") / 2.0, rel=1e-12)
    assert d["spec"] == pytest.approx(np.linalg.norm(q - q0, 2), rel=1e-12)
    assert dist_init(torch.from_numpy(q0), torch.from_numpy(q0)) == {"fro_rel": 0.0, "spec": 0.0}
    # rectangular (a transition map): n = min(rows, cols)
    w0, w = rng.standard_normal((6, 3)), rng.standard_normal((6, 3))
    d = dist_init(torch.from_numpy(w), torch.from_numpy(w0))
    assert d["fro_rel"] == pytest.approx(np.linalg.norm(w - w0, "fro") / math.sqrt(3), rel=1e-12)
    # no epoch-0 snapshot, or another shape: NaN, not a crash
    assert all(math.isnan(v) for v in dist_init(torch.from_numpy(q), None).values())
    assert all(math.isnan(v) for v in dist_init(torch.from_numpy(w), torch.eye(3)).values())


def test_reflection_has_det_minus_one_and_angle_pi() -> None:
    torch.manual_seed(0)
    q = torch.linalg.qr(torch.randn(7, 7, dtype=torch.float64)).Q
    q = -q * torch.sign(torch.linalg.det(q))  # det −1 (odd dimension)
    d = dist_identity(q)
    assert d["det"] == pytest.approx(-1.0, abs=1e-12)
    assert d["angle"] == pytest.approx(math.pi, abs=1e-7)
    assert d["spec"] == pytest.approx(2.0, abs=1e-12)


def test_orth_defect_vs_numpy_and_rectangular() -> None:
    rng = np.random.default_rng(1)
    a = rng.standard_normal((5, 5))
    ref = np.linalg.norm(a.T @ a - np.eye(5), "fro") / math.sqrt(5)
    assert orth_defect(torch.from_numpy(a)) == pytest.approx(ref, rel=1e-12)
    semi = torch.linalg.qr(torch.randn(9, 4, dtype=torch.float64)).Q  # orthonormal columns
    assert orth_defect(semi) < 1e-14 and orth_defect(semi.T) < 1e-14
    assert orth_defect(2 * semi) == pytest.approx(3.0, rel=1e-12)  # ‖4I − I‖_F/√4
    with pytest.raises(ValueError, match="square"):
        dist_identity(semi)
    # a 1×1 conv kernel is measured as its matrix
    assert orth_defect(semi.T[:, :, None, None]) < 1e-14


# --- gradient-norm ratio -----------------------------------------------------------------------


def autograd_reference_ratios(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Plain model(x), retain_grad on the stem and block outputs, loss.backward()."""
    model.eval()
    outs: list[torch.Tensor] = []

    def keep(module, args, out):
        out.retain_grad()
        outs.append(out)

    hooks = [model.stem.register_forward_hook(keep)]
    hooks += [b.register_forward_hook(keep) for b in model.blocks]
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    for h in hooks:
        h.remove()
    norms = [float(o.grad.double().norm()) for o in outs]
    model.zero_grad(set_to_none=True)
    return [norms[i] / norms[i + 1] for i in range(len(norms) - 1)]


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_grad_norm_ratio_vs_autograd(kind: str) -> None:
    torch.manual_seed(3)
    if kind == "mlp":
        model = toy_mlp(d_in=3, width=5, depth=2, classes=3, skip="linear")
        x = torch.randn(32, 3)
    else:
        model = toy_cnn(c=2)
        x = torch.randn(6, 3, 8, 8)
    y = torch.randint(0, 3, (x.shape[0],))
    got = grad_norm_ratio(model, x, y)
    ref = autograd_reference_ratios(model, x, y)
    assert len(got) == len(model.blocks) == len(ref)
    np.testing.assert_allclose(got, ref, rtol=1e-6)
    assert max(abs(r - 1) for r in got) > 1e-3  # not trivially norm-preserving


# --- block Jacobian ----------------------------------------------------------------------------


class SmoothBlock(nn.Module):
    """y = Q x + tanh(W x): full-rank Jacobian, so σ_min is informative."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.q = nn.Linear(d_in, d_out, bias=False)
        self.w = nn.Linear(d_in, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.q(x) + torch.tanh(self.w(x))


def reference_svals(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Singular values of the full Jacobian of the batch map (block-diagonal over samples)."""
    jac = jacrev(block)(x)
    return torch.linalg.svdvals(jac.reshape(block(x).numel(), x.numel()).double().detach())


def block_cases():
    torch.manual_seed(4)
    cnn = toy_cnn(c=2).eval()
    yield "conv", cnn.blocks[0], torch.randn(2, 2, 6, 6)  # d = 72 → 72
    yield "transition", cnn.blocks[1], torch.randn(2, 2, 6, 6)  # 72 → 36
    yield "smooth", SmoothBlock(100, 100), torch.randn(2, 100)
    yield "smooth_wide", SmoothBlock(100, 140), torch.randn(2, 100)


@pytest.mark.parametrize(
    "name,block,x", list(block_cases()), ids=lambda v: v if isinstance(v, str) else ""
)
def test_jacobian_sv_vs_jacrev(name: str, block: nn.Module, x: torch.Tensor) -> None:
    ref = reference_svals(block, x)
    n_small = x.shape[0] * min(x[0].numel(), block(x[:1]).numel())
    ref = ref[:n_small]  # the min(d_in, d_out) singular values of each sample
    smax, smin = float(ref.max()), float(ref.min())
    # estimates (Golub–Kahan–Lanczos): forced by dense_max_dim=0
    est, exact = jacobian_sv(block, x, steps=24, dense_max_dim=0)
    assert not exact
    assert set(est) == {"max", "min_upper_bound"}  # the Ritz σ_min is no estimate of σ_min
    assert est["max"] == pytest.approx(smax, rel=0.01)
    assert est["max"] <= smax * (1 + 1e-5)  # Ritz values lie inside the spectrum
    assert est["min_upper_bound"] >= smin - 1e-5 * smax
    # exact path (per-sample jacrev under vmap)
    full, exact = jacobian_sv(block, x)
    assert exact
    assert full["max"] == pytest.approx(smax, rel=1e-5)
    assert full["min"] == pytest.approx(smin, rel=1e-4, abs=1e-6 * smax)


class ReluBlock(nn.Module):
    """y = relu(W x) with a shifted bias: some outputs are dead, so σ_min(∂y/∂x) = 0 exactly."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.lin = nn.Linear(d, d)
        with torch.no_grad():
            self.lin.bias[: d // 4] = -100.0  # always negative pre-activations: zero rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.lin(x))


class KnownSpectrum(nn.Module):
    """y = U diag(s) Vᵀ x: Jacobian singular values exactly s."""

    def __init__(self, s: torch.Tensor, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        d = s.numel()
        u = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64)).Q
        v = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64)).Q
        self.register_buffer("m", (u * s) @ v.T)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.m.T


def test_jacobian_sv_zero_sigma_min_is_zero_not_noise() -> None:
    torch.manual_seed(8)
    block, x = ReluBlock(40).eval(), torch.randn(3, 40)
    ref = reference_svals(block, x)
    assert float(ref.min()) < 1e-30 * float(ref.max())  # structurally 0: the SVD returns noise
    full, exact = jacobian_sv(block, x)
    assert exact
    assert full["min"] == 0.0 and full["cond"] == math.inf
    assert full["max"] == pytest.approx(float(ref.max()), rel=1e-5)
    # iterative path: max ≤ σ_max; no σ_min claimed, only an upper bound (here far from 0)
    est, exact = jacobian_sv(block, x, dense_max_dim=0, steps=8)
    assert not exact and "min" not in est and "cond" not in est
    assert est["max"] <= float(ref.max()) * (1 + 1e-5)
    assert est["min_upper_bound"] >= 0.0


def test_jacobian_sv_known_positive_sigma_min() -> None:
    s = torch.linspace(0.2, 3.0, 30, dtype=torch.float64)
    block, x = KnownSpectrum(s).eval(), torch.randn(2, 30, dtype=torch.float64)
    full, exact = jacobian_sv(block, x)
    assert exact
    assert full["min"] == pytest.approx(0.2, rel=1e-12)
    assert full["max"] == pytest.approx(3.0, rel=1e-12)
    assert full["cond"] == pytest.approx(15.0, rel=1e-12)
    # just above the floor √d·eps(float64)·σ_max: kept
    tiny = s.clone()
    tiny[0] = 1e-12
    full, _ = jacobian_sv(KnownSpectrum(tiny).eval(), x)
    assert full["min"] == pytest.approx(1e-12, rel=1e-3)
    # below it: 0 and κ = inf
    tiny[0] = 1e-17
    full, _ = jacobian_sv(KnownSpectrum(tiny).eval(), x)
    assert full["min"] == 0.0 and full["cond"] == math.inf
    # all 30 Lanczos steps span the space: the Ritz values are the singular values
    est, exact = jacobian_sv(block, x, dense_max_dim=0, steps=30)
    assert not exact
    assert est["max"] == pytest.approx(3.0, rel=1e-8)
    assert est["min_upper_bound"] == pytest.approx(0.2, rel=1e-6)


# --- representation condition ------------------------------------------------------------------


def numpy_repr(h: np.ndarray) -> tuple[float, float]:
    m = np.moveaxis(h, 1, -1).reshape(-1, h.shape[1]).astype(np.float64) if h.ndim == 4 else h
    m = m - m.mean(axis=0)
    s = np.linalg.svd(m, compute_uv=False)
    p = s / s.sum()
    return s[0] / s[-1], float(np.exp(-(p * np.log(p)).sum()))


def test_repr_condition_vs_numpy() -> None:
    rng = np.random.default_rng(5)
    h = rng.standard_normal((6, 5, 4, 4)).astype(np.float32)
    h[:, 1] *= 30.0
    h[:, 3] += 7.0  # an offset: removed by centring
    got = repr_condition(torch.from_numpy(h))
    cond, eff = numpy_repr(h)
    assert got["cond"] == pytest.approx(cond, rel=1e-9)
    assert got["eff_rank"] == pytest.approx(eff, rel=1e-9)
    assert 1.0 <= got["eff_rank"] <= 5.0
    flat = rng.standard_normal((40, 7))
    got = repr_condition(torch.from_numpy(flat))
    cond, eff = numpy_repr(flat)
    assert got["cond"] == pytest.approx(cond, rel=1e-9)
    assert got["eff_rank"] == pytest.approx(eff, rel=1e-9)


def test_repr_condition_singular_is_inf() -> None:
    rng = np.random.default_rng(6)
    h = rng.standard_normal((50, 4)).astype(np.float32)
    h[:, 3] = h[:, 0] + h[:, 1]  # linearly dependent up to float32 rounding
    assert repr_condition(torch.from_numpy(h))["cond"] == math.inf
    h[:, 3] = 3.0  # a constant (dead) feature: zero after centring
    got = repr_condition(torch.from_numpy(h))
    assert got["cond"] == math.inf
    assert got["eff_rank"] == pytest.approx(numpy_repr(h[:, :3].astype(np.float64))[1], rel=1e-6)
    # just above the floor √C·eps·σ_max stays finite
    u = np.linalg.qr(rng.standard_normal((50, 4)))[0]
    m = u @ np.diag([1.0, 0.5, 0.1, 1e-4])
    got = repr_condition(torch.from_numpy(m - m.mean(0)).float())
    assert math.isfinite(got["cond"]) and got["cond"] == pytest.approx(1e4, rel=1e-2)


def test_non_finite_activations_give_nan_not_a_crash():
    import math

    from torch import nn

    from orthskip.analysis.metrics.jacobian import jacobian_sv
    from orthskip.analysis.metrics.representation import repr_condition

    h = torch.ones(8, 4)
    h[0, 0] = float("inf")
    assert all(math.isnan(v) for v in repr_condition(h).values())
    block = nn.Linear(4, 4)
    with torch.no_grad():
        block.weight.fill_(float("inf"))
    values, _ = jacobian_sv(block.eval(), torch.randn(3, 4))
    assert math.isnan(values["max"]) and math.isnan(values["min"])


def test_repr_condition_of_tokens_has_one_row_per_token() -> None:
    from orthskip.analysis.metrics.representation import representation_matrix

    h = torch.randn(4, 5, 3)  # (N, T, d): 20 tokens of 3 features
    m = representation_matrix(h)
    assert m.shape == (20, 3)
    ref = h.double().reshape(20, 3)
    assert torch.allclose(m, ref - ref.mean(0))
