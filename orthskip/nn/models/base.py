"""The residual network container and the generic residual block shared by every architecture."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from orthskip.nn.skips import Skip, grouped_orthogonal_maps, make_skip

# builds the residual branch F for (c_in, c_out, stride)
BranchFactory = Callable[[int, int, int], nn.Module]


class ResidualBlock(nn.Module):
    """y = post(S(x) + F(x)), with the skip deciding the special cases.

    - ``skip.is_zero`` (none): y = post(F(x));
    - ``skip.pre_map`` (procrustes): z = S(x), y = post(z + F(z)), F built at stride 1 on C_out
      (at non-transition blocks S is the identity, so this is the usual block);
    - ``skip.owns_block`` (orth_jacobian): y = S(x); no branch, no post-activation (which would
      break the orthogonal Jacobian).
    """

    def __init__(
        self,
        name: str,
        skip_kind: str,
        c_in: int,
        c_out: int,
        stride: int,
        branch: BranchFactory,
        skip_cfg: dict | None,
        post: nn.Module | None = None,
        in_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.transition = c_in != c_out or stride != 1
        self.skip: Skip = make_skip(skip_kind, c_in, c_out, stride, skip_cfg, in_size)
        if self.skip.owns_block:
            self.branch = None
            self.post = nn.Identity()
        elif self.skip.pre_map:
            self.branch = branch(c_out, c_out, 1)
            self.post = post if post is not None else nn.Identity()
        else:
            self.branch = branch(c_in, c_out, stride)
            self.post = post if post is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        skip = self.skip
        if skip.owns_block:
            return skip(x)
        if skip.pre_map:
            z = skip(x)
            return self.post(z + self.branch(z))
        out = self.branch(x)
        if skip.is_zero:
            return self.post(out)
        return self.post(skip.residual(x, out))

    def skip_matrices(self) -> dict[str, Tensor]:
        """Skip matrices keyed relative to the block: ``skip.Q`` is param ``blocks.3.skip.Q``."""
        return {f"skip.{k}": v for k, v in self.skip.matrices().items()}


class ResidualNet(nn.Module):
    """forward(x) == head(blocks[-1](... blocks[0](stem(x))))."""

    def __init__(
        self,
        arch: str,
        skip: str,
        stem: nn.Module,
        blocks: list[ResidualBlock],
        head: nn.Module,
    ) -> None:
        super().__init__()
        self.arch = arch
        self.skip_kind = skip
        self.stem = stem
        self.blocks = nn.ModuleList(blocks)
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        with grouped_orthogonal_maps(self):
            x = self.stem(x)
            for block in self.blocks:
                x = block(x)
            return self.head(x)

    def skip_modules(self) -> list[Skip]:
        return [b.skip for b in self.blocks]

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def n_skip_params(self) -> int:
        return sum(p.numel() for s in self.skip_modules() for p in s.parameters())
