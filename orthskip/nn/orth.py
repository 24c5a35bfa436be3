"""Utilities on the orthogonal group O(n), SO(n) and the Stiefel manifold.

- ``haar_orthogonal``: Haar-random (semi-)orthogonal matrices; SO(n) unless a det = −1 start is
  asked for (half of Haar O(n) has det = −1 and can never reach the identity continuously).
- ``msign``: the matrix sign U Vᵀ of A = U Σ Vᵀ by the cubic Newton–Schulz iteration, run to a
  tolerance; it returns its iteration count so that callers record it (the retraction's projector).
- ``msign_floored``: the matrix sign with a relative singular-value floor, U min(1, Σ/(ε σ_max)) Vᵀ:
  continuous in A, unlike the exact sign (the direction of the manifold step).
- ``polar``: the exact polar factor by SVD (closest semi-orthogonal matrix in Frobenius norm).
- ``manifold_step``: one Riemannian steepest-descent step on O(n) with the Bernstein/modula update
  and a retraction that keeps the iterate orthogonal to float precision.
- ``project_conv_operator``: ProcResNet (Zaeemzadeh et al., Algorithm 1) projection of a circular
  convolution so that all singular values of its operator equal ``scale``, per FFT frequency.
- ``expm_skew``: exp(A) of a real skew-symmetric (or complex skew-Hermitian) A from the
  eigendecomposition of the Hermitian −iA, with the exact (Daleckii–Krein) derivative;
  ``OrthogonalMap`` is the parametrization of orth_learned / orth_jacobian's matrices built on it
  (or on the Cayley map).
- ``orthogonal_conv_spectrum`` / ``apply_spectral``: an exactly orthogonal circular convolution,
  base · map(V − Vᵀ) per FFT frequency for a k×k kernel V, and its application (or its
  adjoint's) by FFT: the spatial B of orth_jacobian.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

# The relative singular-value floor of the manifold step's direction (``msign_floored``):
# orth_manifold's default msign_floor, stated with its option (torch-free).
from orthskip.nn.skip_specs import MSIGN_FLOOR


def haar_orthogonal(
    rows: int,
    cols: int | None = None,
    *,
    special: bool = True,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Haar-random (rows × cols) matrix with orthonormal columns (rows ≥ cols) or rows.

    QR of a Gaussian matrix with the signs of diag(R) folded into Q gives Haar O(n); flipping
    the first column of the det = −1 half is a measure-preserving bijection onto SO(n), so
    ``special=True`` gives Haar SO(n). A rectangular result is a slice of a Haar O(max) matrix
    (Haar on the Stiefel manifold; det is undefined there).
    """
    cols = rows if cols is None else cols
    n = max(rows, cols)
    g = torch.randn(n, n, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(g)
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    if special and rows == cols and torch.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    q = q[:rows, :cols] if rows >= cols else q[:cols, :rows].T
    return q.to(dtype).contiguous()


def eye_like(rows: int, cols: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """The semi-orthogonal 'identity' [I; 0] (or [I, 0]): zero-padding / truncating channels."""
    return torch.eye(rows, cols, dtype=dtype)


def orth_defect(q: Tensor) -> float:
    """‖QᵀQ − I‖_F / √n on the smaller Gram matrix (n = min(rows, cols)), in float64.

    For a square matrix this is the defect from O(n); for a rectangular one it measures how far
    the columns (tall) or rows (wide) are from orthonormal, i.e. from a semi-orthogonal map.
    A conv kernel (C_out, C_in, k, k) counts as its (C_out, C_in·k²) reshape.
    """
    q = q.detach().to(torch.float64)
    if q.ndim > 2:
        q = q.reshape(q.shape[0], -1)
    gram = q.T @ q if q.shape[0] >= q.shape[1] else q @ q.T
    n = gram.shape[0]
    eye = torch.eye(n, dtype=gram.dtype, device=gram.device)
    return float(torch.linalg.matrix_norm(gram - eye) / math.sqrt(n))


def identity_gap(q: Tensor) -> Tensor:
    """‖Q − I‖_F / √n of square n × n matrices (leading batch dimensions kept): the RMS
    distance from the identity over eigen-directions, which does not saturate for Haar-like Q.
    The rate experiment fits it, and ``train.stop.watch: skips`` watches its mean per net."""
    n = q.shape[-1]
    eye = torch.eye(n, dtype=q.dtype, device=q.device)
    return torch.linalg.matrix_norm(q - eye, ord="fro") / math.sqrt(n)


@dataclass
class MsignResult:
    value: Tensor
    iterations: int
    converged: bool
    residual: float


def msign(
    a: Tensor, *, tol: float = 1e-7, max_iter: int = 100, near_orthogonal: bool = False
) -> MsignResult:
    """Matrix sign U Vᵀ of ``a`` by cubic Newton–Schulz, X ← 1.5 X − 0.5 X XᵀX, to a tolerance.

    Starting from X₀ = A/‖A‖_F every singular value lies in (0, 1] and converges to 1
    (zero singular values stay zero). The iteration converges for any start with singular
    values in (0, √3), so with ``near_orthogonal`` a matrix with ‖AᵀA − I‖_F < 1/2 (every σ² in
    (1/2, 3/2)) is not rescaled: rescaling by ‖A‖_F = √n would shrink every σ to ~1/√n and cost
    ~log(√n)/log(1.5) extra iterations (9 instead of 1 at n = 64). Each matrix stops when
    ‖X_{k+1} − X_k‖_F ≤ tol·√n, not after a fixed count; ``iterations`` (the most any matrix
    took) and ``converged`` report what happened. ``a`` may carry leading batch dimensions: one
    batched loop per shape, each matrix frozen once it has stopped, so that its result is the
    one it gets alone (the iterate of near-zero singular values depends on the count: a batch-
    wide count made a skip's step depend on the other skips of its shape). Computed in float64,
    returned in ``a``'s dtype.
    """
    x = a.detach().to(torch.float64)
    wide = x.shape[-2] < x.shape[-1]
    if wide:
        x = x.mT
    n = x.shape[-1]
    shape = x.shape
    x = x.reshape(-1, *shape[-2:])  # one baddbmm per iteration whatever the batch dims
    scale = torch.linalg.matrix_norm(x, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    if near_orthogonal:  # per matrix: those already close to the manifold keep their scale
        eye = torch.eye(n, dtype=x.dtype, device=x.device)
        close = torch.linalg.matrix_norm(x.mT @ x - eye, keepdim=True) < 0.5
        scale = torch.where(close, torch.ones_like(scale), scale)
    x = x / scale
    threshold = tol * math.sqrt(n)
    active = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    residual = torch.full((x.shape[0],), math.inf, dtype=x.dtype, device=x.device)
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 - the count is reported
        # the step D = X_{k+1} − X_k = 0.5 X − 0.5 X XᵀX in one fused GEMM: fewer passes over
        # memory than 1.5 X − 0.5 X (XᵀX), and the residual ‖D‖ comes without a subtraction
        step = torch.baddbmm(x, x, x.mT @ x, beta=0.5, alpha=-0.5)
        res = torch.linalg.matrix_norm(step)
        x = torch.where(active[:, None, None], x + step, x)
        residual = torch.where(active, res, residual)
        active = active & (res > threshold)
        if not bool(active.any()):
            break
    x = x.reshape(shape)
    if wide:
        x = x.mT
    worst = float(residual.max())
    return MsignResult(x.to(a.dtype), it, worst <= threshold, worst)


def msign_floored(a: Tensor, floor: float) -> Tensor:
    """U φ(Σ) Vᵀ for A = U Σ Vᵀ with φ(σ) = min(1, σ / (ε σ_max)), ε = ``floor``.

    Singular values at or above ε·σ_max map to 1, as in the exact matrix sign; those below it are
    scaled down linearly to 0 at σ = 0. The exact sign is discontinuous at σ = 0: a singular
    value at rounding level (a skew gradient's null direction, an odd n) becomes a unit
    component, so a rounding difference — another op order, another CPU's kernels — becomes an
    O(1) difference of the direction. φ is Lipschitz with constant 1/(ε σ_max), so a
    perturbation E of A moves the result by at most about ‖E‖/(ε σ_max), whatever the spectrum.
    ``floor = 0`` is the exact sign.

    Computed as A (AᵀA ∨ ε²σ_max² I)^(-1/2) from the eigendecomposition of the smaller Gram
    matrix in float64 (batched, the same on CPU and GPU): every eigenvalue below the floor gets
    the same factor 1/(ε σ_max), so the inaccurate eigenvectors of a cluster of tiny eigenvalues
    do not matter. ``a`` may carry leading batch dimensions; returned in ``a``'s dtype.
    """
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"msign floor = {floor}: expected a number in [0, 1]")
    x = a.detach().to(torch.float64)
    wide = x.shape[-2] < x.shape[-1]
    if wide:
        x = x.mT
    lam, v = torch.linalg.eigh(x.mT @ x)
    lam_max = lam[..., -1:].clamp_min(0.0)
    tiny = torch.finfo(torch.float64).tiny
    inv_sqrt = lam.clamp_min(floor * floor * lam_max).clamp_min(tiny).rsqrt()
    out = x @ ((v * inv_sqrt.unsqueeze(-2)) @ v.mT)
    return (out.mT if wide else out).to(a.dtype)


def polar(w: Tensor) -> Tensor:
    """Exact polar factor U Vᵀ of ``w`` (SVD in float64): the closest semi-orthogonal matrix."""
    u, _, vh = torch.linalg.svd(w.detach().to(torch.float64), full_matrices=False)
    return (u @ vh).to(w.dtype)


@dataclass
class StepStats:
    retraction_iterations: int  # Newton–Schulz iterations of the clean-up projection
    converged: bool  # the retraction reached its tolerance


def manifold_step(
    w: Tensor,
    grad: Tensor,
    lr: float,
    *,
    floor: float = MSIGN_FLOOR,
    tol: float = 1e-7,
    max_iter: int = 100,
) -> tuple[Tensor, StepStats]:
    """One steepest-descent step on O(n) (or the Stiefel manifold: m × n, columns orthonormal).

    Bernstein/modula update (DESIGN §4): X = msign(WᵀG − GᵀW);
    W ← W (I − ηX)(I − XᵀX + XᵀX/√(1+η²)). It is computed in the equivalent left form
    X' = msign(GWᵀ − WGᵀ) = W X Wᵀ, W ← (I − ηX')(I − X'ᵀX' + X'ᵀX'/√(1+η²)) W, which for a
    tall W also moves the column space (tangent vectors of the Stiefel manifold are ΩW, Ω skew);
    for a square W the two forms agree. msign has the relative floor ``floor``
    (``msign_floored``): the exact sign would turn singular values of the skew part at rounding
    level into unit steps, and float32 runs would split by op order and CPU. For an exactly
    orthogonal W and a partial isometry X' the result is exactly orthogonal; the float error of
    each step, and the part of a floored component that is not a partial isometry, are removed
    by projecting onto the manifold again with msign (one or two Newton–Schulz iterations near
    the manifold), so the defect does not accumulate over steps. Computed in float64; ``w`` and
    ``grad`` may carry leading batch dimensions.
    """
    w64 = w.detach().to(torch.float64)
    g64 = grad.detach().to(torch.float64)
    m = w64.shape[-2]
    x = msign_floored(g64 @ w64.mT - w64 @ g64.mT, floor)
    scale = 1.0 / math.sqrt(1.0 + lr * lr)
    # (I − ηX)(I − XᵀX + XᵀX/√(1+η²)) W as T = W + (s − 1) XᵀX W, then T − η X T: fused GEMMs
    # on (…, m, n) instead of m × m products with I
    flat = w64.reshape(-1, *w64.shape[-2:])
    xf = x.reshape(-1, m, m)
    t = torch.baddbmm(flat, xf.mT @ xf, flat, alpha=scale - 1.0)
    w_new = torch.baddbmm(t, xf, t, alpha=-lr).reshape(w64.shape)
    retract = msign(w_new, tol=tol, max_iter=max_iter, near_orthogonal=True)
    return retract.value.to(w.dtype), StepStats(retract.iterations, retract.converged)


def project_conv_operator(weight: Tensor, size: tuple[int, int], scale: float = 1.0) -> Tensor:
    """Project a stride-1 circular convolution so every singular value of its operator is ``scale``.

    ``weight`` is (C_out, C_in, k, k) applied to inputs of spatial ``size`` with circular padding.
    Per FFT frequency (u, v) the operator acts by P(u,v) = FFT2(K)[:, :, u, v] (Zaeemzadeh et al.,
    Theorem 3); each P is replaced by scale · polar(P) (eq. 8). The result is a kernel of full
    spatial support ``size`` (the exact projection; truncating it back to k × k would not be).
    """
    h, w = size
    c_out, c_in, kh, kw = weight.shape
    if kh > h or kw > w:
        raise ValueError(f"kernel {kh}x{kw} larger than the input size {h}x{w}")
    k = torch.zeros(c_out, c_in, h, w, dtype=torch.float64, device=weight.device)
    k[:, :, :kh, :kw] = weight.detach().to(torch.float64)
    # a real kernel has P(−u, −v) = conj P(u, v) and polar(conj P) = conj polar(P), so the
    # half spectrum (rfft2) holds every distinct block: half the SVDs of the full one
    p = torch.fft.rfft2(k)  # (C_out, C_in, h, w // 2 + 1), complex
    p = p.permute(2, 3, 0, 1)  # (h, w // 2 + 1, C_out, C_in)
    p_hat = scale * _polar_batched(p)
    k_hat = torch.fft.irfft2(p_hat.permute(2, 3, 0, 1), s=(h, w))
    return k_hat.to(weight.dtype)


def _polar_batched(p: Tensor) -> Tensor:
    """Polar factors of a batch of (m × n) matrices, real or complex, in float64 precision.

    (P Pᴴ)^(-1/2) P (wide; P (PᴴP)^(-1/2) tall) from an eigendecomposition of the smaller Gram
    matrix, several times cheaper than an SVD; when a Gram matrix is too ill-conditioned for
    that (condition > 1e8: its inverse square root would lose digits), the exact SVD is used.
    """
    wide = p.shape[-2] <= p.shape[-1]
    gram = p @ p.mH if wide else p.mH @ p
    evals, evecs = torch.linalg.eigh(gram)
    if bool((evals[..., 0] <= 1e-8 * evals[..., -1]).any()):
        u, _, vh = torch.linalg.svd(p, full_matrices=False)
        return u @ vh
    inv_sqrt = (evecs * evals.rsqrt().unsqueeze(-2).to(evecs.dtype)) @ evecs.mH
    return inv_sqrt @ p if wide else p @ inv_sqrt


def circular_conv_fft(x: Tensor, kernel: Tensor) -> Tensor:
    """Circular convolution y[o] = Σ_i K[o, i] ⊛ x[i] of (N, C_in, h, w) by a (C_out, C_in, h, w)
    kernel, by FFT: per frequency Y(u, v) = P(u, v) X(u, v) with P = FFT2(K), the blocks that
    ``project_conv_operator`` projects. Differentiable; real in and out.
    """
    size = tuple(x.shape[-2:])
    if tuple(kernel.shape[-2:]) != size:
        raise ValueError(f"kernel spatial size {tuple(kernel.shape[-2:])} != input size {size}")
    xf = torch.fft.rfft2(x)
    kf = torch.fft.rfft2(kernel.to(x.dtype))
    yf = torch.einsum("oiuv,niuv->nouv", kf, xf)
    return torch.fft.irfft2(yf, s=size)


def centred_conv_phases(kernel_size: int, size: tuple[int, int]) -> Tensor:
    """E[k, l, u, v] = exp(−2πi (u·(k − r)/h + v·(l − r)/w)), r = kernel_size // 2, v ≤ w // 2.

    With it, einsum('oikl,kluv->uvoi', V, E) is the half spectrum (``rfft2`` layout) of the
    circular convolution whose kernel V (C_out, C_in, k, k) has its taps at the centred offsets
    (k − r, l − r): on a grid smaller than k the taps wrap around and add, as a circular
    convolution's do. complex128.
    """
    h, w = size
    off = torch.arange(kernel_size, dtype=torch.float64) - kernel_size // 2
    fu = torch.arange(h, dtype=torch.float64) / h
    fv = torch.arange(w // 2 + 1, dtype=torch.float64) / w
    angle = off[:, None, None, None] * fu[None, None, :, None]
    angle = angle + off[None, :, None, None] * fv[None, None, None, :]
    return torch.exp(-2j * math.pi * angle)


def orthogonal_conv_spectrum(v: Tensor, phases: Tensor, base: Tensor, kind: str) -> Tensor:
    """Per-frequency blocks B̂(u, v) = base · map(Â(u, v)) of an orthogonal circular convolution.

    A = V − Vᵀ is the skew-adjoint part of the k×k circular convolution V (kernel (C, C, k, k),
    ``phases`` from ``centred_conv_phases``): its blocks Â = V̂ − V̂ᴴ are skew-Hermitian, so
    map = exp (``expm_skew``) or Cayley (I − Â/2)⁻¹(I + Â/2) makes every block unitary, and
    ``base`` (a real C × C orthogonal matrix, the same at every frequency: a 1×1 convolution) keeps
    it so. A real kernel has V̂(−ω) = conj V̂(ω), and both maps commute with conjugation, so the
    blocks have the conjugate symmetry of a real operator: B is an orthogonal operator on
    (C, h, w) inputs (exact to float64 rounding), a circular convolution of full spatial support
    generated by a k×k one (Trockman & Kolter 2021 use the Cayley map this way). Returns
    (h, w // 2 + 1, C, C) complex128, the ``rfft2`` half spectrum; V = 0 gives B = base.
    """
    vhat = torch.einsum("oikl,kluv->uvoi", v.to(phases.dtype), phases)
    a = vhat - vhat.mH
    if kind == "matrix_exp":
        q = expm_skew(a)
    elif kind == "cayley":
        eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        q = torch.linalg.solve(eye - 0.5 * a, eye + 0.5 * a)
    else:
        raise ValueError(f"orthogonal map {kind!r}: expected matrix_exp or cayley")
    return base.to(q.dtype) @ q


def apply_spectral(x: Tensor, blocks: Tensor, *, adjoint: bool = False) -> Tensor:
    """The circular convolution with half-spectrum ``blocks`` (h, w // 2 + 1, C_out, C_in) applied
    to real (N, C_in, h, w) x (or its adjoint, blocks B̂ᴴ, when ``adjoint``), by FFT.

    Half-precision inputs are transformed in float32 (FFT sizes need not be powers of two).
    """
    size = tuple(x.shape[-2:])
    work = x if x.dtype in (torch.float32, torch.float64) else x.float()
    xf = torch.fft.rfft2(work)
    m = blocks.to(xf.dtype)
    if adjoint:
        yf = torch.einsum("uvio,niuv->nouv", m.conj(), xf)
    else:
        yf = torch.einsum("uvoi,niuv->nouv", m, xf)
    return torch.fft.irfft2(yf, s=size).to(x.dtype)


def _cat_parts(z: Tensor) -> Tensor:
    """[Re Z, Im Z] side by side (…, n, 2m): Re(Z Yᴴ) = [Re Z, Im Z] [Re Y, Im Y]ᵀ."""
    return torch.cat([z.real, z.imag], dim=-1)


class _ExpSkew(torch.autograd.Function):
    """exp(A) for real skew-symmetric or complex skew-Hermitian A (leading batch dims allowed),
    computed in A's dtype (the complex case is the per-frequency map of ``orthogonal_conv``).

    −iA is Hermitian: −iA = U diag(θ) Uᴴ with θ real, so exp(A) = U diag(e^{iθ}) Uᴴ. The
    eigenvectors are unitary to float precision even when eigenvalues coincide (A = 0 at the
    identity init), so exp(A) is orthogonal to float precision for any ‖A‖ — no scaling and
    squaring. The derivative of a matrix function at a normal matrix is
    L(A, E) = U ((UᴴEU) ∘ Φ) Uᴴ with the divided differences Φ_jk = (e^{iθj} − e^{iθk}) /
    (iθj − iθk) = e^{i(θj+θk)/2} sinc((θj − θk)/2), which has no 0/0 at equal eigenvalues. The
    backward is its adjoint, the same gradient as ``torch.linalg.matrix_exp`` gives (tested),
    cheaper than matrix_exp's 2n × 2n block exponential (bench/bench_maps.py; the measured
    ratios are in the README's Development section).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(a: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # type: ignore[override]
        if a.is_complex():
            cdtype = a.dtype
        else:
            cdtype = torch.complex128 if a.dtype == torch.float64 else torch.complex64
        theta, u = torch.linalg.eigh(-1j * a.to(cdtype))
        w = u * torch.exp(1j * theta).unsqueeze(-2)
        if a.is_complex():
            return w @ u.mH, theta, u
        # real A: only Re(W Uᴴ) = Re W (Re U)ᵀ + Im W (Im U)ᵀ is needed, one real matmul of
        # half a complex one's cost (the same sum of products, in real arithmetic)
        return _cat_parts(w) @ _cat_parts(u).mT, theta, u

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # type: ignore[override]
        _, theta, u = output
        ctx.mark_non_differentiable(theta, u)
        ctx.save_for_backward(theta, u)
        ctx.save_for_forward(theta, u)

    @staticmethod
    def _frechet(theta: Tensor, u: Tensor, e: Tensor, adjoint: bool) -> Tensor:
        half_sum = 0.5 * (theta.unsqueeze(-1) + theta.unsqueeze(-2))
        half_diff = 0.5 * (theta.unsqueeze(-1) - theta.unsqueeze(-2))
        phi = torch.exp(1j * half_sum) * torch.sinc(half_diff / math.pi)
        if adjoint:
            phi = phi.conj()
        if e.is_complex():
            return u @ ((u.mH @ e.to(u.dtype) @ u) * phi) @ u.mH
        # real E: E U in real arithmetic, and only the real part of the last product
        n = u.shape[-1]
        eu = e.to(u.real.dtype) @ _cat_parts(u)
        inner = (u.mH @ torch.complex(eu[..., :n], eu[..., n:])) * phi
        return _cat_parts(u @ inner) @ _cat_parts(u).mT

    @staticmethod
    def backward(ctx, grad_q: Tensor, _gt: Tensor, _gu: Tensor) -> Tensor:  # type: ignore[override]
        # complex A: autograd's convention for a holomorphic f is grad_A = L_f(Aᴴ, G), which for
        # a normal A is the adjoint branch (conj Φ) without taking the real part
        theta, u = ctx.saved_tensors
        return _ExpSkew._frechet(theta, u, grad_q, adjoint=True).to(grad_q.dtype)

    @staticmethod
    def jvp(ctx, tangent: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        theta, u = ctx.saved_tensors
        return _ExpSkew._frechet(theta, u, tangent, adjoint=False).to(tangent.dtype), None, None


def expm_skew(a: Tensor) -> Tensor:
    """exp(A) of a real skew-symmetric or complex skew-Hermitian A (not checked),
    differentiable in both modes (see _ExpSkew)."""
    return _ExpSkew.apply(a)[0]


def complete_orthogonal(q: Tensor) -> Tensor:
    """An n × n orthogonal matrix whose first k columns are the n × k orthonormal columns of q.

    Deterministic (QR of q itself, no random draw); the extra columns span q's complement.
    """
    n, k = q.shape
    if n == k:
        return q.clone()
    full = torch.linalg.qr(q, mode="complete").Q
    full[:, :k] = q  # QR returns ±q's columns; keep q exactly
    return full


def map_to_orthogonal(x: Tensor, base: Tensor, kind: str) -> Tensor:
    """Q = base · map(A(X))[:, :k] (see ``OrthogonalMap``; map = ``kind``) for X (..., rows, cols).

    Leading dimensions are a batch of independent parametrizations (``base`` (..., n, n),
    n = max(rows, cols)): ``orthskip.nn.skips.grouped_orthogonal_maps`` computes all the skips of
    one shape in one call.
    """
    transposed = x.shape[-2] < x.shape[-1]
    if transposed:
        x = x.mT
    n, k = x.shape[-2:]
    low = x.tril()
    if n != k:
        low = torch.cat([low, low.new_zeros(*low.shape[:-1], n - k)], dim=-1)
    a = low - low.mT
    if kind == "matrix_exp":
        q = expm_skew(a)
    else:
        eye = torch.eye(n, dtype=a.dtype, device=a.device)
        q = torch.linalg.solve(eye - 0.5 * a, eye + 0.5 * a)
    q = base @ q[..., :k]
    return q.mT if transposed else q


class OrthogonalMap(nn.Module):
    """Parametrization Q = base · map(A)[:, :k] with A skew, for ``parametrize``.

    The same construction as ``torch.nn.utils.parametrizations.orthogonal`` with
    ``use_trivialization=True``: the parameter X (the shape of Q, transposed to tall n × k)
    gives A = [tril(X), 0] − [tril(X), 0]ᵀ (n × n), map = the exponential (``expm_skew``) or the
    Cayley map (I − A/2)⁻¹(I + A/2), and ``base`` is an orthogonal completion of the initial Q,
    so X = 0 is exactly the init (det kept) and Q stays in SO(n)·base (square) or on the Stiefel
    manifold (rectangular). Assigning a new Q resets the base and X = 0, as torch does.
    """

    def __init__(self, shape: tuple[int, int], orthogonal_map: str) -> None:
        super().__init__()
        if orthogonal_map not in ("matrix_exp", "cayley"):
            raise ValueError(f"orthogonal_map {orthogonal_map!r}: expected matrix_exp or cayley")
        self.shape = tuple(shape)
        self.orthogonal_map = orthogonal_map
        n = max(shape)
        self.register_buffer("base", torch.eye(n, dtype=torch.float64))

    def forward(self, x: Tensor) -> Tensor:
        return map_to_orthogonal(x, self.base, self.orthogonal_map)

    @torch.no_grad()
    def right_inverse(self, q: Tensor) -> Tensor:
        if tuple(q.shape) != self.shape:
            raise ValueError(f"expected a matrix of shape {self.shape}, got {tuple(q.shape)}")
        self.base = orthogonal_base(q, self.base.dtype).to(self.base.device)
        return torch.zeros_like(q)


@torch.no_grad()
def orthogonal_base(q: Tensor, dtype: torch.dtype = torch.float64) -> Tensor:
    """``OrthogonalMap``'s base for the matrix q (X = 0 then gives q): the n × n completion
    of q's polar factor in ``dtype``. ValueError if q has no orthonormal columns/rows."""
    tall = q.mT if q.shape[-2] < q.shape[-1] else q
    if orth_defect(tall) > 1e-4:
        raise ValueError("OrthogonalMap: the assigned matrix has no orthonormal columns/rows")
    # polar: the nearest matrix with orthonormal columns to float64 precision (an fp32 init
    # is orthogonal only to ~1e-7); for a near-orthogonal matrix it keeps the determinant
    return complete_orthogonal(polar(tall.to(dtype)))
