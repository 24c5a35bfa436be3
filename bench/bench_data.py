"""Epoch time of the on-device tensor pipeline vs a torchvision DataLoader with PIL transforms.

Both pipelines serve the same CIFAR-shaped random uint8 images in shuffled batches with
the standard training augmentation (4-px pad random crop + horizontal flip) and
normalisation, and deliver float32 batches on the target device:

- ``tensor``: what the training engine does — the normalised training set held as one
  tensor on the device, a shuffled index per epoch, ``orthskip.data.augment_batch`` per
  batch (vectorised, no per-sample Python);
- ``torchvision``: a map-style Dataset returning PIL images (as ``torchvision.datasets.CIFAR10``
  does) through ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip``, ``ToTensor``,
  ``Normalize``, batched by ``torch.utils.data.DataLoader``, then moved to the device.

Usage:
    python bench/bench_data.py                 # 10k images, CPU, 2 epochs each
    python bench/bench_data.py --n 50000       # full CIFAR training-set size
    python bench/bench_data.py --device cuda --workers 4
    python bench/bench_data.py --threads 2 --workers 2   # all cores for both pipelines
Prints a table; the ratio is torchvision epoch time / tensor-pipeline epoch time.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from orthskip.data import augment_batch
from orthskip.data.tv_compat import import_torchvision

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def tensor_epoch(x: torch.Tensor, batch: int, gen: torch.Generator) -> int:
    n = x.shape[0]
    perm = torch.randperm(n, generator=gen, device=gen.device).to(x.device)
    seen = 0
    for i in range(0, n, batch):
        xb = augment_batch(x[perm[i : i + batch]], "cifar", gen)
        seen += xb.shape[0]
    return seen


class PILDataset(torch.utils.data.Dataset):
    """CIFAR10-style: HWC uint8 array → PIL image → transforms, one sample at a time."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def torchvision_epoch(loader, device: torch.device) -> int:
    seen = 0
    for xb, _ in loader:
        xb = xb.to(device, non_blocking=True)
        seen += xb.shape[0]
    return seen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000, help="images per epoch (50000 = CIFAR)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs per pipeline (best kept)")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (1: like the single-threaded PIL path with 0 workers)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    T = import_torchvision().transforms

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(args.n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=args.n)

    # tensor pipeline: normalise once, keep on the device
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    x = ((torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - mean) / std).to(device)
    gen = torch.Generator(device=device).manual_seed(0)

    tf = T.Compose(
        [
            T.RandomCrop(32, padding=4),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(MEAN, STD),
        ]
    )
    loader = torch.utils.data.DataLoader(
        PILDataset(images, labels, tf),
        batch_size=args.batch,
        shuffle=True,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=args.workers > 0,
        generator=torch.Generator().manual_seed(0),
    )

    def timed(fn) -> float:
        fn()  # warm-up epoch (kernel caches, worker start-up)
        best = float("inf")
        for _ in range(args.epochs):
            _sync(device)
            t0 = time.perf_counter()
            assert fn() == args.n
            _sync(device)
            best = min(best, time.perf_counter() - t0)
        return best

    t_tensor = timed(lambda: tensor_epoch(x, args.batch, gen))
    t_tv = timed(lambda: torchvision_epoch(loader, device))

    print(
        f"CIFAR-shaped uint8 data: {args.n} images, batch {args.batch}, device {device}, "
        f"DataLoader workers {args.workers}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; best of {args.epochs} epochs after a warm-up"
    )
    print(f"{'pipeline':<34}{'epoch s':>10}{'images/s':>12}{'ratio':>8}")
    rows = [
        ("tensor (augment_batch on device)", t_tensor),
        ("torchvision DataLoader + PIL", t_tv),
    ]
    for name, t in rows:
        print(f"{name:<34}{t:>10.3f}{args.n / t:>12.0f}{t / t_tensor:>8.2f}")
    print(
        f"speed-up of the tensor pipeline (torchvision time / tensor time): {t_tv / t_tensor:.1f}x"
    )


if __name__ == "__main__":
    main()
