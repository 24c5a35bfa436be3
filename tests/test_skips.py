"""Skip kinds and orthogonal-group utilities: orthogonality to float precision, in numbers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import jacrev

from orthskip.errors import ConfigError
from orthskip.nn.models import build_model
from orthskip.nn.optim import build_optimizer
from orthskip.nn.orth import (
    MSIGN_FLOOR,
    OrthogonalMap,
    circular_conv_fft,
    expm_skew,
    haar_orthogonal,
    manifold_step,
    msign,
    msign_floored,
    orth_defect,
    polar,
    project_conv_operator,
)
from orthskip.nn.skips import (
    SKIP_OPTIONS,
    SKIPS,
    apply_matrix,
    grouped_orthogonal_maps,
    make_skip,
    skip_identity_gap,
    skip_options,
    validate_skip_options,
)
from orthskip.nn.skips.base import GEMM_MAX_CHANNELS

KINDS = (
    "identity",
    "none",
    "linear",
    "orth_fixed",
    "orth_learned",
    "orth_manifold",
    "procrustes",
    "orth_jacobian",
)


def circular_conv_matrix(weight: Tensor, size: tuple[int, int]) -> Tensor:
    """Dense matrix of a stride-1 circular cross-correlation (as ``F.conv2d`` computes), by probing.

    Slow and obviously correct: column j is the convolution of the j-th unit input. The
    reference the FFT operator tests compare against.
    """
    _, c_in, kh, kw = weight.shape
    h, w = size
    n_in = c_in * h * w
    eye = torch.eye(n_in, dtype=weight.dtype).reshape(n_in, c_in, h, w)
    padded = F.pad(eye, (0, kw - 1, 0, kh - 1), mode="circular")
    out = F.conv2d(padded, weight)
    return out.reshape(n_in, -1).T


def dense_operator(fn, in_shape: tuple[int, ...]) -> torch.Tensor:
    """Matrix of a linear map by probing it with every unit input (slow, obviously correct)."""
    n = math.prod(in_shape)
    basis = torch.eye(n, dtype=torch.float64).reshape(n, *in_shape)
    with torch.no_grad():
        out = fn(basis)
    return out.reshape(n, -1).T


def test_registry_has_every_kind_in_order():
    assert tuple(SKIPS) == KINDS
    assert set(SKIP_OPTIONS) == set(KINDS)
    for kind, cls in SKIPS.items():
        assert cls.kind == kind


# ---------------------------------------------------------------- orthogonal-group utilities


def test_haar_special_orthogonal_has_det_plus_one_and_haar_second_moments():
    gen = torch.Generator().manual_seed(0)
    n, samples = 6, 400
    qs = torch.stack(
        [haar_orthogonal(n, generator=gen, dtype=torch.float64) for _ in range(samples)]
    )
    dets = torch.linalg.det(qs)
    assert torch.allclose(dets, torch.ones(samples, dtype=torch.float64), atol=1e-10)
    assert max(orth_defect(q) for q in qs) < 1e-12
    # Haar: E[Q_ij] = 0, E[Q_ij^2] = 1/n for every entry
    assert qs.mean(0).abs().max() < 0.15
    assert (qs.pow(2).mean(0) - 1 / n).abs().max() < 0.06


def test_haar_orthogonal_group_has_both_determinants():
    gen = torch.Generator().manual_seed(1)
    dets = torch.stack(
        [torch.linalg.det(haar_orthogonal(5, special=False, generator=gen)) for _ in range(400)]
    )
    assert torch.allclose(dets.abs(), torch.ones(400), atol=1e-5)
    frac_neg = float((dets < 0).float().mean())
    assert 0.4 < frac_neg < 0.6


def test_haar_rectangular_is_semi_orthogonal():
    q = haar_orthogonal(7, 3, dtype=torch.float64)
    assert torch.allclose(q.T @ q, torch.eye(3, dtype=torch.float64), atol=1e-12)
    w = haar_orthogonal(3, 7, dtype=torch.float64)
    assert torch.allclose(w @ w.T, torch.eye(3, dtype=torch.float64), atol=1e-12)


def test_msign_matches_svd_and_reports_iterations():
    torch.manual_seed(0)
    a = torch.randn(12, 12, dtype=torch.float64)
    res = msign(a, tol=1e-10, max_iter=200)
    u, _, vh = torch.linalg.svd(a)
    assert res.converged and 1 < res.iterations < 200
    assert torch.allclose(res.value, u @ vh, atol=1e-6)
    short = msign(a, tol=1e-10, max_iter=2)
    assert short.iterations == 2 and not short.converged
    assert float(torch.linalg.matrix_norm(short.value - u @ vh)) > 1e-2


def _skew_with_singular_values(pairs: list[float], seed: int) -> Tensor:
    """A skew matrix Q diag([[0, s], [−s, 0]]) Qᵀ: singular values s, s for each s."""
    blocks = torch.zeros(2 * len(pairs), 2 * len(pairs), dtype=torch.float64)
    for i, v in enumerate(pairs):
        blocks[2 * i, 2 * i + 1], blocks[2 * i + 1, 2 * i] = v, -v
    q = haar_orthogonal(
        len(blocks), dtype=torch.float64, generator=torch.Generator().manual_seed(seed)
    )
    return q @ blocks @ q.T


def test_msign_of_a_batch_is_each_matrix_alone():
    # a gradient's skew part with singular values near 1e-8 (NS stops before it lifts them,
    # their steps being below the tolerance) beside one with a singular value 0.01 that needs
    # more iterations: a batch-wide count lifted the first one's tiny values too, so a skip's
    # step depended on the other skips of its shape
    batch = torch.stack([_skew_with_singular_values([1.0, 0.3, 1e-8, 4e-9], 0),
                         _skew_with_singular_values([1.0, 0.4, 0.2, 0.01], 1)])  # fmt: skip
    together = msign(batch, tol=1e-7)
    alone = [msign(a, tol=1e-7) for a in batch]
    assert alone[0].iterations < alone[1].iterations == together.iterations
    for value, r in zip(together.value, alone, strict=True):
        assert torch.allclose(value, r.value, atol=1e-12)
    assert together.converged == all(r.converged for r in alone)


def test_polar_is_the_nearest_semi_orthogonal_matrix():
    torch.manual_seed(0)
    w = torch.randn(5, 9, dtype=torch.float64)
    p = polar(w)
    assert torch.allclose(p @ p.T, torch.eye(5, dtype=torch.float64), atol=1e-12)
    # nearer to w than 200 random semi-orthogonal matrices
    d = float(torch.linalg.matrix_norm(w - p))
    others = [haar_orthogonal(5, 9, dtype=torch.float64) for _ in range(200)]
    assert all(d < float(torch.linalg.matrix_norm(w - q)) for q in others)


def test_msign_near_orthogonal_start_skips_the_rescaling():
    q = haar_orthogonal(64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    a = q + 1e-9 * noise
    fast = msign(a, tol=1e-7, near_orthogonal=True)
    slow = msign(a, tol=1e-7)
    assert fast.converged and fast.iterations <= 2 < slow.iterations
    assert torch.allclose(fast.value, polar(a), atol=1e-12)
    # far from orthogonal (‖AᵀA − I‖ ≥ 1/2): rescaled as usual, still the polar factor
    far = msign(5.0 * a, tol=1e-10, near_orthogonal=True)
    assert far.converged and torch.allclose(far.value, polar(a), atol=1e-8)


def _spread_skew(lo: float, pairs: int, seed: int) -> Tensor:
    """A 2·pairs square skew matrix with singular values log-spaced over [lo, 1], in pairs."""
    values = torch.logspace(0, math.log10(lo), pairs, dtype=torch.float64).tolist()
    return _skew_with_singular_values(values, seed)


def _relative_noise(a: Tensor, rel: float, seed: int) -> Tensor:
    e = torch.randn(a.shape, dtype=a.dtype, generator=torch.Generator().manual_seed(seed))
    if a.shape[-2] == a.shape[-1]:
        e = e - e.mT  # keep a skew matrix skew
    return e * (rel * torch.linalg.matrix_norm(a) / torch.linalg.matrix_norm(e))


def _floored_by_svd(a: Tensor, floor: float) -> Tensor:
    # the definition, written out: U min(1, σ/(ε σ_max)) Vᵀ
    u, s, vh = torch.linalg.svd(a, full_matrices=False)
    return (u * torch.clamp(s / (floor * s.max()), max=1.0)) @ vh


@pytest.mark.parametrize("shape", [(12, 12), (5, 9), (9, 5)])
def test_msign_floored_is_the_svd_definition_and_the_sign_above_the_floor(shape):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(*shape, dtype=torch.float64, generator=g)
    a = a * torch.logspace(0, -6, shape[-1], dtype=torch.float64)  # σ spread over 6 decades
    for floor in (1e-3, 1e-1):
        got = msign_floored(a, floor)
        assert torch.allclose(got, _floored_by_svd(a, floor), atol=1e-10)
    well = torch.randn(*shape, dtype=torch.float64, generator=g)
    s = torch.linalg.svdvals(well)
    assert float(s.min() / s.max()) > 1e-3  # every σ above the floor: the exact polar factor
    assert torch.allclose(msign_floored(well, MSIGN_FLOOR), polar(well), atol=1e-10)
    batch = torch.stack([a, well, torch.zeros_like(a)])
    got = msign_floored(batch, MSIGN_FLOOR)
    for one, b in zip(got, batch, strict=True):
        assert torch.allclose(one, msign_floored(b, MSIGN_FLOOR), atol=1e-12)
    assert torch.equal(got[2], torch.zeros_like(a))  # no gradient, no step


@pytest.mark.parametrize("seed", range(5))
def test_floored_msign_moves_by_rounding_not_by_unit_steps(seed):
    # singular values spread over 1e-9 … 1: a relative 1e-7 perturbation of A moves the exact
    # (Newton–Schulz to convergence) sign by O(1) — values near its stopping threshold are
    # lifted to 1 or not — and the floored sign by at most ‖E‖/(ε σ_max), its Lipschitz bound
    a = _spread_skew(1e-9, 8, seed)
    e = _relative_noise(a, 1e-7, 100 + seed)
    bound = float(torch.linalg.matrix_norm(e)) / (
        MSIGN_FLOOR * float(torch.linalg.matrix_norm(a, 2))
    )
    moved = msign_floored(a + e, MSIGN_FLOOR) - msign_floored(a, MSIGN_FLOOR)
    assert float(torch.linalg.matrix_norm(moved)) <= bound < 1e-3
    # the manifold step itself (its signature as before the floor): W = Q, G = S Q / 2 gives
    # the skew part G Wᵀ − W Gᵀ = S; the step moves by at most lr times the direction's change
    q = haar_orthogonal(16, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    step, _ = manifold_step(q, 0.5 * a @ q, lr=0.1)
    nudged, _ = manifold_step(q, 0.5 * (a + e) @ q, lr=0.1)
    assert float(torch.linalg.matrix_norm(step - nudged)) <= 0.1 * bound + 1e-12
    assert orth_defect(step) < 1e-12 and orth_defect(nudged) < 1e-12


def test_floored_msign_float32_is_float64_up_to_rounding_with_a_gap_at_the_floor():
    # σ ∈ {1, 0.3, 0.05} above the floor, {1e-5, 1e-8} below it: float32 rounding of A moves
    # the direction by rounding, at most amplified by 1/ε in the damped part
    a = _skew_with_singular_values([1.0, 0.3, 0.05, 1e-5, 1e-8], 3)
    d64 = msign_floored(a, MSIGN_FLOOR)
    d32 = msign_floored(a.float(), MSIGN_FLOOR).double()
    rounding = float(torch.linalg.matrix_norm(a.float().double() - a))
    assert float(torch.linalg.matrix_norm(d32 - d64)) <= rounding / MSIGN_FLOOR + 1e-6
    assert float(torch.linalg.matrix_norm(d32 - d64)) < 1e-4


@pytest.mark.parametrize("shape", [(8, 8), (10, 4)])
def test_manifold_step_keeps_orthogonality_and_descends(shape):
    torch.manual_seed(0)
    target = haar_orthogonal(*shape, dtype=torch.float64)
    w = torch.eye(*shape, dtype=torch.float64)
    start = float(torch.linalg.matrix_norm(w - target))
    for t in range(300):
        grad = w - target  # gradient of 0.5 ||W - T||_F^2
        w, stats = manifold_step(w, grad, lr=0.2 / math.sqrt(1 + t / 10))
        assert stats.converged
    assert orth_defect(w) < 1e-12
    assert float(torch.linalg.matrix_norm(w - target)) < 0.1 * start


def _skew(n: int, scale: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=g, dtype=torch.float64)
    return scale * (a - a.T) / 2


def _degenerate_skew(n: int) -> torch.Tensor:
    # a rotation by the same angle in every 2-plane: eigenvalues ±i·1.3, each n/2 times
    q = haar_orthogonal(n, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    j = torch.zeros(n, n, dtype=torch.float64)
    for i in range(0, n, 2):
        j[i, i + 1], j[i + 1, i] = 1.3, -1.3
    return q @ j @ q.T


CASES = [
    ("zero", torch.zeros(8, 8, dtype=torch.float64)),
    ("small", _skew(8, 1e-3, 0)),
    ("unit", _skew(16, 1.0, 1)),
    ("large", _skew(16, 30.0, 2)),
    ("n=64", _skew(64, 1.0, 3)),
    ("repeated", _degenerate_skew(8)),
    ("odd n", _skew(7, 2.0, 4)),
]


@pytest.mark.parametrize(("name", "a"), CASES, ids=[c[0] for c in CASES])
def test_expm_skew_matches_matrix_exp_and_its_gradient(name, a):
    ref = torch.linalg.matrix_exp(a)
    q = expm_skew(a)
    assert float((q - ref).abs().max()) < 1e-11 * max(1.0, float(a.abs().max()))
    assert orth_defect(q) < 1e-13
    # reverse mode: the same gradient as torch's matrix_exp (a general, non-skew cotangent)
    g = torch.randn(a.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    a1 = a.clone().requires_grad_(True)
    torch.linalg.matrix_exp(a1).backward(g)
    a2 = a.clone().requires_grad_(True)
    expm_skew(a2).backward(g)
    assert torch.allclose(a2.grad, a1.grad, rtol=1e-9, atol=1e-11)
    # forward mode (used by the Jacobian metrics' jvp): the same directional derivative
    e = _skew(a.shape[0], 1.0, 11)
    _, t_ref = torch.func.jvp(torch.linalg.matrix_exp, (a,), (e,))
    _, t_ours = torch.func.jvp(expm_skew, (a,), (e,))
    assert torch.allclose(t_ours, t_ref, rtol=1e-9, atol=1e-11)


def test_expm_skew_passes_gradcheck_in_both_modes():
    x = torch.randn(5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda m: expm_skew(m - m.T), (x,), check_forward_ad=True, check_batched_grad=True
    )


@pytest.mark.parametrize("orthogonal_map", ["matrix_exp", "cayley"])
def test_orthogonal_map_is_torchs_orthogonal_parametrization(orthogonal_map):
    # the same construction as torch.nn.utils.parametrizations.orthogonal (trivialization):
    # for the same init and the same parameter X, the same Q
    from torch.nn.utils import parametrizations, parametrize

    init = haar_orthogonal(6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ours = torch.nn.Linear(6, 6, bias=False).double()
    theirs = torch.nn.Linear(6, 6, bias=False).double()
    for lin in (ours, theirs):
        with torch.no_grad():
            lin.weight.copy_(init)
    parametrize.register_parametrization(ours, "weight", OrthogonalMap((6, 6), orthogonal_map))
    parametrizations.orthogonal(theirs, "weight", orthogonal_map=orthogonal_map)
    assert torch.allclose(ours.weight, init, atol=1e-14)  # X = 0 is the init exactly
    x = torch.randn(6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours.parametrizations.weight.original.copy_(x)
        theirs.parametrizations.weight.original.copy_(x)
    assert torch.allclose(ours.weight, theirs.weight, atol=1e-12)
    assert float((ours.weight.detach() - init).abs().max()) > 0.1


@pytest.mark.parametrize("shape", [(10, 4), (4, 10)])
def test_orthogonal_map_on_the_stiefel_manifold(shape):
    init = haar_orthogonal(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    holder = torch.nn.Linear(shape[1], shape[0], bias=False).double()
    with torch.no_grad():
        holder.weight.copy_(init)
    from torch.nn.utils import parametrize

    parametrize.register_parametrization(holder, "weight", OrthogonalMap(shape, "matrix_exp"))
    assert torch.allclose(holder.weight, init, atol=1e-14)
    with torch.no_grad():
        holder.parametrizations.weight.original.normal_(0, 3.0)
    w = holder.weight.detach()
    assert orth_defect(w) < 1e-13
    assert float((w - init).abs().max()) > 0.1
    with pytest.raises(ValueError, match="orthonormal"):
        holder.weight = torch.ones(shape, dtype=torch.float64)


def _holders(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if hasattr(m, "grouped")]


@pytest.mark.parametrize(
    ("arch", "shape", "kind", "opts"),
    [
        ("cifar_resnet", (3, 8, 8), "orth_learned", {}),
        ("cifar_resnet", (3, 8, 8), "orth_learned", {"map": "cayley", "init": "haar"}),
        ("cifar_preresnet", (3, 8, 8), "orth_jacobian", {"kernel_size": 1}),  # the 1×1 form
        ("mlp", (5,), "orth_learned", {}),
    ],
)
def test_grouped_orthogonal_maps_equal_the_separate_ones(arch, shape, kind, opts):
    """The model's forward computes its Q's batched per shape: same values, same gradients."""
    torch.manual_seed(0)
    model = build_model(
        arch, 14 if arch != "mlp" else 3, kind, shape, 3, {"width": 4}, {kind: opts}
    )
    holders = _holders(model)
    assert len({tuple(h.weight.shape) for h in holders}) < len(holders)  # real groups
    with torch.no_grad():
        for h in holders:  # off X = 0, where every Q is its base
            h.parametrizations.weight.original.normal_(0, 0.3)
    x = torch.randn(6, *shape)

    with grouped_orthogonal_maps(model):
        for h in holders:
            assert h.grouped is not None
            assert torch.allclose(h.grouped, h.weight, rtol=0, atol=1e-13)
    assert all(h.grouped is None for h in holders)

    def separate(x: torch.Tensor) -> torch.Tensor:  # the blocks one by one: no grouping
        x = model.stem(x)
        for block in model.blocks:
            x = block(x)
        return model.head(x)

    grads = []
    outs = []
    for forward in (model, separate):
        model.zero_grad()
        out = forward(x)
        (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
        outs.append(out.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert torch.allclose(outs[0], outs[1], rtol=1e-5, atol=1e-6)
    skip_grads = [n for n in grads[0] if "original" in n]
    assert skip_grads
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-6), name
    assert all(float(grads[0][n].abs().max()) > 0 for n in skip_grads)
    assert all(h.grouped is None for h in holders)


def test_grouped_orthogonal_maps_are_cleared_after_an_error_and_nest():
    model = build_model("cifar_resnet", 8, "orth_learned", (3, 8, 8), 3, {"width": 4}, {})
    holders = _holders(model)
    with pytest.raises(RuntimeError):
        model(torch.randn(2, 5, 8, 8))  # wrong channel count: fails inside the forward
    assert all(h.grouped is None for h in holders)
    with grouped_orthogonal_maps(model):
        outer = [h.grouped for h in holders]
        model(torch.randn(2, 3, 8, 8))  # an inner forward leaves the outer's matrices alone
        assert all(h.grouped is q for h, q in zip(holders, outer, strict=True))
    assert all(h.grouped is None for h in holders)


@pytest.mark.parametrize("channels", [(4, 4), (GEMM_MAX_CHANNELS, 8), (24, 24), (40, 20)])
@pytest.mark.parametrize("fused_add", [False, True])
def test_apply_matrix_is_a_1x1_convolution_with_its_gradients(channels, fused_add):
    # both code paths (batched GEMM up to GEMM_MAX_CHANNELS, oneDNN 1×1 conv above) against
    # the obvious einsum, in value and in every gradient
    c_out, c_in = channels
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, c_in, 5, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    m = torch.randn(c_out, c_in, generator=gen, dtype=torch.float64, requires_grad=True)
    add = torch.randn(3, c_out, 5, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    g = torch.randn(3, c_out, 5, 6, generator=gen, dtype=torch.float64)
    ref = torch.einsum("oc,nchw->nohw", m, x) + (add if fused_add else 0)
    grads_ref = torch.autograd.grad(ref, (x, m, add) if fused_add else (x, m), g)
    out = apply_matrix(x, m, add=add if fused_add else None)
    grads = torch.autograd.grad(out, (x, m, add) if fused_add else (x, m), g)
    assert out.shape == ref.shape and out.is_contiguous()
    assert torch.allclose(out, ref, atol=1e-12)
    for a, b in zip(grads, grads_ref, strict=True):
        assert torch.allclose(a, b, atol=1e-12)


# ---------------------------------------------------------------- orthogonality under training


def _train_skip(kind: str, n: int, opts: dict, steps: int = 500, lr: float = 1.0):
    torch.manual_seed(n)
    skip_cfg = {kind: opts}
    skip = make_skip(kind, n, n, 1, skip_cfg)
    bundle = build_optimizer(skip, {"name": "sgd", "lr": lr, "momentum": 0.9}, skip_cfg)
    q0 = skip.matrices()["Q"].detach().clone()
    x = torch.randn(64, n)
    target = torch.randn(64, n) * 3.0  # not reachable by any orthogonal map: big gradients
    for _ in range(steps):
        bundle.zero_grad()
        loss = (skip(x) - target).pow(2).mean()
        loss.backward()
        bundle.step()
    return skip, bundle, q0


@pytest.mark.parametrize("n", [2, 16, 64])
@pytest.mark.parametrize(
    ("kind", "opts"),
    [
        ("orth_learned", {"map": "matrix_exp", "init": "haar"}),
        ("orth_learned", {"map": "cayley", "init": "identity"}),
        ("orth_manifold", {"init": "haar"}),
    ],
)
def test_learned_orthogonal_stays_on_so_n_after_500_large_steps(kind, opts, n):
    skip, bundle, q0 = _train_skip(kind, n, opts)
    q = skip.matrices()["Q"].detach().float()  # the matrix as applied, in fp32
    eye = torch.eye(n)
    defect = float(torch.linalg.matrix_norm(q.T @ q - eye) / math.sqrt(n))
    assert defect <= 1e-5
    assert abs(float(torch.linalg.det(q.double())) - 1.0) < 1e-5
    assert float(torch.linalg.matrix_norm(q.double() - q0.double())) > 0.1  # it did move
    if kind == "orth_manifold":
        meta = bundle.metadata()
        assert meta["retraction_nonconverged_steps"] == 0
        assert meta["retraction_max_iterations"] >= 1


def test_negative_det_start_is_kept_when_allowed():
    torch.manual_seed(3)
    dets = []
    for _ in range(12):
        skip = make_skip(
            "orth_learned", 4, 4, 1, {"orth_learned": {"init": "haar", "allow_negative_det": True}}
        )
        dets.append(float(torch.linalg.det(skip.Q.detach())))
    assert any(d < -0.99 for d in dets) and any(d > 0.99 for d in dets)
    neg = next(i for i, d in enumerate(dets) if d < 0)
    torch.manual_seed(3)
    for _ in range(neg + 1):
        skip = make_skip(
            "orth_learned", 4, 4, 1, {"orth_learned": {"init": "haar", "allow_negative_det": True}}
        )
    bundle = build_optimizer(skip, {"lr": 0.5}, {})
    for _ in range(50):
        bundle.zero_grad()
        (skip(torch.randn(8, 4)) - torch.randn(8, 4)).pow(2).sum().backward()
        bundle.step()
    assert abs(float(torch.linalg.det(skip.Q.detach())) + 1.0) < 1e-6


def test_orth_fixed_never_changes_and_has_no_parameters():
    torch.manual_seed(0)
    model = build_model("mlp", 2, "orth_fixed", (5,), 3, {"width": 8}, {})
    qs = [b.skip.Q.clone() for b in model.blocks]
    assert sum(p.numel() for b in model.blocks for p in b.skip.parameters()) == 0
    bundle = build_optimizer(model, {"lr": 0.5, "weight_decay": 0.1}, {})
    for _ in range(20):
        bundle.zero_grad()
        torch.nn.functional.cross_entropy(
            model(torch.randn(16, 5)), torch.randint(0, 3, (16,))
        ).backward()
        bundle.step()
    for b, q in zip(model.blocks, qs, strict=True):
        assert torch.equal(b.skip.Q, q)
        assert orth_defect(q) < 1e-6
        assert abs(float(torch.linalg.det(q.double())) - 1) < 1e-5


@pytest.mark.parametrize("kind", ["identity", "none"])
def test_identity_and_none_have_no_skip_parameters(kind):
    model = build_model("cifar_resnet", 8, kind, (3, 8, 8), 4, {"width": 4}, {})
    assert model.n_skip_params() == 0
    assert all(b.skip_matrices() == {} for b in model.blocks)
    x = torch.randn(2, 4, 6, 6)
    trans = make_skip(kind, 4, 8, 2, {})
    out = trans(x)
    assert out.shape == (2, 8, 3, 3)
    expected = torch.zeros_like(out)
    if kind == "identity":
        expected[:, :4] = x[:, :, ::2, ::2]  # subsample then zero-pad channels
    assert torch.equal(out, expected)


# ---------------------------------------------------------------- orth_jacobian


def test_orth_jacobian_mlp_block_jacobian_is_orthogonal():
    torch.manual_seed(0)
    model = build_model("mlp", 3, "orth_jacobian", (10,), 2, {"width": 16}, {})
    block = model.blocks[1]
    with torch.no_grad():
        block.skip.bias.normal_()  # so that ReLU cuts some units and D is not trivial
    actives = []
    for _ in range(5):
        x = torch.randn(16)
        jac = jacrev(lambda v, b=block: b(v[None])[0])(x).detach()
        actives.append(int((block.skip.B.float() @ x + block.skip.bias > 0).sum()))
        err = float(torch.linalg.matrix_norm(jac.T @ jac - torch.eye(16), ord=2).detach())
        assert err <= 1e-4
        assert float(torch.linalg.matrix_norm(jac - torch.eye(16))) > 0.1  # not the identity
    assert all(0 < a < 16 for a in actives)  # D = diag(rho') has both zeros and ones


def test_orth_jacobian_conv_block_jacobian_is_orthogonal():
    torch.manual_seed(1)
    model = build_model("cifar_resnet", 8, "orth_jacobian", (3, 6, 6), 2, {"width": 4}, {})
    block = model.blocks[0]
    assert not block.transition
    x = torch.randn(4, 3, 3)
    jac = jacrev(lambda v: block(v[None])[0])(x).detach().reshape(36, 36)
    err = float(torch.linalg.matrix_norm(jac.T @ jac - torch.eye(36), ord=2))
    assert err <= 1e-4
    assert float(torch.linalg.matrix_norm(jac - torch.eye(36))) > 0.1


# ---------------------------------------------------------------- procrustes


@pytest.mark.parametrize("scale", [1.0, 0.7])
def test_procrustes_transition_operator_singular_values_equal_scale(scale):
    torch.manual_seed(0)
    cfg = {"procrustes": {"scale": scale}}
    skip = make_skip("procrustes", 3, 6, 2, cfg).double()
    with torch.no_grad():
        skip.weight.add_(0.5 * torch.randn_like(skip.weight))  # as if after an SGD step
    in_shape = (3, 6, 6)
    before = torch.linalg.svdvals(dense_operator(skip, in_shape))
    assert float((before - scale).abs().max()) > 0.05
    skip.project()
    op = dense_operator(skip, in_shape)  # (6*3*3) x (3*6*6)
    sv = torch.linalg.svdvals(op)
    assert sv.shape[0] == 54
    assert float((sv - scale).abs().max()) <= 1e-3


def test_procrustes_odd_input_is_zero_padded_and_contractive():
    skip = make_skip("procrustes", 2, 4, 2, {}).double()
    op = dense_operator(skip, (2, 5, 5))  # padded to 6x6, output 4x3x3
    sv = torch.linalg.svdvals(op)
    assert op.shape == (36, 50)
    # zero padding is an isometric embedding, so the operator is a contraction: sigma <= scale
    assert abs(float(sv.max()) - 1) <= 1e-6  # interior pixels keep their norm
    assert float(sv.min()) < 0.5  # the padded border does not: not norm-preserving


def test_procrustes_is_identity_inside_stages():
    skip = make_skip("procrustes", 4, 4, 1, {})
    x = torch.randn(2, 4, 3, 3)
    assert torch.equal(skip(x), x)
    assert list(skip.parameters()) == []


@pytest.mark.parametrize(("c_out", "c_in", "k", "n"), [(3, 2, 3, 4), (2, 4, 3, 5)])
def test_fft_projection_of_kxk_circular_conv(c_out, c_in, k, n):
    torch.manual_seed(0)
    w = torch.randn(c_out, c_in, k, k, dtype=torch.float64)
    w_hat = project_conv_operator(w, (n, n), scale=1.3)
    assert w_hat.shape == (c_out, c_in, n, n)
    sv = torch.linalg.svdvals(circular_conv_matrix(w_hat, (n, n)))
    nonzero = sv[: n * n * min(c_in, c_out)]
    assert float((nonzero - 1.3).abs().max()) <= 1e-3
    zero = sv[n * n * min(c_in, c_out) :]
    assert zero.numel() == 0 or float(zero.abs().max()) < 1e-9
    # projecting again changes nothing (it is a projection)
    assert torch.allclose(project_conv_operator(w_hat, (n, n), scale=1.3), w_hat, atol=1e-10)


def test_circular_conv_fft_is_a_circular_convolution():
    # slow reference: y[o, p] = sum_i sum_q K[o, i, q] x[i, p - q] (indices mod the size)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 5, generator=gen, dtype=torch.float64)
    k = torch.randn(2, 3, 4, 5, generator=gen, dtype=torch.float64)
    ref = torch.zeros(2, 2, 4, 5, dtype=torch.float64)
    for a in range(4):
        for b in range(5):
            shifted = torch.roll(x, shifts=(a, b), dims=(-2, -1))  # x[p - q], q = (a, b)
            ref += torch.einsum("oi,nihw->nohw", k[:, :, a, b], shifted)
    assert torch.allclose(circular_conv_fft(x, k), ref, atol=1e-12)


@pytest.mark.parametrize(("in_size", "kernel_size"), [((6, 6), 3), ((8, 6), 2)])
def test_procrustes_kxk_transition_projected_per_fft_frequency(in_size, kernel_size):
    torch.manual_seed(0)
    scale = 0.8
    cfg = {"procrustes": {"scale": scale, "kernel_size": kernel_size}}
    skip = make_skip("procrustes", 2, 3, 2, cfg, in_size=in_size).double()
    h, w = in_size[0] // 2, in_size[1] // 2
    assert skip.weight.shape == (3, 8, h, w)
    in_shape = (2, *in_size)
    # conv* is unshuffle + circular conv, checked against the dense circular-conv matrix
    x = torch.randn(4, *in_shape, dtype=torch.float64)
    flip = torch.roll(skip.weight.detach().flip(-2, -1), shifts=(1, 1), dims=(-2, -1))
    z = torch.nn.functional.pixel_unshuffle(x, 2).reshape(4, -1)
    # convolution = cross-correlation with the flipped kernel K[-q]
    expected = (circular_conv_matrix(flip, (h, w)) @ z.T).T.reshape(4, 3, h, w)
    assert torch.allclose(skip(x), expected, atol=1e-10)
    with torch.no_grad():
        skip.weight.add_(0.3 * torch.randn_like(skip.weight))  # as if after an SGD step
    before = torch.linalg.svdvals(dense_operator(skip, in_shape))
    assert float((before - scale).abs().max()) > 0.05
    skip.project()
    sv = torch.linalg.svdvals(dense_operator(skip, in_shape))  # (3*h*w) x (2*H*W)
    assert sv.shape[0] == 3 * h * w  # C_out < 4 C_in: every singular value is a nonzero one
    assert float((sv - scale).abs().max()) <= 1e-3
    # W (the frequency-0 block) is scale x semi-orthogonal
    wm = skip.matrices()["W"].detach()
    assert torch.allclose(wm @ wm.T, scale**2 * torch.eye(3, dtype=torch.float64), atol=1e-10)


def test_procrustes_kxk_in_a_network_stays_projected_under_training():
    torch.manual_seed(0)
    cfg = {"procrustes": {"kernel_size": 3}}
    model = build_model("cifar_resnet", 8, "procrustes", (3, 8, 8), 4, {"width": 2}, cfg)
    model = model.double()
    bundle = build_optimizer(model, {"lr": 0.5, "momentum": 0.9}, cfg)
    x, y = torch.randn(8, 3, 8, 8, dtype=torch.float64), torch.randint(0, 4, (8,))
    for _ in range(5):
        bundle.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        bundle.step()
    transitions = [b for b in model.blocks if b.transition]
    assert [tuple(b.skip.weight.shape) for b in transitions] == [(4, 8, 4, 4), (8, 16, 2, 2)]
    for block, size in zip(transitions, [(8, 8), (4, 4)], strict=True):
        sv = torch.linalg.svdvals(dense_operator(block.skip, (block.skip.c_in, *size)))
        assert float((sv - 1.0).abs().max()) <= 1e-3


def test_procrustes_kernel_size_errors_name_the_key():
    bad = {"procrustes": {"kernel_size": 0}}
    with pytest.raises(ConfigError, match=r"skip_options\.procrustes\.kernel_size.*>= 1"):
        build_model("mlp", 8, "procrustes", (4,), 2, {"width": 2}, bad)
    # a k x k conv* needs a spatial size; MLPs have no transitions, so there it never applies
    cfg = {"procrustes": {"kernel_size": 3}}
    with pytest.raises(ConfigError, match=r"skip_options\.procrustes\.kernel_size.*image input"):
        make_skip("procrustes", 2, 4, 2, cfg)
    assert build_model("mlp", 3, "procrustes", (4,), 2, {"width": 8}, cfg).n_skip_params() == 0


def test_batched_polar_matches_svd_including_the_rank_deficient_fallback():
    from orthskip.nn.orth import _polar_batched

    gen = torch.Generator().manual_seed(0)
    p = torch.randn(5, 3, 7, generator=gen, dtype=torch.complex128)
    for m in (p, p.mT.conj()):  # wide and tall
        u, _, vh = torch.linalg.svd(m, full_matrices=False)
        assert torch.allclose(_polar_batched(m), u @ vh, atol=1e-12)
    deficient = p.clone()
    deficient[2, 1] = 0  # one matrix of rank 2: Gram matrix singular, SVD fallback
    out = _polar_batched(deficient)
    u, _, vh = torch.linalg.svd(deficient, full_matrices=False)
    assert torch.isfinite(out).all() and torch.allclose(out, u @ vh, atol=1e-12)


# ---------------------------------------------------------------- options


def test_skip_options_defaults_and_overrides():
    assert skip_options("orth_learned", None)["map"] == "matrix_exp"
    assert skip_options("orth_learned", {"orth_learned": {"map": "cayley"}})["map"] == "cayley"
    assert skip_options("procrustes", {})["every"] == 1


@pytest.mark.parametrize(
    ("cfg", "needle"),
    [
        ({"orth_learnd": {}}, "orth_learnd"),
        ({"orth_learned": {"mapp": "cayley"}}, "skip_options.orth_learned.mapp"),
        ({"orth_learned": {"map": "qr"}}, "matrix_exp"),
        ({"procrustes": {"every": 0}}, "skip_options.procrustes.every"),
        ({"orth_manifold": {"lr_scale": -1.0}}, "lr_scale"),
        ({"orth_fixed": {"allow_negative_det": "yes"}}, "allow_negative_det"),
    ],
)
def test_bad_skip_options_raise_config_error_naming_the_key(cfg, needle):
    with pytest.raises(ConfigError, match=needle):
        validate_skip_options(cfg)


def test_unknown_kind_names_the_allowed_kinds():
    with pytest.raises(ConfigError, match="orth_learned"):
        build_model("mlp", 2, "orthogonal", (4,), 2, {}, {})


def test_orthogonal_map_stays_exact_under_bf16_autocast():
    # bf16 autocast (as on CUDA with train.amp) must not touch the orthogonal map itself:
    # it is computed in float64, which autocast never casts.
    from orthskip.nn.models import build_model

    torch.manual_seed(0)
    model = build_model("mlp", 2, "orth_learned", (2,), 2, {"width": 16},
                        {"orth_learned": {"init": "haar"}})  # fmt: skip
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.randn(4, 2))
        for block in model.blocks:
            for q in block.skip_matrices().values():
                eye = torch.eye(q.shape[1], dtype=q.dtype)
                assert q.dtype == torch.float64
                assert torch.linalg.matrix_norm(q.T @ q - eye) < 1e-12


# ---------------------------------------------------------------- orth_jacobian, spatial form


def _jacobian_layer(kernel_size: int, c: int = 3, size=(6, 6), seed: int = 0, opts=None):
    """A non-transition orth_jacobian skip in float64 at a random point: V, bias, Haar base."""
    torch.manual_seed(seed)
    cfg = {"orth_jacobian": {"kernel_size": kernel_size, **(opts or {})}}
    skip = make_skip("orth_jacobian", c, c, 1, cfg, in_size=size).double()
    with torch.no_grad():
        for layer in skip.layers:
            layer.bias.normal_(0, 0.5)  # so that ReLU cuts some units: D is not trivial
            if kernel_size > 1:
                layer.V.normal_(0, 0.4)  # off V = 0, where B is the channel matrix base
    return skip


def _dense_jacobian(fn, x: torch.Tensor) -> torch.Tensor:
    jac = torch.autograd.functional.jacobian(lambda v: fn(v[None])[0], x)
    return jac.reshape(x.numel(), x.numel())


@pytest.mark.parametrize("orthogonal_map", ["matrix_exp", "cayley"])
@pytest.mark.parametrize("kernel_size", [1, 3])
def test_orth_jacobian_block_jacobian_is_orthogonal_in_float64(kernel_size, orthogonal_map):
    skip = _jacobian_layer(kernel_size, opts={"map": orthogonal_map})
    n = 3 * 6 * 6
    eye = torch.eye(n, dtype=torch.float64)
    for seed in range(3):
        x = torch.randn(3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        jac = _dense_jacobian(skip, x)
        assert float(torch.linalg.matrix_norm(jac.T @ jac - eye, ord=2)) <= 1e-10
        assert float(torch.linalg.matrix_norm(jac - eye)) > 0.1  # not the identity
        # D = diag(ρ') has zeros and ones
        pre = skip.layers[0].apply_b(x[None]) if kernel_size > 1 else None
        if pre is None:
            pre = torch.einsum("oc,chw->ohw", skip.B, x)[None]
        active = int((pre[0] + skip.bias[:, None, None] > 0).sum())
        assert 0 < active < n
    # pixel-to-pixel couplings: the 1×1 form is block-diagonal over pixels, the spatial one not
    per_pixel = jac.reshape(3, 36, 3, 36).abs().sum(dim=(0, 2))  # (out pixel, in pixel)
    off_diagonal = float((per_pixel - torch.diag(torch.diag(per_pixel))).abs().max())
    if kernel_size == 1:
        assert off_diagonal < 1e-12
    else:
        assert off_diagonal > 1e-2


def _roll_conv(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Slow reference: y[o, p] = Σ_i Σ_q K[o, i, q] x[i, p − q], q the centred k×k offsets."""
    k = kernel.shape[-1]
    r = k // 2
    y = torch.zeros(x.shape[0], kernel.shape[0], *x.shape[2:], dtype=x.dtype)
    for a in range(k):
        for b in range(k):
            shifted = torch.roll(x, shifts=(a - r, b - r), dims=(-2, -1))
            y += torch.einsum("oi,nihw->nohw", kernel[:, :, a, b], shifted)
    return y


@pytest.mark.parametrize("size", [(6, 5), (2, 2)])
def test_orth_jacobian_spatial_b_is_generated_by_a_kxk_circular_convolution(size):
    # d/dε B(εW) at ε = 0 is base · (W − Wᵀ) as operators, W the k×k circular convolution:
    # checked by a central difference against the roll-based reference (wrap-around included
    # on the 2×2 grid, where a 3×3 kernel's taps coincide)
    skip = _jacobian_layer(3, size=size)
    layer = skip.layers[0]
    w = torch.randn_like(layer.V)
    in_shape = (3, *size)
    eps = 1e-5
    ops = []
    for sign in (1.0, -1.0):
        with torch.no_grad():
            layer.V.copy_(sign * eps * w)
        ops.append(dense_operator(layer.apply_b, in_shape))
    derivative = (ops[0] - ops[1]) / (2 * eps)
    conv = dense_operator(lambda x: _roll_conv(x, w), in_shape)
    base = dense_operator(lambda x: torch.einsum("oc,nchw->nohw", layer.base, x), in_shape)
    assert torch.allclose(derivative, base @ (conv - conv.T), atol=1e-8)
    assert float((conv - conv.T).abs().max()) > 0.1


def test_orth_jacobian_spatial_b_matrix_is_its_action_on_constant_images():
    skip = _jacobian_layer(3, size=(4, 6))
    b = skip.matrices()["B"]
    assert b.shape == (3, 3) and b.dtype == torch.float64
    assert torch.allclose(b.T @ b, torch.eye(3, dtype=torch.float64), atol=1e-12)
    c = torch.randn(3, dtype=torch.float64)
    const = c[None, :, None, None].expand(1, 3, 4, 6)
    out = skip.layers[0].apply_b(const)
    assert torch.allclose(out, (b @ c)[None, :, None, None].expand_as(out), atol=1e-12)


@pytest.mark.parametrize("orthogonal_map", ["matrix_exp", "cayley"])
@pytest.mark.parametrize("kernel_size", [1, 3])
def test_orth_jacobian_b_stays_orthogonal_after_300_large_steps(kernel_size, orthogonal_map):
    torch.manual_seed(0)
    size, c = (5, 6), 4
    cfg = {"orth_jacobian": {"kernel_size": kernel_size, "map": orthogonal_map}}
    skip = make_skip("orth_jacobian", c, c, 1, cfg, in_size=size)
    bundle = build_optimizer(skip, {"name": "sgd", "lr": 1.0, "momentum": 0.9}, cfg)
    x = torch.randn(32, c, *size)
    target = torch.randn(32, c, *size) * 3.0  # far from any orthogonal-Jacobian map
    start = {n: p.detach().clone() for n, p in skip.named_parameters()}
    for _ in range(300):
        bundle.zero_grad()
        (skip(x) - target).pow(2).mean().backward()
        bundle.step()
    moved = max(float((p - start[n]).norm()) for n, p in skip.named_parameters())
    assert moved > 0.5
    n = c * size[0] * size[1]
    layer = skip.layers[0]

    def apply_b(v: torch.Tensor) -> torch.Tensor:
        if kernel_size > 1:
            return layer.apply_b(v)
        return apply_matrix(v, layer.matrix())

    for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-12)):  # float32: as applied
        basis = torch.eye(n, dtype=dtype).reshape(n, c, *size)
        with torch.no_grad():
            op = apply_b(basis).reshape(n, -1).T.to(torch.float64)
        eye = torch.eye(n, dtype=torch.float64)
        assert float(torch.linalg.matrix_norm(op.T @ op - eye)) / math.sqrt(n) <= tol
    # and the block Jacobian is still orthogonal (float64)
    skip = skip.double()
    xj = torch.randn(c, *size, dtype=torch.float64)
    jac = _dense_jacobian(skip, xj)
    assert float(torch.linalg.matrix_norm(jac.T @ jac - eye, ord=2)) <= 1e-10


def test_orth_jacobian_layers_compose_and_transitions_map_first():
    torch.manual_seed(0)
    cfg = {"orth_jacobian": {"layers": 2}}
    assert skip_options("orth_jacobian", {})["layers"] == 2  # the default
    one = make_skip("orth_jacobian", 3, 3, 1, {"orth_jacobian": {"layers": 1}}, in_size=(4, 4))
    assert len(one.layers) == 1 and set(one.matrices()) == {"B"}
    skip = make_skip("orth_jacobian", 2, 4, 2, cfg, in_size=(5, 6)).double()
    assert [layer.size for layer in skip.layers] == [(3, 3), (3, 3)]
    assert set(skip.matrices()) == {"B", "B1", "Q"}
    with torch.no_grad():
        for layer in skip.layers:
            layer.V.normal_(0, 0.4)
            layer.bias.normal_(0, 0.5)
    x = torch.randn(2, 2, 5, 6, dtype=torch.float64)
    q = skip.matrices()["Q"]
    assert torch.allclose(q.T @ q, torch.eye(2, dtype=torch.float64), atol=1e-12)
    z = torch.einsum("oc,nchw->nohw", q, x[:, :, ::2, ::2])
    assert torch.allclose(skip(x), skip.layers[1](skip.layers[0](z)), atol=1e-12)
    # the two-layer stage (no transition) has an orthogonal Jacobian too
    inner = make_skip("orth_jacobian", 3, 3, 1, cfg, in_size=(4, 4)).double()
    with torch.no_grad():
        for layer in inner.layers:
            layer.V.normal_(0, 0.4)
    jac = _dense_jacobian(inner, torch.randn(3, 4, 4, dtype=torch.float64))
    assert float(torch.linalg.matrix_norm(jac.T @ jac - torch.eye(48, dtype=torch.float64))) < 1e-10


def test_orth_jacobian_kernel_size_options():
    with pytest.raises(ConfigError, match=r"skip_options\.orth_jacobian\.kernel_size.*odd"):
        validate_skip_options({"orth_jacobian": {"kernel_size": 2}})
    with pytest.raises(ConfigError, match=r"skip_options\.orth_jacobian\.layers"):
        validate_skip_options({"orth_jacobian": {"layers": 0}})
    assert skip_options("orth_jacobian", {})["kernel_size"] == 3  # spatial by default
    # vectors: a 1×1 image, on which the circular k×k convolution is a C × C matrix
    mlp = build_model("mlp", 2, "orth_jacobian", (4,), 2, {"width": 8}, {})
    assert mlp.n_skip_params() == 2 * 2 * (8 * 8 + 8)  # 2 blocks of 2 layers (default)
    cnn = build_model("cifar_resnet", 8, "orth_jacobian", (1, 8, 8), 2, {"width": 2}, {})
    sizes = [b.skip.layers[0].size for b in cnn.blocks]
    assert sizes == [(8, 8), (4, 4), (2, 2)]
    assert [tuple(b.skip.layers[0].V.shape) for b in cnn.blocks] == [
        (2, 2, 3, 3),
        (4, 4, 3, 3),
        (8, 8, 3, 3),
    ]


def test_complex_expm_skew_matches_matrix_exp_and_passes_gradcheck():
    gen = torch.Generator().manual_seed(0)
    m = torch.randn(6, 4, 4, generator=gen, dtype=torch.complex128)
    a = 3.0 * (m - m.mH)
    q = expm_skew(a)
    assert torch.allclose(q, torch.linalg.matrix_exp(a), atol=1e-12)
    assert torch.allclose(q @ q.mH, torch.eye(4, dtype=torch.complex128).expand_as(q), atol=1e-13)
    x = torch.randn(3, 3, generator=gen, dtype=torch.complex128, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: expm_skew(v - v.mH), (x,), check_forward_ad=True)


def test_skip_identity_gap_is_the_mean_rms_distance_from_identity_entry_by_entry():
    # what train.stop.watch: skips watches, against a slow computation: per block, the sum of
    # squared entries of W − I over n, its root, then the mean over blocks
    opts = {"width": 0, "hidden": 4, "stem": "identity", "head": "identity", "norm": "none"}
    model = build_model("mlp", 3, "linear", (3,), 3, opts, {})
    gen = torch.Generator().manual_seed(0)
    slow = []
    with torch.no_grad():
        for block in model.blocks:
            w = torch.randn(3, 3, generator=gen)
            block.skip.weight.copy_(w)
            sq = sum((float(w[i, j]) - (i == j)) ** 2 for i in range(3) for j in range(3))
            slow.append(math.sqrt(sq / 3))
    assert skip_identity_gap(model) == pytest.approx(sum(slow) / 3, rel=1e-12)
    learned = build_model("mlp", 2, "orth_learned", (3,), 3, opts, {"orth_learned": {}})
    assert skip_identity_gap(learned) == 0.0  # Q = I at init
    for kind in ("identity", "none"):  # no matrix to measure
        assert math.isnan(skip_identity_gap(build_model("mlp", 2, kind, (3,), 3, opts, {})))
