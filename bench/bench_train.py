"""Our training loop vs a bare hand-written PyTorch loop, side by side in one run.

Same model (built by orthskip.nn.models with the same seed), same data tensors, same batch
size, same optimizer (SGD, momentum 0.9) and the same number of epochs. Reported:

* steps: images/s over the optimizer steps only (ours: the per-epoch ``time_s`` that
  the engine records for a cell trained alone, a pack of one, which excludes evaluation
  and checkpointing);
* wall: images/s over the whole call, including our per-epoch test evaluation,
  ``last.pt`` checkpoint and output files.

Usage: python bench/bench_train.py [--epochs 2] [--n 2048] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from orthskip.config.grid import CellConfig, cell_config, cells, prepare_config
from orthskip.data import augment_batch, load_prepared
from orthskip.io import save_torch, write_json
from orthskip.nn.models import build_cell_model
from orthskip.nn.optim import build_optimizer
from orthskip.training.stacked import train_cell


def fake_dataset(root: Path, n: int, shape: tuple[int, ...], classes: int) -> tuple[Path, Path]:
    """A prepared file with random data in the on-disk format load_prepared reads."""
    import hashlib

    gen = torch.Generator().manual_seed(0)
    images = len(shape) == 3
    x = (
        torch.randint(0, 256, (n, *shape), generator=gen, dtype=torch.uint8)
        if images
        else torch.randn(n, *shape, generator=gen)
    )
    y = torch.randint(0, classes, (n,), generator=gen)
    dims = (shape[0], 1, 1) if images else shape
    out, man = root / "data.pt", root / "data.json"
    save_torch(
        out,
        {
            "x_train": x,
            "y_train": y,
            "x_test": x[: n // 4],
            "y_test": y[: n // 4],
            "mean": torch.zeros(dims),
            "std": torch.ones(dims),
        },
    )
    write_json(
        man,
        {
            "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
            "bytes": out.stat().st_size,
            "file": out.name,
            "name": "bench",
            "source": "bench",
            "spec": {},
            "n_train": n,
            "n_test": n // 4,
            "num_classes": classes,
            "input_shape": list(shape),
            "classes": [str(c) for c in range(classes)],
            "augment": "cifar" if images else None,
        },
    )
    return out, man


def bare_loop(cc: CellConfig, data_path: Path, manifest: Path, device: torch.device) -> float:
    """The reference: the plainest correct loop over the same model and data; seconds."""
    data = load_prepared(data_path, manifest)
    x, y = data.x_train.to(device), data.y_train.to(device)
    torch.manual_seed(cc.cell.seed)
    model = build_cell_model(cc, data).to(device)
    opt = build_optimizer(model, cc.train["optimizer"], {cc.skip: cc.skip_options})
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator(device=device).manual_seed(1)
    batch = cc.train["batch_size"]
    augment = data.meta.get("augment")
    model.train()
    start = time.perf_counter()
    for _ in range(cc.train["epochs"]):
        perm = torch.randperm(len(x), device=device)
        for i in range(0, len(x), batch):
            idx = perm[i : i + batch]
            xb = augment_batch(x[idx], augment, gen) if augment else x[idx]
            loss = loss_fn(model(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def case(arch: str, depth: int, skip: str, shape, n: int, epochs: int, batch: int, device: str):
    cfg = prepare_config(
        {
            "datasets": {"bench": {"source": "circles"}},
            "grid": [
                {
                    "arch": arch,
                    "datasets": ["bench"],
                    "variants": [skip],
                    "depths": [depth],
                    "seeds": [0],
                }
            ],
            "model": {arch: {"width": 16}},
            "train": {
                "epochs": epochs,
                "batch_size": batch,
                "snapshot_epochs": [0],
                "device": device,
                "schedule": {"name": "constant"},
            },
        }
    )
    cc = cell_config(cfg, cells(cfg)[0])
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data, man = fake_dataset(root, n, shape, 10)
        dev = torch.device(device)
        bare, ours_wall, ours_steps = [], [], []
        for rep in range(2):  # alternate and keep the best of two: warm-up and noise
            bare.append(bare_loop(cc, data, man, dev))
            t0 = time.perf_counter()
            train_cell(cc, data, man, root / f"cell{rep}")
            ours_wall.append(time.perf_counter() - t0)
            hist = pd.read_parquet(root / f"cell{rep}" / "history.parquet")
            ours_steps.append(float(hist["time_s"].iloc[-1]))
        bare, ours_wall, ours_steps = min(bare), min(ours_wall), min(ours_steps)
    images = n * epochs
    return {
        "model": f"{arch}-{depth} ({skip})",
        "bare img/s": images / bare,
        "ours img/s (steps)": images / ours_steps,
        "ours img/s (wall)": images / ours_wall,
        "ratio steps": bare / ours_steps,
        "ratio wall": bare / ours_wall,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--n", type=int, default=1024, help="training images for the CNN case")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = [
        case("mlp", 8, "orth_learned", (2,), 4096, args.epochs * 4, 64, args.device),
        case("cifar_resnet", 20, "identity", (3, 32, 32), args.n, args.epochs, 128, args.device),
        case(
            "cifar_resnet", 20, "orth_learned", (3, 32, 32), args.n, args.epochs, 128, args.device
        ),
    ]
    print(pd.DataFrame(rows).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
