"""Cost of orth_learned's orthogonal maps: all the Q's of one model, forward and backward.

Builds the model once per map (``matrix_exp``: the eigendecomposition exponential of
``orthskip.nn.orth.expm_skew``; ``cayley``), moves every parameter X off 0 so that A is a generic
skew matrix, and times Q = base · map(A(X)) for every skip plus the backward of a random linear
function of the Q's, in interleaved rounds in one process. ``grouped``: batched per shape, as
the model's forward computes them (``orthskip.nn.skips.grouped_orthogonal_maps``); ``separate``:
one skip at a time. This is the per-step cost that orth_learned adds to ``linear`` whatever the
batch size: compare it with a training step from bench_skips.py. (Here, with warm caches, the
two ways cost about the same; inside a training step the grouped one is cheaper, because the
separate maps each run between large convolutions.)

    PYTHONPATH=. python bench/bench_maps.py --depth 56
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable

import torch

from orthskip.nn.models import build_model
from orthskip.nn.skips import OrthLearnedSkip, grouped_orthogonal_maps

MAPS = ("matrix_exp", "cayley")


def q_pass(
    depth: int, arch: str, width: int, orthogonal_map: str, grouped: bool
) -> tuple[int, Callable[[], None]]:
    """(number of skips, a function running one forward + backward over all their Q's)."""
    torch.manual_seed(0)
    model = build_model(
        arch,
        depth,
        "orth_learned",
        (3, 32, 32),
        10,
        {"width": width},
        {"orth_learned": {"map": orthogonal_map}},
    )
    skips = [m for m in model.modules() if isinstance(m, OrthLearnedSkip)]
    with torch.no_grad():
        for p in (p for s in skips for p in s.parameters()):  # X = 0 is Q = base
            p.add_(0.01 * torch.randn_like(p))
    weights = [torch.randn_like(s.Q) for s in skips]

    def run() -> None:
        with grouped_orthogonal_maps(model) if grouped else contextlib.nullcontext():
            total = sum((s.Q * w).sum() for s, w in zip(skips, weights, strict=True))
        total.backward()

    return len(skips), run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="cifar_resnet")
    ap.add_argument("--depth", type=int, default=56)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    variants = [(m, how) for m in MAPS for how in ("grouped", "separate")]
    passes = {
        (m, how): q_pass(args.depth, args.arch, args.width, m, how == "grouped")
        for m, how in variants
    }
    times: dict[tuple[str, str], list[float]] = {v: [] for v in variants}
    for r in range(args.rounds + 3):
        for v in variants if r % 2 else reversed(variants):
            t0 = time.perf_counter()
            passes[v][1]()
            if r >= 3:  # the first three rounds warm up
                times[v].append(time.perf_counter() - t0)
    print(
        f"# {args.arch}-{args.depth} width {args.width}, threads {args.threads}, "
        f"{args.rounds} rounds, torch {torch.__version__}"
    )
    print("| map | computed | skips | ms per step (median) | min ms |")
    print("|---|---|---|---|---|")
    for v in variants:
        med, low = 1e3 * statistics.median(times[v]), 1e3 * min(times[v])
        print(f"| {v[0]} | {v[1]} | {passes[v][0]} | {med:.2f} | {low:.2f} |")


if __name__ == "__main__":
    main()
