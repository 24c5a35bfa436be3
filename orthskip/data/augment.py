"""On-device training augmentation, vectorised over the batch (no per-sample Python).

Applied to training batches only; test data is never augmented.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from orthskip.errors import ConfigError

AUGMENTS = ("cifar",)
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
    padded = F.pad(x, (pad, pad, pad, pad))
    ar_h = torch.arange(h, device=x.device)
    ar_w = torch.arange(w, device=x.device)
    rows = dy[:, None] + ar_h[None, :]  # (N, H)
    # A flip is a reversed column index into the same crop window: one gather does both.
    cols = dx[:, None] + torch.where(flip[:, None], (w - 1) - ar_w[None, :], ar_w[None, :])
    # Gather rows then columns with broadcast indices: (N, C, H, W+2p) → (N, C, H, W).
    out = padded.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2 * pad))
    return out.gather(3, cols[:, None, None, :].expand(n, c, h, w))
