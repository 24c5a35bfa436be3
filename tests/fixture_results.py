"""A small but realistic set of aggregated result tables (docs/interfaces.md).

``write_fixture(directory)`` writes cells.parquet, history.parquet, layers.parquet,
warp.parquet and approx.parquet in the aggregated format: two datasets (the 2-D ``moons``
with an MLP, and ``digits`` with a CIFAR-style ResNet that has transition blocks), several
skip kinds and depths, three seeds. It deliberately contains a diverged cell
(moons/mlp/none/d16/s2: NaN accuracies, status ``diverged``) and infinite
representation condition numbers (moons/mlp/none/d16/s0), and one non-bare variant,
``orth_learned_haar`` (kind ``orth_learned`` from a Haar start: ‖Q − I‖₂ stays near 2
while ‖Q − I‖_F/√n falls). Every table has a ``variant`` column next to ``skip``.
Numbers are synthetic but shaped like real runs, e.g. ‖Q − I‖ of ``orth_learned`` falls
like log m / m. Rule tests of the workflow reuse it.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd

EPOCHS = 4
SNAPSHOTS = (0, 2, 4)
SEEDS = (0, 1, 2)
GRID_N = 9  # grid nodes per axis for the decision/warp grids
N_TRAIN_POINTS = 30

HAAR = "orth_learned_haar"  # a variant: kind orth_learned, init haar
VARIANT_KIND = {HAAR: "orth_learned"}
SKIP_DIM = 16  # width n of the (square) skip matrices, for ‖Q − I‖_F / √n

# (dataset, arch, depths, variants, chance accuracy); a bare kind is its own variant
GRID = (
    (
        "moons",
        "mlp",
        (4, 8, 16),
        (
            "identity",
            "none",
            "linear",
            "orth_fixed",
            "orth_learned",
            HAAR,
            "orth_manifold",
            "orth_jacobian",
        ),
        0.5,
    ),
    (
        "digits",
        "cifar_resnet",
        (8, 14, 20),
        ("identity", "none", "orth_learned", "procrustes"),
        0.1,
    ),
)

DIVERGED = ("moons", "mlp", "none", 16, 2)
INFINITE_REPR = ("moons", "mlp", "none", 16, 0)

PROVENANCE = {
    "config_hash": "fixture0123456789",
    "code_version": "0.1.0+fixture",
    "torch_version": "2.13.0",
    "device": "cpu",
}


def n_blocks(arch: str, depth: int) -> int:
    # mlp: one block per unit of depth; cifar_resnet: depth = 6n + 2, three stages of n.
    return depth if arch == "mlp" else 3 * ((depth - 2) // 6)


def transitions(arch: str, depth: int) -> set[int]:
    if arch == "mlp":
        return set()
    n = (depth - 2) // 6
    return {n, 2 * n}


def kind_of(variant: str) -> str:
    return VARIANT_KIND.get(variant, variant)


def final_accuracy(skip: str, depth: int, chance: float, rng: np.random.Generator) -> float:
    base = {"identity": 0.93, "linear": 0.91, "orth_fixed": 0.9, "orth_learned": 0.925,
            HAAR: 0.92}  # fmt: skip
    acc = base.get(skip, 0.92)
    if skip == "none":
        acc -= 0.025 * np.log2(depth)  # plain nets degrade with depth
    acc += rng.normal(0, 0.01)
    return float(np.clip(acc, chance, 1.0))


def dist_identity_spec(skip: str, m: int, block: int, rng: np.random.Generator) -> float:
    profile = 1.0 + 0.2 * np.sin(np.pi * (block + 0.5) / m)  # mild per-block shape
    noise = np.exp(rng.normal(0, 0.05))
    if skip == "orth_learned":
        return float(1.5 * np.log(m) / m * profile * noise)
    if skip == "orth_manifold":
        return float(0.9 * m**-0.8 * profile * noise)
    if skip == "linear":
        return float(0.6 * profile * noise)
    return float(min(2.0, 1.7 * noise))  # orth_fixed: Haar rotation, far from I


def branch_lip(skip: str, m: int, t: float, rng: np.random.Generator) -> float:
    """Lip(F_i) lower bound: falls like log m / m for orth_learned, m^-0.7 for orth_manifold."""
    noise = np.exp(rng.normal(0, 0.05))
    if skip == "orth_learned":
        return float(2.0 * np.log(m) / m * (1 + 0.5 * (1 - t)) * noise)
    if skip == "orth_manifold":
        return float(1.2 * m**-0.7 * noise)
    return float(0.8 * noise)


def haar_fro_rel(m: int, t: float, rng: np.random.Generator) -> float:
    """‖Q − I‖_F/√n of a Haar start (√2 on average) moving toward I, faster when shallow."""
    return float(np.sqrt(2.0) * (1 - 0.5 * t * 4 / (4 + np.log2(m))) * np.exp(rng.normal(0, 0.03)))


def _cell(dataset, arch, variant, depth, seed):
    return {"dataset": dataset, "arch": arch, "variant": variant, "skip": kind_of(variant),
            "depth": depth, "seed": seed}  # fmt: skip


def _cell_rows(dataset, arch, skip, depth, seed, chance, rng):
    cell = _cell(dataset, arch, skip, depth, seed)
    diverged = (dataset, arch, skip, depth, seed) == DIVERGED
    acc = final_accuracy(skip, depth, chance, rng)
    history = []
    for epoch in range(EPOCHS + 1):
        frac = epoch / EPOCHS
        tr_acc = chance + (min(1.0, acc + 0.03) - chance) * (1 - np.exp(-3 * frac))
        te_acc = chance + (acc - chance) * (1 - np.exp(-3 * frac)) / (1 - np.exp(-3))
        tr_loss = 2.0 * np.exp(-2.5 * frac) + 1.5 * (1 - acc)
        te_loss = tr_loss + 0.05 + 0.02 * frac
        va_acc = te_acc + 0.005 * np.sin(3 * epoch)  # a validation split of the training data
        va_loss = te_loss - 0.01 * np.sin(3 * epoch)
        if diverged and epoch >= 2:
            tr_acc = te_acc = tr_loss = te_loss = va_acc = va_loss = np.nan
        history.append(
            {
                **cell,
                "epoch": epoch,
                "train_loss": tr_loss,
                "train_acc": tr_acc,
                "test_loss": te_loss,
                "test_acc": te_acc,
                "val_loss": va_loss,
                "val_acc": va_acc,
                "clipped_frac": 0.0 if epoch == 0 else 0.02 * (skip == "none"),
                "lr": 0.1 * 0.5 * (1 + np.cos(np.pi * frac)),
                "time_s": 0.0 if epoch == 0 else 1.0 + 0.01 * depth,
            }
        )
    last = history[-1]
    finite_val = [h for h in history[1:] if np.isfinite(h["val_acc"])]
    best = max(finite_val, key=lambda h: h["val_acc"]) if finite_val else None
    row = {
        **cell,
        "status": "diverged" if diverged else "ok",
        "epochs": 2 if diverged else EPOCHS,
        "stopped": None if diverged else "train_loss plateau",
        "converged": not diverged,
        "stalled": False,
        "recipe": f"sgd lr 0.1, cosine, cap {EPOCHS} epochs",
        "skip_init": "haar" if skip == HAAR else "",
        "train_loss": last["train_loss"],
        "train_acc": last["train_acc"],
        "test_loss": last["test_loss"],
        "test_acc": last["test_acc"],
        "val_loss": last["val_loss"],
        "val_acc": last["val_acc"],
        "best_val_epoch": int(best["epoch"]) if best else -1,
        "test_acc_at_best_val": best["test_acc"] if best else np.nan,
        "wall_time_s": 5.0 + depth,
        "n_params": 1000 * depth,
        "n_skip_params": 0 if kind_of(skip) in ("identity", "none") else 64 * depth,
        **PROVENANCE,
    }
    return row, history


def _layer_rows(dataset, arch, skip, depth, seed, rng):
    cell = _cell(dataset, arch, skip, depth, seed)
    diverged = (dataset, arch, skip, depth, seed) == DIVERGED
    m = n_blocks(arch, depth)
    trans = transitions(arch, depth)
    weight_kind = "linear" if arch == "mlp" else "conv"
    snapshots = [e for e in SNAPSHOTS if not (diverged and e > 2)]
    rows = []
    # its own stream: adding branch_lipschitz left every other fixture number unchanged
    lip_rng = np.random.default_rng(zlib.crc32(repr(sorted(cell.items())).encode()))

    def add(epoch, index, name, kind, param, metric, stat, value, exact=True, method="direct"):
        rows.append(
            {
                **cell,
                "epoch": epoch,
                "layer_index": index,
                "layer_name": name,
                "layer_kind": kind,
                "param": param,
                "metric": metric,
                "stat": stat,
                "value": float(value),
                "exact": bool(exact),
                "method": method,
                **PROVENANCE,
            }
        )

    for epoch in snapshots:
        t = epoch / EPOCHS
        for b in range(m):
            name = f"blocks.{b}"
            kind = "transition" if b in trans else "block"
            # gradient-norm ratio: ~1 with a skip, drifting without one
            spread = 0.25 if skip == "none" else 0.03
            gnr = np.exp(rng.normal(0, spread)) * (1.3 if b in trans else 1.0)
            add(epoch, b, name, kind, "", "grad_norm_ratio", "value", gnr)
            # block Jacobian singular values: isometric for orth_jacobian
            if skip == "orth_jacobian":
                smax, smin = 1.0 + 1e-6, 1.0 - 1e-6
            elif skip == "none":
                smax, smin = 2.0 * np.exp(rng.normal(0, 0.3)), 0.05 * np.exp(rng.normal(0, 0.3))
            else:
                smax, smin = 1.3 * np.exp(rng.normal(0, 0.1)), 0.6 * np.exp(rng.normal(0, 0.1))
            for stat, v in (("max", smax), ("min", smin), ("cond", smax / smin)):
                add(epoch, b, name, kind, "", "jacobian_sv", stat, v, method="dense_jacobian")
            # representation conditioning; plain nets collapse in deep blocks
            cond = 10 ** (1 + 0.1 * b * (2.0 if skip == "none" else 0.3) + rng.normal(0, 0.1))
            eff_rank = max(1.0, 16 / np.log10(cond))
            if (
                (dataset, arch, skip, depth, seed) == INFINITE_REPR
                and epoch == EPOCHS
                and b >= m - 3
            ):
                cond, eff_rank = np.inf, 1.0
            add(epoch, b, name, kind, "", "repr_condition", "cond", cond)
            add(epoch, b, name, kind, "", "repr_condition", "eff_rank", eff_rank)
            # skip matrices
            if skip in ("linear", "orth_fixed", "orth_learned", "orth_manifold", HAAR):
                param = f"{name}.skip.Q" if skip != "linear" else f"{name}.skip.W"
                if skip == HAAR:  # spectral distance saturated, RMS distance falling
                    fro_rel = haar_fro_rel(m, t, rng)
                    spec = float(min(2.0, 1.95 * np.exp(rng.normal(0, 0.01))))
                    init = abs(fro_rel - haar_fro_rel(m, 0.0, rng))
                else:
                    moving = skip != "orth_fixed"
                    spec = dist_identity_spec(skip, m, b, rng) * (t if moving else 1.0)
                    fro_rel = 0.6 * spec  # proportional: same log–log slope as spec
                    init = fro_rel if moving else 0.0  # these start at I; orth_fixed is frozen
                defect = 0.3 if skip == "linear" else 1e-7
                angle = 2 * np.arcsin(min(1.0, spec / 2))
                add(epoch, b, f"{name}.skip", "skip", param, "orth_defect", "value", defect)
                for stat, v in (("spec", spec), ("fro", fro_rel * np.sqrt(SKIP_DIM)),
                                ("fro_rel", fro_rel), ("angle", angle),
                                ("mean_angle", 0.7 * angle), ("det", 1.0)):  # fmt: skip
                    add(epoch, b, f"{name}.skip", "skip", param, "dist_identity", stat, v)
                add(epoch, b, f"{name}.skip", "skip", param, "dist_init", "fro_rel", init)
                add(epoch, b, f"{name}.skip", "skip", param, "dist_init", "spec", 1.5 * init)
            if skip == "orth_jacobian":
                add(epoch, b, f"{name}.f", "skip", f"{name}.f.B", "orth_defect", "value", 2e-7)
            else:  # lower bound on Lip(F_i); orth_jacobian has no branch
                lip = branch_lip(skip, m, t, lip_rng)
                for stat, v in (("max", lip), ("max_probe", 0.9 * lip), ("mean", 0.6 * lip)):
                    add(epoch, b, name, kind, f"{name}.branch", "branch_lipschitz", stat, v,
                        exact=False, method="dense_jacobian")  # fmt: skip
            # weights of the residual branch: two per block, running index after the stem
            for k in range(2):
                index = 1 + 2 * b + k
                wname = f"{name}.f.{2 * k}"
                grow = 1.0 + (3.0 if skip == "none" else 0.5) * t * (b + 1) / m
                if skip == "procrustes" and b in trans and k == 0:
                    grow = 1.0  # projected to norm-preserving
                smax = 1.5 * grow * np.exp(rng.normal(0, 0.05))
                smin = 1.5 / grow * 0.2 * np.exp(rng.normal(0, 0.05))
                add(epoch, index, wname, weight_kind, f"{wname}.weight", "sv_reshaped", "max", smax)
                add(epoch, index, wname, weight_kind, f"{wname}.weight", "sv_reshaped", "min", smin)
                add(
                    epoch, index, wname, weight_kind, f"{wname}.weight",
                    "sv_reshaped", "cond", smax / smin,
                )  # fmt: skip
                add(
                    epoch, index, wname, weight_kind, f"{wname}.weight",
                    "sv_reshaped", "stable_rank", 4.0 / grow,
                )  # fmt: skip
                if weight_kind == "conv":
                    omax, omin = 2.0 * smax, 0.5 * smin
                    # the deepest nets' wide layers: iterative estimates, not exact
                    lobpcg = depth == 20 and b < m // 3
                    for stat, v in (("max", omax), ("min", omin), ("cond", omax / omin)):
                        add(
                            epoch, index, wname, weight_kind, f"{wname}.weight",
                            "sv_operator", stat, v, exact=not lobpcg,
                            method="lobpcg" if lobpcg else "dense_svd",
                        )  # fmt: skip
    return rows


def _warp_map(points: np.ndarray, block: int, m: int, skip: str) -> np.ndarray:
    """A smooth invertible per-block map: a small rotation plus a bend."""
    angle = (0.6 if skip != "none" else 1.2) / m
    c, s = np.cos(angle), np.sin(angle)
    x = points @ np.array([[c, -s], [s, c]]).T
    x[:, 1] += 0.3 / m * np.tanh(2 * x[:, 0])
    return x


def _warp_rows(dataset, arch, skip, depth, seed, rng):
    cell = _cell(dataset, arch, skip, depth, seed)
    m = n_blocks(arch, depth)
    lin = np.linspace(-1.5, 2.5, GRID_N)
    gi, gj = np.meshgrid(np.arange(GRID_N), np.arange(GRID_N), indexing="ij")
    grid = np.stack([lin[gi.ravel()], lin[gj.ravel()] * 0.75], axis=1)
    # training points: two interleaving half-moons
    t = rng.uniform(0, np.pi, N_TRAIN_POINTS)
    label = np.arange(N_TRAIN_POINTS) % 2
    train = np.where(
        label[:, None] == 0,
        np.stack([np.cos(t), np.sin(t)], 1),
        np.stack([1 - np.cos(t), 0.5 - np.sin(t)], 1),
    ) + rng.normal(0, 0.08, (N_TRAIN_POINTS, 2))

    rows = []
    warped, warped_train = grid.copy(), train.copy()
    for block in range(m + 1):
        if block > 0:
            warped = _warp_map(warped, block, m, skip)
            warped_train = _warp_map(warped_train, block, m, skip)
        for (i, j), (x, y) in zip(zip(gi.ravel(), gj.ravel(), strict=True), warped, strict=True):
            rows.append({**cell, "grid": "warp", "block": block, "i": int(i), "j": int(j),
                         "x": x, "y": y, "pred": -1})  # fmt: skip
        for k, ((x, y), lab) in enumerate(zip(warped_train, label, strict=True)):
            rows.append({**cell, "grid": "train", "block": block, "i": k, "j": 0,
                         "x": x, "y": y, "pred": int(lab)})  # fmt: skip
    # decision regions in input coordinates: the class the trained net assigns
    fine = np.linspace(-1.5, 2.5, 2 * GRID_N)
    for i, x in enumerate(fine):
        for j, y in enumerate(fine * 0.75):
            pred = int(y < 0.5 * np.cos(1.8 * x) - 0.1 + 0.25 * (x - 0.5))
            rows.append({**cell, "grid": "decision", "block": 0, "i": i, "j": j,
                         "x": x, "y": y, "pred": pred})  # fmt: skip
    return rows


APPROX_KINDS = ("orth_fixed", "orth_learned")


def _approx_rows(rng: np.random.Generator) -> list[dict]:
    """results/metrics/approx.parquet (orthskip.stages.approx): moons/mlp identity cells, both
    kinds, with the correction layer: ``swapped`` reproduces ``before``; fine-tuning moves the
    score a little and W toward I."""
    rows = []
    dataset, arch, depths = GRID[0][:3]
    for depth in depths:
        for s in SEEDS:
            before = float(np.clip(0.93 + rng.normal(0, 0.01), 0.5, 1.0))
            lip0 = float(0.8 * np.exp(rng.normal(0, 0.05)))
            dist = float(1.5 * np.log(depth) / depth * np.exp(rng.normal(0, 0.05)))
            for kind in APPROX_KINDS:
                tuned = float(np.clip(before + rng.normal(0.002, 0.005), 0.5, 1.0))
                shrink = 1.0 if kind == "orth_fixed" else 0.8
                for phase, score, d, lip in (
                    ("before", before, 0.0, lip0),
                    ("swapped", before, dist, 1.1 * lip0),
                    ("finetuned", tuned, shrink * dist, 1.05 * lip0),
                ):
                    rows.append({**_cell(dataset, arch, "identity", depth, s), "kind": kind,
                                 "correction": True, "phase": phase,
                                 "finetune_epochs": 2 if phase == "finetuned" else 0,
                                 "source_epoch": EPOCHS, "status": "ok", "score_name": "acc",
                                 "score": score, "loss": 1.5 * (1 - score), "n_swapped": depth,
                                 "dist_identity": d, "branch_lipschitz": lip,
                                 "correction_norm": d if phase != "before" else np.nan,
                                 "gram_err_max": 1e-7 if phase != "before" else 0.0,
                                 **PROVENANCE})  # fmt: skip
    return rows


# The rate setting (config.yaml's diffeo2 grid, smaller): a regression with m over 2.1
# decades, so that the figures meet the real run's 2…256 depth axes. Opt-in
# (``fixture_frames(rate=True)``): every other test keeps the tables it was written against.
RATE_DATASET, RATE_ARCH = "diffeo2", "mlp"
RATE_DEPTHS = (2, 4, 8, 16, 32, 64, 128, 256)
RATE_VARIANTS = {
    "rate_identity": "identity",
    "rate_linear": "linear",
    "rate_orth_learned": "orth_learned",
    "rate_orth_learned_haar": "orth_learned",
}
RATE_SNAPSHOTS = (0, 2, 4)


def _rate_history(cell: dict, rng: np.random.Generator) -> tuple[dict, list[dict]]:
    r2 = float(np.clip(0.99 - 0.02 * rng.random(), 0.0, 1.0))
    history = []
    for epoch in range(EPOCHS + 1):
        frac = epoch / EPOCHS
        loss = 0.5 * np.exp(-3 * frac) + (1 - r2)
        history.append({**cell, "task": "regression", "epoch": epoch, "train_loss": loss,
                        "test_loss": 1.05 * loss, "val_loss": 1.03 * loss,
                        "train_acc": np.nan, "test_acc": np.nan, "val_acc": np.nan,
                        "train_r2": 1 - loss, "test_r2": 1 - 1.05 * loss,
                        "val_r2": 1 - 1.03 * loss, "clipped_frac": 0.0, "lr": 1e-3,
                        "time_s": 0.1 * epoch})  # fmt: skip
    last = history[-1]
    row = {**cell, "task": "regression", "status": "ok", "epochs": EPOCHS,
           **{k: last[k] for k in ("train_loss", "test_loss", "val_loss", "train_acc",
                                   "test_acc", "val_acc", "train_r2", "test_r2", "val_r2")},
           "best_val_epoch": EPOCHS, "test_acc_at_best_val": np.nan,
           "test_r2_at_best_val": last["test_r2"], "wall_time_s": 1.0, "n_params": 48 * 16,
           "n_skip_params": 0 if cell["skip"] == "identity" else 4 * cell["depth"],
           **PROVENANCE}  # fmt: skip
    return row, history


def _rate_layer_rows(cell: dict, rng: np.random.Generator) -> list[dict]:
    """Only the families the rate recipe measures: skip distances, Lip(F), gradient ratio."""
    m, skip, variant = cell["depth"], cell["skip"], cell["variant"]
    rows = []
    for epoch in RATE_SNAPSHOTS:
        t = epoch / EPOCHS
        for b in range(m):
            base = {**cell, "epoch": epoch, "layer_index": b, "layer_kind": "block",
                    "exact": False, "method": "direct", **PROVENANCE}  # fmt: skip

            def add(name, param, metric, stat, value, base=base, b=b):
                rows.append({**base, "layer_name": f"blocks.{b}{name}", "param": param,
                             "metric": metric, "stat": stat, "value": float(value)})  # fmt: skip

            add("", "", "grad_norm_ratio", "value", np.exp(rng.normal(0, 0.02)))
            add("", f"blocks.{b}.branch", "branch_lipschitz", "max",
                branch_lip(skip, m, t, rng))  # fmt: skip
            if skip == "identity":
                continue
            if variant.endswith("haar"):
                fro_rel = haar_fro_rel(m, t, rng)
                init = abs(fro_rel - haar_fro_rel(m, 0.0, rng))
            else:
                fro_rel = 0.6 * dist_identity_spec(skip, m, b, rng) * t
                init = fro_rel
            add(".skip", f"blocks.{b}.skip.Q", "dist_identity", "fro_rel", fro_rel)
            add(".skip", f"blocks.{b}.skip.Q", "dist_init", "fro_rel", init)
            add(".skip", f"blocks.{b}.skip.Q", "orth_defect", "value",
                0.3 if skip == "linear" else 1e-7)  # fmt: skip
    return rows


def _rate_frames(rng: np.random.Generator) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {"cells": [], "history": [], "layers": []}
    for variant, skip in RATE_VARIANTS.items():
        for depth in RATE_DEPTHS:
            for s in SEEDS:
                cell = {"dataset": RATE_DATASET, "arch": RATE_ARCH, "variant": variant,
                        "skip": skip, "depth": depth, "seed": s}  # fmt: skip
                row, hist = _rate_history(cell, rng)
                out["cells"].append(row)
                out["history"].extend(hist)
                out["layers"].extend(_rate_layer_rows(cell, rng))
    return out


def fixture_frames(seed: int = 0, rate: bool = False) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    cells, history, layers, warp = [], [], [], []
    for dataset, arch, depths, skips, chance in GRID:
        for skip in skips:
            for depth in depths:
                for s in SEEDS:
                    row, hist = _cell_rows(dataset, arch, skip, depth, s, chance, rng)
                    cells.append(row)
                    history.extend(hist)
                    layers.extend(_layer_rows(dataset, arch, skip, depth, s, rng))
                    # warp grids for two seeds keep the file small; figure 8 shows one seed
                    if dataset == "moons" and row["status"] == "ok" and s < 2:
                        warp.extend(_warp_rows(dataset, arch, skip, depth, s, rng))
    if rate:  # its own stream: the default tables stay as they were
        extra = _rate_frames(np.random.default_rng(seed + 30))
        cells, history, layers = (cells + extra["cells"], history + extra["history"],
                                  layers + extra["layers"])  # fmt: skip
    frames = {
        "cells": pd.DataFrame(cells),
        "history": pd.DataFrame(history),
        "layers": pd.DataFrame(layers),
        "warp": pd.DataFrame(warp),
        # its own stream: adding it left every other fixture number unchanged
        "approx": pd.DataFrame(_approx_rows(np.random.default_rng(seed + 15))),
    }
    for df in frames.values():
        df["depth"] = df["depth"].astype("int64")
        df["seed"] = df["seed"].astype("int64")
    return frames


def write_fixture(directory: Path, seed: int = 0, rate: bool = False) -> dict[str, Path]:
    """Write the five aggregated Parquet files into ``directory``; return their paths.

    ``rate``: add the rate setting (diffeo2/mlp, m = 2…256, the rate_* variants)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, df in fixture_frames(seed, rate).items():
        path = directory / f"{name}.parquet"
        df.to_parquet(path, index=False)
        paths[name] = path
    return paths
