"""``orth_jacobian``: blocks y = x − 2Bᵀρ(Bx + b) whose Jacobian is exactly orthogonal (the
Orthogonal-Jacobian paper), B a matrix or an orthogonal circular convolution."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from orthskip.nn.orth import (
    apply_spectral,
    centred_conv_phases,
    orthogonal_conv_spectrum,
    polar,
)
from orthskip.nn.skips.base import (
    Skip,
    apply_matrix,
    orthogonal_init,
    parametrized,
    subsample,
)


class _JacobianLayerMatrix(nn.Module):
    """One layer y = x − 2Bᵀρ(Bx + b), B ∈ SO(C) a matrix: on features, or on channels (1×1)."""

    def __init__(self, c: int, options: dict[str, Any]) -> None:
        super().__init__()
        init = orthogonal_init(c, c, options["init"], options["allow_negative_det"])
        self.b_param = parametrized(init, options["map"])
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
        base = orthogonal_init(c, c, options["init"], options["allow_negative_det"])
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
    block = "jacobian"  # the skip is the whole block: no branch, no post-activation
    # its spatial (FFT) form gave some members wrong branch gradients under vmap at V = 0
    # (tests/test_stacked.py); the matrix form on mlp is exact
    not_vmapped_on_images = "orth_jacobian's spectral convolution is not vectorised"

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
            self.q = parametrized(orthogonal_init(c_out, c_in, "identity", False), options["map"])

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
