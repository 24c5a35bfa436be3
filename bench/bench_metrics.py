"""Benchmarks of orthskip.analysis.metrics, as ratios measured side by side in one run.

1. Convolution-operator singular values: FFT/polyphase (orthskip) vs the SVD of the dense
   unrolled operator — speed ratio (goal ≥ 100×) and the largest relative error.
2. extract_metrics time vs training time: a cell of the embedded default (residual MLP,
   width 16, 512 samples, batch 64, 15 epochs, 3 snapshots, probe 256) and CIFAR ResNet-56
   shapes (probe 256; a CIFAR epoch = 391 steps of batch 128, extrapolated from a few steps).
   Goal: extraction at all snapshots ≤ 10 % of the cell's training time.

Uses orthskip.nn.models when it is importable, else the toy models of tests/toy_models.py with the
same layer shapes. Run from the repository root:

    python bench/bench_metrics.py            # default sizes, < 2 minutes
    python bench/bench_metrics.py --big      # more operator sizes and ResNet-110
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orthskip.analysis.metrics import conv_operator_svals, extract_metrics


def timed(fn: Callable[[], object], repeat: int = 1) -> float:
    """Median wall time of `repeat` calls (after one warm-up call when repeat > 1)."""
    if repeat > 1:
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# --- 1. FFT operator SVD vs dense SVD --------------------------------------------------------


def dense_operator(conv: nn.Conv2d, n: int) -> torch.Tensor:
    d_in = conv.in_channels * n * n
    basis = torch.eye(d_in, dtype=torch.float64).reshape(d_in, conv.in_channels, n, n)
    with torch.no_grad():
        return conv(basis).reshape(d_in, -1).T


def bench_operator(c: int, n: int, stride: int) -> dict[str, object]:
    torch.manual_seed(0)
    conv = nn.Conv2d(c, c, 3, stride=stride, padding=1, bias=False, padding_mode="circular")
    conv = conv.double()
    dense_vals: list[torch.Tensor] = []
    fft_vals: list[torch.Tensor] = []

    def dense() -> None:
        dense_vals[:] = [torch.linalg.svdvals(dense_operator(conv, n))]

    def fft() -> None:
        fft_vals[:] = [conv_operator_svals(conv.weight, (n, n), stride, 1, 1, 1, "circular")[0]]

    t_dense = timed(dense)
    t_fft = timed(fft, repeat=20)
    ref = dense_vals[0]
    got = fft_vals[0].sort(descending=True).values
    err = float((got - ref).abs().max() / ref.max())
    return {
        "case": f"c={c} n={n} stride={stride}",
        "dense_s": t_dense,
        "fft_s": t_fft,
        "speedup": t_dense / t_fft,
        "max_rel_err": err,
    }


# --- 2. extraction vs training ---------------------------------------------------------------


def build(
    arch: str, depth: int, input_shape: tuple[int, ...], classes: int
) -> tuple[nn.Module, str]:
    try:
        from orthskip.nn.models import build_model  # the real architectures, once merged

        cfg = {"mlp": {"width": 16}}.get(arch, {})
        model = build_model(arch, depth, "orth_learned", input_shape, classes, cfg, {})
        return model, "orthskip.nn.models"
    except ImportError:
        from tests.toy_models import toy_mlp, toy_resnet

        if arch == "mlp":
            return toy_mlp(input_shape[0], 16, depth, classes), "toy (same shapes)"
        return toy_resnet(blocks_per_stage=(depth - 2) // 6, classes=classes), "toy (same shapes)"


def train_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    model.train()
    for i in range(0, len(x), batch):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[i : i + batch]), y[i : i + batch]).backward()
        opt.step()


def bench_cell(
    arch: str,
    depth: int,
    input_shape: tuple[int, ...],
    classes: int,
    *,
    timed_samples: int,
    epoch_samples: int,
    batch: int,
    epochs: int,
    snapshots: int,
    probe: int,
) -> dict[str, object]:
    torch.manual_seed(0)
    model, source = build(arch, depth, input_shape, classes)
    x = torch.randn(timed_samples, *input_shape)
    y = torch.randint(0, classes, (timed_samples,))
    px, py = torch.randn(probe, *input_shape), torch.randint(0, classes, (probe,))
    train_steps(model, x[:batch], y[:batch], batch)  # warm-up
    extract_metrics(model, px[:8], py[:8])  # warm-up (one-time torch.func set-up)
    t_steps = timed(lambda: train_steps(model, x, y, batch))
    t_epoch = t_steps * epoch_samples / timed_samples
    t_extract = timed(lambda: extract_metrics(model, px, py))
    return {
        "cell": f"{arch}-{depth}",
        "model": source,
        "epoch_s": t_epoch,
        "extract_s": t_extract,
        "extract/epoch": t_extract / t_epoch,
        "cell_ratio": snapshots * t_extract / (epochs * t_epoch),
    }


def table(rows: list[dict[str, object]]) -> str:
    cols = list(rows[0])
    fmt = [
        [f"{v:.3g}" if isinstance(v, float) else str(v) for v in (r[c] for c in cols)] for r in rows
    ]
    widths = [max(len(c), *(len(f[i]) for f in fmt)) for i, c in enumerate(cols)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines.append("-|-".join("-" * w for w in widths))
    lines += [" | ".join(v.ljust(w) for v, w in zip(f, widths, strict=True)) for f in fmt]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big", action="store_true", help="larger operators and ResNet-110")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads for both sides (default 1)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    cases = [(16, 16, 1), (16, 16, 2)] + ([(8, 24, 1), (16, 8, 2)] if args.big else [])
    print("\n## FFT operator SVD vs dense SVD (3×3 kernel, circular padding, float64)\n")
    print(table([bench_operator(*c) for c in cases]))

    print("\n## extract_metrics vs training (cell_ratio = snapshots·extract / epochs·epoch)\n")
    rows = [
        bench_cell(
            "mlp",
            d,
            (2,),
            2,
            timed_samples=512,
            epoch_samples=512,
            batch=64,
            epochs=15,
            snapshots=3,
            probe=256,
        )
        for d in (2, 8, 32)
    ]
    for depth in (56, 110) if args.big else (56,):
        rows.append(
            bench_cell(
                "cifar_resnet",
                depth,
                (3, 32, 32),
                10,
                timed_samples=128,
                epoch_samples=50_000,
                batch=128,
                epochs=160,
                snapshots=5,
                probe=256,
            )
        )
    print(table(rows))


if __name__ == "__main__":
    main()
