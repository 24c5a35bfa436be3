"""A pack that drops its stopped members against one that computes them to the end.

The default's rate share at one depth (bench_engine's ``rate_members``: variants
``rate_identity``, ``rate_linear``, ``rate_orth_learned``, ``rate_orth_learned_haar`` on
``diffeo2``, S seeds, one hand-batched pack, their own recipe: AdamW, the stopping rule on
the skips, the cap) is trained to the end twice in this one process through
``orthskip.training.stacked.train_stacked``, with the default's checkpoint interval:
``compact`` (the pack is rebuilt from its
running members once at most ``COMPACT_AT`` of them still train) and ``frozen`` (stopped
members stay in the pack, frozen, to the last member's stop). The two sides alternate
``--rounds`` times in turn.

Reported: each side's median wall seconds of the whole training (set-up, steps, evaluation,
checkpoints), the member-epochs the members trained beside those an uncompacted pack
computes (every member to the last stop: the bound on what compaction can save), and the
largest relative difference between the two sides' final weights (the runs must not depend
on compaction).

Usage: python bench/bench_compact.py [--quick] [--depth 256] [--seeds 5] [--epochs CAP]
[--rounds R]. ``--quick``: m = 16, 2 seeds, cap 200 epochs (about a minute on one core).
Ends with ``compact speedup X.XX`` (frozen seconds over compact seconds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engine import ROOT, rate_members

from orthskip.config.grid import CellConfig
from orthskip.io import load_torch
from orthskip.stages.prepare import prepare_dataset
from orthskip.training.stacked import train_stacked


def as_in_the_default(cfgs: list[CellConfig], epochs: int | None) -> list[CellConfig]:
    """The members with the default's checkpoint interval (the schema's 0 writes every
    member's ``last.pt`` every epoch) and their cap set to ``epochs`` (None: the default's)."""
    default = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    every = default["train"]["checkpoint_every_s"]
    out = []
    for c in cfgs:
        train = {**c.train, "checkpoint_every_s": every}
        if epochs is not None:
            train["epochs"] = epochs
            train["snapshot_epochs"] = [e for e in c.train["snapshot_epochs"] if e <= epochs]
        out.append(replace(c, train=train))
    return out


def run(cfgs: list[CellConfig], data: tuple[Path, Path], out: Path, compact: bool) -> float:
    """Seconds to train the pack to the end into ``out``."""
    outs = [out / c.cell.path for c in cfgs]
    t0 = time.perf_counter()
    statuses = train_stacked(cfgs, *data, outs, compact=compact)
    seconds = time.perf_counter() - t0
    assert statuses is not None and "diverged" not in statuses, statuses
    return seconds


def member_epochs(cfgs: list[CellConfig], out: Path) -> tuple[int, int]:
    """(member-epochs the members trained, member-epochs an uncompacted pack computes: every
    member until the last one stops)."""
    trained = [json.loads((out / c.cell.path / "status.json").read_text())["epochs"]
               for c in cfgs]  # fmt: skip
    return sum(trained), len(cfgs) * max(trained)


def largest_difference(cfgs: list[CellConfig], a: Path, b: Path) -> float:
    worst = 0.0
    for c in cfgs:
        wa = load_torch(a / c.cell.path / "last.pt")["model"]
        wb = load_torch(b / c.cell.path / "last.pt")["model"]
        for k, t in wb.items():
            if t.is_floating_point():
                scale = max(float(t.abs().max()), 1e-6)
                worst = max(worst, float((wa[k] - t).abs().max()) / scale)
    return worst


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--depth", type=int)
    p.add_argument("--seeds", type=int)
    p.add_argument("--epochs", type=int, help="the cap (default: the default's)")
    p.add_argument("--rounds", type=int, default=1)
    a = p.parse_args()
    depth = a.depth or (16 if a.quick else 256)
    seeds = a.seeds or (2 if a.quick else 5)
    epochs = a.epochs or (200 if a.quick else None)
    torch.set_num_threads(1)
    cfgs = as_in_the_default(rate_members(depth, seeds), epochs)
    times: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = root / "d.pt", root / "d.json"
        prepare_dataset("diffeo2", dict(cfgs[0].dataset), *data)
        for r in range(a.rounds):
            for compact in (True, False):
                out = root / f"{compact}-{r}"
                times[compact].append(run(cfgs, data, out, compact))
        diff = largest_difference(cfgs, root / "True-0", root / "False-0")
        needed, frozen = member_epochs(cfgs, root / "True-0")
    cap = cfgs[0].train["epochs"]
    print(f"rate share of the default at m = {depth}: {len(cfgs)} members, cap {cap} epochs, "
          f"{a.rounds} round(s); torch {torch.__version__}, 1 thread")  # fmt: skip
    for c, name in ((True, "compact"), (False, "frozen")):
        print(f"{name:8s} {statistics.median(times[c]):9.1f} s")
    print(
        f"member-epochs trained {needed}, computed without compaction {frozen} "
        f"(bound on the saving {frozen / needed:.2f}x)"
    )
    print(f"largest relative weight difference between the sides: {diff:.2e}")
    speed = statistics.median(times[False]) / statistics.median(times[True])
    print(f"compact speedup {speed:.2f}")


if __name__ == "__main__":
    main()
