"""ResNet-18 with a CIFAR stem (3×3 conv, stride 1, no max-pool), post-activation basic blocks.

Stage widths w, 2w, 4w, 8w (``width`` = w = 64); depth 10, 18 or 34 gives (1,1,1,1),
(2,2,2,2) or (3,4,6,3) blocks per stage. The first block of stages 2-4 is a transition
(stride 2, width doubles); see ``orthskip.skips`` for what each skip kind does there.
Initialisation as for the CIFAR ResNets (``orthskip.models.cifar_resnet``).
"""

from __future__ import annotations

from orthskip.models.base import ResidualNet
from orthskip.models.cifar_resnet import build_cnn


def build_resnet18(
    depth: int,
    skip: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    cfg: dict,
    skip_cfg: dict | None,
) -> ResidualNet:
    from orthskip.models import RESNET18_STAGES

    w = int(cfg["width"])
    return build_cnn(
        "resnet18",
        RESNET18_STAGES[depth],
        (w, 2 * w, 4 * w, 8 * w),
        skip,
        input_shape,
        num_classes,
        skip_cfg,
        pre_act=False,
        init=cfg["init"],
    )
