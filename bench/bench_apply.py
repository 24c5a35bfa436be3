"""Applying a C×C skip matrix to (N, C, H, W) activations: batched GEMM vs 1×1 convolution.

Times forward + backward (gradients of x, the matrix and the residual input) of
``S(x) + F(x)`` with both code paths of ``orthskip.nn.skips.apply_matrix``, interleaved in rounds
in one process, and prints the ratio gemm / conv per shape (< 1: the GEMM path is faster).
For scale it also times the identity residual x + F(x) and the GEMM path with a frozen matrix. The
shapes are those of CIFAR ResNet stages at widths 8 and 16 and of the 8×8 digits default.
``GEMM_MAX_CHANNELS`` in orthskip/nn/skips/base.py is set from this table.

    PYTHONPATH=. python bench/bench_apply.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from orthskip.nn.skips.base import GEMM_MAX_CHANNELS, apply_channels_conv, apply_channels_gemm

SHAPES = [  # (batch, channels, spatial size)
    (128, 8, 32),
    (128, 16, 32),
    (128, 32, 16),
    (128, 64, 8),
    (64, 8, 8),
    (64, 16, 4),
    (64, 32, 2),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# torch {torch.__version__}, threads {args.threads}, {args.rounds} rounds")
    print(f"# GEMM_MAX_CHANNELS = {GEMM_MAX_CHANNELS}")
    # add: the identity residual, for scale; gemm_frozen: no gradient to m (orth_fixed), so
    # gemm - gemm_frozen is what learning the matrix costs
    print("| batch | C | H=W | add ms | gemm, m frozen ms | conv ms | gemm ms | gemm / conv |")
    print("|---|---|---|---|---|---|---|---|")
    for n, c, size in SHAPES:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(n, c, size, size, generator=gen, requires_grad=True)
        add = torch.randn(n, c, size, size, generator=gen, requires_grad=True)
        m = torch.randn(c, c, generator=gen, requires_grad=True)
        g = torch.randn(n, c, size, size, generator=gen)
        paths = {
            "add": lambda x, m, add: x + add,
            "gemm_frozen": lambda x, m, add: apply_channels_gemm(x, m.detach(), add),
            "conv": apply_channels_conv,
            "gemm": apply_channels_gemm,
        }
        times: dict[str, list[float]] = {k: [] for k in paths}
        for r in range(args.rounds + 2):
            for name, fn in paths.items() if r % 2 else reversed(paths.items()):
                t0 = time.perf_counter()
                fn(x, m, add).backward(g)
                if r >= 2:  # the first two rounds warm up
                    times[name].append(time.perf_counter() - t0)
        ratio = statistics.median(
            gm / cv for gm, cv in zip(times["gemm"], times["conv"], strict=True)
        )
        ms = " | ".join(f"{1e3 * statistics.median(times[k]):.2f}" for k in paths)
        print(f"| {n} | {c} | {size} | {ms} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
