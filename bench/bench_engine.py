"""The hand-batched pack engine vs today's per-variant vmap packs, and the vmap pack vs solo.

Cases (``--cases``), each two ways in this one process, the two sides alternating
``--rounds`` times:

* ``rate``: the rate share of the embedded default (config/config.yaml: variants
  ``rate_identity``, ``rate_linear``, ``rate_orth_learned``, ``rate_orth_learned_haar`` on
  ``diffeo2``; the blocks act on R^2, hidden 16, batch 128, AdamW) at one depth m with S
  seeds: ``vmap``, one pack per variant (S members each, ``torch.func.vmap``, the path every
  pack took before the hand-batched engine), run one after another, against ``hand``, one
  pack of all 4·S members across the kinds (``orthskip.training.handmlp``);
* ``circles``: the default's circles recipe (mlp, width 16, depth 32, batch norm, SGD;
  variants identity, none, linear, orth_fixed, orth_learned, orth_learned_haar), S seeds
  each, the same two ways;
* ``resnet``: cifar_resnet-20, width 16, on fake CIFAR-shaped (3×32×32) data with the cifar
  augmentation (bench_pack's case; ``--resnet-skip``, default orth_learned): it is not
  hand-batched, so one vmap pack of S seeds against the S members trained one after another
  (each a pack of one on its own module, as ``vectorise: false`` trains them);
* ``vit``: a small ViT (6 blocks, width 64, 2 heads, patch 4: 64 tokens) on the same fake
  data and skip kind, the same two ways.

Timed are the optimizer steps alone (batch, augmentation, forward, backward,
clipping/divergence checks, the optimizer and scheduler), through each trainer's own
``_step`` on its own set-up, not evaluation or checkpoints. Reported: member-block-steps per
second (members × blocks × steps / seconds), their ratio, and GFLOP/s beside the float32
matmul ceiling measured here (one 2048² product, same thread count). FLOP per member-block:
for rate, 3 × the forward's 2·B·(2·h·d + d²); for the others, the matmul and
convolution FLOP that ``torch.utils.flop_counter`` counts in one member's forward and
backward on one batch, over its number of blocks.

Usage: python bench/bench_engine.py [--quick] [--cases rate,circles,resnet,vit] [--depth 256]
[--seeds 5] [--steps N] [--rounds R] [--resnet-skip KIND]
``--quick`` runs only ``rate`` unless ``--cases`` says otherwise; the full run does all three
(about 5 minutes on one core).
Ends with one ``<case> speedup X.XX`` line per case run, in the order rate (hand over
vmap), circles (hand over vmap), resnet and vit (vmap pack over packs of one): ``--quick`` with
``rate speedup X.XX``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pack import CASES as PACK_CASES
from bench_pack import members as pack_members
from bench_train import fake_dataset

from orthskip.config.grid import CellConfig, cell_config, cells, prepare_config
from orthskip.data import load_prepared
from orthskip.nn.models import build_cell_model
from orthskip.stages.prepare import prepare_dataset
from orthskip.training import stacked

ROOT = Path(__file__).resolve().parent.parent
RATE = ("rate_identity", "rate_linear", "rate_orth_learned", "rate_orth_learned_haar")
CIRCLES = ("identity", "none", "linear", "orth_fixed", "orth_learned", "orth_learned_haar")
CIRCLES_DEPTH = 32
ALL_CASES = ("rate", "circles", "resnet", "vit")


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


def circles_members(depth: int, seeds: int) -> list[CellConfig]:
    """The default's circles cells at one depth, every variant and seed: its model, skip
    and train sections as they stand in config/config.yaml (SGD, cosine, val 0.1)."""
    default = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg = {
        "datasets": {"circles": default["datasets"]["circles"]},
        "variants": {v: default["variants"][v] for v in CIRCLES if v in default["variants"]},
        "grid": [
            {
                "arch": "mlp",
                "datasets": ["circles"],
                "variants": list(CIRCLES),
                "depths": [depth],
                "seeds": list(range(seeds)),
            }
        ],
        "model": {"mlp": default["model"]["mlp"]},
        "skip_options": default["skip_options"],
        "train": {**default["train"], "device": "cpu"},
    }
    prepared = prepare_config(cfg)
    return [cell_config(prepared, c) for c in cells(prepared)]


def time_steps(
    cfgs: list[CellConfig], data: tuple[Path, Path], out: Path, engine: str, steps: int
) -> float:
    """Seconds per optimizer step of one pack (median over ``steps`` after one warm-up)."""
    outs = [out / c.cell.path for c in cfgs]
    pack, _, _ = stacked.open_pack(cfgs, *data, outs, engine)
    assert pack is not None
    rows, sums = stacked._epoch_position(pack)
    per_epoch = pack.spec.steps_per_epoch
    times = []
    for s in range(steps + 1):
        t0 = time.perf_counter()
        n = stacked._step(pack, rows, 1, s % per_epoch, sums, t0)
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


def counted_flops(cfg: CellConfig, data: tuple[Path, Path]) -> tuple[float, int]:
    """(matmul and convolution FLOP of one member's forward + backward on one batch, over
    its blocks; its number of blocks), as torch's FLOP counter sees them."""
    prepared = load_prepared(*data)
    torch.manual_seed(cfg.cell.seed)
    model = build_cell_model(cfg, prepared)
    x = torch.randn(int(cfg.train["batch_size"]), *prepared.input_shape)
    counter = FlopCounterMode(display=False)
    with counter:
        model(x).sum().backward()
    blocks = len(model.blocks)
    return counter.get_total_flops() / blocks, blocks


@dataclass
class Case:
    """One benchmark case's two timed sides, as rows of the table."""

    name: str
    rows: list[tuple[str, float]]  # (label, seconds per step of the side's packs), base first
    work: int  # member-blocks per step, the same on both sides
    flop: float  # per member-block-step

    @property
    def speedup(self) -> float:
        return self.rows[0][1] / self.rows[1][1]


def alternate(
    rounds: int, base: Callable[[int], float], new: Callable[[int], float]
) -> tuple[float, float]:
    """Medians over ``rounds`` of the two sides, run in turn within each round so that load
    from the rest of the machine falls on both."""
    base_s, new_s = [], []
    for r in range(rounds):
        base_s.append(base(r))
        new_s.append(new(r))
    return statistics.median(base_s), statistics.median(new_s)


def by_variant(cfgs: list[CellConfig]) -> dict[str, list[CellConfig]]:
    groups: dict[str, list[CellConfig]] = {}
    for c in cfgs:
        groups.setdefault(c.cell.variant, []).append(c)
    return groups


def hand_vs_vmap(
    name: str, cfgs: list[CellConfig], data: tuple[Path, Path], root: Path, steps: int,
    rounds: int, flop: float,
) -> Case:  # fmt: skip
    """One hand-batched pack of every member against one vmap pack per variant."""
    groups = by_variant(cfgs)
    vmap, hand = alternate(
        rounds,
        lambda r: sum(time_steps(g, data, root / f"v{r}", "vmap", steps) for g in groups.values()),
        lambda r: time_steps(cfgs, data, root / f"h{r}", "hand", steps),
    )
    k = len(next(iter(groups.values())))
    rows = [(f"vmap, {len(groups)} packs of {k}", vmap), (f"hand, 1 pack of {len(cfgs)}", hand)]
    return Case(name, rows, len(cfgs) * cfgs[0].cell.depth, flop)


def rate_case(tmp: Path, depth: int, seeds: int, steps: int, rounds: int) -> Case:
    cfgs = rate_members(depth, seeds)
    data = (tmp / "d.pt", tmp / "d.json")
    prepare_dataset("diffeo2", dict(cfgs[0].dataset), *data)
    return hand_vs_vmap("rate", cfgs, data, tmp, steps, rounds, flops_per_member_block(cfgs[0]))


def circles_case(tmp: Path, seeds: int, steps: int, rounds: int) -> Case:
    cfgs = circles_members(CIRCLES_DEPTH, seeds)
    data = (tmp / "d.pt", tmp / "d.json")
    prepare_dataset("circles", dict(cfgs[0].dataset), *data)
    flop, _ = counted_flops(cfgs[0], data)
    return hand_vs_vmap("circles", cfgs, data, tmp, steps, rounds, flop)


# the module-engine cases: (arch, depth, model options, input shape, n_train, epochs, batch)
MODULE_CASES = {
    "resnet": PACK_CASES["cifar_resnet-20"],
    # a small ViT on 32x32 inputs, patch 4: 64 tokens of width 64, 6 blocks
    "vit": ("vit", 6, {"width": 64, "heads": 2, "patch": 4, "mlp_ratio": 2}, (3, 32, 32),
            256, 1, 32),
}  # fmt: skip


def module_case(name: str, tmp: Path, seeds: int, steps: int, rounds: int, skip: str) -> Case:
    """One vmap pack of ``seeds`` members against the members one after another, each a
    pack of one on its own module."""
    arch, depth, opts, shape, n, epochs, batch = MODULE_CASES[name]
    data = fake_dataset(tmp, n, shape, 10)
    cfgs: list[CellConfig] = pack_members(arch, depth, opts, skip, seeds, epochs, batch, "cpu")
    flop, blocks = counted_flops(cfgs[0], data)
    seq, vmap = alternate(
        rounds,
        lambda r: sum(time_steps([c], data, tmp / f"s{r}", "module", steps) for c in cfgs),
        lambda r: time_steps(cfgs, data, tmp / f"v{r}", "vmap", steps),
    )
    rows = [(f"solo (packs of one), {seeds} one after another", seq),
            (f"vmap, 1 pack of {seeds}", vmap)]  # fmt: skip
    return Case(name, rows, seeds * blocks, flop)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the rate case, fewer steps (< 2 min)")
    ap.add_argument("--cases", default=None, help="comma-separated, of " + ",".join(ALL_CASES))
    ap.add_argument("--depth", type=int, default=None, help="the rate case's m (default 256)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--resnet-skip", default="orth_learned")
    args = ap.parse_args()
    names = (args.cases or ("rate" if args.quick else ",".join(ALL_CASES))).split(",")
    if unknown := set(names) - set(ALL_CASES):
        ap.error(f"unknown --cases {sorted(unknown)}; choose from {','.join(ALL_CASES)}")
    depth = args.depth or 256
    # per case: (steps, rounds) of the full run, sized for ~10 minutes on one core in all
    sizes = {"rate": (12, 3), "circles": (20, 3), "resnet": (8, 3), "vit": (8, 3)}
    if args.quick:
        sizes["rate"] = (3, 1)
    cases: list[Case] = []
    shapes: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in (n for n in ALL_CASES if n in names):
            steps, rounds = args.steps or sizes[name][0], args.rounds or sizes[name][1]
            root = Path(tmp) / name
            root.mkdir()
            t0 = time.perf_counter()
            if name == "rate":
                case = rate_case(root, depth, args.seeds, steps, rounds)
                what = f"m = {depth}, {len(RATE)} variants x {args.seeds} seeds"
            elif name == "circles":
                case = circles_case(root, args.seeds, steps, rounds)
                what = (f"mlp width 16, depth {CIRCLES_DEPTH}, batch norm, "
                        f"{len(CIRCLES)} variants x {args.seeds} seeds")  # fmt: skip
            elif name == "resnet":
                case = module_case(name, root, args.seeds, steps, rounds, args.resnet_skip)
                what = f"cifar_resnet-20 width 16, {args.resnet_skip}, {args.seeds} seeds"
            else:
                case = module_case(name, root, args.seeds, steps, rounds, args.resnet_skip)
                what = (f"vit 6 blocks, width 64, 2 heads, patch 4 on 3x32x32, "
                        f"{args.resnet_skip}, {args.seeds} seeds")  # fmt: skip
            # progress on stderr: stdout stays the report (the quick run's as it was)
            print(f"{name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
            cases.append(case)
            shapes.append(f"{name} shape: {what}, {steps} steps x {rounds} rounds")
        threads = torch.get_num_threads()
        ceiling = matmul_ceiling()
    for shape in shapes:
        print(f"{shape}, {threads} thread(s)")
    print()
    print("| engine | step ms | member-block-steps/s | us per member-block | GFLOP/s |")
    print("|---|---|---|---|---|")
    for case in cases:
        for label, sec in case.rows:
            # the rate rows keep their bare labels (tests/test_bench.py reads them)
            name = label if case.name == "rate" else f"{case.name}: {label}"
            rate = case.work / sec
            print(f"| {name} | {sec * 1e3:.1f} | {rate:.0f} | {1e6 / rate:.2f} "
                  f"| {rate * case.flop / 1e9:.3f} |")  # fmt: skip
    print()
    per_case = len(cases) > 1  # one case alone prints its line as the rate case always did
    flops = ", ".join(
        f"{c.flop / 1e3:.1f} kFLOP per member-block-step" + (f" ({c.name})" if per_case else "")
        for c in cases
    )
    print(f"float32 matmul ceiling (2048^2, {threads} thread(s)): {ceiling:.1f} GFLOP/s; {flops}")
    for case in cases:
        print(f"{case.name} speedup {case.speedup:.2f}")


if __name__ == "__main__":
    main()
