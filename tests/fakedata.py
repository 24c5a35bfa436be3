"""Tiny datasets written in the real on-disk formats that torchvision's classes read.

Used by the data tests and reusable by rule-level tests:

- ``write_cifar(root, "cifar10" | "cifar100", ...)``: pickled batches in
  ``root/cifar-10-batches-py`` (data_batch_1..5, test_batch, batches.meta) or
  ``root/cifar-100-python`` (train, test, meta), each a dict with a (N, 3072) uint8
  ``data`` row-major array (R plane, G plane, B plane) and ``labels`` / ``fine_labels``.
- ``write_mnist(root, "mnist" | "fashion_mnist", ...)``: idx ubyte files (big-endian
  magic 0x0803 images / 0x0801 labels) in ``root/MNIST/raw`` or ``root/FashionMNIST/raw``,
  uncompressed as torchvision reads them, optionally with ``.gz`` copies beside them as a
  download leaves them.
- ``write_stl10(root, ...)``: STL-10's binary files in ``root/stl10_binary``: ``train_X.bin``,
  ``test_X.bin``, ``unlabeled_X.bin`` (uint8, every image three 96×96 planes, each plane
  column-major, as the real files and torchvision's reader have it), ``train_y.bin`` /
  ``test_y.bin`` (uint8 labels 1-10) and ``class_names.txt``.
- ``bypass_md5(monkeypatch)``: torchvision checks the MD5s of the *real* CIFAR files,
  which generated files cannot match. This patch replaces only that check (the
  ``check_integrity`` used by torchvision's cifar module) by an existence check; it is for
  tests with generated files only, never for library code.

Every writer returns the arrays it wrote (images NCHW uint8, labels int64) so tests can
compare what the pipeline read with what is on disk.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np

CIFAR_LAYOUT = {
    "cifar10": ("cifar-10-batches-py", 10),
    "cifar100": ("cifar-100-python", 100),
}
MNIST_FOLDER = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}


def _images(rng: np.random.Generator, n: int, shape: tuple[int, ...]) -> np.ndarray:
    return rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)


def _labels(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    # Every class appears when n >= k, shuffled so order carries no information.
    return rng.permutation(np.arange(n) % k).astype(np.int64)


def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar(
    root: Path, source: str = "cifar10", n_train: int = 50, n_test: int = 20, seed: int = 0
) -> dict[str, np.ndarray]:
    folder, k = CIFAR_LAYOUT[source]
    base = Path(root) / folder
    base.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    x_tr, x_te = _images(rng, n_train, (3, 32, 32)), _images(rng, n_test, (3, 32, 32))
    y_tr, y_te = _labels(rng, n_train, k), _labels(rng, n_test, k)
    names = [f"class_{i}" for i in range(k)]
    if source == "cifar10":
        for i, part in enumerate(np.array_split(np.arange(n_train), 5), start=1):
            _pickle(
                base / f"data_batch_{i}",
                {
                    "batch_label": f"training batch {i} of 5",
                    "labels": y_tr[part].tolist(),
                    "data": x_tr[part].reshape(len(part), -1),
                    "filenames": [f"img_{j}.png" for j in part],
                },
            )
        _pickle(
            base / "test_batch",
            {
                "batch_label": "testing batch 1 of 1",
                "labels": y_te.tolist(),
                "data": x_te.reshape(n_test, -1),
                "filenames": [f"test_{j}.png" for j in range(n_test)],
            },
        )
        _pickle(base / "batches.meta", {"label_names": names, "num_vis": 3072})
    else:
        for split, x, y in (("train", x_tr, y_tr), ("test", x_te, y_te)):
            _pickle(
                base / split,
                {
                    "batch_label": split,
                    "fine_labels": y.tolist(),
                    "coarse_labels": (y // 5).tolist(),
                    "data": x.reshape(len(x), -1),
                    "filenames": [f"{split}_{j}.png" for j in range(len(x))],
                },
            )
        _pickle(
            base / "meta",
            {"fine_label_names": names, "coarse_label_names": [f"super_{i}" for i in range(20)]},
        )
    return {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te}


def _idx_bytes(arr: np.ndarray) -> bytes:
    """idx format: 0x00 0x00, type 0x08 (uint8), ndim; big-endian int32 dims; raw data."""
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + np.ascontiguousarray(arr, dtype=np.uint8).tobytes()


def write_mnist(
    root: Path,
    source: str = "mnist",
    n_train: int = 40,
    n_test: int = 20,
    seed: int = 0,
    gz: bool = False,
) -> dict[str, np.ndarray]:
    raw = Path(root) / MNIST_FOLDER[source] / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    x_tr, x_te = _images(rng, n_train, (28, 28)), _images(rng, n_test, (28, 28))
    y_tr, y_te = _labels(rng, n_train, 10), _labels(rng, n_test, 10)
    for prefix, x, y in (("train", x_tr, y_tr), ("t10k", x_te, y_te)):
        for name, arr in ((f"{prefix}-images-idx3-ubyte", x), (f"{prefix}-labels-idx1-ubyte", y)):
            data = _idx_bytes(arr)
            (raw / name).write_bytes(data)
            if gz:
                (raw / f"{name}.gz").write_bytes(gzip.compress(data, mtime=0))
    return {"x_train": x_tr[:, None], "y_train": y_tr, "x_test": x_te[:, None], "y_test": y_te}


def bypass_md5(monkeypatch) -> None:
    """Replace torchvision's CIFAR and STL-10 MD5 checks by an existence check (generated files
    only)."""
    from orthskip.data.tv_compat import import_torchvision

    datasets = import_torchvision().datasets

    def exists_only(fpath: str, md5: str | None = None) -> bool:
        return os.path.isfile(fpath)

    monkeypatch.setattr(datasets.cifar, "check_integrity", exists_only)
    monkeypatch.setattr(datasets.stl10, "check_integrity", exists_only)


STL10_NAMES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")


def _stl10_bytes(x: np.ndarray) -> bytes:
    """(N, 3, 96, 96) rows-first images → STL-10's layout: each plane stored column-major."""
    return np.ascontiguousarray(x.transpose(0, 1, 3, 2)).tobytes()


def write_stl10(
    root: Path,
    n_train: int = 20,
    n_test: int = 10,
    n_unlabeled: int = 2,
    seed: int = 0,
    class_names: bool = True,
) -> dict[str, np.ndarray]:
    base = Path(root) / "stl10_binary"
    base.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (3, 96, 96)
    x_tr, x_te = _images(rng, n_train, shape), _images(rng, n_test, shape)
    y_tr, y_te = _labels(rng, n_train, 10), _labels(rng, n_test, 10)
    for split, x, y in (("train", x_tr, y_tr), ("test", x_te, y_te)):
        (base / f"{split}_X.bin").write_bytes(_stl10_bytes(x))
        (base / f"{split}_y.bin").write_bytes((y + 1).astype(np.uint8).tobytes())  # 1-based
    (base / "unlabeled_X.bin").write_bytes(_stl10_bytes(_images(rng, n_unlabeled, shape)))
    if class_names:
        (base / "class_names.txt").write_text("\n".join(STL10_NAMES) + "\n")
    return {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te}
