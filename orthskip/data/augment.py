"""On-device training augmentation, vectorised over the batch (no per-sample Python).

Applied to training batches only; test data is never augmented.
"""

from __future__ import annotations

import torch

from orthskip.data.spec import AUGMENTS
from orthskip.errors import ConfigError

CIFAR_PAD = 4


def augment_batch(
    x: torch.Tensor, kind: str | None, generator: torch.Generator | None
) -> torch.Tensor:
    """Return an augmented copy of the image batch ``x`` (N, C, H, W).

    ``kind`` None / "none": ``x`` unchanged. ``"cifar"``: zero-pad 4 pixels, take a random
    H×W crop, flip horizontally with probability 1/2 (He et al. 2016). The data are already
    normalised, so the padding is the training-set mean colour, not black. The random
    offsets and flips are drawn from ``generator`` (on its own device), so a seeded
    generator gives the same augmentation on every run.
    """
    if kind is None or kind == "none":
        return x
    if kind != "cifar":
        raise ConfigError(f"augment: unknown kind {kind!r}; allowed: none, {', '.join(AUGMENTS)}")
    if x.ndim != 4:
        raise ValueError(f"augment 'cifar' needs (N, C, H, W) images, got shape {tuple(x.shape)}")
    return _pad_crop_flip(x, CIFAR_PAD, generator)


def _pad_crop_flip(x: torch.Tensor, pad: int, generator: torch.Generator | None) -> torch.Tensor:
    n, c, h, w = x.shape
    gdev = generator.device if generator is not None else x.device
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=gdev).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=gdev).to(x.device)
    flip = torch.randint(0, 2, (n,), generator=generator, device=gdev).to(x.device).bool()
    ar_h = torch.arange(h, device=x.device)
    ar_w = torch.arange(w, device=x.device)
    # Source pixel of every output pixel, in unpadded coordinates (outside = padding).
    rows = dy[:, None] + ar_h[None, :] - pad  # (N, H)
    # A flip reverses the column index inside the same crop window: one gather does both.
    cols = dx[:, None] + torch.where(flip[:, None], (w - 1) - ar_w[None, :], ar_w[None, :]) - pad
    inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    src = rows.clamp(0, h - 1)[:, :, None] * w + cols.clamp(0, w - 1)[:, None, :]  # (N, H, W)
    # One gather over the flattened image instead of materialising the padded batch.
    out = x.reshape(n, c, h * w).gather(2, src.view(n, 1, h * w).expand(n, c, h * w))
    return out.view(n, c, h, w).masked_fill_(~inside[:, None], 0.0)
