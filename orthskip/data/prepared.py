"""A prepared dataset (one tensor file + JSON manifest, written by the prepare stage),
checked and loaded for training.

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

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from orthskip.errors import DatasetError
from orthskip.io import sha256_file

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
