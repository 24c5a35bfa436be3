"""torchvision-style ResNets: depth 10/18/34 (basic blocks), 50/101/152 (bottlenecks, ×4).

Stages 1-4 of (n1, n2, n3, n4) blocks at base widths w, 2w, 4w, 8w (``width`` = w, 64 as in
torchvision); a bottleneck block of base width b is conv1×1(→b)-BN-ReLU-conv3×3(b, stride)-BN-
ReLU-conv1×1(→4b)-BN (the stride on the 3×3, torchvision's "ResNet v1.5"), so its output has
4b channels; a basic block is conv3×3(stride)-BN-ReLU-conv3×3-BN. Post-activation:
y = ReLU(S(x) + F(x)). Transitions: the first block of stages 2-4 (stride 2, width doubles)
and, for bottlenecks, the first block of stage 1 (64 → 256 channels at stride 1); what each
skip kind does there is stated in ``orthskip.nn.skips`` (identity: subsample + zero-pad, linear: a
learnable C_out × C_in map, ...).

``stem``: ``cifar`` = conv3×3 stride 1 - BN - ReLU (no max-pool; the resolution is kept) or
``imagenet`` = conv7×7 stride 2 pad 3 - BN - ReLU - max-pool 3×3 stride 2 pad 1 (torchvision's).
Head: global average pool → linear.

Against torchvision (``torchvision.models.resnet18/34/50/101``): the same modules and shapes
except at transitions, where torchvision's ``downsample`` is a 1×1 stride-s convolution followed
by BatchNorm ("option B"), and the shortcut is the identity inside stages. No skip kind is
exactly that (``identity`` zero-pads at transitions; ``linear`` also has a C × C map inside the
stages), so the structural match is
n_params(torchvision) = n_params(resnet, identity) + Σ_transitions (C_in·C_out + 2·C_out),
every other tensor the same shape in the same order (tests/test_models_arch.py).

Initialisation (``init``): ``kaiming`` = He-normal fan-out on every convolution outside the skips
(torchvision's own rule), LeCun-normal head; ``torch_default`` leaves PyTorch's init.
"""

from __future__ import annotations

from torch import nn

from orthskip.nn.arch_specs import BOTTLENECK_STAGES, RESNET_STAGES
from orthskip.nn.models.base import ResidualNet, make_block
from orthskip.nn.models.cifar_resnet import conv3x3, post_act_branch
from orthskip.nn.models.init import init_cnn

EXPANSION = 4  # bottleneck output width / base width
# the blocks per stage by depth and the stems: orthskip.nn.arch_specs (torch-free)


def bottleneck_branch(c_in: int, c_out: int, stride: int) -> nn.Module:
    mid = c_out // EXPANSION
    return nn.Sequential(
        nn.Conv2d(c_in, mid, 1, bias=False),
        nn.BatchNorm2d(mid),
        nn.ReLU(inplace=True),
        conv3x3(mid, mid, stride),
        nn.BatchNorm2d(mid),
        nn.ReLU(inplace=True),
        nn.Conv2d(mid, c_out, 1, bias=False),
        nn.BatchNorm2d(c_out),
    )


def _conv_out(n: int, kernel: int, stride: int, pad: int) -> int:
    return (n + 2 * pad - kernel) // stride + 1


def make_stem(kind: str, c_in: int, width: int, size: tuple[int, int]):
    """The stem module and the spatial size it outputs."""
    if kind == "cifar":
        stem = nn.Sequential(conv3x3(c_in, width), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        return stem, size
    stem = nn.Sequential(
        nn.Conv2d(c_in, width, 7, stride=2, padding=3, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, padding=1),
    )
    out = tuple(_conv_out(_conv_out(n, 7, 2, 3), 3, 2, 1) for n in size)
    return stem, out


def build_resnet(
    depth: int,
    skip: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    cfg: dict,
    skip_cfg: dict | None,
) -> ResidualNet:
    w = int(cfg["width"])
    bottleneck = depth in BOTTLENECK_STAGES
    expansion = EXPANSION if bottleneck else 1
    branch = bottleneck_branch if bottleneck else post_act_branch
    stem, size = make_stem(cfg.get("stem", "cifar"), int(input_shape[0]), w, tuple(input_shape[1:]))
    blocks = []
    c_in = w
    for s, n in enumerate(RESNET_STAGES[depth]):
        c_out = w * 2**s * expansion
        for i in range(n):
            stride = 2 if (s > 0 and i == 0) else 1
            name = f"stage{s + 1}.block{i}"
            blocks.append(
                make_block(name, skip, c_in, c_out, stride, branch, skip_cfg, nn.ReLU(), size)
            )
            c_in = c_out
            size = (-(-size[0] // stride), -(-size[1] // stride))
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes))
    net = ResidualNet("resnet", skip, stem, blocks, head)
    if cfg["init"] == "kaiming":
        init_cnn(net)
    return net
