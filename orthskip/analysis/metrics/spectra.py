"""Singular values of layer weights: reshaped kernels, convolution operators, HOSVD modes.

All computations run in float64 on CPU copies of the weights (any device in, floats out).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from scipy import sparse
from scipy.sparse import linalg as splinalg
from torch import Tensor, nn


def svd_stats(svals: Tensor) -> dict[str, float]:
    """σ_max, σ_min and κ = σ_max/σ_min (inf when σ_min = 0, NaN for an all-zero matrix)."""
    smax = float(svals.max())
    smin = float(svals.min())
    if smax == 0.0:
        cond = math.nan
    elif smin == 0.0:
        cond = math.inf
    else:
        cond = smax / smin
    return {"max": smax, "min": smin, "cond": cond}


def sv_reshaped(weight: Tensor) -> dict[str, float]:
    """Stats of W reshaped to (C_out, C_in·k²) (a linear weight as is).

    max, min (the min(rows, cols)-th singular value), cond, and stable_rank = ‖W‖_F² / σ_max².
    """
    w = weight.detach().to("cpu", torch.float64).reshape(weight.shape[0], -1)
    svals = torch.linalg.svdvals(w)
    stats = svd_stats(svals)
    smax = stats["max"]
    stats["stable_rank"] = float((svals**2).sum()) / smax**2 if smax > 0 else math.nan
    return stats


def sv_hosvd(weight: Tensor) -> dict[str, float]:
    """Condition number of every mode-k unfolding of a kernel (the HOSVD mode singular values).

    Mode k of a (C_out, C_in, k_h, k_w) kernel is the matrix with axis k as rows and the other
    axes (in order) as columns; its singular values are the HOSVD's mode-k singular values.
    Keys: mode0_cond … mode{ndim-1}_cond.
    """
    w = weight.detach().to("cpu", torch.float64)
    out = {}
    for mode in range(w.ndim):
        unfolding = torch.movedim(w, mode, 0).reshape(w.shape[mode], -1)
        out[f"mode{mode}_cond"] = svd_stats(torch.linalg.svdvals(unfolding))["cond"]
    return out


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _torus(n: int, k: int, s: int, p: int, d: int, circular: bool) -> tuple[int, bool] | None:
    """Torus size N (a multiple of s) on which to evaluate one spatial axis, and exactness.

    Circular padding: the layer *is* a strided circular convolution on the n-torus; exact when
    its output has n/s positions. Zero padding: on a torus of N ≥ n + p no output position wraps
    onto the input, so the layer equals restriction ∘ (circular conv on N) ∘ zero-embedding and
    σ_max on N is an upper bound; it is exact when p = 0 and the output covers all N/s positions.
    """
    n_out = (n + 2 * p - d * (k - 1) - 1) // s + 1
    if circular:
        if n % s or p > n:
            return None
        return n, n_out == n // s
    if p == 0 and n % s == 0 and n_out == n // s:
        return n, True
    return s * math.ceil((n + p) / s), False


def conv_operator_svals(
    weight: Tensor,
    input_size: Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
) -> tuple[Tensor, bool]:
    """All singular values of a 2-D convolution operator by the FFT, and whether they are exact.

    Sedghi, Gupta & Long (2019): a circular convolution on an N×N torus has the singular values
    of the C_out×C_in matrices P(u, v) = (2-D DFT of each kernel slice)[u, v]. For stride s the
    input splits into s² polyphase components of size (N/s)²; the strided layer is then a stride-1
    circular convolution from s²·C_in channels, so P(u, v) is C_out × s²C_in.
    Returns (svals, exact): exact=False means zero padding, where σ_max is an upper bound on the
    operator's σ_max and the other values are those of the circular surrogate on the torus.
    """
    if padding_mode not in ("zeros", "circular"):
        raise ValueError(f"padding_mode {padding_mode!r}: only 'zeros' and 'circular' supported")
    if isinstance(padding, str):
        raise ValueError("string padding ('same'/'valid') is not supported; pass integers")
    w = weight.detach().to("cpu", torch.float64)
    c_out, c_in_g, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    h, wd = int(input_size[0]), int(input_size[1])
    circ = padding_mode == "circular"
    th = _torus(h, kh, sh, ph, dh, circ)
    tw = _torus(wd, kw, sw, pw, dw, circ)
    if th is None or tw is None:
        raise ValueError(f"circular convolution needs input size divisible by stride: {h}×{wd}")
    (nh, exact_h), (nw, exact_w) = th, tw
    mh, mw = nh // sh, nw // sw
    # fold the kernel into polyphase components: tap a sits at offset t = a·d − p,
    # phase t mod s, shift floor(t / s) on the (N/s)-torus
    g = torch.zeros(c_out, c_in_g, sh, sw, mh, mw, dtype=torch.float64)
    for a1 in range(kh):
        t1 = a1 * dh - ph
        for a2 in range(kw):
            t2 = a2 * dw - pw
            g[:, :, t1 % sh, t2 % sw, (t1 // sh) % mh, (t2 // sw) % mw] += w[:, :, a1, a2]
    f = torch.fft.fft2(g)  # (C_out, C_in_g, s_h, s_w, M_h, M_w)
    # groups: the operator is block-diagonal over groups, its spectrum the union
    f = f.reshape(groups, c_out // groups, c_in_g, sh, sw, mh, mw)
    p = f.permute(0, 5, 6, 1, 2, 3, 4).reshape(groups, mh, mw, c_out // groups, c_in_g * sh * sw)
    svals = torch.linalg.svdvals(p).reshape(-1)
    return svals, exact_h and exact_w


def sv_circular(conv: nn.Conv2d, input_size: Sequence[int]) -> tuple[dict[str, float], bool]:
    """σ_max, σ_min, κ of the layer's *circular surrogate* on the torus (FFT), and exactness.

    exact=True: the surrogate is the layer's operator (circular padding covering all n/s
    outputs, or a convolution that touches no padding). exact=False (zero padding): `max` is an
    upper bound on the operator's σ_max; `min` and `cond` describe the surrogate only and are
    neither bounds nor estimates of the operator's (use :func:`sv_operator` for those).
    """
    svals, exact = conv_operator_svals(
        conv.weight,
        input_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        padding_mode=conv.padding_mode,
    )
    return svd_stats(svals), exact


def conv_operator_matrix(conv: nn.Conv2d, input_size: Sequence[int]) -> sparse.csr_matrix:
    """The Conv2d (bias left out) as a sparse (C_out·H_out·W_out, C_in·H·W) float64 matrix.

    Built tap by tap from the kernel at the layer's real padding: output (o, i, j) reads input
    (c, i·s − p + a·d, j·s − p + b·d) with weight K[o, c, a, b]; taps that fall outside the
    input read zeros (zero padding) or wrap around (circular padding). Rows and columns are in
    the C-order of the (C, H, W) tensors.
    """
    if conv.padding_mode not in ("zeros", "circular"):
        raise ValueError(f"padding_mode {conv.padding_mode!r}: only 'zeros' and 'circular'")
    if isinstance(conv.padding, str):
        raise ValueError("string padding ('same'/'valid') is not supported; pass integers")
    w = conv.weight.detach().to("cpu", torch.float64).numpy()
    c_out, c_in_g, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = _pair(conv.stride), _pair(conv.padding), _pair(conv.dilation)
    h, wd = int(input_size[0]), int(input_size[1])
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    c_in = c_in_g * conv.groups
    o, i, j, c, a, b = np.meshgrid(
        np.arange(c_out), np.arange(ho), np.arange(wo), np.arange(c_in_g), np.arange(kh),
        np.arange(kw), indexing="ij",
    )  # fmt: skip
    ii, jj = i * sh - ph + a * dh, j * sw - pw + b * dw
    cc = (o // (c_out // conv.groups)) * c_in_g + c
    if conv.padding_mode == "circular":
        ii, jj = ii % h, jj % wd
    inside = (ii >= 0) & (ii < h) & (jj >= 0) & (jj < wd)
    rows = ((o * ho + i) * wo + j)[inside]
    cols = ((cc * h + ii) * wd + jj)[inside]
    vals = w[o, c, a, b][inside]
    shape = (c_out * ho * wo, c_in * h * wd)
    return sparse.coo_matrix((vals, (rows, cols)), shape=shape).tocsr()  # duplicates summed


LOBPCG_MAXITER = 500  # cost cap per extreme; the result is recorded as an estimate anyway


def _lobpcg_extremes(mat: sparse.csr_matrix, seed: int) -> tuple[float, float]:
    """σ_max, σ_min (the min(rows, cols)-th) by LOBPCG on the smaller Gram matrix."""
    gram = (mat.T @ mat) if mat.shape[1] <= mat.shape[0] else (mat @ mat.T)
    gram = sparse.csr_matrix(gram)
    rng = np.random.default_rng(seed)
    out = []
    for largest in (True, False):
        x0 = rng.standard_normal((gram.shape[0], 4))
        with warnings.catch_warnings():  # non-convergence is recorded as exact=False anyway
            warnings.simplefilter("ignore")
            vals, _ = splinalg.lobpcg(gram, x0, largest=largest, tol=1e-10, maxiter=LOBPCG_MAXITER)
        out.append(float(np.max(vals) if largest else np.min(vals)))
    lmax, lmin = out
    return math.sqrt(max(lmax, 0.0)), math.sqrt(max(lmin, 0.0))


def sv_operator(
    conv: nn.Conv2d,
    input_size: Sequence[int],
    *,
    dense_max_dim: int = 4096,
    iterative: bool = False,
    seed: int = 0,
) -> tuple[dict[str, float], bool, str]:
    """σ_max, σ_min, κ of the Conv2d operator at its real padding and input size.

    Returns (stats, exact, method). method "fft": circular padding on which the FFT method is
    exact; "dense_svd": the operator matrix (:func:`conv_operator_matrix`) is formed and all
    its singular values computed (exact to float64 rounding) when C_in·H·W and
    C_out·H_out·W_out are both ≤ dense_max_dim; "lobpcg" above that: LOBPCG on the smaller
    Gram matrix AᵀA / AAᵀ, an iterative estimate (exact=False; σ_min loses accuracy below
    about 1e-8·σ_max since it is the square root of an eigenvalue of the Gram matrix).
    σ_min is the min(rows, cols)-th singular value; κ = inf when it is 0. Above
    dense_max_dim with ``iterative`` off (the default: LOBPCG is slow at such sizes, see
    bench/bench_metrics.py) nothing is computed: NaN, method "skipped_large".
    """
    if conv.padding_mode == "circular":
        try:
            stats, exact = sv_circular(conv, input_size)
        except ValueError:  # a size the FFT method does not cover: the matrix still does
            exact = False
        if exact:
            return stats, True, "fft"
    mat = conv_operator_matrix(conv, input_size)
    if max(mat.shape) <= dense_max_dim:
        svals = torch.linalg.svdvals(torch.from_numpy(mat.toarray()))
        return svd_stats(svals), True, "dense_svd"
    if not iterative:
        return {"max": math.nan, "min": math.nan, "cond": math.nan}, False, "skipped_large"
    smax, smin = _lobpcg_extremes(mat, seed)
    return svd_stats(torch.tensor([smax, smin], dtype=torch.float64)), False, "lobpcg"
