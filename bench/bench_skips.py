"""Training-step time of every skip kind relative to ``identity``, measured side by side.

One training step = zero_grad, forward, cross-entropy, backward, OptimizerBundle.step (SGD with
momentum, plus the Riemannian step of orth_manifold and the projection of procrustes). Kinds are
timed in interleaved rounds (shuffled order each round) so that load drifting on a shared machine
hits all of them alike; a ratio is the median over rounds of (kind / identity) in the same round.

``--repeats R`` runs the whole measurement in R fresh processes and pools their rounds. On a
small VM one process's ratios can be off by a few percent for its whole life (the same
convolutions measured 30 % slower in one model than in another of the same process; memory
placement is the likely cause), so one process is not enough for a 10 % goal; the per-process
medians are printed too, so the spread between processes is visible.

The row ``identity (2nd model)`` is an A/A control: a second, independently built identity model
timed like every kind. Its ratio would be 1 on a quiet machine with placement-independent
kernels; its spread is the resolution of the whole table (``--no-control`` drops it).

Default: a quick run (ResNet-20, batch 32). The issue's figures:
    PYTHONPATH=. python bench/bench_skips.py --depth 56 --batch 128 --steps 6 --repeats 8
Goal: orth_learned <= 1.10x, orth_manifold <= 1.15x (ProcResNet reports 7.6 % for its projection).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import statistics
import time

import torch
import torch.nn.functional as F

from orthskip.nn.models import build_model
from orthskip.nn.optim import build_optimizer
from orthskip.nn.skips import SKIPS

GOALS = {"orth_learned": 1.10, "orth_manifold": 1.15}
CONTROL = "identity (2nd model)"  # the A/A row: built and timed like a kind, skip = identity

# per kind: step and optimizer times (s), one entry per round
Times = dict[str, dict[str, list[float]]]


def measure(args: argparse.Namespace) -> Times:
    """One process's interleaved rounds."""
    torch.set_num_threads(args.threads)
    skip_cfg = json.loads(args.skip_options)
    device = torch.device(args.device)
    kinds = ["identity", *([CONTROL] if args.control else [])]
    kinds += [k for k in args.kinds if k != "identity"]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=gen).to(device)
    y = torch.randint(0, 10, (args.batch,), generator=gen).to(device)

    runs = {}
    for kind in kinds:
        torch.manual_seed(0)
        model = build_model(
            args.arch,
            args.depth,
            "identity" if kind == CONTROL else kind,
            (3, args.size, args.size),
            10,
            {"width": args.width},
            skip_cfg,
        ).to(device)
        bundle = build_optimizer(
            model, {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4}, skip_cfg
        )
        runs[kind] = (model, bundle)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step(kind: str) -> tuple[float, float]:
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

    for kind in kinds:
        for _ in range(args.warmup):
            step(kind)
    times: Times = {k: {"step": [], "opt": [], "params": [runs[k][0].n_params()]} for k in kinds}
    order = list(kinds)
    rng = random.Random(0)
    for _ in range(args.steps):
        rng.shuffle(order)
        for kind in order:
            total, opt = step(kind)
            times[kind]["step"].append(total)
            times[kind]["opt"].append(opt)
    return times


def ratios(runs: list[Times], kind: str, ref: str) -> list[float]:
    """Per-round kind / ref, pooled over the processes (each round pairs within its process)."""
    return [t / b for run in runs for t, b in zip(run[kind]["step"], run[ref]["step"], strict=True)]


def summary(values: list[float]) -> str:
    """Median and, in brackets, the interquartile range."""
    lo, _, hi = statistics.quantiles(values, n=4)
    return f"{statistics.median(values):.3f} [{lo:.3f}, {hi:.3f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="cifar_resnet")
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=32, help="input height = width")
    ap.add_argument("--steps", type=int, default=5, help="timed rounds per kind and process")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1, help="fresh processes, rounds pooled")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--kinds", nargs="*", default=list(SKIPS))
    ap.add_argument(
        "--no-control",
        dest="control",
        action="store_false",
        help=f"drop the A/A row '{CONTROL}'",
    )
    ap.add_argument(
        "--skip-options",
        default="{}",
        help='JSON for config["skip_options"], e.g. \'{"orth_learned": {"map": "cayley"}}\'',
    )
    args = ap.parse_args()
    if args.steps < 2 or args.repeats < 1:
        ap.error("--steps must be >= 2 and --repeats >= 1")

    if args.repeats == 1:
        runs = [measure(args)]
    else:
        # spawn, one task per child: every repeat gets a fresh interpreter and fresh allocations
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(1, maxtasksperchild=1) as pool:
            runs = pool.map(measure, [args] * args.repeats, chunksize=1)
    kinds = list(runs[0])

    print(
        f"# {args.arch}-{args.depth} width {args.width}, batch {args.batch}, "
        f"{args.size}x{args.size}, {args.device}, threads {args.threads}, "
        f"{args.steps} rounds x {args.repeats} processes, torch {torch.__version__}, "
        f"skip_options {json.loads(args.skip_options)}"
    )
    # vs linear: the same C×C application cost, so the ratio isolates the orthogonality machinery
    print(
        "| kind | params | step ms (median) | optimizer ms | vs identity [IQR] "
        "| per-process medians | vs linear [IQR] | goal |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for kind in kinds:
        step_ms = 1e3 * statistics.median(t for run in runs for t in run[kind]["step"])
        opt_ms = 1e3 * statistics.median(t for run in runs for t in run[kind]["opt"])
        if kind == "identity":
            vs_identity, per_process = "1.000", ""
        else:
            vs_identity = summary(ratios(runs, kind, "identity"))
            per_process = ", ".join(
                f"{statistics.median(ratios([run], kind, 'identity')):.3f}" for run in runs
            )
        vs_linear = ""
        if "linear" in kinds:
            vs_linear = "1.000" if kind == "linear" else summary(ratios(runs, kind, "linear"))
        goal = f"<= {GOALS[kind]:.2f}" if kind in GOALS else ""
        print(
            f"| {kind} | {runs[0][kind]['params'][0]:.0f} | {step_ms:.1f} | {opt_ms:.1f} | "
            f"{vs_identity} | {per_process} | {vs_linear} | {goal} |"
        )


if __name__ == "__main__":
    main()
