"""Singular values of layer weights: reshaped kernels, convolution operators (FFT), HOSVD modes.

All computations run in float64 on CPU copies of the weights (any device in, floats out).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
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


def sv_operator(conv: nn.Conv2d, input_size: Sequence[int]) -> tuple[dict[str, float], bool]:
    """σ_max, σ_min, κ of a Conv2d operator at the spatial input size it sees; and exactness."""
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
