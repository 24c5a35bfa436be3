"""The GPU check: the tests marked ``cuda``, then the trainer timed on the GPU, in one run.

Made for a CUDA machine that is lent for a few minutes (``make gpu-check``; about 8 minutes
at most on one GPU). In order:

1. ``pytest -m cuda tests`` in a subprocess (tests/test_cuda.py: bf16 AMP, deterministic
   repeats, the GPU lock, packs equal to solo runs, divergence caught at the end of an
   epoch); each test's outcome is read from pytest's JUnit XML.
2. A CIFAR-format ResNet-20 (cifar_resnet, depth 20, width 16, identity skips, SGD with
   momentum, batch 128, the cifar augmentation) on a synthetic prepared set (random
   3×32×32 uint8 images, 10 classes, in the prepared-dataset format:
   bench/bench_train.py's ``fake_dataset``). The second of two epochs is timed (the first
   warms up kernels and the allocator), three ways:

   * solo: ``train_cell`` (a pack of one), the epoch's optimizer steps as the engine records them
     (``time_s`` in history.parquet; on CUDA its clock stops once the last step is queued,
     so up to the launch queue's tail of work is not counted);
   * pack: one vmap computation over 5 seeds (``train_stacked``), the same clock;
   * bare: the same model (``orthskip.nn.models.build_model``, same seed) in a plain
     ``torch.optim.SGD`` loop with the same batches' augmentation, no orthskip trainer,
     synchronised before and after the epoch.

   Ratios: the trainer's overhead (solo / bare epoch) and the pack's speed-up (5 × solo /
   pack epoch).
3. The rate pack (bench/bench_engine.py's ``rate_members`` and ``time_steps``): the
   default's rate share at depth m, 4 variants × S seeds, as one hand-batched pack and as
   the 4 per-variant vmap packs; seconds per optimizer step and member-block-steps per
   second.

It writes one JSON (``--out``, default results/bench/gpu_check.json) and prints a short
table. Exit status: 0, or 1 when a cuda test failed or errored (the timings still run),
2 when ``--device cuda`` finds no GPU.

``--device cpu --quick`` runs the same steps at toy sizes in well under a minute, so that CI
smoke-tests the script without a GPU (tests/test_gpu_check.py); the cuda tests then report
skipped.

Usage: python bench/gpu_check.py [--device cuda|cpu] [--quick] [--out FILE] [--no-tests]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engine import flops_per_member_block, rate_members, time_steps
from bench_train import fake_dataset

from orthskip.config.grid import CellConfig, cell_config, cells, prepare_config, thaw
from orthskip.data import augment_batch, load_prepared
from orthskip.io import write_json
from orthskip.nn.models import build_model
from orthskip.provenance import device_name
from orthskip.stages.prepare import prepare_dataset
from orthskip.training.runlog import train_stacked_logged
from orthskip.training.stacked import train_cell

ROOT = Path(__file__).resolve().parent.parent
BUDGET_S = 480  # what a lent GPU allows: the whole check stays under 8 minutes
DEFAULT_OUT = ROOT / "results" / "bench" / "gpu_check.json"

# ResNet-20's training images and batch; the rate pack's depth, seeds and timed steps
SIZES = {
    "full": {"n_train": 10240, "batch": 128, "depth": 256, "seeds": 5, "steps": 12},
    "quick": {"n_train": 64, "batch": 32, "depth": 4, "seeds": 1, "steps": 2},
}


def run_cuda_tests(paths: list[str], timeout_s: float) -> dict[str, Any]:
    """``pytest -m cuda`` on ``paths`` in a subprocess: counts and each test's outcome."""
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        cmd = ["-m", "pytest", "-m", "cuda", "-q", "-rs", "-p", "no:cacheprovider", *paths]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, *cmd, f"--junitxml={xml}"], cwd=ROOT,
                                  capture_output=True, text=True, timeout=timeout_s)  # fmt: skip
            code, output = proc.returncode, proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as err:
            code, output = None, f"timed out after {timeout_s:.0f} s\n{_text(err.stdout)}"
        seconds = time.perf_counter() - t0
        tests = _junit(xml) if xml.exists() else []
    outcomes = ("passed", "failed", "error", "skipped")
    counts = {k: sum(t["outcome"] == k for t in tests) for k in outcomes}
    return {
        "command": " ".join(["python", *cmd]),
        "cuda_available": torch.cuda.is_available(),
        "returncode": code,
        "seconds": seconds,
        "collected": len(tests),
        **counts,
        # skipped tests pass (no GPU); nothing selected (pytest's exit 5) or a timeout fails
        "ok": code == 0 and bool(tests) and not counts["failed"] and not counts["error"],
        "tests": tests,
        "output_tail": output[-4000:],
    }


def _text(out: bytes | str | None) -> str:
    return out.decode(errors="replace") if isinstance(out, bytes) else out or ""


def _junit(path: Path) -> list[dict[str, str]]:
    """Each test case of a JUnit XML file: name, outcome, the skip or failure message."""
    tags = {"failure": "failed", "error": "error", "skipped": "skipped"}
    cases = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag, name in tags.items():
            el = case.find(tag)
            if el is not None:
                outcome, message = name, el.get("message", "")
                break
        cases.append({"name": f"{case.get('classname')}::{case.get('name')}",
                      "outcome": outcome, "message": message[:500]})  # fmt: skip
    return cases


def _epoch_s(out: Path) -> float:
    """The last epoch's optimizer-step seconds, from the cell's history (time_s is the
    cumulative step time at each epoch's end)."""
    t = pd.read_parquet(out / "history.parquet")["time_s"].tolist()
    return float(t[-1] - t[-2])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_epochs(cfg: CellConfig, data: tuple[Path, Path], device: torch.device) -> list[float]:
    """The reference: the plainest correct loop over the same model, data, batch size and
    augmentation (torch.optim.SGD with the cell's lr, momentum and weight decay); each
    epoch's seconds."""
    d = load_prepared(*data)
    x, y = d.x_train.to(device), d.y_train.to(device)
    cell, opt_cfg = cfg.cell, cfg.train["optimizer"]
    torch.manual_seed(cell.seed)
    model = build_model(cell.arch, cell.depth, cfg.skip, d.input_shape, d.num_classes,
                        thaw(cfg.model), {cfg.skip: thaw(cfg.skip_options)}).to(device)  # fmt: skip
    opt = torch.optim.SGD(model.parameters(), lr=opt_cfg["lr"], momentum=opt_cfg["momentum"],
                          weight_decay=opt_cfg["weight_decay"])  # fmt: skip
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator(device=device).manual_seed(cell.seed)
    batch, augment = int(cfg.train["batch_size"]), d.meta.get("augment")
    model.train()
    times = []
    for _ in range(int(cfg.train["epochs"])):
        _sync(device)
        t0 = time.perf_counter()
        perm = torch.randperm(len(x), device=device)
        for i in range(0, len(x), batch):
            idx = perm[i : i + batch]
            xb = augment_batch(x[idx], augment, gen)
            loss = loss_fn(model(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def resnet_members(k: int, n: int, batch: int, device: str) -> list[CellConfig]:
    """Seeds 0..k-1 of ResNet-20 (width 16, identity skips) on a CIFAR-10-shaped set of n
    images: SGD lr 0.05, momentum 0.9, weight decay 5e-4, 2 epochs, no validation split."""
    cfg = prepare_config(
        {
            # the vision source states the shape (3, 32, 32) and 10 classes; the data file
            # itself is fake_dataset's
            "datasets": {"cifar10": {"source": "cifar10", "n_train": n, "n_test": n // 4}},
            "grid": [{"arch": "cifar_resnet", "datasets": ["cifar10"], "variants": ["identity"],
                      "depths": [20], "seeds": list(range(k))}],
            "model": {"cifar_resnet": {"width": 16}},
            "train": {"epochs": 2, "batch_size": batch, "device": device, "val_fraction": 0.0,
                      "snapshot_epochs": [],
                      "optimizer": {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}},
        }
    )  # fmt: skip
    return [cell_config(cfg, c) for c in cells(cfg)]


def time_resnet(device: str, size: dict[str, int], k: int, root: Path) -> dict[str, Any]:
    """ResNet-20 epochs: solo, a pack of k, and the bare loop (see the module's docstring)."""
    n, batch = size["n_train"], size["batch"]
    data = fake_dataset(root, n, (3, 32, 32), 10)
    cfgs = resnet_members(k, n, batch, device)
    res: dict[str, Any] = {"arch": "cifar_resnet", "depth": 20, "width": 16, "skip": "identity",
                           "n_train": n, "batch": batch, "epochs": 2, "timed_epoch": 2}  # fmt: skip

    t0 = time.perf_counter()
    status = train_cell(cfgs[0], *data, root / "solo")
    solo = {"epoch_s": _epoch_s(root / "solo"), "wall_s": time.perf_counter() - t0,
            "status": status}  # fmt: skip

    outs = [root / "pack" / str(i) for i in range(k)]
    t0 = time.perf_counter()
    logs = [root / "logs" / f"{i}.log" for i in range(k)]  # the members' lines, not stderr
    # one vmap pack on any device: what a GPU's train_pack runs (on a CPU train_pack would
    # train these members in turn, ArchSpec.vmap_on_cpu)
    statuses = train_stacked_logged(cfgs, *data, outs, logs)
    assert statuses is not None  # fresh members: their checkpoints are at one step
    wall = time.perf_counter() - t0
    how = json.loads((outs[0] / "status.json").read_text()).get("pack")
    pack = {"members": k, "epoch_s": _epoch_s(outs[0]), "wall_s": wall, "statuses": statuses,
            "pack": how}  # fmt: skip

    bare = {"epoch_s": bare_epochs(cfgs[0], data, torch.device(device))[-1]}
    for side, members in ((solo, 1), (pack, k), (bare, 1)):
        side["images_per_s"] = members * n / side["epoch_s"]
    res.update(solo=solo, pack=pack, bare=bare)
    res["overhead_solo_vs_bare"] = solo["epoch_s"] / bare["epoch_s"]
    res["pack_speedup_vs_solo"] = k * solo["epoch_s"] / pack["epoch_s"]
    return res


def time_rate_pack(device: str, size: dict[str, int], root: Path) -> dict[str, Any]:
    """The rate pack, hand-batched vs per-variant vmap, through bench_engine's own timer."""
    depth, seeds, steps = size["depth"], size["seeds"], size["steps"]
    cfgs = [replace(c, train={**c.train, "device": device}) for c in rate_members(depth, seeds)]
    by_variant: dict[str, list[CellConfig]] = {}
    for c in cfgs:
        by_variant.setdefault(c.cell.variant, []).append(c)
    data = (root / "d.pt", root / "d.json")
    prepare_dataset("diffeo2", dict(cfgs[0].dataset), *data)
    hand = time_steps(cfgs, data, root / "hand", "hand", steps)
    vmap = sum(time_steps(g, data, root / f"vmap{i}", "vmap", steps)
               for i, g in enumerate(by_variant.values()))  # fmt: skip
    work, flop = len(cfgs) * depth, flops_per_member_block(cfgs[0])

    def side(step_s: float, packs: int) -> dict[str, float]:
        rate = work / step_s
        return {"packs": packs, "step_s": step_s, "member_block_steps_per_s": rate,
                "gflop_s": rate * flop / 1e9}  # fmt: skip

    return {
        "depth": depth,
        "variants": len(by_variant),
        "seeds": seeds,
        "members": len(cfgs),
        "steps": steps,
        "hand": side(hand, 1),
        "vmap": side(vmap, len(by_variant)),
        "speedup_hand_vs_vmap": vmap / hand,
    }


def table(res: dict[str, Any]) -> str:
    """The short table printed at the end."""
    t, r, rate = res["cuda_tests"], res["resnet20"], res["rate_pack"]
    head = [f"GPU check on {res['device_name']} (torch {res['torch']}), "
            f"{res['seconds']['total']:.0f} s of a {BUDGET_S} s budget"]  # fmt: skip
    if t is None:
        head.append("cuda tests: not run (--no-tests)")
    else:
        head.append(f"cuda tests: {t['collected']} collected, {t['passed']} passed, "
                    f"{t['failed']} failed, {t['error']} errors, {t['skipped']} skipped "
                    f"({t['seconds']:.0f} s)")  # fmt: skip
        if t["skipped"] and t["tests"]:
            head.append(f"  skipped: {t['tests'][0]['message']}")
    k, n = r["pack"]["members"], r["n_train"]
    rows = [
        ("ResNet-20 epoch, solo (train_cell)", f"{r['solo']['epoch_s']:.3f} s",
         f"{r['solo']['images_per_s']:.0f} img/s",
         f"overhead {r['overhead_solo_vs_bare']:.2f} (time / bare's)"),
        (f"ResNet-20 epoch, vmap pack of {k}", f"{r['pack']['epoch_s']:.3f} s",
         f"{r['pack']['images_per_s']:.0f} img/s",
         f"speed-up {r['pack_speedup_vs_solo']:.2f} over {k} solo"),
        ("ResNet-20 epoch, bare PyTorch loop", f"{r['bare']['epoch_s']:.3f} s",
         f"{r['bare']['images_per_s']:.0f} img/s", "reference"),
        (f"rate pack m={rate['depth']}, hand, 1 pack of {rate['members']}",
         f"{rate['hand']['step_s'] * 1e3:.2f} ms/step",
         f"{rate['hand']['member_block_steps_per_s']:.0f} mbs/s",
         f"speed-up {rate['speedup_hand_vs_vmap']:.2f} over vmap"),
        (f"rate pack m={rate['depth']}, vmap, {rate['vmap']['packs']} packs",
         f"{rate['vmap']['step_s'] * 1e3:.2f} ms/step",
         f"{rate['vmap']['member_block_steps_per_s']:.0f} mbs/s", "reference"),
    ]  # fmt: skip
    lines = [*head, "", f"ResNet-20: {n} images per epoch, batch {r['batch']}; "
             "mbs = member-block-steps", "", "| measurement | time | throughput | vs |",
             "|---|---:|---:|---|"]  # fmt: skip
    lines += [f"| {' | '.join(row)} |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--quick", action="store_true", help="toy sizes: a smoke test (< 1 min)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON written")
    ap.add_argument("--members", type=int, default=5, help="members of the ResNet-20 pack")
    ap.add_argument("--tests", nargs="+", default=["tests"], help="where pytest looks")
    ap.add_argument("--tests-timeout", type=float, default=300.0, help="seconds for pytest")
    ap.add_argument("--no-tests", action="store_true", help="only the timings")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"error: --device cuda, but no CUDA GPU is usable here (torch {torch.__version__}, "
              f"CUDA {torch.version.cuda}); on a machine without one run "
              "`python bench/gpu_check.py --device cpu --quick`", file=sys.stderr)  # fmt: skip
        return 2
    size = SIZES["quick" if args.quick else "full"]
    start = time.perf_counter()
    seconds: dict[str, float] = {}
    res: dict[str, Any] = {
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "device": args.device,
        "device_name": device_name(args.device),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "quick": args.quick,
        "budget_s": BUDGET_S,
    }
    tests = None
    if not args.no_tests:
        tests = run_cuda_tests(args.tests, args.tests_timeout)
        seconds["cuda_tests"] = tests["seconds"]
    res["cuda_tests"] = tests
    with tempfile.TemporaryDirectory() as tmp:
        for key, timer in (
            ("resnet20", lambda d: time_resnet(args.device, size, args.members, d)),
            ("rate_pack", lambda d: time_rate_pack(args.device, size, d)),
        ):
            t0 = time.perf_counter()
            (Path(tmp) / key).mkdir()
            res[key] = timer(Path(tmp) / key)
            seconds[key] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - start
    res["seconds"] = seconds
    res["cpu_threads"] = torch.get_num_threads()  # as the trainer set it (train.threads)
    res["within_budget"] = seconds["total"] <= BUDGET_S
    write_json(args.out, res)
    print(table(res))
    print(f"\nwrote {args.out}")
    if not res["within_budget"]:
        print(f"warning: the check took {seconds['total']:.0f} s, over its {BUDGET_S} s budget")
    bad = tests is not None and not tests["ok"]
    if bad:
        print("cuda tests FAILED: see cuda_tests.tests in the JSON", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
