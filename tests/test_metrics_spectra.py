"""Weight spectra against slow references: dense unrolled convolutions and NumPy SVDs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from orthskip.analysis.metrics import (
    conv_operator_matrix,
    conv_operator_svals,
    orth_defect,
    sv_circular,
    sv_hosvd,
    sv_operator,
    sv_reshaped,
)


def dense_operator(conv: nn.Conv2d, size: tuple[int, int]) -> torch.Tensor:
    """The convolution as an explicit (out_dim, in_dim) matrix: the layer applied to a basis."""
    c_in = conv.in_channels
    d_in = c_in * size[0] * size[1]
    basis = torch.eye(d_in, dtype=torch.float64).reshape(d_in, c_in, *size)
    with torch.no_grad():
        out = conv.double()(basis)
    return out.reshape(d_in, -1).T


def make_conv(c_in, c_out, k, stride, padding, dilation=1, groups=1, mode="circular", seed=0):
    torch.manual_seed(seed)
    conv = nn.Conv2d(
        c_in,
        c_out,
        k,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        bias=False,
        padding_mode=mode,
    )
    return conv.double()


# (c_in, c_out, k, input size, stride, padding, dilation, groups)
EXACT_CASES = [
    (3, 4, 3, (6, 6), 1, 1, 1, 1),
    (3, 4, 3, (8, 8), 2, 1, 1, 1),
    (1, 5, 3, (8, 8), 2, 1, 1, 1),  # C_out > s²·C_in
    (4, 2, 5, (8, 8), 1, 2, 1, 1),
    (2, 3, 3, (8, 8), 1, 2, 2, 1),  # dilation 2
    (2, 3, 3, (6, 8), 2, 1, 1, 1),  # non-square input
    (2, 2, 5, (4, 4), 1, 2, 1, 1),  # kernel larger than the input: taps wrap around
    (4, 6, 3, (6, 6), 1, 1, 1, 2),  # groups
]


@pytest.mark.parametrize("case", EXACT_CASES)
def test_operator_matches_dense_circular(case) -> None:
    c_in, c_out, k, size, stride, padding, dilation, groups = case
    conv = make_conv(c_in, c_out, k, stride, padding, dilation, groups)
    svals, exact = conv_operator_svals(
        conv.weight, size, stride, padding, dilation, groups, "circular"
    )
    ref = torch.linalg.svdvals(dense_operator(conv, size))
    assert exact
    assert svals.numel() == ref.numel()
    err = (svals.sort(descending=True).values - ref).abs().max() / ref.max()
    assert err <= 1e-4, float(err)


@pytest.mark.parametrize("k,stride", [(1, 1), (1, 2), (2, 2)])
def test_operator_exact_without_padding(k: int, stride: int) -> None:
    # 1×1 convolutions and 2×2 stride-2 "patch" convolutions touch no padding: exact
    conv = make_conv(3, 5, k, stride, 0, mode="zeros", seed=3)
    ref = torch.linalg.svdvals(dense_operator(conv, (8, 8)))
    stats, exact = sv_circular(conv, (8, 8))
    assert exact
    assert abs(stats["max"] - float(ref.max())) <= 1e-10 * float(ref.max())
    assert abs(stats["min"] - float(ref.min())) <= 1e-10 * float(ref.max())
    stats, exact, method = sv_operator(conv, (8, 8))
    assert exact and method == "dense_svd"
    assert abs(stats["max"] - float(ref.max())) <= 1e-10 * float(ref.max())
    assert abs(stats["min"] - float(ref.min())) <= 1e-10 * float(ref.max())


@pytest.mark.parametrize("stride,size", [(1, (6, 6)), (2, (8, 8)), (2, (7, 7)), (1, (5, 7))])
def test_circular_surrogate_of_zero_padding_is_upper_bound(
    stride: int, size: tuple[int, int]
) -> None:
    # behaviour kept, under its own name: the FFT surrogate's σ_max bounds the operator's
    conv = make_conv(3, 4, 3, stride, 1, mode="zeros", seed=4)
    stats, exact = sv_circular(conv, size)
    ref = torch.linalg.svdvals(dense_operator(conv, size))
    assert not exact
    assert stats["max"] >= float(ref.max()) * (1 - 1e-12)
    assert stats["max"] <= 1.5 * float(ref.max())  # a bound, but not a vacuous one


# (c_in, c_out, k, input size, stride, padding, groups, padding mode)
ZERO_PAD_CASES = [
    (3, 4, 3, (2, 2), 1, 1, 1, "zeros"),  # 2×2 input: the surrogate is worst here
    (3, 6, 3, (2, 2), 2, 1, 1, "zeros"),
    (3, 4, 3, (7, 7), 1, 1, 1, "zeros"),  # odd sizes
    (3, 4, 3, (7, 7), 2, 1, 1, "zeros"),
    (2, 4, 3, (5, 7), 2, 1, 1, "zeros"),
    (3, 4, 3, (8, 8), 1, 1, 1, "zeros"),
    (4, 8, 3, (8, 8), 2, 1, 1, "zeros"),  # a transition conv
    (4, 6, 3, (6, 6), 1, 1, 2, "zeros"),  # groups
    (2, 3, 5, (4, 4), 1, 2, 1, "zeros"),  # kernel larger than the input
    (2, 3, 3, (7, 7), 2, 1, 1, "circular"),  # circular, size not divisible by the stride
]


@pytest.mark.parametrize("case", ZERO_PAD_CASES, ids=str)
def test_operator_exact_at_real_padding(case) -> None:
    c_in, c_out, k, size, stride, padding, groups, mode = case
    conv = make_conv(c_in, c_out, k, stride, padding, groups=groups, mode=mode, seed=7)
    dense = dense_operator(conv, size)
    assert torch.equal(torch.from_numpy(conv_operator_matrix(conv, size).toarray()), dense)
    ref = torch.linalg.svdvals(dense)
    smax, smin = float(ref.max()), float(ref.min())
    stats, exact, method = sv_operator(conv, size)
    assert exact and method == "dense_svd"
    assert stats["max"] == pytest.approx(smax, rel=1e-12)
    assert stats["min"] == pytest.approx(smin, rel=1e-10, abs=1e-13 * smax)
    assert stats["cond"] == pytest.approx(smax / smin, rel=1e-9)
    # the iterative path (forced): Rayleigh–Ritz values lie inside the spectrum
    est, exact, method = sv_operator(conv, size, dense_max_dim=0, iterative=True)
    assert not exact and method == "lobpcg"
    assert smax * (1 - 1e-6) <= est["max"] <= smax * (1 + 1e-9)
    assert est["min"] >= smin * (1 - 1e-6)
    assert est["min"] == pytest.approx(smin, rel=1e-3)  # small cases converge


def test_operator_above_the_dense_limit_is_not_estimated_unless_asked() -> None:
    conv = make_conv(3, 4, 3, 1, 1, mode="zeros", seed=7)
    stats, exact, method = sv_operator(conv, (6, 6), dense_max_dim=10)
    assert not exact and method == "skipped_large"
    assert all(math.isnan(v) for v in stats.values())


def test_circular_surrogate_is_not_the_zero_padded_operator() -> None:
    # why sv_operator no longer reports the surrogate's σ_min / κ for zero padding
    conv = make_conv(3, 4, 3, 1, 1, mode="zeros", seed=7)
    ref = torch.linalg.svdvals(dense_operator(conv, (2, 2)))
    surrogate, exact = sv_circular(conv, (2, 2))
    assert not exact
    assert abs(surrogate["cond"] / float(ref.max() / ref.min()) - 1) > 0.05


def test_orthogonal_convolutions_have_unit_operator_spectrum() -> None:
    torch.manual_seed(5)
    q = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64)).Q
    assert orth_defect(q) < 1e-14
    # 1×1 conv with an orthogonal matrix, zero padding: an orthogonal operator, exactly
    conv = nn.Conv2d(6, 6, 1, bias=False).double()
    conv.weight.data = q[:, :, None, None].clone()
    svals, exact = conv_operator_svals(conv.weight, (5, 5))
    assert exact and svals.numel() == 6 * 25
    assert (svals - 1).abs().max() < 1e-12
    # 3×3 kernel whose only tap is off-centre: a circular shift times Q, orthogonal
    shift = torch.zeros(6, 6, 3, 3, dtype=torch.float64)
    shift[:, :, 0, 2] = q
    svals, exact = conv_operator_svals(shift, (6, 6), padding=1, padding_mode="circular")
    assert exact and (svals - 1).abs().max() < 1e-12
    # 2×2 stride-2 conv from an orthogonal 12×12 matrix (pixel-unshuffle then Q)
    q12 = torch.linalg.qr(torch.randn(12, 12, dtype=torch.float64)).Q
    svals, exact = conv_operator_svals(q12.reshape(12, 3, 2, 2), (8, 8), stride=2)
    assert exact and svals.numel() == 12 * 16
    assert (svals - 1).abs().max() < 1e-12


def test_sv_reshaped_vs_numpy() -> None:
    rng = np.random.default_rng(6)
    w = rng.standard_normal((8, 3, 3, 3))
    s = np.linalg.svd(w.reshape(8, -1), compute_uv=False)
    got = sv_reshaped(torch.from_numpy(w))
    assert got["max"] == pytest.approx(s[0], rel=1e-12)
    assert got["min"] == pytest.approx(s[-1], rel=1e-12)
    assert got["cond"] == pytest.approx(s[0] / s[-1], rel=1e-12)
    assert got["stable_rank"] == pytest.approx((s**2).sum() / s[0] ** 2, rel=1e-12)
    rank_deficient = torch.zeros(4, 5, dtype=torch.float64)
    rank_deficient[0, 0] = 2.0
    assert sv_reshaped(rank_deficient)["cond"] == float("inf")
    assert sv_reshaped(rank_deficient)["stable_rank"] == pytest.approx(1.0)


def test_sv_hosvd_vs_numpy() -> None:
    rng = np.random.default_rng(7)
    w = rng.standard_normal((6, 4, 3, 3))
    w[:, :, 0, :] *= 5.0  # anisotropic along mode 2
    got = sv_hosvd(torch.from_numpy(w))
    assert set(got) == {"mode0_cond", "mode1_cond", "mode2_cond", "mode3_cond"}
    for mode in range(4):
        unfolding = np.moveaxis(w, mode, 0).reshape(w.shape[mode], -1)
        s = np.linalg.svd(unfolding, compute_uv=False)
        assert got[f"mode{mode}_cond"] == pytest.approx(s[0] / s[-1], rel=1e-10)
    assert got["mode2_cond"] > 3.0
