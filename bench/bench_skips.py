"""Training-step time of every skip kind relative to ``identity``, measured side by side.

One training step = zero_grad, forward, cross-entropy, backward, OptimizerBundle.step (SGD with
momentum, plus the Riemannian step of orth_manifold and the projection of procrustes). Kinds are
timed in interleaved rounds (shuffled order each round) so that load drifting on a shared machine
hits all of them alike; the ratio column is the median over rounds of (kind / identity) in the
same round.

Default: a quick run (ResNet-20, batch 32). The issue's figures:
    PYTHONPATH=. python bench/bench_skips.py --depth 56 --batch 128 --steps 15
Goal: orth_learned <= 1.10x, orth_manifold <= 1.15x (ProcResNet reports 7.6 % for its projection).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

import torch
import torch.nn.functional as F

from orthskip.models import build_model
from orthskip.optim import build_optimizer
from orthskip.skips import SKIPS

GOALS = {"orth_learned": 1.10, "orth_manifold": 1.15}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="cifar_resnet")
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=32, help="input height = width")
    ap.add_argument("--steps", type=int, default=5, help="timed rounds per kind")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--kinds", nargs="*", default=list(SKIPS))
    ap.add_argument(
        "--skip-options",
        default="{}",
        help='JSON for config["skip_options"], e.g. \'{"orth_learned": {"map": "cayley"}}\'',
    )
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    skip_cfg = json.loads(args.skip_options)
    device = torch.device(args.device)
    kinds = ["identity", *[k for k in args.kinds if k != "identity"]]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=gen).to(device)
    y = torch.randint(0, 10, (args.batch,), generator=gen).to(device)

    runs = {}
    for kind in kinds:
        torch.manual_seed(0)
        model = build_model(
            args.arch,
            args.depth,
            kind,
            (3, args.size, args.size),
            10,
            {"width": args.width},
            skip_cfg,
        ).to(device)
        bundle = build_optimizer(
            model, {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4}, skip_cfg
        )
        runs[kind] = (model, bundle)

    def step(kind: str) -> tuple[float, float]:
        model, bundle = runs[kind]
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        bundle.zero_grad()
        F.cross_entropy(model(x), y).backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t1 = time.perf_counter()
        bundle.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        return t2 - t0, t2 - t1

    for kind in kinds:
        for _ in range(args.warmup):
            step(kind)
    times: dict[str, list[float]] = {k: [] for k in kinds}
    opt_times: dict[str, list[float]] = {k: [] for k in kinds}
    order = list(kinds)
    rng = random.Random(0)
    for _ in range(args.steps):
        rng.shuffle(order)
        for kind in order:
            total, opt = step(kind)
            times[kind].append(total)
            opt_times[kind].append(opt)

    print(
        f"# {args.arch}-{args.depth} width {args.width}, batch {args.batch}, "
        f"{args.size}x{args.size}, {args.device}, threads {args.threads}, "
        f"{args.steps} rounds, torch {torch.__version__}, skip_options {skip_cfg}"
    )
    # vs linear: the same C×C application cost, so the ratio isolates the orthogonality machinery
    print(
        "| kind | params | step ms (median) | optimizer ms | vs identity [IQR] | vs linear [IQR] "
        "| goal |"
    )
    print("|---|---|---|---|---|---|---|")

    def ratio(kind: str, ref: str) -> str:
        """Median of the per-round ratios and, in brackets, their interquartile range."""
        if ref not in times:
            return ""
        ratios = [t / b for t, b in zip(times[kind], times[ref], strict=True)]
        if kind == ref:
            return "1.000"
        lo, _, hi = statistics.quantiles(ratios, n=4)
        return f"{statistics.median(ratios):.3f} [{lo:.3f}, {hi:.3f}]"

    for kind in kinds:
        goal = f"<= {GOALS[kind]:.2f}" if kind in GOALS else ""
        n_params = runs[kind][0].n_params()
        print(
            f"| {kind} | {n_params} | {1e3 * statistics.median(times[kind]):.1f} | "
            f"{1e3 * statistics.median(opt_times[kind]):.1f} | {ratio(kind, 'identity')} | "
            f"{ratio(kind, 'linear')} | {goal} |"
        )


if __name__ == "__main__":
    main()
