"""``procrustes``: ProcResNet's projected transition convolution (Zaeemzadeh et al.)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from orthskip.errors import ConfigError
from orthskip.nn.orth import circular_conv_fft, polar, project_conv_operator
from orthskip.nn.skips.base import Skip


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
    block = "pre_map"  # at transitions z = S(x) before the block, y = z + F(z)

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
                    "input (cifar_resnet, cifar_preresnet, resnet); use 1 for mlp"
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

    def optimizer_projects(self) -> bool:
        return self.transition  # inside stages it is the identity: nothing to project

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
