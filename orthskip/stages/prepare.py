"""The prepare stage: build a dataset once into one tensor file and its JSON manifest.

The format (and its reader, ``load_prepared``) is in :mod:`orthskip.data.prepared`; the
sources (synthetic sets, scikit-learn digits, torchvision image sets) in
:mod:`orthskip.data.sources`.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import torch

from orthskip.data.prepared import FORMAT_VERSION
from orthskip.data.raw import RawSplit
from orthskip.data.sources import SOURCES
from orthskip.data.spec import resolve_spec
from orthskip.errors import ConfigError, DatasetError
from orthskip.io import atomic_path, write_json
from orthskip.provenance import library_versions

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
