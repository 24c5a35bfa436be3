"""Training-step time of orth_learned and orth_manifold vs identity on a ViT and a ResNet-50.

One training step = zero_grad, forward, cross-entropy, backward, OptimizerBundle.step (SGD with
momentum, plus orth_manifold's Riemannian step). The kinds of one architecture are timed in
interleaved rounds (shuffled order each round), so load drifting on a shared machine hits all of
them alike; a ratio is the median over rounds of (kind / identity) in the same round, with the
min-max over rounds beside it.

Default (the issue's sizes), CPU, one thread:
    PYTHONPATH=. python bench/bench_arch.py --archs vit --steps 3 --rounds 5
    PYTHONPATH=. python bench/bench_arch.py --archs resnet --steps 1 --rounds 1 --warmup 1
- vit: width 192, 6 blocks (12 residual sublayers), 3 heads, patch 4, batch 64, 32×32 input;
- resnet: resnet-50 (bottlenecks, width 64), CIFAR stem, batch 32, 32×32 input. Its skips are
  C × C up to C = 2048, whose maps cost O(C³) per step whatever the batch: an orth_learned step
  takes minutes on one CPU thread, so time it with one step per kind (about 5 minutes in all).
``--device cuda`` times on a GPU (synchronised); ``--quick`` shrinks everything for a smoke test.
"opt ms" is the optimizer step alone (orth_manifold's Riemannian step is there).
Goal in issue 18: orth_learned <= 1.10x on both; README "Benchmarks" gives the FLOP floor a
dense skip sets (about 1.16x on this ViT, 1.9x on resnet-50).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch
import torch.nn.functional as F

from orthskip.nn.models import build_model
from orthskip.nn.optim import build_optimizer

KINDS = ("identity", "orth_learned", "orth_manifold")
GOAL = {"orth_learned": 1.10}


def setups(quick: bool) -> dict[str, dict]:
    """arch → (depth, model options, batch, input size)."""
    if quick:
        return {
            "vit": {"depth": 1, "model": {"width": 8, "heads": 2, "patch": 4}, "batch": 4},
            "resnet": {"depth": 50, "model": {"width": 2, "stem": "cifar"}, "batch": 2},
        }
    return {
        "vit": {"depth": 6, "model": {"width": 192, "heads": 3, "patch": 4}, "batch": 64},
        "resnet": {"depth": 50, "model": {"width": 64, "stem": "cifar"}, "batch": 32},
    }


def time_arch(arch: str, setup: dict, args: argparse.Namespace) -> dict[str, list[float]]:
    device = torch.device(args.device)
    size = 8 if args.quick else 32
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(setup["batch"], 3, size, size, generator=gen).to(device)
    y = torch.randint(0, 10, (setup["batch"],), generator=gen).to(device)
    runs = {}
    for kind in KINDS:
        torch.manual_seed(0)
        model = build_model(arch, setup["depth"], kind, (3, size, size), 10, setup["model"], {})
        model = model.to(device).train()
        runs[kind] = (model, build_optimizer(model, {"name": "sgd", "lr": 0.01}, {}))

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step(kind: str) -> tuple[float, float]:
        """(whole step, optimizer step) in seconds."""
        model, bundle = runs[kind]
        sync()
        t0 = time.perf_counter()
        bundle.zero_grad()
        F.cross_entropy(model(x), y).backward()
        sync()
        t1 = time.perf_counter()
        bundle.step()
        sync()
        t2 = time.perf_counter()
        return t2 - t0, t2 - t1

    for kind in KINDS:  # warm-up: allocator, oneDNN / cuDNN kernel choice
        for _ in range(args.warmup):
            step(kind)
    times: dict[str, list[float]] = {k: [] for k in KINDS}
    opt: dict[str, list[float]] = {k: [] for k in KINDS}
    rng = random.Random(0)
    for _ in range(args.rounds):
        order = list(KINDS)
        rng.shuffle(order)
        for kind in order:
            steps = [step(kind) for _ in range(args.steps)]
            times[kind].append(statistics.median(t for t, _ in steps))
            opt[kind].append(statistics.median(o for _, o in steps))
    return times, opt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=3, help="steps per kind per round (median)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="toy sizes (smoke test)")
    p.add_argument("--archs", nargs="+", default=["vit", "resnet"], choices=["vit", "resnet"])
    args = p.parse_args()
    if args.steps < 1 or args.rounds < 1 or args.warmup < 0:
        p.error("--steps and --rounds must be >= 1, --warmup >= 0")
    torch.set_num_threads(args.threads)
    print(f"device {args.device}, {args.threads} thread(s), torch {torch.__version__}")
    cols = ["arch", "setting", "kind", "step ms (median)", "opt ms", "ratio vs identity"]
    print("| " + " | ".join([*cols, "min-max", "goal"]) + " |")
    print("|---|---|---|---|---|---|---|---|")
    for arch, setup in setups(args.quick).items():
        if arch not in args.archs:
            continue
        times, opt = time_arch(arch, setup, args)
        setting = f"depth {setup['depth']}, {setup['model']}, batch {setup['batch']}"
        for kind in KINDS:
            r = [t / ref for t, ref in zip(times[kind], times["identity"], strict=True)]
            ms = 1e3 * statistics.median(times[kind])
            opt_ms = 1e3 * statistics.median(opt[kind])
            goal = f"<= {GOAL[kind]:.2f}" if kind in GOAL else ""
            print(
                f"| {arch} | {setting} | {kind} | {ms:.1f} | {opt_ms:.1f} | "
                f"{statistics.median(r):.3f} | {min(r):.3f}-{max(r):.3f} | {goal} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
