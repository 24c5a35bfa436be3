"""Per-job cluster resources for the train rule: runtime, memory, GPUs and grouping.

The Snakemake rules call these as resource functions, so the numbers live in the
workflow (the same on every cluster) while site details (partition, account) live in
the ``slurm/`` profile. The estimates are deliberately generous: a job that hits its
time limit is retried by Snakemake (``retries`` in the profile) with ``attempt`` + 1,
which doubles the limit, and training resumes from ``last.pt``.

``dataset`` below is a dataset *source* (``config["datasets"][name]["source"]``, e.g.
``cifar10``). What a source is (its kind, its default training-set size, its input shape)
comes from its registry entry (``orthskip.data.spec.SOURCES``), and what an architecture
costs per layer from its own (``orthskip.nn.arch_specs.ARCH_SPECS``, torch-free); unknown
sources are treated like CIFAR and unknown architectures like the ResNets (the conservative
choices).
"""

from __future__ import annotations

import math

from orthskip.data.spec import SOURCES, data_shape, train_size
from orthskip.nn.arch_specs import ARCH_SPECS, Cost

#: Kinds of source (``orthskip.data.spec.Source.kind``) whose cells train in seconds to
#: minutes, generated sets and scikit-learn's digits: they run on the CPU and are packed
#: several to one cluster job (Snakemake group ``SHORT_GROUP``).
SHORT_KINDS = frozenset({"synthetic", "sklearn"})
SHORT_GROUP = "short_cells"

# An unknown source: a CIFAR-sized training set of CIFAR images
_UNKNOWN_N_TRAIN = 50_000
_UNKNOWN_SAMPLE = 3 * 32 * 32

# An unknown architecture: as slow per layer as the ImageNet-style ResNets; the cost of a
# registered one is its registry entry's (orthskip.nn.arch_specs.ArchSpec.cost)
_UNKNOWN_COST = Cost(3.0e-5)

SAFETY = 2.0  # measured speed varies by GPU model, I/O and node load
OVERHEAD_MIN = 10  # start-up, dataset load, metric extraction at snapshots
MIN_MINUTES = 15
MAX_MINUTES = 7 * 24 * 60


def is_short(dataset: str) -> bool:
    """True for sources whose cells are quick (generated sets, digits: SHORT_KINDS)."""
    return dataset in SOURCES and SOURCES[dataset].kind in SHORT_KINDS


def train_group(dataset: str) -> str | None:
    """Snakemake ``group:`` for a train job: short cells share ``SHORT_GROUP``."""
    return SHORT_GROUP if is_short(dataset) else None


def train_gpus(dataset: str) -> int:
    """GPUs for one train job: none for short cells (the CPU is as fast), else one."""
    return 0 if is_short(dataset) else 1


def _n_train(dataset: str, n_train: int | None) -> int:
    """``n_train`` where the caller knows it (``orthskip.data.spec.train_size`` of the
    dataset's spec), else the source's default."""
    if n_train is not None:
        return int(n_train)
    return train_size(dataset, None) if dataset in SOURCES else _UNKNOWN_N_TRAIN


def _sample_size(dataset: str) -> int:
    """Numbers per input example of a source (an image's C·H·W)."""
    if dataset not in SOURCES:
        return _UNKNOWN_SAMPLE
    return math.prod(data_shape(dataset, None).input_shape)


def _cost(arch: str) -> Cost:
    return ARCH_SPECS[arch].cost if arch in ARCH_SPECS else _UNKNOWN_COST


def train_runtime_minutes(
    dataset: str,
    arch: str,
    depth: int,
    epochs: int,
    *,
    attempt: int = 1,
    n_train: int | None = None,
    scale: float = 1.0,
) -> int:
    """Wall-clock limit (minutes) for training one cell, doubled on every retry.

    ``(epochs · n_train · depth · sec_per_sample_layer · SAFETY) + OVERHEAD_MIN`` (the
    architecture's ``Cost``),
    times ``scale`` (a site factor for slower or faster GPUs), rounded up to 5 minutes,
    at least ``MIN_MINUTES``; then doubled per retry, at most ``MAX_MINUTES``.
    """
    per_epoch_s = _n_train(dataset, n_train) * depth * _cost(arch).sec_per_sample_layer
    minutes = (epochs * per_epoch_s * SAFETY / 60 + OVERHEAD_MIN) * scale
    minutes = max(MIN_MINUTES, 5 * math.ceil(minutes / 5))
    return int(min(MAX_MINUTES, minutes * 2 ** max(0, attempt - 1)))


def train_mem_mb(dataset: str, arch: str, depth: int, *, n_train: int | None = None) -> int:
    """Host memory (MB) for one train job.

    The float32 training set is held in memory (and copied to the GPU), plus about
    3 GB for the Python/torch/CUDA runtime, plus a little per layer for snapshots and
    optimizer state; short CPU cells need far less. Rounded up to 1000 MB.
    """
    if is_short(dataset):
        return 2000
    sample_bytes = _sample_size(dataset) * 4
    data_mb = 2.2 * _n_train(dataset, n_train) * sample_bytes / 1e6  # train + test + copy
    mb = 3000 + data_mb + _cost(arch).mem_mb_per_layer * depth
    return int(1000 * math.ceil(mb / 1000))
