"""The residual network container and its blocks: one block class per way a skip joins the
branch (residual sum, no sum, skip before the branch, skip as the whole block)."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from orthskip.nn.skips import Skip, grouped_orthogonal_maps, make_skip

# builds the residual branch F for (c_in, c_out, stride)
BranchFactory = Callable[[int, int, int], nn.Module]


class Block(nn.Module):
    """A block of a residual network: its name, its skip S and its residual branch F."""

    def __init__(self, name: str, skip: Skip, branch: nn.Module | None, post: nn.Module | None):
        super().__init__()
        self.name = name
        self.skip = skip
        self.transition = skip.transition
        self.branch = branch
        self.post = post if post is not None else nn.Identity()

    def branch_input(self, x: Tensor) -> Tensor:
        """Where F is evaluated for the block input x."""
        return x

    def skip_matrices(self) -> dict[str, Tensor]:
        """Skip matrices keyed relative to the block: ``skip.Q`` is param ``blocks.3.skip.Q``."""
        return {f"skip.{k}": v for k, v in self.skip.matrices().items()}


class ResidualBlock(Block):
    """y = post(S(x) + F(x)): the usual residual block (the matrix skips fuse the sum)."""

    def forward(self, x: Tensor) -> Tensor:
        return self.post(self.skip.residual(x, self.branch(x)))


class PlainBlock(Block):
    """y = post(F(x)): S(x) = 0 (``none``, PlainNet), so there is no addition."""

    def forward(self, x: Tensor) -> Tensor:
        return self.post(self.branch(x))


class PreMapBlock(Block):
    """z = S(x), y = post(z + F(z)), F built at stride 1 on C_out (``procrustes``: the skip maps
    x before a transition block; inside a stage S is the identity and this is the usual block)."""

    def branch_input(self, x: Tensor) -> Tensor:
        return self.skip(x)

    def forward(self, x: Tensor) -> Tensor:
        z = self.skip(x)
        return self.post(z + self.branch(z))


class JacobianBlock(Block):
    """y = S(x): the skip is the whole block (``orth_jacobian``); no branch and no
    post-activation, which would break the orthogonal Jacobian."""

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x)


# The block each skip kind sits in (``Skip.block``).
BLOCKS: dict[str, type[Block]] = {
    "residual": ResidualBlock,
    "plain": PlainBlock,
    "pre_map": PreMapBlock,
    "jacobian": JacobianBlock,
}


def make_block(
    name: str,
    skip_kind: str,
    c_in: int,
    c_out: int,
    stride: int,
    branch: BranchFactory,
    skip_cfg: dict | None,
    post: nn.Module | None = None,
    in_size: tuple[int, int] | None = None,
) -> Block:
    """The block of ``skip_kind`` mapping (c_in, in_size) to c_out at ``stride``.

    ``branch(c_in, c_out, stride)`` builds F; a pre-map block builds it on the mapped input
    (c_out, stride 1); a Jacobian block builds none.
    """
    skip = make_skip(skip_kind, c_in, c_out, stride, skip_cfg, in_size)
    cls = BLOCKS[skip.block]
    if cls is JacobianBlock:
        return cls(name, skip, None, None)
    f = branch(c_out, c_out, 1) if cls is PreMapBlock else branch(c_in, c_out, stride)
    return cls(name, skip, f, post)


class ResidualNet(nn.Module):
    """forward(x) == head(blocks[-1](... blocks[0](stem(x))))."""

    def __init__(
        self,
        arch: str,
        skip: str,
        stem: nn.Module,
        blocks: list[Block],
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
