"""Provenance recorded with every cell: code version, library versions, device."""

from __future__ import annotations

import functools
import platform
import subprocess
from collections.abc import Iterable
from importlib import metadata

from orthskip.config.grid import REPO_ROOT

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


def library_versions(names: Iterable[str] = LIBRARIES) -> dict[str, str]:
    """Python's version and each installed distribution's (``absent`` if not installed)."""
    return dict(_versions(tuple(names)))


@functools.cache
def _versions(names: tuple[str, ...]) -> dict[str, str]:
    # once per process: each lookup scans the environment's distributions (~15 ms for
    # LIBRARIES), and a pack writes one status.json per member
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def device_name(device: object) -> str:
    import torch  # the workflow's planning imports this module (via stages.metrics)

    dev = torch.device(device)  # type: ignore[arg-type]
    if dev.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(dev)}"
    return f"cpu:{platform.machine()}"


def provenance(cfg_hash: str, device: object) -> dict[str, str]:
    import torch  # the workflow's planning imports this module (via stages.metrics)

    return {
        "config_hash": cfg_hash,
        "code_version": code_version(),
        "torch_version": torch.__version__,
        "device": device_name(device),
    }
