"""MNIST, Fashion-MNIST, CIFAR-10, CIFAR-100 and STL-10 through torchvision's dataset classes.

The classes read the real on-disk formats (idx files under ``root/MNIST/raw`` etc., the
pickled batches in ``root/cifar-10-batches-py`` / ``root/cifar-100-python``, STL-10's binary
files in ``root/stl10_binary``), download them when asked, and check them: CIFAR and STL-10
against torchvision's MD5s of every file; MNIST
only for presence of the raw files, so we also check the downloaded ``.gz`` archives
against torchvision's MD5s when they are there. The sha256 of every file read goes into
the manifest either way.

STL-10 (``stl10``): the labelled ``train`` (5000) and ``test`` (8000) splits of 96×96 RGB
images in 10 classes; torchvision reads ``train_X.bin`` / ``test_X.bin`` (uint8, each image
three column-major 96×96 planes) and ``train_y.bin`` / ``test_y.bin`` (labels 1-10, made 0-9).
Its integrity check also requires the unlabelled split ``unlabeled_X.bin`` (100 000 images,
2.6 GB) to be present, although we never read it; the 10 fold index lists are not used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from orthskip.data.raw import RawSplit
from orthskip.data.tv_compat import import_torchvision
from orthskip.errors import ConfigError, DatasetError
from orthskip.io import sha256_file

CLASS_NAMES = {
    "mnist": "MNIST",
    "fashion_mnist": "FashionMNIST",
    "cifar10": "CIFAR10",
    "cifar100": "CIFAR100",
    "stl10": "STL10",
}
# the torchvision classes whose every file is checked against MD5s on open
MD5_CHECKED = ("cifar10", "cifar100", "stl10")
# STL10 without class_names.txt has no ``classes``; these are the names that file holds
STL10_CLASSES = (
    "airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck",
)  # fmt: skip


def dataset_class(source: str) -> type:
    return getattr(import_torchvision().datasets, CLASS_NAMES[source])


def expected_files(source: str, root: Path) -> list[Path]:
    """The files torchvision's class reads for ``source`` under ``root``."""
    cls = dataset_class(source)
    if source == "stl10":
        base = root / cls.base_folder
        return [base / f for f, _ in cls.train_list + cls.test_list]
    if source.startswith("cifar"):
        base = root / cls.base_folder
        names = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
        return [base / f for f in names]
    raw = root / cls.__name__ / "raw"
    return [raw / Path(url).stem for url, _ in cls.resources]  # "x-ubyte.gz" → "x-ubyte"


def _mnist_archive_check(source: str, root: Path) -> str:
    """Check MNIST-style .gz archives against torchvision's MD5s where they exist."""
    # torchvision only through tv_compat.import_torchvision (its shims first), which
    # dataset_class below has run by the time this executes
    from torchvision.datasets.utils import check_integrity

    cls = dataset_class(source)
    raw = root / cls.__name__ / "raw"
    present = [(raw / name, md5) for name, md5 in cls.resources if (raw / name).exists()]
    bad = [str(p) for p, md5 in present if not check_integrity(str(p), md5)]
    if bad:
        raise DatasetError(
            f"{', '.join(bad)}: MD5 does not match torchvision's; delete the files under {raw} "
            "and prepare again with download: true, or copy intact files there"
        )
    return "torchvision-md5 (.gz archives)" if len(present) == len(cls.resources) else "none"


def _missing_help(source: str, root: Path) -> str:
    missing = [str(p.relative_to(root)) for p in expected_files(source, root) if not p.exists()]
    what = f"missing: {', '.join(missing)}" if missing else "present but corrupt or mismatched"
    return (
        f"{what}. Put the original {CLASS_NAMES[source]} files under {root} (the layout "
        "torchvision uses), set download: true on a machine with network access, "
        "or `dvc pull` the prepared data"
    )


def _open(source: str, root: Path, train: bool, download: bool) -> Any:
    cls = dataset_class(source)
    try:
        if source == "stl10":  # split instead of train; only the labelled splits
            return cls(str(root), split="train" if train else "test", download=download)
        return cls(str(root), train=train, download=download)
    except Exception as e:  # torchvision raises RuntimeError, pickle/idx readers others
        split = "train" if train else "test"
        raise DatasetError(
            f"{CLASS_NAMES[source]} {split} split under {root} cannot be read "
            f"({type(e).__name__}: {e}); {_missing_help(source, root)}"
        ) from e


def _images(ds: Any, source: str) -> np.ndarray:
    data = ds.data.numpy() if isinstance(ds.data, torch.Tensor) else np.asarray(ds.data)
    if source == "stl10":  # torchvision already gives (N, 3, 96, 96), rows first
        return np.ascontiguousarray(data)
    if source.startswith("cifar"):
        return np.ascontiguousarray(data.transpose(0, 3, 1, 2))  # torchvision keeps NHWC
    return np.ascontiguousarray(data[:, None, :, :])


def _labels(ds: Any) -> np.ndarray:
    t = ds.labels if hasattr(ds, "labels") else ds.targets  # STL10 names them labels
    return (t.numpy() if isinstance(t, torch.Tensor) else np.asarray(t)).astype(np.int64)


def _subset(n: int | None, total: int, seed: int, key: str) -> np.ndarray | None:
    if n is None:
        return None
    if n > total:
        raise ConfigError(f"{key}: {n} exceeds the {total} images available")
    perm = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    return np.sort(perm[:n].numpy())


def load_torchvision(source: str, spec: dict[str, Any]) -> RawSplit:
    """Read (or download) ``source`` with torchvision and return the uint8 images + labels."""
    root = Path(spec["root"]).expanduser()
    download = bool(spec["download"])
    if not download and not root.is_dir():
        raise DatasetError(f"dataset root {root} does not exist: {_missing_help(source, root)}")
    train, test = _open(source, root, True, download), _open(source, root, False, download)
    verified = "torchvision-md5" if source in MD5_CHECKED else "none"
    if source not in MD5_CHECKED:
        verified = _mnist_archive_check(source, root)
    x_tr, y_tr, x_te, y_te = (
        _images(train, source),
        _labels(train),
        _images(test, source),
        _labels(test),
    )
    seed = spec["seed"]
    if (idx := _subset(spec["n_train"], len(y_tr), seed, "n_train")) is not None:
        x_tr, y_tr = x_tr[idx], y_tr[idx]
    if (idx := _subset(spec["n_test"], len(y_te), seed + 1, "n_test")) is not None:
        x_te, y_te = x_te[idx], y_te[idx]
    files = {
        str(p.relative_to(root)): sha256_file(p) for p in expected_files(source, root) if p.exists()
    }
    return RawSplit(
        x_train=np.ascontiguousarray(x_tr, dtype=np.uint8),
        y_train=y_tr,
        x_test=np.ascontiguousarray(x_te, dtype=np.uint8),
        y_test=y_te,
        classes=[str(c) for c in getattr(train, "classes", STL10_CLASSES)],
        provenance={"root": str(root), "verified": verified, "files_sha256": files},
    )
