"""On-device CIFAR augmentation against a slow per-sample reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from orthskip.data import augment_batch
from orthskip.errors import ConfigError


def _reference(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Per-sample pad/crop/flip with the same random draws (order: dy, dx, flip)."""
    n, _, h, w = x.shape
    dy = torch.randint(0, 9, (n,), generator=gen)
    dx = torch.randint(0, 9, (n,), generator=gen)
    flip = torch.randint(0, 2, (n,), generator=gen)
    out = []
    for i in range(n):
        img = F.pad(x[i], (4, 4, 4, 4))[:, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
        out.append(img.flip(-1) if flip[i] else img)
    return torch.stack(out)


def test_matches_per_sample_reference():
    x = torch.randn(64, 3, 32, 32)
    got = augment_batch(x, "cifar", torch.Generator().manual_seed(7))
    want = _reference(x, torch.Generator().manual_seed(7))
    assert torch.equal(got, want)


def test_seeded_and_random():
    x = torch.randn(32, 3, 16, 16)
    a = augment_batch(x, "cifar", torch.Generator().manual_seed(1))
    b = augment_batch(x, "cifar", torch.Generator().manual_seed(1))
    c = augment_batch(x, "cifar", torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.dtype == x.dtype


def test_offsets_and_flips_cover_their_ranges():
    # a one-hot "pixel" at (0, 0) reveals each sample's crop offset and flip
    n = 4000
    x = torch.zeros(n, 1, 8, 8)
    x[:, 0, 0, 0] = 1.0
    y = augment_batch(x, "cifar", torch.Generator().manual_seed(0))
    vis = y.flatten(1).sum(1)
    # the pixel stays visible iff the crop starts at or before it: dy, dx <= 4 → 25/81
    assert abs(vis.mean().item() - 25 / 81) < 0.03
    rows, cols = torch.nonzero(y[:, 0] == 1, as_tuple=True)[1:]
    assert set(rows.tolist()) == set(range(5))
    assert set(cols.tolist()) == set(range(5)) | set(range(3, 8))
    # unflipped: col = 4 - dx in 0..4; flipped: col = 3 + dx in 3..7; P(col >= 4) = 1/2
    flipped = (cols >= 4).float().mean().item()
    assert 0.4 < flipped < 0.6


def test_none_is_identity_and_unknown_kind_fails():
    x = torch.randn(4, 3, 8, 8)
    assert augment_batch(x, None, torch.Generator()) is x
    assert augment_batch(x, "none", torch.Generator()) is x
    with pytest.raises(ConfigError, match="autoaugment"):
        augment_batch(x, "autoaugment", torch.Generator())
