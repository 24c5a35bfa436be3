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
Adding a kind: one subclass of ``Skip`` (``base.py``) with ``kind`` and, if it is not a plain
residual skip, its ``block`` set; parameters made in ``build``; either ``linear_map`` for a
matrix skip or ``forward``. Then one ``SkipKind`` entry (``orthskip.nn.skip_kinds``: the class
and how figures draw the kind) and, if it has options, one ``KindOptions`` entry
(``orthskip.nn.skip_specs``, torch-free: type, default, allowed values and description of
each option, and its constraints; the class's ``options_table`` and ``constraints`` read it).
``SKIPS`` and the config schema are generated from these.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from orthskip.nn.skip_kinds import KINDS, SkipKind, register_kind
from orthskip.nn.skip_specs import (
    SKIP_OPTIONS,
    SKIP_SPECS,
    skip_options,
    validate_skip_options,
)
from orthskip.nn.skips.base import (
    Skip,
    apply_matrix,
    grouped_orthogonal_maps,
    skip_identity_gap,
    subsample,
)
from orthskip.nn.skips.basic import IdentitySkip, LinearSkip, NoneSkip
from orthskip.nn.skips.jacobian import OrthJacobianSkip
from orthskip.nn.skips.orthogonal import OrthFixedSkip, OrthLearnedSkip, OrthManifoldSkip
from orthskip.nn.skips.procrustes import ProcrustesSkip


class _Classes(Mapping[str, type[Skip]]):
    """Every kind's class, in registry order (``orthskip.nn.skip_kinds.KINDS``, which a test
    may extend): a live view, so that a kind registered later is here too."""

    def __getitem__(self, name: str) -> type[Skip]:
        cls = KINDS[name].cls
        if isinstance(cls, str):
            module, _, attr = cls.rpartition(".")
            cls = getattr(importlib.import_module(f"orthskip.nn.skips.{module}"), attr)
        if getattr(cls, "kind", None) != name:
            raise TypeError(f"skip kind {name}: its class {cls.__name__} has kind {cls.kind!r}")
        return cls

    def __iter__(self) -> Iterator[str]:
        return iter(list(KINDS))

    def __len__(self) -> int:
        return len(KINDS)


# Every kind, in the order of the config's kinds and the figures' legends.
SKIPS: Mapping[str, type[Skip]] = _Classes()


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
    "KINDS",
    "SKIPS",
    "SKIP_OPTIONS",
    "SKIP_SPECS",
    "IdentitySkip",
    "LinearSkip",
    "NoneSkip",
    "OrthFixedSkip",
    "OrthJacobianSkip",
    "OrthLearnedSkip",
    "OrthManifoldSkip",
    "ProcrustesSkip",
    "Skip",
    "SkipKind",
    "apply_matrix",
    "grouped_orthogonal_maps",
    "make_skip",
    "register_kind",
    "skip_identity_gap",
    "skip_options",
    "subsample",
    "validate_skip_options",
]
