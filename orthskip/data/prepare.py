"""Prepare a dataset once (one tensor file + JSON manifest) and load it for training.

The tensor file is ``torch.save`` of a dict of tensors: images as uint8, vectors as
float32, labels int64, plus per-feature/per-channel ``mean`` and ``std`` of the training
set. ``load_prepared`` verifies the file's sha256 against the manifest and returns
float32 tensors normalised with those statistics.

Regression sets (manifest ``task: regression``, e.g. ``diffeo``) store float32 targets
(N, D_out) and are **not** normalised (mean 0, std 1 are stored): the net must learn h
itself on R^d, not a rescaled conjugate of it. Their ``Prepared.num_classes`` is the target
dimension D_out (what the head outputs) and ``meta["task"]`` says ``regression``.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from orthskip.data.raw import RawSplit
from orthskip.data.sources import SOURCES
from orthskip.data.spec import resolve_spec
from orthskip.errors import ConfigError, DatasetError
from orthskip.io import atomic_path, sha256_file, write_json
from orthskip.provenance import library_versions

FORMAT_VERSION = 1
_KEYS = ("x_train", "y_train", "x_test", "y_test", "mean", "std")
_FIX = "rerun the prepare_dataset step (or `dvc pull` the prepared data)"


@dataclass
class Prepared:
    x_train: torch.Tensor  # float32, normalised; (N, D) vectors or (N, C, H, W) images
    y_train: torch.Tensor  # int64 labels in [0, num_classes)
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int  # classification: classes; regression: target dimension D_out
    input_shape: tuple[int, ...]
    meta: dict = field(default_factory=dict)  # name, source, spec, augment, classes, task, ...

    @property
    def task(self) -> str:
        """``classification`` (int64 labels) or ``regression`` (float32 targets (N, D_out))."""
        return str(self.meta.get("task", "classification"))


# Recorded in each manifest: what built the prepared tensors.
PREPARE_LIBRARIES = ("orthskip", "torch", "numpy", "scikit-learn", "torchvision")


def _stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Training-set mean/std per feature (vectors) or per channel (images), float64 → float32."""
    if x.dtype == np.uint8:
        # Exact per-channel moments from a 256-bin histogram: no float copy of the images.
        levels = np.arange(256, dtype=np.float64)
        mean, std = np.empty((x.shape[1], 1, 1)), np.empty((x.shape[1], 1, 1))
        for c in range(x.shape[1]):
            hist = np.bincount(x[:, c].ravel(), minlength=256).astype(np.float64)
            m = (hist * levels).sum() / hist.sum()
            mean[c], std[c] = m, np.sqrt((hist * (levels - m) ** 2).sum() / hist.sum())
    else:
        axes = (0,) if x.ndim == 2 else (0, *range(2, x.ndim))
        xf = x.astype(np.float64)
        mean = xf.mean(axis=axes, keepdims=True)[0]
        std = xf.std(axis=axes, keepdims=True)[0]
    std = np.where(std > 1e-8, std, 1.0)  # a constant feature stays centred, not divided by 0
    return mean.astype(np.float32), std.astype(np.float32)


def _tensors(raw: RawSplit) -> dict[str, torch.Tensor]:
    mean, std = _stats(raw.x_train)
    if raw.task == "regression":  # keep x where h is defined: identity normalisation
        mean, std = np.zeros_like(mean), np.ones_like(std)
    arrays = {
        "x_train": raw.x_train,
        "y_train": raw.y_train,
        "x_test": raw.x_test,
        "y_test": raw.y_test,
        "mean": mean,
        "std": std,
    }
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}


def _check_raw(name: str, raw: RawSplit) -> None:
    if raw.task not in ("classification", "regression"):
        raise AssertionError(f"{name}: unknown task {raw.task!r}")
    for split in ("train", "test"):
        x, y = getattr(raw, f"x_{split}"), getattr(raw, f"y_{split}")
        if x.dtype not in (np.uint8, np.float32) or x.ndim not in (2, 4):
            raise AssertionError(f"{name}: bad x_{split} {x.dtype} {x.shape}")
        if len(x) != len(y) or len(x) == 0:
            raise DatasetError(f"{name}: {split} split has {len(x)} images and {len(y)} labels")
        if raw.task == "regression":
            if y.dtype != np.float32 or y.ndim != 2 or not np.isfinite(y).all():
                raise DatasetError(f"{name}: {split} targets must be finite float32 (N, D_out)")
            continue
        if y.min() < 0 or y.max() >= len(raw.classes):
            raise DatasetError(
                f"{name}: {split} labels outside [0, {len(raw.classes)}): the source is corrupt"
            )


def prepare_dataset(
    name: str,
    spec: dict | None,
    out: Path,
    manifest: Path,
    *,
    root: Path | None = None,
    download: bool = False,
) -> None:
    """Build dataset ``name`` from ``spec`` and write ``out`` (tensors) and ``manifest`` (JSON).

    ``root``/``download`` override ``spec["root"]``/``spec["download"]`` for torchvision
    sets. The same spec gives a byte-identical ``out``. Both files are written atomically,
    the manifest last, so a manifest always describes a complete tensor file.
    """
    out, manifest = Path(out), Path(manifest)
    full = resolve_spec(name, spec)
    source = SOURCES[full["source"]]
    if source.kind == "torchvision":
        if root is not None:
            full["root"] = str(root)
        full["download"] = bool(download or full["download"])
        if full["root"] is None and full["download"]:
            full["root"] = str(out.parent / "downloads")
        if full["root"] is None:
            raise ConfigError(
                f"datasets.{name}.root: not set; {source.name} needs a directory that holds "
                "the torchvision files, or download: true where a network exists"
            )
    raw = source.build(full)
    _check_raw(name, raw)
    tensors = _tensors(raw)

    # Serialise to memory first: torch.save to a path embeds the (random, temporary) file
    # name in the zip archive, which would make the bytes differ between runs.
    buf = io.BytesIO()
    torch.save(tensors, buf)
    with atomic_path(out) as tmp:
        tmp.write_bytes(buf.getvalue())

    augment = full.get("augment")
    regression = raw.task == "regression"
    n_out = int(raw.y_train.shape[1]) if regression else len(raw.classes)
    counts = {}
    if not regression:
        counts = {
            "class_counts_train": np.bincount(raw.y_train, minlength=n_out).tolist(),
            "class_counts_test": np.bincount(raw.y_test, minlength=n_out).tolist(),
        }
    write_json(
        manifest,
        {
            "format_version": FORMAT_VERSION,
            "name": name,
            "source": source.name,
            "kind": source.kind,
            "spec": full,
            "file": out.name,
            "sha256": hashlib.sha256(buf.getvalue()).hexdigest(),
            "bytes": len(buf.getvalue()),
            "n_train": len(raw.y_train),
            "n_test": len(raw.y_test),
            "input_shape": list(raw.x_train.shape[1:]),
            "storage_dtype": str(raw.x_train.dtype),
            "task": raw.task,
            "num_classes": n_out,  # regression: the target dimension (the head's outputs)
            "output_dim": n_out,
            "classes": raw.classes,
            **counts,
            "mean": tensors["mean"].flatten().tolist(),
            "std": tensors["std"].flatten().tolist(),
            "augment": augment,
            "provenance": raw.provenance,
            "versions": library_versions(PREPARE_LIBRARIES),
        },
    )


def read_manifest(manifest: Path) -> dict[str, Any]:
    manifest = Path(manifest)
    try:
        return json.loads(manifest.read_text())
    except FileNotFoundError:
        raise DatasetError(f"dataset manifest {manifest} does not exist: {_FIX}") from None
    except (OSError, ValueError) as e:
        raise DatasetError(f"dataset manifest {manifest} is unreadable ({e}): {_FIX}") from None


def _targets(y: torch.Tensor) -> torch.Tensor:
    """Labels as int64, regression targets (stored float) as float32."""
    return y.to(torch.float32) if y.is_floating_point() else y.to(torch.int64)


# Above this size the parse-time check compares the size only (hashing 1 GiB takes seconds
# on every snakemake call); load_prepared still verifies the full sha256 before training.
HASH_MAX_BYTES = 1 << 30


def check_prepared(path: Path, manifest: Path, hash_max_bytes: int = HASH_MAX_BYTES) -> None:
    """Raise DatasetError when ``path`` no longer matches its manifest (both must exist).

    Run by the Snakefile before any job is scheduled: a truncated or replaced tensor file
    would otherwise look like an updated input, and Snakemake would delete the good
    outputs of every cell that trains on it before the first job fails on the hash.
    """
    path, manifest = Path(path), Path(manifest)
    if not (path.is_file() and manifest.is_file()):
        return
    fix = (
        f"delete {path} and {manifest} to prepare it again, or restore both with `dvc pull`"
        " (nothing under results/ was changed)"
    )
    try:
        info = json.loads(manifest.read_text())
        expected, size = str(info["sha256"]), info.get("bytes")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DatasetError(f"dataset manifest {manifest} is unreadable ({e!r}): {fix}") from None
    actual = path.stat().st_size
    if size is not None and actual != size:
        raise DatasetError(
            f"prepared dataset {path} is corrupt: {actual} bytes, its manifest {manifest} "
            f"records {size}; {fix}"
        )
    if size is not None and actual > hash_max_bytes:
        return
    digest = sha256_file(path)
    if digest != expected:
        raise DatasetError(
            f"prepared dataset {path} is corrupt: sha256 {digest} does not match {expected} "
            f"in {manifest}; {fix}"
        )


def load_prepared(path: Path, manifest: Path | None = None) -> Prepared:
    """Load a prepared dataset as float32 normalised tensors.

    With a manifest, the file's sha256 must match it (DatasetError otherwise); without
    one, only the file's structure is checked.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"prepared dataset {path} does not exist: {_FIX}")
    info = read_manifest(manifest) if manifest is not None else {}
    if info:
        digest = sha256_file(path)
        if digest != info.get("sha256"):
            raise DatasetError(
                f"prepared dataset {path} is corrupt or stale: sha256 {digest} does not match "
                f"{info.get('sha256')} in {manifest}; {_FIX}"
            )
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise DatasetError(f"prepared dataset {path} cannot be read ({e}): {_FIX}") from None
    if not isinstance(data, dict) or any(k not in data for k in _KEYS):
        raise DatasetError(f"prepared dataset {path} lacks the keys {_KEYS}: {_FIX}")

    mean, std = data["mean"], data["std"]

    def norm(x: torch.Tensor) -> torch.Tensor:
        return ((x.to(torch.float32) - mean) / std).contiguous()

    regression = data["y_train"].is_floating_point()
    task = "regression" if regression else "classification"
    if regression:
        num_classes = int(data["y_train"].shape[1])
    else:
        num_classes = int(info.get("num_classes", int(data["y_train"].max()) + 1))
    meta = {k: v for k, v in info.items() if k not in ("mean", "std")}
    meta.update(
        name=info.get("name"),
        source=info.get("source"),
        spec=info.get("spec"),
        augment=info.get("augment"),
        task=info.get("task", task),
        mean=mean.flatten().tolist(),
        std=std.flatten().tolist(),
        path=str(path),
    )
    return Prepared(
        x_train=norm(data["x_train"]),
        y_train=_targets(data["y_train"]),
        x_test=norm(data["x_test"]),
        y_test=_targets(data["y_test"]),
        num_classes=num_classes,
        input_shape=tuple(int(s) for s in data["x_train"].shape[1:]),
        meta=meta,
    )
