"""Skip connections S in residual blocks y = S(x) + F(x): one registry, one class per kind.

Every skip acts on features (last dim of a 2-D input), on the width-d stream of token inputs
(last dim of a 3-D (N, T, d) input, the same matrix on every token: the ViT) or on channels
(dim 1 of a 4-D input, as a 1×1 convolution). A block is a *transition* when it changes the
width (C_in ≠ C_out) or the resolution (stride 2).

Per kind — inside a stage / at a transition (C_in → C_out ≥ C_in, stride s):

- ``identity``: x / subsample x[..., ::s, ::s], then zero-pad channels: the fixed
  semi-orthogonal map [I; 0] (He et al.'s "option A").
- ``none``: 0 / 0 (PlainNet, Oyedotun et al.).
- ``linear``: W x, W (C × C) learnable and unconstrained / subsample, then a learnable
  C_out × C_in map ("option B").
- ``orth_fixed``: Q x, Q Haar in SO(C), frozen (a buffer) / subsample, then a frozen Haar
  C_out × C_in map with orthonormal columns.
- ``orth_learned``: Q(θ) x with Q = base · exp(A) or Cayley(A), A skew
  (``orthskip.nn.orth.OrthogonalMap`` registered with ``torch.nn.utils.parametrize``: the
  construction of ``parametrizations.orthogonal`` on the 2-D matrix, computed in float64), so
  Q ∈ SO(C) exactly at every step / subsample, then the same parametrization of a C_out × C_in
  map with orthonormal columns (Stiefel manifold).
- ``orth_manifold``: Q x, Q a plain parameter moved only by the Riemannian optimizer
  (``orthskip.nn.optim.RiemannianOrthogonal``) and retracted onto O(C) / subsample, then a
  C_out × C_in Stiefel matrix with the same update.
- ``procrustes``: x (identity) / ProcResNet's conv* *before* the block (Zaeemzadeh et al., Fig. 1d):
  pixel-unshuffle (a permutation; odd sizes are zero-padded to even, which makes the operator
  a contraction, σ ≤ scale, instead of norm-preserving), then a convolution C_in·4 → C_out,
  then y = z + F(z) with an identity skip. With ``kernel_size: 1`` (default) that is a 1×1
  convolution (= a 2×2 stride-2 conv), projected after optimizer steps by W ← scale · polar(W)
  (exact, by SVD); with ``kernel_size: k > 1`` a circular k×k convolution projected per FFT
  frequency (``orthskip.nn.orth.project_conv_operator``). Either way every nonzero operator
  singular value equals ``scale``.
- ``orth_jacobian``: the whole block is ``layers`` (default 2, as a basic block has two convs)
  layers y = x − 2Bᵀρ(Bx + b), ρ = ReLU, no other branch and no BN (the Orthogonal-Jacobian
  paper), so the block
  Jacobian I − 2BᵀDB (and the product over layers) is exactly orthogonal / subsample, then a
  parametrized C_out × C_in map with orthonormal columns, then the layers. (A transition
  reduces C·H·W, so no transition Jacobian can be orthogonal.) B per layer:
  on images with ``kernel_size`` k > 1 (default 3) an orthogonal circular convolution on
  (C, H, W), B̂(ω) = base · map(V̂(ω) − V̂(ω)ᴴ) per FFT frequency with V a centred k×k kernel
  (zero at init, so B starts at ``base`` = identity or Haar SO(C) per ``init``), applied by FFT,
  Bᵀ its adjoint (``orthskip.nn.orth.orthogonal_conv_spectrum``); with k = 1 the channel-wise form
  B ∈ SO(C) (parametrized like orth_learned, a 1×1 convolution); on vectors (mlp) and tokens
  (vit: B ∈ SO(d) on every token) always the matrix form (a vector is a 1×1 image).
  ``matrices()`` gives B (k = 1) or the frequency-0 block
  B̂(0, 0) (k > 1: the real orthogonal map on spatially constant inputs, as procrustes's W).

``init`` = ``identity`` is the semi-orthogonal [I; 0] for rectangular maps. Haar samples are in
SO(n) unless ``allow_negative_det: true`` (then Haar O(n), det = ±1 with equal probability).
Adding a kind: one subclass of ``Skip`` with ``kind`` set (parameters made in ``build``; either
``linear_map`` for a matrix skip or ``forward``), one entry in ``SKIP_SPECS`` (its options:
type, default, allowed values, description) — ``SKIPS`` is filled from the subclasses.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from orthskip.config.options import Option, check_options, defaults, unknown
from orthskip.errors import ConfigError
from orthskip.nn.orth import (
    OrthogonalMap,
    apply_spectral,
    centred_conv_phases,
    circular_conv_fft,
    eye_like,
    haar_orthogonal,
    map_to_orthogonal,
    orthogonal_conv_spectrum,
    polar,
    project_conv_operator,
)


def _init(default: str, choices: tuple[str, ...], text: str = "") -> Option:
    return Option("string", default, text or "initial map", choices=choices)


_NEG_DET = Option("boolean", False, "Haar samples in O(n) (det = ±1), not only SO(n)")
_MAP = Option("string", "matrix_exp", "skew A -> orthogonal map: base·exp(A) or Cayley(A)",
              choices=("matrix_exp", "cayley"))  # fmt: skip
_ORTH_INIT = ("identity", "haar")

# Every skip kind's options (config["skip_options"][kind]): type, default, allowed values.
SKIP_SPECS: dict[str, dict[str, Option]] = {
    "identity": {},
    "none": {},
    "linear": {"init": _init("identity", ("identity", "orthogonal", "kaiming"))},
    "orth_fixed": {
        "init": _init("haar", ("haar",), "the frozen map: Haar"),
        "allow_negative_det": _NEG_DET,
    },
    "orth_learned": {
        "map": _MAP,
        "init": _init("identity", _ORTH_INIT),
        "allow_negative_det": _NEG_DET,
    },
    "orth_manifold": {
        "init": _init("identity", _ORTH_INIT),
        "allow_negative_det": _NEG_DET,
        "lr_scale": Option("number", 1.0, "Riemannian step = lr x lr_scale", exclusive_minimum=0),
        "ns_tol": Option(
            "number", 1e-7, "Newton-Schulz tolerance of the retraction", exclusive_minimum=0
        ),
        "ns_max_iter": Option("integer", 100, "Newton-Schulz iteration cap", minimum=1),
    },
    "procrustes": {
        "every": Option(
            "integer", 1, "project the transition convs every this many steps", minimum=1
        ),
        "scale": Option(
            "number", 1.0, "the operator's nonzero singular values", exclusive_minimum=0
        ),
        "kernel_size": Option(
            "integer", 1, "transition conv kernel (k > 1: circular, images)", minimum=1
        ),
    },
    "orth_jacobian": {
        "map": _MAP,
        "init": _init("haar", _ORTH_INIT, "base of B: identity or Haar SO(C)"),
        "allow_negative_det": _NEG_DET,
        "kernel_size": Option(
            "integer", 3, "B's centred kernel on images (1: channel-wise)", minimum=1, odd=True
        ),
        "layers": Option("integer", 2, "layers y = x - 2Bᵀρ(Bx + b) per block", minimum=1),
    },
}
# Defaults of every skip kind's options.
SKIP_OPTIONS: dict[str, dict[str, Any]] = {kind: defaults(t) for kind, t in SKIP_SPECS.items()}


def validate_skip_options(skip_cfg: dict | None) -> None:
    """Raise ConfigError for an unknown kind, an unknown key or a bad value in skip_options."""
    for kind, opts in (skip_cfg or {}).items():
        if kind not in SKIP_SPECS:
            raise unknown(f"skip_options.{kind}", kind, SKIP_SPECS, "skip kind")
        if opts is not None:
            check_options(SKIP_SPECS[kind], opts, f"skip_options.{kind}")


def skip_options(kind: str, skip_cfg: dict | None) -> dict[str, Any]:
    """Defaults of ``kind`` overridden by ``skip_cfg[kind]``, validated."""
    if kind not in SKIPS:
        raise unknown("skip", kind, SKIPS, "skip kind")
    given = (skip_cfg or {}).get(kind) or {}
    validate_skip_options({kind: given})
    return {**SKIP_OPTIONS[kind], **given}


# --------------------------------------------------------------------------------------------


# On CPU, oneDNN's 1×1 convolution is slow and erratic at few channels (in ResNet-56 a 16-channel
# 1×1 forward took longer than the block's 3×3 convolutions); a batched GEMM over the samples,
# with the residual addition fused in (baddbmm), is faster up to this many channels
# (bench/bench_apply.py times both per shape; the measured ratios are in the README's
# Development section): at 64 channels the conv was faster on one machine measured.
GEMM_MAX_CHANNELS = 32


def _use_gemm(x: Tensor, m: Tensor) -> bool:
    return (
        x.device.type == "cpu"
        and max(m.shape) <= GEMM_MAX_CHANNELS
        and x.is_contiguous()
        and not torch.is_autocast_enabled("cpu")
    )


def apply_channels_gemm(x: Tensor, m: Tensor, add: Tensor | None = None) -> Tensor:
    """m x (+ add) on the channels of a contiguous (N, C, H, W) x: one batched GEMM per sample."""
    n = x.shape[0]
    x3 = x.reshape(n, x.shape[1], -1)
    batch_m = m.expand(n, -1, -1)
    if add is None:
        y = torch.bmm(batch_m, x3)
    else:
        y = torch.baddbmm(add.reshape(n, m.shape[0], -1), batch_m, x3)
    return y.view(n, m.shape[0], *x.shape[2:])


def apply_channels_conv(x: Tensor, m: Tensor, add: Tensor | None = None) -> Tensor:
    """m x (+ add) on the channels of (N, C, H, W) x as a 1×1 convolution."""
    y = F.conv2d(x, m[:, :, None, None])
    return y if add is None else y + add


def apply_matrix(x: Tensor, m: Tensor, add: Tensor | None = None) -> Tensor:
    """m x (+ add): an (out × in) matrix on features (2-D x) or channels (4-D x, a 1×1 conv).

    ``add`` (shaped like the result) is added in the same kernel where that is faster:
    the residual sum S(x) + F(x) of a block.
    """
    m = m.to(x.dtype)
    if x.dim() == 2:
        return x @ m.T if add is None else torch.addmm(add, x, m.T)
    if x.dim() == 3:  # tokens (N, T, d): one GEMM over all N·T tokens
        flat = x.reshape(-1, x.shape[-1])
        y = flat @ m.T if add is None else torch.addmm(add.reshape(-1, m.shape[0]), flat, m.T)
        return y.view(*x.shape[:-1], m.shape[0])
    if _use_gemm(x, m):
        return apply_channels_gemm(x, m, add)
    return apply_channels_conv(x, m, add)


def subsample(x: Tensor, stride: int) -> Tensor:
    """Spatial stride-s subsampling (matches a 3×3/pad-1/stride-s conv's output size)."""
    if stride == 1 or x.dim() != 4:  # vectors and tokens have no spatial grid
        return x
    return x[:, :, ::stride, ::stride]


class _Matrix(nn.Module):
    """Holds one 2-D weight so that a torch parametrization can be registered on it.

    ``value()`` is the weight or, inside ``grouped_orthogonal_maps``, the same matrix computed
    together with the others of its shape.
    """

    def __init__(self, init: Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(init.clone())
        self.grouped: Tensor | None = None

    def value(self) -> Tensor:
        return self.weight if self.grouped is None else self.grouped


@contextmanager
def grouped_orthogonal_maps(module: nn.Module) -> Iterator[None]:
    """Within the block, every orthogonal parametrization in ``module`` is computed up front,
    in one batched call per (shape, map) group; ``_Matrix.value()`` returns its slice.

    Same values and gradients as computing each where it is used (tested), but the small
    float64 eigendecompositions run back to back instead of one between every pair of large
    convolutions, forward and backward: on CPU ResNet-56 (batch 128) that was 3 % of a training
    step (bench/bench_skips.py, orth_learned vs linear). Re-entrant: holders an outer block
    already computed are left to it.
    """
    groups: dict[tuple[Any, ...], list[_Matrix]] = {}
    for m in module.modules():
        if not (isinstance(m, _Matrix) and m.grouped is None):
            continue
        if not parametrize.is_parametrized(m, "weight"):
            continue
        omap = m.parametrizations.weight[0]
        if isinstance(omap, OrthogonalMap):
            x = m.parametrizations.weight.original
            key = (tuple(x.shape), omap.orthogonal_map, x.dtype, x.device)
            groups.setdefault(key, []).append(m)
    try:
        for (_, kind, _, _), holders in groups.items():
            xs = torch.stack([h.parametrizations.weight.original for h in holders])
            bases = torch.stack([h.parametrizations.weight[0].base for h in holders])
            for h, q in zip(holders, map_to_orthogonal(xs, bases, kind).unbind(0), strict=True):
                h.grouped = q
        yield
    finally:
        for holders in groups.values():
            for h in holders:
                h.grouped = None


def _orthogonal_init(rows: int, cols: int, init: str, allow_negative_det: bool) -> Tensor:
    if init == "identity":
        return eye_like(rows, cols)
    return haar_orthogonal(rows, cols, special=not allow_negative_det)


def _parametrized(init: Tensor, orthogonal_map: str) -> _Matrix:
    # float64 generator and map: the matrices are small (C × C), so this is cheap, and Q is
    # orthogonal to ~1e-15 before it is cast to the activations' dtype where it is applied.
    holder = _Matrix(init.to(torch.float64))
    # Q = base · map(A), base = the init: X = 0 is exactly the init (det kept). The construction
    # of torch's parametrizations.orthogonal, with an eigendecomposition exponential that is exact
    # at any ‖A‖ and ~2-3× cheaper to differentiate than torch.linalg.matrix_exp (orthskip.nn.orth).
    parametrize.register_parametrization(
        holder, "weight", OrthogonalMap(tuple(init.shape), orthogonal_map)
    )
    return holder


class Skip(nn.Module):
    """Base class of skip connections; subclasses set ``kind`` and are registered in SKIPS."""

    kind: ClassVar[str]
    # the skip computes the whole block (orth_jacobian): no residual branch is built
    owns_block: ClassVar[bool] = False
    # at transitions the skip maps x before the block and the block is y = z + F(z) (procrustes)
    pre_map: ClassVar[bool] = False
    # S(x) = 0: the block drops the addition (none)
    is_zero: ClassVar[bool] = False

    def __init__(
        self,
        c_in: int,
        c_out: int,
        stride: int,
        options: dict[str, Any],
        in_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.c_in, self.c_out, self.stride = c_in, c_out, stride
        self.in_size = in_size  # spatial size of the input (CNNs); None for vector input
        self.transition = c_in != c_out or stride != 1
        self.options = dict(options)
        if c_out < c_in:
            raise ConfigError(f"skip {self.kind}: cannot narrow channels {c_in} -> {c_out}")
        self.build(self.options)

    def build(self, options: dict[str, Any]) -> None:
        """Create the kind's parameters and buffers (self.c_in, c_out, stride, in_size are set)."""

    def matrices(self) -> dict[str, Tensor]:
        """Matrices to measure (Q, W, B); {} when the skip has none."""
        return {}

    def linear_map(self) -> Tensor | None:
        """M when S(x) = M · subsample(x) (the matrix skips); None for every other kind."""
        return None

    def forward(self, x: Tensor) -> Tensor:
        m = self.linear_map()
        if m is None:
            raise NotImplementedError(f"skip {self.kind} must define forward or linear_map")
        return apply_matrix(subsample(x, self.stride), m)

    def residual(self, x: Tensor, out: Tensor) -> Tensor:
        """S(x) + out, the residual sum (one fused kernel for the matrix skips)."""
        m = self.linear_map()
        if m is None:
            return self(x) + out
        return apply_matrix(subsample(x, self.stride), m, add=out)

    def extra_repr(self) -> str:
        return f"{self.c_in}->{self.c_out}, stride={self.stride}"


class IdentitySkip(Skip):
    kind = "identity"

    def forward(self, x: Tensor) -> Tensor:
        if not self.transition:
            return x
        x = subsample(x, self.stride)
        pad = self.c_out - self.c_in
        if x.dim() != 4:  # features / tokens: pad the last dim
            return F.pad(x, (0, pad))
        return F.pad(x, (0, 0, 0, 0, 0, pad))


class NoneSkip(Skip):
    kind = "none"
    is_zero = True

    def forward(self, x: Tensor) -> Tensor:
        x = subsample(x, self.stride)
        if x.dim() == 3:  # tokens (N, T, d)
            return x.new_zeros((*x.shape[:-1], self.c_out))
        return x.new_zeros((x.shape[0], self.c_out, *x.shape[2:]))


class LinearSkip(Skip):
    kind = "linear"

    def build(self, options: dict[str, Any]) -> None:
        c_in, c_out = self.c_in, self.c_out
        init = options["init"]
        if init == "kaiming":
            # variance 1/fan_in: norm-preserving in expectation, unlike identity/orthogonal exactly
            w = torch.empty(c_out, c_in)
            nn.init.kaiming_normal_(w, nonlinearity="linear")
        else:
            w = _orthogonal_init(c_out, c_in, "identity" if init == "identity" else "haar", False)
        self.weight = nn.Parameter(w)

    def linear_map(self) -> Tensor:
        return self.weight

    def matrices(self) -> dict[str, Tensor]:
        return {"W": self.weight}


class OrthFixedSkip(Skip):
    kind = "orth_fixed"

    def build(self, options: dict[str, Any]) -> None:
        c_in, c_out = self.c_in, self.c_out
        q = haar_orthogonal(c_out, c_in, special=not options["allow_negative_det"])
        self.register_buffer("Q", q)  # a buffer: saved, never optimized

    def linear_map(self) -> Tensor:
        return self.Q

    def matrices(self) -> dict[str, Tensor]:
        return {"Q": self.Q}


class OrthLearnedSkip(Skip):
    kind = "orth_learned"

    def build(self, options: dict[str, Any]) -> None:
        c_in, c_out = self.c_in, self.c_out
        init = _orthogonal_init(c_out, c_in, options["init"], options["allow_negative_det"])
        self.q = _parametrized(init, options["map"])

    @property
    def Q(self) -> Tensor:
        return self.q.value()

    def linear_map(self) -> Tensor:
        return self.Q

    def matrices(self) -> dict[str, Tensor]:
        return {"Q": self.Q}


class OrthManifoldSkip(Skip):
    """Q is stepped only by ``orthskip.nn.optim.RiemannianOrthogonal`` (never by SGD/AdamW)."""

    kind = "orth_manifold"

    def build(self, options: dict[str, Any]) -> None:
        c_in, c_out = self.c_in, self.c_out
        init = _orthogonal_init(c_out, c_in, options["init"], options["allow_negative_det"])
        self.Q = nn.Parameter(init)

    def linear_map(self) -> Tensor:
        return self.Q

    def matrices(self) -> dict[str, Tensor]:
        return {"Q": self.Q}


class ProcrustesSkip(Skip):
    """Identity inside stages; a projected conv* before a transition block (ProcResNet).

    conv* = pixel-unshuffle by the stride (a permutation; odd sizes are zero-padded to even
    first), then a convolution C_in·s² → C_out of ``kernel_size`` k:
    - k = 1 (default): a 1×1 convolution, i.e. a 2×2 stride-2 convolution of the input. Its
      operator is block-diagonal with one C_out × C_in·s² block W per output pixel, so
      W ← scale · polar(W) (exact, by SVD) sets every nonzero operator singular value.
    - k > 1: a circular k×k convolution on the unshuffled grid (h', w'). Its operator is
      block-diagonal in the 2-D Fourier basis with blocks P(u, v) = FFT2(K)(u, v), and the
      projection replaces every block by scale · polar(P(u, v)) (Zaeemzadeh et al.,
      Algorithm 1, with an exact SVD per frequency). The exact projection of a k×k kernel has
      full spatial support, so after the first projection the kernel is h' × w' (initialised
      k×k, zero elsewhere), and
      the convolution is applied by FFT, which costs about as much as a 1×1 convolution per
      frequency.
    """

    kind = "procrustes"
    pre_map = True

    def build(self, options: dict[str, Any]) -> None:
        c_in, c_out, stride, in_size = self.c_in, self.c_out, self.stride, self.in_size
        self.scale = float(options["scale"])
        self.every = int(options["every"])
        self.kernel_size = int(options["kernel_size"])
        self.grid: tuple[int, int] | None = None  # the unshuffled grid the FFT conv acts on
        if not self.transition:
            return
        if stride not in (1, 2):
            raise ConfigError(f"skip procrustes: stride {stride} unsupported (1 or 2)")
        k = self.kernel_size
        if k == 1:
            w = torch.empty(c_out, c_in, stride, stride)
            nn.init.kaiming_normal_(w, nonlinearity="linear")
        else:
            if in_size is None:
                raise ConfigError(
                    f"skip_options.procrustes.kernel_size = {k}: a k x k conv* needs image "
                    "input (cifar_resnet, cifar_preresnet, resnet18); use 1 for mlp"
                )
            h, wd = (-(-n // stride) for n in in_size)
            self.grid = (h, wd)
            # the initial support; on a grid smaller than k a circular k×k kernel wraps around
            kh, kw = min(k, h), min(k, wd)
            small = torch.empty(c_out, c_in * stride * stride, kh, kw)
            nn.init.kaiming_normal_(small, nonlinearity="linear")
            w = torch.zeros(c_out, c_in * stride * stride, h, wd)
            w[:, :, :kh, :kw] = small
        self.weight = nn.Parameter(w)
        self.project()

    def forward(self, x: Tensor) -> Tensor:
        if not self.transition:
            return x
        if x.dim() == 2:
            return x @ self.weight[:, :, 0, 0].T
        s = self.stride
        if s > 1:
            # zero-pad odd sizes to even (an isometric embedding: the operator stays a contraction)
            x = F.pad(x, (0, x.shape[-1] % s, 0, x.shape[-2] % s))
        if self.grid is None:
            return F.conv2d(x, self.weight, stride=s)
        return circular_conv_fft(F.pixel_unshuffle(x, s) if s > 1 else x, self.weight)

    def matrix(self) -> Tensor:
        """The C_out × (C_in·s²) block of the operator at spatial frequency 0.

        For k = 1 it is the matrix acting on every pixel of the unshuffled input, so the whole
        operator; for k > 1 it is P(0, 0) = Σ K over space, one of the h'·w' blocks that the
        projection makes scale × semi-orthogonal (the only real-valued one for every size).
        """
        if self.grid is None:
            return self.weight.reshape(self.c_out, -1)
        return self.weight.sum(dim=(-2, -1))

    @torch.no_grad()
    def project(self) -> None:
        """Set every nonzero operator singular value to ``scale`` (exact)."""
        if self.transition:
            self.weight.copy_(self.projected(self.weight))

    @torch.no_grad()
    def projected(self, weight: Tensor) -> Tensor:
        """The projection of a weight of this skip's shape (one pack member's, say)."""
        if self.grid is None:
            return (self.scale * polar(weight.reshape(self.c_out, -1))).reshape(weight.shape)
        return project_conv_operator(weight, self.grid, self.scale)

    def matrices(self) -> dict[str, Tensor]:
        return {"W": self.matrix()} if self.transition else {}


class _JacobianLayerMatrix(nn.Module):
    """One layer y = x − 2Bᵀρ(Bx + b), B ∈ SO(C) a matrix: on features, or on channels (1×1)."""

    def __init__(self, c: int, options: dict[str, Any]) -> None:
        super().__init__()
        init = _orthogonal_init(c, c, options["init"], options["allow_negative_det"])
        self.b_param = _parametrized(init, options["map"])
        self.bias = nn.Parameter(torch.zeros(c))

    def matrix(self) -> Tensor:
        return self.b_param.value()

    def forward(self, x: Tensor) -> Tensor:
        b = self.matrix()
        bias = self.bias[:, None, None] if x.dim() == 4 else self.bias  # images: per channel
        h = F.relu(apply_matrix(x, b) + bias)
        return x - 2.0 * apply_matrix(h, b.T)


class _JacobianLayerConv(nn.Module):
    """One layer y = x − 2Bᵀρ(Bx + b), B an orthogonal circular convolution of (C, h, w) inputs.

    B̂(ω) = base · map(V̂(ω) − V̂(ω)ᴴ) per FFT frequency
    (``orthskip.nn.orth.orthogonal_conv_spectrum``):
    the generator A = V − Vᵀ is a centred k×k circular convolution, V (C, C, k, k) the parameter
    (zero at init, so B starts at ``base``, the 1×1 form's init), ``base`` a buffer in SO(C)
    (``init``: identity or Haar). Bᵀ is the adjoint (blocks B̂ᴴ); both are applied by FFT.
    """

    def __init__(self, c: int, size: tuple[int, int], kernel_size: int, options: dict) -> None:
        super().__init__()
        self.size = size
        self.orthogonal_map = options["map"]
        base = _orthogonal_init(c, c, options["init"], options["allow_negative_det"])
        # polar: a float32 Haar sample is orthogonal only to ~1e-7; this is its float64 nearest
        self.register_buffer("base", polar(base.to(torch.float64)))
        # float64 generator and spectrum, as for the matrix maps: B̂ is unitary to ~1e-15
        self.V = nn.Parameter(torch.zeros(c, c, kernel_size, kernel_size, dtype=torch.float64))
        self.bias = nn.Parameter(torch.zeros(c))
        phases = centred_conv_phases(kernel_size, size)
        self.register_buffer("phases", phases, persistent=False)

    def spectrum(self, size: tuple[int, int] | None = None) -> Tensor:
        """B̂: (h, w // 2 + 1, C, C) complex128 blocks of B, the ``rfft2`` half spectrum, on the
        built grid or on ``size`` (the same k×k generator on another grid)."""
        phases = self.phases
        if size is not None and size != self.size:
            phases = centred_conv_phases(self.V.shape[-1], size).to(self.V.device)
        return orthogonal_conv_spectrum(self.V, phases, self.base, self.orthogonal_map)

    def matrix(self) -> Tensor:
        """B̂(0, 0): the real orthogonal C × C map B applies to spatially constant inputs."""
        return self.spectrum()[0, 0].real

    def apply_b(self, x: Tensor) -> Tensor:
        """B x alone (for tests and measurements)."""
        return apply_spectral(x, self.spectrum(tuple(x.shape[-2:])))

    def forward(self, x: Tensor) -> Tensor:
        bhat = self.spectrum(tuple(x.shape[-2:]))
        h = F.relu(apply_spectral(x, bhat) + self.bias[:, None, None].to(x.dtype))
        return x - 2.0 * apply_spectral(h, bhat, adjoint=True)


class OrthJacobianSkip(Skip):
    """The whole block: ``layers`` layers y = z − 2Bᵀ ReLU(Bz + b), z the (transition-mapped)
    input. On images B is an orthogonal circular k×k-generated convolution (``kernel_size``
    k > 1, default 3) or a channel matrix (k = 1, a 1×1 convolution); on vectors a matrix.
    """

    kind = "orth_jacobian"
    owns_block = True

    def build(self, options: dict[str, Any]) -> None:
        c_in, c_out, stride = self.c_in, self.c_out, self.stride
        k = int(options["kernel_size"])
        # a vector is a 1×1 image, on which a circular k×k convolution is a matrix
        self.spatial = self.in_size is not None and k > 1
        size = None
        if self.in_size is not None:
            size = (-(-self.in_size[0] // stride), -(-self.in_size[1] // stride))
        layers: list[nn.Module] = []
        for _ in range(int(options["layers"])):
            if self.spatial:
                assert size is not None
                layers.append(_JacobianLayerConv(c_out, size, k, options))
            else:
                layers.append(_JacobianLayerMatrix(c_out, options))
        self.layers = nn.ModuleList(layers)
        self.q = None
        if self.transition:
            self.q = _parametrized(_orthogonal_init(c_out, c_in, "identity", False), options["map"])

    @property
    def B(self) -> Tensor:
        """The first layer's B (for the spatial form its frequency-0 block B̂(0, 0))."""
        return self.layers[0].matrix()

    @property
    def bias(self) -> Tensor:
        return self.layers[0].bias

    def forward(self, x: Tensor) -> Tensor:
        if self.q is not None:
            x = apply_matrix(subsample(x, self.stride), self.q.value())
        for layer in self.layers:
            x = layer(x)
        return x

    def matrices(self) -> dict[str, Tensor]:
        out = {("B" if i == 0 else f"B{i}"): layer.matrix() for i, layer in enumerate(self.layers)}
        if self.q is not None:
            out["Q"] = self.q.value()
        return out


def _registry() -> dict[str, type[Skip]]:
    found = {cls.kind: cls for cls in Skip.__subclasses__()}
    return {kind: found[kind] for kind in SKIP_OPTIONS}


SKIPS: dict[str, type[Skip]] = _registry()


def make_skip(
    kind: str,
    c_in: int,
    c_out: int,
    stride: int,
    skip_cfg: dict | None,
    in_size: tuple[int, int] | None = None,
) -> Skip:
    """Build the skip of ``kind`` with its options from ``skip_cfg`` (= config['skip_options']).

    ``in_size``: the spatial size of the block's input in CNNs (None for vector input).
    """
    return SKIPS[kind](c_in, c_out, stride, skip_options(kind, skip_cfg), in_size)


__all__ = [
    "SKIPS",
    "SKIP_OPTIONS",
    "SKIP_SPECS",
    "Skip",
    "apply_matrix",
    "make_skip",
    "skip_options",
    "validate_skip_options",
]
