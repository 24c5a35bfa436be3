"""The kinds without an orthogonality constraint: ``identity``, ``none`` and ``linear``."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from orthskip.nn.skips.base import Skip, orthogonal_init, subsample


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
    block = "plain"  # S(x) = 0: the block drops the addition

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
            w = orthogonal_init(c_out, c_in, "identity" if init == "identity" else "haar", False)
        self.weight = nn.Parameter(w)

    def linear_map(self) -> Tensor:
        return self.weight

    def matrices(self) -> dict[str, Tensor]:
        return {"W": self.weight}
