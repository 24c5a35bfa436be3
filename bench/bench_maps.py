"""Cost of orth_learned's orthogonal maps: all the Q's of one model, forward and backward.

Builds the model once per map (``matrix_exp``: the eigendecomposition exponential of
``orthskip.orth.expm_skew``; ``cayley``), moves every parameter X off 0 so that A is a generic
skew matrix, and times Q = base · map(A(X)) for every skip plus the backward of a random linear
function of the Q's, in interleaved rounds in one process. This is the per-step cost that
orth_learned adds to ``linear`` whatever the batch size: compare it with a training step from
bench_skips.py.

    PYTHONPATH=. python bench/bench_maps.py --depth 56
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from orthskip.models import build_model
from orthskip.skips import OrthLearnedSkip

MAPS = ("matrix_exp", "cayley")


def q_pass(depth: int, arch: str, width: int, orthogonal_map: str) -> tuple[int, Callable]:
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
        sum((s.Q * w).sum() for s, w in zip(skips, weights, strict=True)).backward()

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
    passes = {m: q_pass(args.depth, args.arch, args.width, m) for m in MAPS}
    times: dict[str, list[float]] = {m: [] for m in MAPS}
    for r in range(args.rounds + 3):
        for m in MAPS if r % 2 else reversed(MAPS):
            t0 = time.perf_counter()
            passes[m][1]()
            if r >= 3:  # the first three rounds warm up
                times[m].append(time.perf_counter() - t0)
    print(
        f"# {args.arch}-{args.depth} width {args.width}, threads {args.threads}, "
        f"{args.rounds} rounds, torch {torch.__version__}"
    )
    print("| map | skips | ms per step (median) | min ms |")
    print("|---|---|---|---|")
    for m in MAPS:
        med, low = 1e3 * statistics.median(times[m]), 1e3 * min(times[m])
        print(f"| {m} | {passes[m][0]} | {med:.2f} | {low:.2f} |")


if __name__ == "__main__":
    main()
