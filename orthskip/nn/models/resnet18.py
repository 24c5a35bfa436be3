"""``resnet18``, the alias kept from before ``resnet``: ``resnet`` with the CIFAR stem.

Depth 10, 18 or 34 gives (1,1,1,1), (2,2,2,2) or (3,4,6,3) basic blocks per stage at widths
w, 2w, 4w, 8w (``width`` = w = 64); the same modules, parameter names and initialisation as
this arch always had (``orthskip.nn.models.resnet``).
"""

from __future__ import annotations

from orthskip.nn.models.base import ResidualNet
from orthskip.nn.models.resnet import build_resnet


def build_resnet18(
    depth: int,
    skip: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    cfg: dict,
    skip_cfg: dict | None,
) -> ResidualNet:
    return build_resnet(
        depth, skip, input_shape, num_classes, {**cfg, "stem": "cifar"}, skip_cfg, "resnet18"
    )
