"""The hand-batched pack engine vs today's per-variant vmap packs, on the rate experiment's shape.

The rate share of the embedded default (config/config.yaml: variants ``rate_identity``,
``rate_linear``, ``rate_orth_learned``, ``rate_orth_learned_haar`` on ``diffeo2``; the blocks
act on R^2, hidden 16, batch 128, AdamW) at one depth m with S seeds, two ways in this one
process, alternating ``--rounds`` times:

* ``vmap``: one pack per variant (S members each, ``torch.func.vmap``, the path every pack
  took before the hand-batched engine), run one after another;
* ``hand``: one pack of all 4·S members across the kinds (``orthskip.training.handmlp``).

Timed are the optimizer steps alone (forward, backward, clipping/divergence checks, the
optimizer and scheduler), through the pack trainer's own ``_step`` on its own set-up, not
evaluation or checkpoints. Reported: member-block-steps per second (members × m blocks ×
steps / seconds), their ratio, and GFLOP/s (3 × the forward's 2·B·(2·h·d + d²) per
member-block) beside the float32 matmul ceiling measured here (one 2048² product, same
thread count).

Usage: python bench/bench_engine.py [--quick] [--depth 256] [--seeds 5] [--steps N] [--rounds R]
Ends with ``rate speedup X.XX`` (hand over vmap).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from orthskip.config.grid import CellConfig, cell_config, cells, prepare_config
from orthskip.stages.prepare import prepare_dataset
from orthskip.training import stacked

ROOT = Path(__file__).resolve().parent.parent
RATE = ("rate_identity", "rate_linear", "rate_orth_learned", "rate_orth_learned_haar")


def rate_members(depth: int, seeds: int) -> list[CellConfig]:
    """The default's rate cells at one depth, every variant and seed (its own settings)."""
    default = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg = {
        "datasets": {"diffeo2": default["datasets"]["diffeo2"]},
        "variants": {v: default["variants"][v] for v in RATE},
        "grid": [
            {
                "arch": "mlp",
                "datasets": ["diffeo2"],
                "variants": list(RATE),
                "depths": [depth],
                "seeds": list(range(seeds)),
            }
        ],
        "train": {"device": "cpu", "threads": default["train"].get("threads", 1)},
    }
    prepared = prepare_config(cfg)
    return [cell_config(prepared, c) for c in cells(prepared)]


def time_steps(
    cfgs: list[CellConfig], data: tuple[Path, Path], out: Path, engine: str, steps: int
) -> float:
    """Seconds per optimizer step of one pack (median over ``steps`` after one warm-up)."""
    outs = [out / c.cell.path for c in cfgs]
    pack = stacked._set_up(cfgs, *data, outs, engine)
    assert pack is not None
    perms, sums = stacked._epoch_position(pack)
    per_epoch = pack.spec.steps_per_epoch
    times = []
    for s in range(steps + 1):
        t0 = time.perf_counter()
        n = stacked._step(pack, perms, 1, s % per_epoch, sums, t0)
        if s:
            times.append(time.perf_counter() - t0)
        assert n is not None, "every member diverged"
    return statistics.median(times)


def matmul_ceiling(size: int = 2048, reps: int = 5) -> float:
    """GFLOP/s of one large float32 matmul (the machine's ceiling at this thread count)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(reps))
    return 2 * size**3 / best / 1e9


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def flops_per_member_block(cfg: CellConfig, d: int = 2) -> float:
    """Forward + backward ≈ 3 × the forward's 2·B·(2·h·d + d²) (two branch linears, the skip)."""
    h, b = int(cfg.model["hidden"]), int(cfg.train["batch_size"])
    return 3 * 2 * b * (2 * h * d + d * d)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps and rounds (< 2 min)")
    ap.add_argument("--depth", type=int, default=256)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=None)
    args = ap.parse_args()
    steps = args.steps or (3 if args.quick else 12)
    rounds = args.rounds or (1 if args.quick else 3)
    cfgs = rate_members(args.depth, args.seeds)
    by_variant: dict[str, list[CellConfig]] = {}
    for c in cfgs:
        by_variant.setdefault(c.cell.variant, []).append(c)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = (root / "d.pt", root / "d.json")
        prepare_dataset("diffeo2", dict(cfgs[0].dataset), *data)
        vmap_s, hand_s = [], []
        for r in range(rounds):
            vmap_s.append(sum(time_steps(g, data, root / f"v{r}", "vmap", steps)
                              for g in by_variant.values()))  # fmt: skip
            hand_s.append(time_steps(cfgs, data, root / f"h{r}", "hand", steps))
        threads = torch.get_num_threads()
        ceiling = matmul_ceiling()
    work = len(cfgs) * args.depth  # member-blocks per step of all the packs
    flop = flops_per_member_block(cfgs[0])
    print(f"rate shape: m = {args.depth}, {len(by_variant)} variants x {args.seeds} seeds, "
          f"{steps} steps x {rounds} rounds, {threads} thread(s)\n")  # fmt: skip
    print("| engine | step ms | member-block-steps/s | us per member-block | GFLOP/s |")
    print("|---|---|---|---|---|")
    rows = (
        (f"vmap, {len(by_variant)} packs of {args.seeds}", statistics.median(vmap_s)),
        (f"hand, 1 pack of {len(cfgs)}", statistics.median(hand_s)),
    )
    for name, sec in rows:
        rate = work / sec
        print(f"| {name} | {sec * 1e3:.1f} | {rate:.0f} | {1e6 / rate:.2f} "
              f"| {rate * flop / 1e9:.3f} |")  # fmt: skip
    print()
    print(f"float32 matmul ceiling (2048^2, {threads} thread(s)): {ceiling:.1f} GFLOP/s; "
          f"{flop / 1e3:.1f} kFLOP per member-block-step")  # fmt: skip
    print(f"rate speedup {statistics.median(vmap_s) / statistics.median(hand_s):.2f}")


if __name__ == "__main__":
    main()
