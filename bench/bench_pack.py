"""A vectorised pack of K members vs the same K cells trained one after another, in one run.

Both sides run in this one process, on the same data file, with the same member configs:
``train_pack(..., vectorise=True)`` (one batched computation, ``orthskip.training.stacked``) and
``train_pack(..., vectorise=False)`` (the K cells in turn, each a pack of one on its own
module). The two
alternate ``--rounds`` times; reported per case are the medians of

* steps: samples/s over the optimizer steps (the ``time_s`` each cell records per epoch,
  which excludes evaluation and checkpointing), summed over the K members;
* wall: samples/s over the whole call (set-up, evaluation, checkpoints, outputs included);

and their ratios (pack / one-by-one). Cases: a residual MLP (width 16, depth 32, batch
norm) and CIFAR ResNet-20 (width 16, 32×32×3 inputs with augmentation).

Usage: python bench/bench_pack.py [--quick] [--k 5] [--device cpu|cuda] [--rounds 3]
``--quick`` runs only the MLP case (under a minute) and ends with ``mlp pack speedup X.XX``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import fake_dataset

from orthskip.config.grid import CellConfig, cell_config, cells, prepare_config
from orthskip.stages.train import train_pack

CASES = {
    # name: (arch, depth, model options, input shape, n_train, epochs, batch)
    "mlp": ("mlp", 32, {"width": 16, "norm": "batch"}, (2,), 2048, 2, 64),
    "cifar_resnet-20": ("cifar_resnet", 20, {"width": 16}, (3, 32, 32), 256, 1, 32),
}


def members(
    arch: str, depth: int, opts: dict, skip: str, k: int, epochs: int, batch: int, device: str
) -> list[dict]:
    cfg = prepare_config(
        {
            # the source only has to suit the arch (the data itself is fake_dataset's)
            "datasets": {"bench": {"source": "circles" if arch == "mlp" else "cifar10"}},
            "grid": [
                {
                    "arch": arch,
                    "datasets": ["bench"],
                    "variants": [skip],
                    "depths": [depth],
                    "seeds": list(range(k)),
                }
            ],
            "model": {arch: opts},
            "train": {
                "epochs": epochs,
                "batch_size": batch,
                "device": device,
                "val_fraction": 0.0,
                "snapshot_epochs": [],
                "optimizer": {"lr": 0.01, "momentum": 0.9},
            },
        }
    )
    return [cell_config(cfg, c) for c in cells(cfg)]


def run(
    cfgs: list[CellConfig], data: tuple[Path, Path], root: Path, vectorise: bool
) -> tuple[float, float]:
    """(step seconds summed over the members, wall seconds) of one train_pack call."""
    outs = [root / str(i) for i in range(len(cfgs))]
    t0 = time.perf_counter()
    statuses = train_pack(cfgs, *data, outs, vectorise=vectorise)
    wall = time.perf_counter() - t0
    assert set(statuses) <= {"ok", "diverged"}, statuses
    steps = 0.0
    for out in outs:
        h = pd.read_parquet(out / "history.parquet")
        steps += float(h["time_s"].iloc[-1])
    # a vectorised pack's members share one clock: count it once
    return (steps / len(cfgs) if vectorise else steps), wall


def bench_case(name: str, skip: str, k: int, rounds: int, device: str, tmp: Path) -> dict:
    arch, depth, opts, shape, n, epochs, batch = CASES[name]
    (tmp / name).mkdir(parents=True)
    data = fake_dataset(tmp / name, n, shape, 10)
    cfgs = members(arch, depth, opts, skip, k, epochs, batch, device)
    samples = k * n * epochs
    res: dict[str, list[float]] = {
        "pack_steps": [],
        "pack_wall": [],
        "seq_steps": [],
        "seq_wall": [],
    }
    for r in range(rounds + 1):  # round 0 warms up both sides
        for side, vec in (("pack", True), ("seq", False)):
            steps, wall = run(cfgs, data, tmp / name / f"{side}{r}", vec)
            if r:
                res[f"{side}_steps"].append(steps)
                res[f"{side}_wall"].append(wall)
    med = {key: statistics.median(v) for key, v in res.items()}
    return {
        "case": name,
        "skip": skip,
        "K": k,
        "pack steps/s": samples / med["pack_steps"],
        "one-by-one steps/s": samples / med["seq_steps"],
        "steps ratio": med["seq_steps"] / med["pack_steps"],
        "wall ratio": med["seq_wall"] / med["pack_wall"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="only the mlp case, under a minute")
    p.add_argument("--k", type=int, default=5, help="members per pack")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--skips", default="identity,orth_learned,orth_manifold")
    args = p.parse_args()
    torch.set_num_threads(1)
    names = ["mlp"] if args.quick else list(CASES)
    skips = ["identity"] if args.quick else args.skips.split(",")
    rounds = 1 if args.quick else args.rounds
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            for skip in skips:
                rows.append(bench_case(name, skip, args.k, rounds, args.device, Path(tmp) / skip))
    table = pd.DataFrame(rows)
    print(f"device {args.device}, 1 CPU thread, medians of {rounds} alternating rounds\n")
    print(table.to_markdown(index=False, floatfmt=".2f"))
    mlp = table[table["case"] == "mlp"]["steps ratio"]
    print(f"\nmlp pack speedup {statistics.median(mlp):.2f}")


if __name__ == "__main__":
    main()
