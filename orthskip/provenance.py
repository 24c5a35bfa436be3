"""Provenance recorded with every cell: code version, library versions, device."""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata

from orthskip.config import REPO_ROOT

LIBRARIES = ("torch", "torchvision", "numpy", "pandas", "pyarrow", "scikit-learn", "snakemake")


@functools.cache
def code_version() -> str:
    """``git describe`` of the checkout (with ``-dirty``), or the package version."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "orthskip-" + metadata.version("orthskip")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def device_name(device: object) -> str:
    import torch

    dev = torch.device(device)  # type: ignore[arg-type]
    if dev.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(dev)}"
    return f"cpu:{platform.machine()}"


def provenance(cfg_hash: str, device: object) -> dict[str, str]:
    import torch

    return {
        "config_hash": cfg_hash,
        "code_version": code_version(),
        "torch_version": torch.__version__,
        "device": device_name(device),
    }


def source_hash(*parts: str) -> str:
    """Hash of the library sources a stage depends on (``"train"`` → orthskip/train.py or
    orthskip/train/**.py). Rules pass it as a param so that a code change reruns them."""
    import hashlib

    pkg = REPO_ROOT / "orthskip"
    digest = hashlib.sha256()
    for part in sorted(parts):
        files = sorted((pkg / part).rglob("*.py")) if (pkg / part).is_dir() else []
        files += [pkg / f"{part}.py"] if (pkg / f"{part}.py").is_file() else []
        for f in files:
            digest.update(str(f.relative_to(pkg)).encode())
            digest.update(f.read_bytes())
    return digest.hexdigest()[:16]
