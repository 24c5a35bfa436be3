"""Small models obeying the ResidualNet contract (stem, blocks, head) for the metrics tests.

Independent of orthskip.nn.models on purpose: the metrics are tested against this contract only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrizations


class MatrixSkip(nn.Module):
    """S(x) = Q·x on features (last dim) or channels (dim 1, after stride-s subsampling).

    Q is (semi-)orthogonal via torch.nn.utils.parametrizations.orthogonal, or unconstrained.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1, orthogonal: bool = True) -> None:
        super().__init__()
        self.stride = stride
        self.map = nn.Linear(c_in, c_out, bias=False)
        if orthogonal:
            parametrizations.orthogonal(self.map)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim == 2:
            return self.map(x)
        x = x[:, :, :: self.stride, :: self.stride]
        return F.conv2d(x, self.map.weight[:, :, None, None])

    def matrices(self) -> dict[str, Tensor]:
        return {"Q": self.map.weight}


class ToyBlock(nn.Module):
    """y = relu(S(x) + F(x)); S None means the identity."""

    def __init__(self, name: str, branch: nn.Module, skip: nn.Module | None, transition: bool):
        super().__init__()
        self.name = name
        self.transition = transition
        self.branch = branch
        self.skip = skip

    def forward(self, x: Tensor) -> Tensor:
        s = x if self.skip is None else self.skip(x)
        return F.relu(s + self.branch(x))

    def skip_matrices(self) -> dict[str, Tensor]:
        return (
            {} if self.skip is None else {f"skip.{k}": v for k, v in self.skip.matrices().items()}
        )


class ToyNet(nn.Module):
    def __init__(self, stem: nn.Module, blocks: list[nn.Module], head: nn.Module) -> None:
        super().__init__()
        self.stem = stem
        self.blocks = nn.ModuleList(blocks)
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def toy_mlp(
    d_in: int = 2, width: int = 8, depth: int = 3, classes: int = 2, skip: str = "orth"
) -> ToyNet:
    """MLP: Linear stem, `depth` blocks Linear–ReLU–Linear with a skip, Linear head.

    skip: "orth" (parametrized orthogonal Q), "linear" (free W), "identity".
    """

    def branch() -> nn.Module:
        return nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width))

    def make_skip() -> nn.Module | None:
        if skip == "identity":
            return None
        return MatrixSkip(width, width, orthogonal=skip == "orth")

    blocks = [ToyBlock(f"block{i}", branch(), make_skip(), False) for i in range(depth)]
    return ToyNet(nn.Linear(d_in, width), blocks, nn.Linear(width, classes))


def _conv_branch(c_in: int, c_out: int, stride: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
    )


def toy_cnn(c: int = 4, classes: int = 3, blocks_per_stage: int = 1, circular: bool = False):
    """CNN: 3×3 stem, a stage at width c, a stride-2 transition to 2c (semi-orthogonal 1×1
    skip), another stage, global average pool + Linear head."""
    blocks: list[nn.Module] = []
    for i in range(blocks_per_stage):
        blocks.append(ToyBlock(f"s1b{i}", _conv_branch(c, c, 1), MatrixSkip(c, c), False))
    blocks.append(ToyBlock("s2b0", _conv_branch(c, 2 * c, 2), MatrixSkip(c, 2 * c, 2), True))
    for i in range(1, blocks_per_stage + 1):
        blocks.append(ToyBlock(f"s2b{i}", _conv_branch(2 * c, 2 * c, 1), None, False))
    stem = nn.Conv2d(3, c, 3, padding=1, padding_mode="circular" if circular else "zeros")
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * c, classes))
    net = ToyNet(stem, blocks, head)
    # non-trivial BatchNorm running statistics, so that eval mode is not the identity
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    return net


def toy_resnet(
    widths: tuple[int, ...] = (16, 32, 64), blocks_per_stage: int = 9, classes: int = 10
) -> ToyNet:
    """CIFAR-ResNet shapes (depth 6·blocks_per_stage + 2; 9 → ResNet-56) with orthogonal skips:
    3×3 conv stem + BN + ReLU, stages of basic blocks, stride-2 transitions with a
    semi-orthogonal 1×1 skip, global average pool + Linear head."""
    stem = nn.Sequential(
        nn.Conv2d(3, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
    )
    blocks: list[nn.Module] = []
    c_prev = widths[0]
    for s, c in enumerate(widths):
        for b in range(blocks_per_stage):
            stride = 2 if (s > 0 and b == 0) else 1
            skip = MatrixSkip(c_prev, c, stride)
            blocks.append(ToyBlock(f"s{s}b{b}", _conv_branch(c_prev, c, stride), skip, stride > 1))
            c_prev = c
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_prev, classes))
    return ToyNet(stem, blocks, head)
