"""Vectorised packs: the K members of a pack train as one batched computation.

Every parameter and buffer of the K member models is stacked along a new leading dimension
(``torch.func.stack_module_state``); one forward/backward runs the K models at once under
``torch.func.vmap``, and one optimizer steps the stacked tensors. Nothing couples members:

- each member's init, validation split, data order and augmentation come from its own seed,
  drawn exactly as ``orthskip.train.train_cell`` draws them;
- the loss is the sum of the members' mean losses, so each member's gradient is its own;
  SGD and AdamW act elementwise; gradient clipping, ``clipped_frac``, BatchNorm statistics
  and the procrustes projection are per member; the Riemannian step of orth_manifold runs
  batched, one matrix per member (its Newton–Schulz stopping test covers the whole batch, so
  a member may get one more iteration than alone: a change of ~1e-13, tested to 1e-9);
- a member whose loss, gradient or parameters go non-finite is recorded ``diverged`` at that
  step (its checkpoint holds what a solo run would hold) and then frozen: its gradient is
  zeroed and its parameters are reset to their finite initial values after every step, so
  no NaN reaches a batched eigendecomposition or Newton–Schulz test the others share. A
  member stopped by the plateau rule is frozen the same way.

Each member writes its usual cell directory, and its ``last.pt`` has the format of a solo
run's (a solo run can resume it). Checkpoints are written member by member, each after
renaming the previous one to ``last.prev.pt``: after a kill between two writes the members
ahead resume from their previous checkpoint, so every member restarts at the same step and
the pack ends bit for bit like an uninterrupted one (on CPU).
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import stack_module_state, vmap

from orthskip.config import Cell, config_hash, resume_key
from orthskip.io import load_torch, save_torch
from orthskip.train import (
    EVAL_BATCH,
    SPLITS,
    CheckpointClock,
    Preempted,
    TrainState,
    _select_device,
    _SigtermFlag,
    build_cell_model,
    count_params,
    lr_factor,
    plateau,
    r_squared,
    validation_split,
    write_outputs,
)

log = logging.getLogger(__name__)


@dataclass
class Member:
    """One cell of the pack: its config, seeds' streams, data split and training state."""

    cfg: dict[str, Any]
    outdir: Path
    train_idx: Tensor
    val_idx: Tensor
    data_gen: torch.Generator
    aug_gen: torch.Generator
    model: nn.Module  # the member's own module: its init, state-dict layout and counts
    rkey: str
    cfg_hash: str
    state: TrainState = field(default_factory=TrainState)

    @property
    def cell(self) -> Cell:
        return Cell.of(self.cfg["cell"])

    @property
    def running(self) -> bool:
        return self.state.status == "running"


class Stacked:
    """K modules of one architecture as stacked tensors, called together under vmap."""

    def __init__(self, models: list[nn.Module]) -> None:
        self.k = len(models)
        params, buffers = stack_module_state(models)
        # ``module``: the stacked tensors registered in a copy of member 0, so that the
        # optimizer partition (skip / manifold / main) and state-dict keys are the solo ones
        self.module = copy.deepcopy(models[0])
        self.base = copy.deepcopy(models[0])  # the module vmap calls with batched tensors
        self.slots: list[tuple[nn.Module, str, str, str]] = []
        names = {**params, **buffers}
        for (prefix, mod), (_, bmod) in zip(
            self.module.named_modules(remove_duplicate=False),
            self.base.named_modules(remove_duplicate=False),
            strict=True,
        ):
            for where in ("_parameters", "_buffers"):
                for attr, value in list(getattr(mod, where).items()):
                    if value is None:
                        continue
                    name = f"{prefix}.{attr}" if prefix else attr
                    stacked = names[name]
                    if where == "_parameters":
                        stacked = nn.Parameter(stacked, requires_grad=value.requires_grad)
                    getattr(mod, where)[attr] = stacked
                    self.slots.append((bmod, where, attr, name))
        self.tensors = [self._lookup(name) for *_, name in self.slots]
        self.params = [p for p in self.module.parameters() if p.requires_grad]

    def _lookup(self, name: str) -> Tensor:
        mod_name, _, attr = name.rpartition(".")
        mod = self.module.get_submodule(mod_name) if mod_name else self.module
        return mod._parameters.get(attr, mod._buffers.get(attr))

    def _call(self, tensors: list[Tensor], x: Tensor) -> Tensor:
        for (mod, where, attr, _), t in zip(self.slots, tensors, strict=True):
            getattr(mod, where)[attr] = t
        return self.base(x)

    def forward(self, x: Tensor, shared_input: bool = False) -> Tensor:
        """Outputs (K, N, …) of the K members on x (K, N, …), or on one x (N, …) for all."""
        out = vmap(self._call, in_dims=(0, None if shared_input else 0))(self.tensors, x)
        for mod, where, attr, _ in self.slots:  # drop the batched wrappers vmap left behind
            getattr(mod, where)[attr] = None
        return out

    def train(self, mode: bool = True) -> None:
        self.base.train(mode)
        self.module.train(mode)

    def member_state(self, k: int) -> dict[str, Tensor]:
        """Member k's state dict, on the CPU (the keys of a solo model's state dict)."""
        return {n: t[k].detach().to("cpu", copy=True) for n, t in self.module.state_dict().items()}

    @torch.no_grad()
    def load_member(self, k: int, state: dict[str, Tensor]) -> None:
        for n, t in self.module.state_dict().items():
            t[k].copy_(state[n])


def _per_member_max(tensors: list[Tensor], k: int) -> Tensor:
    """max |entry| per member (K,): NaN and inf propagate, nothing overflows.

    One concatenation and one reduction instead of one reduction per tensor: for small
    models the per-call overhead, not the arithmetic, is the cost.
    """
    flat = torch.cat([t.detach().reshape(k, -1) for t in tensors], dim=1)
    return torch.linalg.vector_norm(flat, ord=math.inf, dim=1)


def _view(mask: Tensor, t: Tensor) -> Tensor:
    return mask.view(-1, *([1] * (t.dim() - 1)))


def _slice_optimizer_state(state: Any, k: int) -> Any:
    """Member k's part of a stacked optimizer state (every tensor of rank ≥ 1 is stacked)."""
    if isinstance(state, Tensor):
        return state[k].clone() if state.dim() else state.clone()
    if isinstance(state, dict):
        return {key: _slice_optimizer_state(v, k) for key, v in state.items()}
    if isinstance(state, list):
        return [_slice_optimizer_state(v, k) for v in state]
    return copy.deepcopy(state)


def _stack_optimizer_state(states: list[Any], ref: int) -> Any:
    """Inverse of _slice_optimizer_state; scalars (step counts) come from member ``ref``."""
    first = states[ref]
    if isinstance(first, Tensor):
        return torch.stack(states) if first.dim() else first.clone()
    if isinstance(first, dict):
        return {key: _stack_optimizer_state([s[key] for s in states], ref) for key in first}
    if isinstance(first, list):
        return [_stack_optimizer_state([s[i] for s in states], ref) for i in range(len(first))]
    return copy.deepcopy(first)


def _position(ckpt: dict[str, Any]) -> tuple[int, int]:
    return int(ckpt["state"]["epoch"]), int(ckpt["state"]["batch"])


def load_checkpoints(members: list[Member]) -> list[dict[str, Any] | None] | None:
    """Each member's resume checkpoint, all running members at one step; None if impossible.

    A member whose ``last.pt`` is ahead of the others (the pack was killed between two
    checkpoint writes) takes its ``last.prev.pt``; a checkpoint of another config is kept
    aside as ``last.<key>.pt`` (as a solo run does) and the member starts fresh.
    """
    ckpts: list[dict[str, Any] | None] = []
    prevs: list[dict[str, Any] | None] = []
    for m in members:
        ckpt = prev = None
        last, prev_path = m.outdir / "last.pt", m.outdir / "last.prev.pt"
        if last.exists():
            ckpt = load_torch(last)
            if ckpt.get("resume_key") != m.rkey:
                stale = last.with_name(f"last.{ckpt.get('resume_key', 'unknown')}.pt")
                last.rename(stale)
                log.warning("%s was written for another config; kept as %s", last, stale.name)
                ckpt = None
        if prev_path.exists():
            prev = load_torch(prev_path)
            if prev.get("resume_key") != m.rkey:
                prev = None
        if ckpt is None and prev is not None:
            ckpt, prev = prev, None  # killed between renaming last.pt and writing the new one
        ckpts.append(ckpt)
        prevs.append(prev)

    def running(c: dict[str, Any] | None) -> bool:
        return c is None or _running_ckpt(c, members[0])

    positions = {(0, 0) if c is None else _position(c) for c in ckpts if running(c)}
    if len(positions) <= 1:
        return ckpts
    target = min(positions)
    for i, c in enumerate(ckpts):
        if c is not None and running(c) and _position(c) != target:
            p = prevs[i]
            if p is None or _position(p) != target:
                return None
            ckpts[i] = p
    return ckpts


def _continues(ckpt: dict[str, Any], member: Member) -> bool:
    """A finished (ok) run asked for more epochs continues, as a solo run does."""
    st = ckpt["state"]
    epochs = int(member.cfg["train"]["epochs"])
    return st["status"] == "ok" and st["epoch"] < epochs and not st["stopped"]


def can_vectorise(members: list[dict[str, Any]]) -> str | None:
    """Why these members cannot train as one batched computation, or None if they can."""
    if len(members) < 2:
        return "a pack of one"
    tcfg = members[0]["train"]
    for key in ("compile", "channels_last"):
        if tcfg.get(key):
            return f"train.{key} is on (torch.compile / channels_last are not used under vmap)"
    cell = members[0]["cell"]
    if cell["skip"] == "orth_jacobian" and cell["arch"] != "mlp":
        # its spatial (FFT) form gave some members wrong branch gradients under vmap at
        # V = 0 (tests/test_stacked.py); the matrix form on mlp is exact
        return "orth_jacobian's spectral convolution is not vectorised"
    strip = [{**m, "cell": {**m["cell"], "seed": 0}} for m in members]
    if any(resume_key(s) != resume_key(strip[0]) for s in strip):
        return "the members differ in more than their seed"
    return None


def train_stacked(
    cfgs: list[dict[str, Any]], data_path: Path, manifest: Path, outdirs: list[Path]
) -> list[str] | None:
    """Train the members together; their statuses, or None when their checkpoints are not
    at one step (then the caller trains them one after another, each resuming alone)."""
    from orthskip.data import augment_batch, load_prepared
    from orthskip.optim import build_optimizer

    tcfg = cfgs[0]["train"]
    torch.set_num_threads(tcfg.get("threads", 1))
    device = _select_device(tcfg.get("device", "auto"))
    dtype = getattr(torch, tcfg.get("dtype", "float32"))
    amp = bool(tcfg.get("amp")) and device.type == "cuda"
    if tcfg.get("deterministic") and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    data = load_prepared(Path(data_path), Path(manifest))
    regression = data.task == "regression"
    score = "r2" if regression else "acc"
    x_all = data.x_train.to(device, dtype)
    y_all = data.y_train.to(device, dtype) if regression else data.y_train.to(device)
    x_test = data.x_test.to(device, dtype)
    y_test = data.y_test.to(device, dtype) if regression else data.y_test.to(device)
    augment = data.meta.get("augment")

    members: list[Member] = []
    for cfg, out in zip(cfgs, outdirs, strict=True):
        seed = int(cfg["cell"]["seed"])
        tr, va = validation_split(len(data.x_train), float(tcfg.get("val_fraction", 0.0)), seed)
        torch.manual_seed(seed)
        model = build_cell_model(cfg, data).to(device)
        if dtype != torch.float32:  # skips keep their float64 generators in float32 runs
            model.to(dtype)
        members.append(
            Member(
                cfg=cfg,
                outdir=Path(out),
                train_idx=tr.to(device),
                val_idx=va.to(device),
                data_gen=torch.Generator().manual_seed(seed * 1_000_003 + 17),
                aug_gen=torch.Generator(device=device).manual_seed(seed * 1_000_003 + 29),
                model=model,
                rkey=resume_key(cfg),
                cfg_hash=config_hash(cfg),
            )
        )
    ckpts = load_checkpoints(members)
    if ckpts is None:
        log.warning("the members' checkpoints are at different steps: training one by one")
        return None

    k_members = len(members)
    net = Stacked([m.model for m in members])
    init = [p.detach().clone() for p in net.params]  # finite values for frozen members
    kind = cfgs[0]["cell"]["skip"]
    skip_cfg = {kind: cfgs[0]["skip_options"]}
    bundle = build_optimizer(net.module, tcfg["optimizer"], skip_cfg)
    projections, bundle.projections = bundle.projections, []  # projected per member below
    epochs, batch = int(tcfg["epochs"]), int(tcfg["batch_size"])
    n_train = len(members[0].train_idx)
    steps_per_epoch = max(math.ceil(n_train / batch), 1)
    schedulers = [
        torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: lr_factor(s, steps_per_epoch, tcfg["schedule"], epochs)
        )
        for opt in bundle.optimizers
    ]
    ref = next((i for i, c in enumerate(ckpts) if c is not None and _running_ckpt(c, members[i])),
               None)  # fmt: skip
    for i, (m, c) in enumerate(zip(members, ckpts, strict=True)):
        if c is None:
            continue
        net.load_member(i, c["model"])
        m.data_gen.set_state(c["data_gen"])
        m.aug_gen.set_state(c["aug_gen"].to(m.aug_gen.get_state().device))
        m.state = TrainState.of(c["state"])
        if _continues(c, m):
            m.state.status = "running"
        log.info("resumed %s at epoch %d batch %d", m.cell.path, m.state.epoch, m.state.batch)
    if ref is not None:
        opt_states = [
            c["optimizer"] if c is not None and _running_ckpt(c, m) else ckpts[ref]["optimizer"]
            for m, c in zip(members, ckpts, strict=True)
        ]
        bundle.load_state_dict(_stack_optimizer_state(opt_states, ref))
        for sched, sd in zip(schedulers, ckpts[ref]["schedulers"], strict=True):
            sched.load_state_dict(sd)

    clip = float(tcfg["grad_clip"]) if tcfg.get("grad_clip") else None
    if regression:
        loss_fn: nn.Module = nn.MSELoss(reduction="none")
    else:
        loss_fn = nn.CrossEntropyLoss(
            reduction="none", label_smoothing=float(tcfg.get("label_smoothing", 0.0))
        )
    snapshot_epochs = sorted(set(tcfg.get("snapshot_epochs", [])) | {epochs})
    clock = CheckpointClock(tcfg.get("checkpoint_every_s", 0))
    nan = float("nan")

    def active_mask() -> Tensor:
        return torch.tensor([m.running for m in members], device=device)

    @torch.no_grad()
    def evaluate_all(xs: Tensor, ys: Tensor, shared: bool) -> list[tuple[float, float]]:
        """(loss, score) per member, as orthskip.train.evaluate computes them."""
        net.train(False)
        n = xs.shape[0] if shared else xs.shape[1]
        loss_sum = torch.zeros(k_members, device=device, dtype=torch.float64)
        correct = torch.zeros(k_members, device=device, dtype=torch.float64)
        for i in range(0, n, EVAL_BATCH):
            xb = xs[i : i + EVAL_BATCH] if shared else xs[:, i : i + EVAL_BATCH]
            yb = ys[i : i + EVAL_BATCH] if shared else ys[:, i : i + EVAL_BATCH]
            if shared:
                yb = yb.expand(k_members, *yb.shape)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                out = net.forward(xb, shared_input=shared)
            out = out.float() if amp else out
            if regression:
                err = (out - yb) ** 2
                loss_sum += err.reshape(k_members, -1).sum(1).double()
            else:
                ce = nn.functional.cross_entropy(
                    out.flatten(0, 1), yb.flatten(), reduction="none"
                ).view(k_members, -1)
                loss_sum += ce.sum(1).double()
                correct += (out.argmax(-1) == yb).sum(1)
        net.train(True)
        if not n:
            return [(nan, nan)] * k_members
        result = []
        for i in range(k_members):
            y_i = ys if shared else ys[i]
            if regression:
                result.append(
                    (float(loss_sum[i]) / y_i.numel(), r_squared(float(loss_sum[i]), y_i))
                )
            else:
                result.append((float(loss_sum[i]) / n, float(correct[i]) / n))
        return result

    def record(idx: list[int], epoch: int, train: list[tuple[float, float, float]]) -> None:
        vals = evaluate_all(
            x_all[torch.stack([m.val_idx for m in members])],
            y_all[torch.stack([m.val_idx for m in members])],
            shared=False,
        )
        tests = evaluate_all(x_test, y_test, shared=True)
        for i, (train_loss, train_score, clipped) in zip(idx, train, strict=True):
            m = members[i]
            scores = {f"{s}_{name}": nan for s in SPLITS for name in ("acc", "r2")}
            scores.update(
                {f"train_{score}": train_score, f"val_{score}": vals[i][1],
                 f"test_{score}": tests[i][1]}
            )  # fmt: skip
            m.state.history.append(
                {
                    "epoch": epoch,
                    "train_loss": train_loss,
                    "val_loss": vals[i][0],
                    "test_loss": tests[i][0],
                    **scores,
                    "clipped_frac": clipped,
                    "lr": bundle.optimizers[0].param_groups[0]["lr"],
                    "time_s": m.state.elapsed,
                }
            )
            if epoch in snapshot_epochs:
                m.state.snapshots[str(epoch)] = net.member_state(i)
            log.info(
                "%s epoch %d/%d train_loss %.4f test_%s %.4f",
                m.cell.path, epoch, epochs, train_loss, score, tests[i][1],
            )  # fmt: skip

    def checkpoint(i: int) -> None:
        m = members[i]
        last = m.outdir / "last.pt"
        m.outdir.mkdir(parents=True, exist_ok=True)
        payload = {
            "resume_key": m.rkey,
            "config_hash": m.cfg_hash,
            "model": net.member_state(i),
            "optimizer": _slice_optimizer_state(bundle.state_dict(), i),
            "schedulers": [s.state_dict() for s in schedulers],
            "data_gen": m.data_gen.get_state(),
            "aug_gen": m.aug_gen.get_state().cpu(),
            "state": m.state.as_dict(),
        }
        if last.exists():
            os.replace(last, last.with_name("last.prev.pt"))
        save_torch(last, payload)

    def diverge(i: int, epoch: int, b: int, why: str, n_clipped: float) -> None:
        m = members[i]
        m.state.update(epoch=epoch, batch=0, perm=None, sums=None)
        m.state.status = "diverged"
        m.state.diverged_at = (epoch, b)
        m.state.history.append(
            {
                **{key: nan for key in m.state.history[0]},
                "epoch": epoch,
                "clipped_frac": n_clipped / max(b, 1),
                "lr": bundle.optimizers[0].param_groups[0]["lr"],
                "time_s": m.state.elapsed,
            }
        )
        log.warning("%s diverged at epoch %d step %d (%s)", m.cell.path, epoch, b, why)
        checkpoint(i)

    @torch.no_grad()
    def freeze_inactive(active: Tensor) -> None:
        if bool(active.all()):
            return
        for p, p0 in zip(net.params, init, strict=True):
            p.copy_(torch.where(_view(active, p), p, p0))

    fresh = [i for i, m in enumerate(members) if not m.state.history]
    if fresh:
        train0 = evaluate_all(
            x_all[torch.stack([m.train_idx for m in members])],
            y_all[torch.stack([m.train_idx for m in members])],
            shared=False,
        )
        record(fresh, 0, [(*train0[i], 0.0) for i in fresh])
    freeze_inactive(active_mask())

    def member_batches(live: list[int], b: int) -> tuple[Tensor, Tensor]:
        """(x, y) of shape (K, B, …): the running members' own batches; a frozen member
        computes on a running member's batch (its result is unused)."""
        rows = [
            members[i].train_idx[perms[i][b * batch : (b + 1) * batch]] if i in live else None
            for i in range(k_members)
        ]
        idx = torch.stack([r if r is not None else rows[live[0]] for r in rows])
        xb, yb = x_all[idx], y_all[idx]
        if augment:
            xb = torch.stack(
                [augment_batch(xb[i], augment, members[i].aug_gen) if i in live else xb[i]
                 for i in range(k_members)]
            )  # fmt: skip
        return xb, yb

    def loss_of(out: Tensor, y: Tensor) -> Tensor:
        """Per-member mean loss (K,), as the solo nn loss module's mean."""
        per = loss_fn(out.flatten(0, 1), y.flatten(0, 1))
        return per.reshape(k_members, -1).mean(1)

    with _SigtermFlag() as sigterm:
        while any(m.running and m.state.epoch < epochs for m in members):
            run = [i for i, m in enumerate(members) if m.running]
            epoch = members[run[0]].state.epoch + 1
            perms: list[Tensor] = []
            for m in members:
                if m.running and m.state.perm is None:
                    m.state.perm = torch.randperm(n_train, generator=m.data_gen)
                    m.state.sums = torch.zeros(4, dtype=torch.float64)
                perms.append(m.state.perm.to(device) if m.running else torch.arange(n_train))
            sums = torch.stack(
                [
                    m.state.sums if m.running else torch.zeros(4, dtype=torch.float64)
                    for m in members
                ]
            ).to(device)
            seen = int(sums[run[0], 2])
            start = members[run[0]].state.batch
            net.train(True)
            t0 = time.perf_counter()
            for b in range(start, steps_per_epoch):
                active = active_mask()
                if sigterm.raised:
                    for i in run:
                        if members[i].running:
                            members[i].state.batch = b
                            sums[i, 2] = seen
                            members[i].state.sums = sums[i].cpu()
                            members[i].state.elapsed += time.perf_counter() - t0
                            checkpoint(i)
                    raise Preempted(f"SIGTERM at epoch {epoch} batch {b}")
                live = active.nonzero().flatten().tolist()
                xb, yb = member_batches(live, b)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    out = net.forward(xb)
                    losses = loss_of(out.float() if amp else out, yb)
                bundle.zero_grad()
                torch.where(active, losses, torch.zeros_like(losses)).sum().backward()
                grads = [p.grad for p in net.params if p.grad is not None]
                bad = active & ~torch.isfinite(losses.detach())
                clipped = torch.zeros(k_members, dtype=torch.bool, device=device)
                if clip:
                    norms = torch.stack(
                        [torch.linalg.vector_norm(g.reshape(k_members, -1), dim=1) for g in grads]
                    )
                    total = torch.linalg.vector_norm(norms, dim=0)
                    coef = (clip / (total + 1e-6)).clamp(max=1.0)
                    for g in grads:
                        g.mul_(_view(coef, g).to(g.dtype))
                    clipped = total > clip
                bad_grad = active & ~bad & ~torch.isfinite(_per_member_max(grads, k_members))
                for flag, why in ((bad, "non-finite loss"), (bad_grad, "non-finite gradient")):
                    for i in flag.nonzero().flatten().tolist():
                        members[i].state.elapsed += time.perf_counter() - t0
                        diverge(i, epoch, b, why, float(sums[i, 3]))
                active = active_mask()
                if not bool(active.any()):
                    break
                if not bool(active.all()):
                    for g in grads:
                        g.masked_fill_(~_view(active, g), 0)
                bundle.step()
                if projections and bundle.steps % bundle.project_every == 0:
                    with torch.no_grad():
                        for skip in projections:
                            for i in active.nonzero().flatten().tolist():
                                skip.weight[i].copy_(skip.projected(skip.weight[i]))
                bad_param = active & ~torch.isfinite(
                    _per_member_max([p.detach() for p in net.params], k_members)
                )
                for i in bad_param.nonzero().flatten().tolist():
                    members[i].state.elapsed += time.perf_counter() - t0
                    diverge(i, epoch, b, "non-finite parameter after the step", float(sums[i, 3]))
                for sched in schedulers:
                    sched.step()
                with torch.no_grad():
                    sums[:, 0] += losses.detach().double() * yb.shape[1]
                    if not regression:
                        sums[:, 1] += (out.argmax(-1) == yb).sum(1)
                    sums[:, 3] += clipped
                freeze_inactive(active_mask())
                seen += yb.shape[1]
            elapsed = time.perf_counter() - t0
            ended = [i for i in run if members[i].running]
            for i in ended:
                members[i].state.elapsed += elapsed
                members[i].state.update(epoch=epoch, batch=0, perm=None, sums=None)
            train_rows = []
            for i in ended:
                loss_sum, correct, _, n_clipped = sums[i].tolist()
                ytr = y_all[members[i].train_idx]
                if not math.isfinite(loss_sum):  # caught late cannot happen: checked per step
                    raise RuntimeError(f"{members[i].cell.path}: non-finite epoch loss")
                train_score = (
                    r_squared(loss_sum * ytr[0].numel(), ytr) if regression else correct / seen
                )
                train_rows.append((loss_sum / seen, train_score, n_clipped / steps_per_epoch))
            if ended:
                record(ended, epoch, train_rows)
            due = clock.due()  # one decision for all: the members' checkpoints stay at one step
            for i in ended:
                m = members[i]
                m.state.stopped = plateau(m.state.history, tcfg.get("stop") or {})
                if m.state.stopped:
                    m.state.status = "ok"
                    m.state.snapshots[str(epoch)] = net.member_state(i)
                    log.info("%s stopped at epoch %d: %s", m.cell.path, epoch, m.state.stopped)
                if m.running and m.state.epoch >= epochs:
                    m.state.status = "ok"
                if due or not m.running:
                    checkpoint(i)
            freeze_inactive(active_mask())

    statuses = []
    riemann = bundle.metadata()
    for m in members:
        if m.state.status == "running":
            m.state.status = "ok"
        n_params, n_skip_params = count_params(m.model)
        solo_meta = build_optimizer(m.model, tcfg["optimizer"], skip_cfg).metadata()
        solo_meta.update({k: v for k, v in riemann.items() if k.startswith("ns_")})
        meta = {
            "task": data.task,
            "n_params": n_params,
            "n_skip_params": n_skip_params,
            "optimizer": solo_meta,
            "pack": {"mode": "vectorised", "size": k_members},
        }
        write_outputs(m.cell, m.cfg, m.state, m.outdir, device, m.cfg_hash, meta)
        statuses.append(m.state.status)
    return statuses


def _running_ckpt(ckpt: dict[str, Any], member: Member) -> bool:
    return ckpt["state"]["status"] == "running" or _continues(ckpt, member)
