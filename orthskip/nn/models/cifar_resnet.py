"""CIFAR ResNets (He et al. 2016a/b): depth 6n + 2, three stages of n basic blocks.

Stage widths are w, 2w, 4w (``width`` = w, 16 in the papers; 4-8 suits 8×8 digits); the first
block of stages 2 and 3 is a transition (stride 2, width doubles). What each skip kind does there
is stated in ``orthskip.nn.skips``.

- post-activation (``cifar_resnet``): stem conv3×3-BN-ReLU; block y = ReLU(S(x) + F(x)) with
  F = conv3×3(stride)-BN-ReLU-conv3×3-BN; head global average pool → linear.
- pre-activation (``cifar_preresnet``): stem conv3×3; block y = S(x) + F(x) with
  F = BN-ReLU-conv3×3(stride)-BN-ReLU-conv3×3 (the skip sees the raw x, also at transitions);
  head BN-ReLU → pool → linear.
``orth_jacobian`` blocks have no BN and no post-activation (they would break the orthogonal
Jacobian); the stem and head are the same as for every other kind.

Initialisation (``init``): ``kaiming`` (default) He-normal fan-out on every 3×3 conv outside the
skips — what this module always did — and LeCun-normal with zero bias on the head;
``torch_default`` leaves PyTorch's init (``orthskip.nn.models.init``).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from orthskip.nn.models.base import ResidualNet, make_block
from orthskip.nn.models.init import init_cnn


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


def post_act_branch(c_in: int, c_out: int, stride: int) -> nn.Module:
    return nn.Sequential(
        conv3x3(c_in, c_out, stride),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        conv3x3(c_out, c_out),
        nn.BatchNorm2d(c_out),
    )


def pre_act_branch(c_in: int, c_out: int, stride: int) -> nn.Module:
    return nn.Sequential(
        nn.BatchNorm2d(c_in),
        nn.ReLU(),
        conv3x3(c_in, c_out, stride),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        conv3x3(c_out, c_out),
    )


def build_cnn(
    arch: str,
    stages: Sequence[int],
    widths: Sequence[int],
    skip: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    skip_cfg: dict | None,
    *,
    pre_act: bool,
    init: str = "kaiming",
) -> ResidualNet:
    """Stages of basic blocks; the first block of every stage after the first is a transition."""
    c0 = widths[0]
    if pre_act:
        stem: nn.Module = conv3x3(input_shape[0], c0)
    else:
        stem = nn.Sequential(conv3x3(input_shape[0], c0), nn.BatchNorm2d(c0), nn.ReLU(inplace=True))
    branch = pre_act_branch if pre_act else post_act_branch
    blocks = []
    c_in = c0
    size = (int(input_shape[1]), int(input_shape[2]))  # the stem keeps the spatial size
    for s, (n, c_out) in enumerate(zip(stages, widths, strict=True)):
        for i in range(n):
            stride = 2 if (s > 0 and i == 0) else 1
            post = None if pre_act else nn.ReLU()
            name = f"stage{s + 1}.block{i}"
            blocks.append(make_block(name, skip, c_in, c_out, stride, branch, skip_cfg, post, size))
            c_in = c_out
            # a 3×3 / pad 1 / stride s conv (and every transition skip) gives ceil(n / s)
            size = (-(-size[0] // stride), -(-size[1] // stride))
    tail: list[nn.Module] = [nn.BatchNorm2d(c_in), nn.ReLU()] if pre_act else []
    head = nn.Sequential(*tail, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes))
    net = ResidualNet(arch, skip, stem, blocks, head)
    if init == "kaiming":
        init_cnn(net)
    return net


def build_cifar_resnet(
    depth: int,
    skip: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    cfg: dict,
    skip_cfg: dict | None,
    *,
    pre_act: bool,
) -> ResidualNet:
    n = (depth - 2) // 6
    w = int(cfg["width"])
    arch = "cifar_preresnet" if pre_act else "cifar_resnet"
    return build_cnn(
        arch,
        (n, n, n),
        (w, 2 * w, 4 * w),
        skip,
        input_shape,
        num_classes,
        skip_cfg,
        pre_act=pre_act,
        init=cfg["init"],
    )
