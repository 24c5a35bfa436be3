"""The orthogonal matrix kinds: ``orth_fixed`` (a frozen Haar Q), ``orth_learned`` (Q
parametrized, exactly orthogonal at every step) and ``orth_manifold`` (Q stepped on the manifold
by ``orthskip.nn.optim.RiemannianOrthogonal``)."""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor, nn

from orthskip.nn.orth import haar_orthogonal, orthogonal_base
from orthskip.nn.skips.base import Skip, orthogonal_init, parametrized


class OrthogonalMatrixSkip(Skip):
    """S(x) = Q · subsample(x) with Q (semi-)orthogonal; subclasses say how Q is held."""

    Q: Tensor

    def linear_map(self) -> Tensor:
        return self.Q

    def matrices(self) -> dict[str, Tensor]:
        return {"Q": self.Q}


class OrthFixedSkip(OrthogonalMatrixSkip):
    kind = "orth_fixed"

    def build(self, options: dict[str, Any]) -> None:
        c_in, c_out = self.c_in, self.c_out
        q = haar_orthogonal(c_out, c_in, special=not options["allow_negative_det"])
        self.register_buffer("Q", q)  # a buffer: saved, never optimized


class OrthLearnedSkip(OrthogonalMatrixSkip):
    kind = "orth_learned"

    def build(self, options: dict[str, Any]) -> None:
        c_in, c_out = self.c_in, self.c_out
        init = orthogonal_init(c_out, c_in, options["init"], options["allow_negative_det"])
        self.q = parametrized(init, options["map"])

    @classmethod
    def initial_state(
        cls,
        c_in: int,
        c_out: int,
        stride: int,
        options: dict[str, Any],
        in_size: tuple[int, int] | None = None,
    ) -> dict[str, Tensor]:
        """``build``'s tensors without the module: the same draw, and what registering the
        parametrization stores (``OrthogonalMap.right_inverse``: X = 0 and the base). The
        registration itself (a new class per holder, the map evaluated once as a check)
        is most of the time of building a deep orth_learned mlp."""
        init = orthogonal_init(c_out, c_in, options["init"], options["allow_negative_det"])
        if options["init"] == "identity":  # the same for every block: computed once
            original, base = (t.clone() for t in _identity_start(c_out, c_in))
        else:
            q = init.to(torch.float64)  # as MatrixHolder holds it
            original, base = torch.zeros_like(q), orthogonal_base(q)
        return {
            "q.parametrizations.weight.original": original,
            "q.parametrizations.weight.0.base": base,
        }

    @property
    def Q(self) -> Tensor:
        return self.q.value()


class OrthManifoldSkip(OrthogonalMatrixSkip):
    """Q is stepped only by ``orthskip.nn.optim.RiemannianOrthogonal`` (never by SGD/AdamW)."""

    kind = "orth_manifold"

    def build(self, options: dict[str, Any]) -> None:
        c_in, c_out = self.c_in, self.c_out
        init = orthogonal_init(c_out, c_in, options["init"], options["allow_negative_det"])
        self.Q = nn.Parameter(init)

    def manifold_parameters(self) -> list[nn.Parameter]:
        return [self.Q] if self.Q.requires_grad else []


@functools.cache
def _identity_start(rows: int, cols: int) -> tuple[Tensor, Tensor]:
    """(X, base) of an orth_learned map that starts at the identity [I; 0] (callers copy)."""
    q = orthogonal_init(rows, cols, "identity", False).to(torch.float64)
    return torch.zeros_like(q), orthogonal_base(q)
