"""The training engine: every cell trains here, the K members of a pack as one batched
computation and a cell alone as a pack of one.

The pack's net is one of three (:func:`engine_for`): the mlp's matrix kinds hand-batched
(``training.handmlp``); a pack of one, its own module called directly (``training.single``);
or :class:`Stacked` below, where every parameter and buffer of the K member models is
stacked along a new leading dimension (``torch.func.stack_module_state``), one
forward/backward runs the K models at once under ``torch.func.vmap``, and one optimizer
steps the stacked tensors. Nothing couples members:

- each member's init, validation split, data order and augmentation come from its own seed,
  drawn exactly as the reference loop (``orthskip.training.reference``) draws them;
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
import functools
import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch import Tensor, nn
from torch.func import stack_module_state, vmap

from orthskip.config.grid import Cell, CellConfig, resume_key
from orthskip.data import augment_batch, load_prepared
from orthskip.io import load_torch, save_torch
from orthskip.nn.arch_specs import ARCH_SPECS
from orthskip.nn.models import build_cell_model, initial_cell_state
from orthskip.nn.optim import build_optimizer
from orthskip.nn.skips import SKIPS, skip_identity_gap
from orthskip.training import runstate
from orthskip.training.handmlp import HandMLP, Slot, hand_batched_reason
from orthskip.training.outputs import write_outputs
from orthskip.training.preempt import Preempted, SigtermFlag
from orthskip.training.runstate import EVAL_BATCH, RunSpec, TrainState, validation_split
from orthskip.training.single import Single

log = logging.getLogger(__name__)


@dataclass
class Member:
    """One cell of the pack: its config, seeds' streams, data split and training state."""

    cfg: CellConfig
    outdir: Path
    train_idx: Tensor
    val_idx: Tensor
    data_gen: torch.Generator
    aug_gen: torch.Generator
    rkey: str
    cfg_hash: str
    state: TrainState = field(default_factory=TrainState)

    @property
    def cell(self) -> Cell:
        return self.cfg.cell

    @property
    def running(self) -> bool:
        return self.state.status == "running"


class Stacked:
    """K modules of one architecture as stacked tensors, called together under vmap."""

    def __init__(self, models: list[nn.Module], cfgs: list[CellConfig]) -> None:
        self.k = len(models)
        self.models = models  # the members' own modules: their solo counts and optimizers
        self.cfgs = cfgs
        self.skip_cfg = {cfgs[0].skip: cfgs[0].skip_options}
        params, buffers = stack_module_state(models)
        # ``module``: the stacked tensors registered in a copy of member 0, so that the
        # optimizer partition (skip / manifold / main) and state-dict keys are the solo ones
        self.module = copy.deepcopy(models[0])
        self.base = copy.deepcopy(models[0])  # the module vmap calls with batched tensors
        self.scratch: nn.Module | None = None  # one member's module, for its skips' measures
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
        self.layout: list[Slot | None] = [None] * len(self.params)  # member dim 0, in order

    def build_bundle(self, tcfg: Any, spec: RunSpec) -> Any:
        del spec  # the vmap pack's optimizer is the solo one on the stacked module
        return build_optimizer(self.module, tcfg["optimizer"], self.skip_cfg)

    def optimizer_state(self, k: int, bundle: Any) -> dict[str, Any]:
        return _slice_optimizer_state(bundle.state_dict(), k)

    def solo_metadata(self, k: int) -> dict[str, Any]:
        """Member k's parameter counts and its solo optimizer's description."""
        model, cfg = self.models[k], self.cfgs[k]
        solo = build_optimizer(model, cfg.train["optimizer"], {cfg.skip: cfg.skip_options})
        return {
            "n_params": model.n_params(),
            "n_skip_params": model.n_skip_params(),
            "optimizer": solo.metadata(),
        }

    def scheduler_states(self, k: int, schedulers: list[Any]) -> list[dict[str, Any]]:
        return [s.state_dict() for s in schedulers]

    def load_optimizer(
        self, ckpts: list[dict[str, Any] | None], live: list[bool], bundle: Any, schedulers: list
    ) -> None:
        """The optimizer's shared scalars (step counts) and the schedulers come from a
        running member's checkpoint; a member that no longer runs takes its state too."""
        ref = next(i for i, ok in enumerate(live) if ok)
        ref_ckpt = ckpts[ref]
        assert ref_ckpt is not None
        opt_states = [c["optimizer"] if c is not None and ok else ref_ckpt["optimizer"]
                      for c, ok in zip(ckpts, live, strict=True)]  # fmt: skip
        bundle.load_state_dict(_stack_optimizer_state(opt_states, ref))
        for sched, sd in zip(schedulers, ref_ckpt["schedulers"], strict=True):
            sched.load_state_dict(sd)

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

    @torch.no_grad()
    def project(self, skip: Any, k: int) -> None:
        """The procrustes projection of member k's part of ``skip``."""
        skip.weight[k].copy_(skip.projected(skip.weight[k]))

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

    @torch.no_grad()
    def skip_identity_gaps(self) -> list[float]:
        """Each member's ``skip_identity_gap``: its state loaded into a scratch copy of its
        solo module (a per-epoch cost of K small copies; vmap packs are the CNNs' few)."""
        if self.scratch is None:
            self.scratch = copy.deepcopy(self.models[0])
        gaps = []
        for k in range(self.k):
            self.scratch.load_state_dict(self.member_state(k))
            gaps.append(skip_identity_gap(self.scratch))
        return gaps


def _per_member_max(tensors: list[Tensor], k: int) -> Tensor:
    """max |entry| per member (K,): NaN and inf propagate, nothing overflows.

    One concatenation and one reduction instead of one reduction per tensor: for small
    models the per-call overhead, not the arithmetic, is the cost.
    """
    flat = torch.cat([t.detach().reshape(k, -1) for t in tensors], dim=1)
    return torch.linalg.vector_norm(flat, ord=math.inf, dim=1)


def _view(mask: Tensor, t: Tensor, slot: Slot | None = None) -> Tensor:
    """The per-member (K,) ``mask`` broadcast over t's rows (``slot``: t's member dim and the
    member of each row; None: dim 0, every member in order)."""
    if slot is None:
        return mask.view(-1, *([1] * (t.dim() - 1)))
    shape = [1] * t.dim()
    shape[slot.member_dim] = len(slot.ids)
    return mask[slot.ids.to(mask.device)].view(shape)


def _member_rows(t: Tensor, slot: Slot) -> Tensor:
    """t as (rows, -1), one row per member row of t."""
    return t.movedim(slot.member_dim, 0).reshape(len(slot.ids), -1)


def _member_finite(tensors: list[Tensor], layout: list[Slot | None], k: int) -> Tensor:
    """(K,) bool: every entry of the member's part of ``tensors`` is finite."""
    if all(s is None for s in layout):
        return torch.isfinite(_per_member_max(tensors, k))
    # the usual step has every entry finite: one reduction over all the tensors says so (the
    # largest |entry|, NaN and inf propagating), where the per-member test costs five ops
    # per stacked tensor, twice a step
    if bool(torch.isfinite(nn.utils.get_total_norm(tensors, norm_type=math.inf))):
        return torch.ones(k, dtype=torch.bool, device=tensors[0].device)
    bad = torch.zeros(k, dtype=torch.long, device=tensors[0].device)
    for t, slot in zip(tensors, layout, strict=True):
        if slot is None:
            slot = Slot(0, torch.arange(k))
        rows = (~torch.isfinite(_member_rows(t.detach(), slot))).any(1)
        bad.index_add_(0, slot.ids.to(bad.device), rows.long())
    return bad == 0


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
        ckpt, prev = runstate.read_checkpoint(m.outdir / "last.pt", m.rkey), None
        prev_path = m.outdir / "last.prev.pt"
        if prev_path.exists():
            prev = load_torch(prev_path)
            if prev.get("resume_key") != m.rkey:
                prev = None
        if ckpt is None and prev is not None:
            ckpt, prev = prev, None  # killed between renaming last.pt and writing the new one
        ckpts.append(ckpt)
        prevs.append(prev)

    epochs = int(members[0].cfg.train["epochs"])

    def running(c: dict[str, Any] | None) -> bool:
        return c is None or runstate.running_ckpt(c, epochs)

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


def can_vectorise(members: list[CellConfig]) -> str | None:
    """Why these members cannot train as one batched computation, or None if they can (a
    pack of one always can: its module is called directly, orthskip.training.single)."""
    if len(members) == 1:
        return None
    tcfg = members[0].train
    arch = members[0].cell.arch
    if not ARCH_SPECS[arch].vmap_on_cpu and _on_cpu(tcfg["device"]):
        return f"on the CPU a {arch} pack under vmap is slower than its members in turn"
    for key in ("compile", "channels_last"):
        if tcfg[key]:
            return f"train.{key} is on (torch.compile / channels_last are not used under vmap)"
    spatial = SKIPS[members[0].skip].not_vmapped_on_images
    if spatial and members[0].cell.arch != "mlp":
        return spatial
    across = hand_batched_reason(members)
    if across is None:
        return None  # mixed matrix kinds, hand-batched (orthskip.training.handmlp)
    strip = [replace(m, cell=replace(m.cell, seed=0)) for m in members]
    if any(resume_key(s) != resume_key(strip[0]) for s in strip):
        return f"the members differ in more than their seed, and {across}"
    return None


def _on_cpu(device: str) -> bool:
    """Whether ``train.device`` trains on the CPU (without claiming a GPU, as
    ``devices.select_device`` does)."""
    return device == "cpu" or (device == "auto" and not torch.cuda.is_available())


def engine_for(members: list[CellConfig], engine: str = "auto") -> str:
    """``hand`` (stacked tensors, bmm per block: the mlp's matrix kinds, any mix, uncompiled),
    ``module`` (a pack of one: its own module, orthskip.training.single) or ``vmap``
    (torch.func.vmap over copies of one module: every other pack). ``engine``: "auto" (or
    "hand") picks hand where it applies; "vmap" (the benchmark's baseline) and "module"
    (nothing batched: ``execution.vectorise: false``) never do."""
    tcfg = members[0].train
    hand = engine in ("auto", "hand") and not tcfg["compile"]
    if hand and hand_batched_reason(members) is None:
        return "hand"
    return "module" if len(members) == 1 else "vmap"


@dataclass
class PackRun:
    """The pack's run: its members, their stacked model and optimizer, the shared data."""

    members: list[Member]
    spec: RunSpec
    task: str
    skip_cfg: dict[str, Any]
    data: dict[str, Tensor]  # x_/y_all (every training row: members index theirs), x_/y_test
    augment: str | None
    net: Stacked | HandMLP | Single
    init: list[Tensor]  # the initial parameters: finite values for frozen members (K > 1)
    bundle: Any  # orthskip.nn.optim's optimizers and Riemannian steps over the stacked tensors
    projections: list[Any]  # procrustes skips, projected per member
    schedulers: list[torch.optim.lr_scheduler.LambdaLR]
    loss_fn: nn.Module  # per-row losses (reduction "none")
    clock: runstate.CheckpointClock = field(init=False)
    sizes: list[int] = field(init=False)  # the pack's sizes, compaction by compaction
    label: dict[str, Any] | None = field(init=False, default=None)  # see train_stacked
    persist: bool = field(init=False, default=True)  # False: no checkpoints (fine-tuning)

    def __post_init__(self) -> None:
        self.clock = runstate.CheckpointClock(self.spec.checkpoint_every_s)
        self.sizes = [len(self.members)]

    @property
    def k(self) -> int:
        return len(self.members)

    @property
    def lr(self) -> float:
        return self.bundle.optimizers[0].param_groups[0]["lr"]

    def active(self) -> Tensor:
        """(K,) bool: the members still training."""
        return torch.tensor([m.running for m in self.members], device=self.spec.device)


# a pack rebuilds without its stopped members once at most this share of them still trains:
# stopped and diverged members are frozen but still computed, and the rate share's packs
# run their slowest members (the identity controls) to the cap long after most stopped
COMPACT_AT = 0.75


def train_stacked(
    cfgs: list[CellConfig],
    data_path: Path,
    manifest: Path,
    outdirs: list[Path],
    engine: str = "auto",
    compact: bool = True,
    label: Mapping[str, Any] | None = None,
) -> list[str] | None:
    """Train the members together; their statuses, or None when their checkpoints are not
    at one step (then the caller trains them one after another, each a pack of one).
    ``engine``: see :func:`engine_for`. ``compact``: once at most ``COMPACT_AT`` of the
    pack's members still train, the pack is rebuilt from the running members' checkpoints
    (see :func:`_compacted`). ``label``: how the cells' pack ran them, for status.json's
    ``pack`` (default: this computation, vectorised)."""
    chosen = engine_for(cfgs, engine)
    pack, device, data = open_pack(cfgs, data_path, manifest, outdirs, chosen)
    if pack is None:
        log.warning("the members' checkpoints are at different steps: training one by one")
        return None
    pack.label = dict(label) if label else None
    paths = [c.cell.path for c in cfgs]
    statuses: dict[str, str] = {}
    compacted = functools.partial(_compacted, statuses=statuses, engine=chosen, device=device,
                                  data=data, on=compact)  # fmt: skip
    pack = compacted(pack)  # a rerun after some members finished
    members, spec = pack.members, pack.spec
    fresh = [i for i, m in enumerate(members) if not m.state.history]
    if fresh:
        rows = torch.stack([m.train_idx for m in members])
        train0 = _evaluate_all(pack, pack.data["x_all"][rows], pack.data["y_all"][rows], False)
        _record(pack, fresh, 0, [(train0[i], 0.0) for i in fresh])
    _freeze_inactive(pack)
    with SigtermFlag() as sigterm:
        while any(m.running and m.state.epoch < spec.epochs for m in pack.members):
            run = [i for i, m in enumerate(pack.members) if m.running]
            epoch = pack.members[run[0]].state.epoch + 1
            sums, seen, elapsed = _train_epoch(pack, run, epoch, sigterm)
            _end_epoch(pack, run, epoch, sums, seen, elapsed)
            pack = compacted(pack)
    statuses.update(_finish(pack))
    return [statuses[p] for p in paths]


def train_cell(cfg: CellConfig, data_path: Path, manifest: Path, outdir: Path) -> str:
    """One cell, a pack of one; its status (``ok`` / ``diverged``). Raises
    :class:`~orthskip.training.preempt.Preempted` after checkpointing on SIGTERM."""
    statuses = train_stacked([cfg], data_path, manifest, [outdir])
    assert statuses is not None  # one member's checkpoint is always at one step
    return statuses[0]


def open_pack(
    cfgs: list[CellConfig], data_path: Path, manifest: Path, outdirs: list[Path], engine: str
) -> tuple[PackRun | None, torch.device, Any]:
    """The device, the prepared data and the pack on them (None: see :func:`_set_up`)."""
    device = runstate.torch_setup(cfgs[0].train)
    data = load_prepared(Path(data_path), Path(manifest))
    return _set_up(cfgs, [Path(o) for o in outdirs], engine, device, data), device, data


def _compacted(
    pack: PackRun,
    statuses: dict[str, str],
    engine: str,
    device: torch.device,
    data: Any,
    on: bool,
) -> PackRun:
    """The pack, or once at most ``COMPACT_AT`` of its members still train (and ``on``) the
    pack of its running members, rebuilt from their checkpoints (written here) as a rerun
    resumes them; the others' outputs are written and their statuses added to
    ``statuses``. A member's numbers are those of its solo run in a pack of any size, so
    they do not depend on when the pack compacts (tests/test_stacked.py)."""
    running = sum(m.running for m in pack.members)
    if not on or not 0 < running < pack.k or running > COMPACT_AT * pack.k:
        return pack
    statuses.update(_finish(pack, stopped_only=True))
    run = [i for i, m in enumerate(pack.members) if m.running]
    for i in run:
        _checkpoint(pack, i)
    log.info("pack of %d: %d no longer train, the other %d train on as a pack of their own",
             pack.k, pack.k - len(run), len(run))  # fmt: skip
    cfgs = [pack.members[i].cfg for i in run]
    sizes = [*pack.sizes, len(run)]
    new = _set_up(cfgs, [pack.members[i].outdir for i in run], engine, device, data)
    if new is None:  # cannot happen: every running member was checkpointed at this step
        raise RuntimeError("a compacted pack's checkpoints are not at one step")
    new.sizes, new.label = sizes, pack.label
    return new


def _set_up(
    cfgs: list[CellConfig], outdirs: list[Path], engine: str, device: torch.device, data: Any
) -> PackRun | None:
    """The members' seeded models stacked, the optimizer, and the resume; None when the
    members' checkpoints are not at one step."""
    tcfg = cfgs[0].train
    fraction = float(tcfg["val_fraction"])
    splits = [validation_split(len(data.x_train), fraction, c.cell.seed) for c in cfgs]
    spec = RunSpec.of(tcfg, device, data.task, len(splits[0][0]))
    tensors = _tensors(data, spec)
    members = [
        _member(cfg, out, split, spec)
        for cfg, out, split in zip(cfgs, outdirs, splits, strict=True)
    ]
    ckpts = load_checkpoints(members)
    if ckpts is None:
        return None
    skip_cfg = {cfgs[0].skip: cfgs[0].skip_options}
    net: Stacked | HandMLP | Single
    if engine == "hand":
        net = HandMLP([_seeded(cfg, initial_cell_state, data) for cfg in cfgs], cfgs, data, spec)
    elif len(cfgs) == 1:
        model = _model(cfgs[0], data, spec)
        if tcfg["channels_last"] and data.x_train.dim() == 4:
            model.to(memory_format=torch.channels_last)
        net = Single(model, tcfg, skip_cfg)
    else:
        net = Stacked([_model(cfg, data, spec) for cfg in cfgs], cfgs)
    pack = _pack_run(members, spec, data, tensors, net, skip_cfg)
    _resume(pack, ckpts)
    return pack


def _pack_run(
    members: list[Member],
    spec: RunSpec,
    data: Any,
    tensors: dict[str, Tensor],
    net: Stacked | HandMLP | Single,
    skip_cfg: dict[str, Any],
) -> PackRun:
    """The run of ``net``'s members: their optimizer, schedulers and loss, on ``tensors``."""
    tcfg = members[0].cfg.train
    bundle = net.build_bundle(tcfg, spec)
    projections, bundle.projections = bundle.projections, []  # projected per member
    return PackRun(
        members=members,
        spec=spec,
        task=data.task,
        skip_cfg=skip_cfg,
        data=tensors,
        augment=data.meta.get("augment"),
        net=net,
        init=[p.detach().clone() for p in net.params] if len(members) > 1 else [],
        bundle=bundle,
        projections=projections,
        schedulers=runstate.lr_schedulers(
            bundle.optimizers, spec.steps_per_epoch, spec.epochs, tcfg["schedule"]
        ),
        loss_fn=runstate.loss_module(tcfg, spec.regression, reduction="none"),
    )


def _tensors(data: Any, spec: RunSpec) -> dict[str, Tensor]:
    """The data on the run's device and dtype: every training row (members index theirs)
    and the test set."""
    tensors = {"x_all": data.x_train, "y_all": data.y_train,
               "x_test": data.x_test, "y_test": data.y_test}  # fmt: skip
    return {name: spec.put(t) for name, t in tensors.items()}


def finetune(
    model: nn.Module, cfg: CellConfig, data: Any, epochs: int, skip_cfg: Mapping[str, Any]
) -> str:
    """Train ``model`` (built and loaded by the caller: a net the cell's config does not
    build, say; in the dtype of ``data``'s inputs) in place for ``epochs`` epochs as a pack
    of one, with the cell's recipe: its
    training rows (its validation split held out), optimizer (``skip_cfg``: options per skip
    kind), batch size, loss, clipping, augmentation and seeded data and augmentation streams
    started afresh, the learning-rate schedule over these epochs. No AMP, no checkpoint, no
    history or outputs. Returns ``ok``, or ``diverged`` at the first non-finite loss or
    gradient (the step is not taken) or parameter after a step; fine-tuning stops there."""
    device = next(model.parameters()).device
    # the data as they are: the caller's model matches them (a float32 net may hold float64
    # skip generators, so no parameter's dtype tells the net's)
    dtype = str(data.x_train.dtype).removeprefix("torch.")
    tcfg = {**cfg.train, "epochs": epochs, "amp": False, "compile": False,
            "channels_last": False, "dtype": dtype}  # fmt: skip
    cfg = replace(cfg, train=tcfg)
    train_idx, val_idx = validation_split(len(data.x_train), float(tcfg["val_fraction"]),
                                          cfg.cell.seed)  # fmt: skip
    spec = RunSpec.of(cfg.train, device, data.task, len(train_idx))
    member = _member(cfg, Path(), (train_idx, val_idx), spec)
    pack = _pack_run([member], spec, data, _tensors(data, spec), Single(model, tcfg, skip_cfg),
                     dict(skip_cfg))  # fmt: skip
    pack.persist = False
    no_sigterm = SigtermFlag()  # never entered: fine-tuning is one stage step, not preempted
    for epoch in range(1, epochs + 1):
        if not member.running:
            break
        sums, _, _ = _train_epoch(pack, [0], epoch, no_sigterm)
        if member.running:
            member.state.update(epoch=epoch, batch=0, perm=None, sums=None)
            _diverged_late(pack, 0, epoch, sums)
    pack.net.train(True)
    return "diverged" if member.state.status == "diverged" else "ok"


def _member(cfg: CellConfig, outdir: Path, split: tuple[Tensor, Tensor], spec: RunSpec) -> Member:
    """One member with its own seed's streams, drawn as a solo run draws them."""
    data_gen, aug_gen = runstate.streams(cfg.cell.seed, spec.device)
    return Member(
        cfg=cfg,
        outdir=outdir,
        train_idx=split[0].to(spec.device),
        val_idx=split[1].to(spec.device),
        data_gen=data_gen,
        aug_gen=aug_gen,
        rkey=resume_key(cfg),
        cfg_hash=cfg.hash,
    )


def _seeded(cfg: CellConfig, draw: Any, data: Any) -> Any:
    """``draw(cfg, data)`` from the member's seed, as a solo run seeds its model's init."""
    torch.manual_seed(cfg.cell.seed)
    return draw(cfg, data)


def _model(cfg: CellConfig, data: Any, spec: RunSpec) -> nn.Module:
    """The member's solo model (the vmap engine stacks copies of modules)."""
    model = _seeded(cfg, build_cell_model, data).to(spec.device)
    if spec.dtype != torch.float32:  # skips keep their float64 generators in float32 runs
        model.to(spec.dtype)
    return model


def _resume(pack: PackRun, ckpts: list[dict[str, Any] | None]) -> None:
    """Load each member's checkpoint; the optimizer's shared scalars (step counts) and the
    schedulers come from a running member's."""
    epochs = pack.spec.epochs
    live = [c is not None and runstate.running_ckpt(c, epochs) for c in ckpts]
    ref = next((i for i, ok in enumerate(live) if ok), None)
    for i, (m, c) in enumerate(zip(pack.members, ckpts, strict=True)):
        if c is None:
            continue
        pack.net.load_member(i, c["model"])
        m.state = runstate.resumed_state(c, epochs, m.data_gen, m.aug_gen)
        log.info("resumed %s at epoch %d batch %d", m.cell.path, m.state.epoch, m.state.batch)
    if ref is None:
        return
    pack.net.load_optimizer(ckpts, live, pack.bundle, pack.schedulers)


@torch.inference_mode()
def _evaluate_all(pack: PackRun, xs: Tensor, ys: Tensor, shared: bool) -> list[tuple[float, float]]:
    """(loss, score) per member, as ``runstate.evaluate`` computes them: on each member's
    own rows xs (K, N, …), or on one xs (N, …) for all (``shared``). Inference mode, not
    no_grad: nothing it makes is kept, and skipping autograd's version and view tracking
    took ~6 % off the hand engine's evaluation (twice an epoch)."""
    k, spec = pack.k, pack.spec
    pack.net.train(False)
    n = xs.shape[0] if shared else xs.shape[1]
    loss_sum = torch.zeros(k, device=spec.device, dtype=torch.float64)
    correct = torch.zeros(k, device=spec.device, dtype=torch.float64)
    for i in range(0, n, EVAL_BATCH):
        xb = xs[i : i + EVAL_BATCH] if shared else xs[:, i : i + EVAL_BATCH]
        yb = ys[i : i + EVAL_BATCH] if shared else ys[:, i : i + EVAL_BATCH]
        if shared:
            yb = yb.expand(k, *yb.shape)
        with torch.autocast(spec.device.type, dtype=torch.bfloat16, enabled=spec.amp):
            out = pack.net.forward(xb, shared_input=shared)
        out = out.float() if spec.amp else out
        if spec.regression:
            loss_sum += ((out - yb) ** 2).reshape(k, -1).sum(1).double()
        else:
            ce = nn.functional.cross_entropy(out.flatten(0, 1), yb.flatten(), reduction="none")
            loss_sum += ce.view(k, -1).sum(1).double()
            correct += (out.argmax(-1) == yb).sum(1)
    pack.net.train(True)
    if not n:
        return [(math.nan, math.nan)] * k
    return [
        runstate.loss_and_score(float(loss_sum[i]), float(correct[i]), ys if shared else ys[i],
                       spec.regression)
        for i in range(k)
    ]  # fmt: skip


def _record(
    pack: PackRun, idx: list[int], epoch: int, train: list[tuple[tuple[float, float], float]]
) -> None:
    """History rows of members ``idx``: train (loss, score) and clipped as given, val and
    test evaluated now (for every member at once)."""
    d, spec = pack.data, pack.spec
    val_rows = torch.stack([m.val_idx for m in pack.members])
    vals = _evaluate_all(pack, d["x_all"][val_rows], d["y_all"][val_rows], shared=False)
    tests = _evaluate_all(pack, d["x_test"], d["y_test"], shared=True)
    gaps = pack.net.skip_identity_gaps()
    for i, (scores, clipped) in zip(idx, train, strict=True):
        m = pack.members[i]
        weights = functools.partial(pack.net.member_state, i)
        runstate.record_epoch(
            m.state, spec, epoch, (scores, vals[i], tests[i]), clipped, pack.lr, gaps[i], weights
        )
        log.info(
            "%s epoch %d/%d train_loss %.4f test_%s %.4f",
            m.cell.path, epoch, spec.epochs, scores[0], spec.score, tests[i][1],
        )  # fmt: skip


def _checkpoint(pack: PackRun, i: int) -> None:
    """Member i's ``last.pt``, in a solo run's format; the previous one kept as
    ``last.prev.pt`` (see load_checkpoints)."""
    m = pack.members[i]
    if not pack.persist:
        return
    last = m.outdir / "last.pt"
    m.outdir.mkdir(parents=True, exist_ok=True)
    payload = runstate.checkpoint_payload(
        m.rkey,
        m.cfg_hash,
        pack.net.member_state(i),
        pack.net.optimizer_state(i, pack.bundle),
        pack.net.scheduler_states(i, pack.schedulers),
        m.data_gen,
        m.aug_gen,
        m.state,
    )
    if last.exists():
        os.replace(last, last.with_name("last.prev.pt"))
    save_torch(last, payload)


def _diverge(pack: PackRun, i: int, epoch: int, b: int, why: str, sums: Tensor, t0: float) -> None:
    m = pack.members[i]
    m.state.elapsed += time.perf_counter() - t0
    runstate.record_divergence(m.state, m.cell.path, epoch, b, why, float(sums[i, 3]), pack.lr)
    _checkpoint(pack, i)


@torch.no_grad()
def _freeze_inactive(pack: PackRun) -> None:
    """Reset stopped and diverged members to their (finite) initial parameters (a pack of
    one has no other member to keep them from)."""
    if pack.k == 1:
        return
    active = pack.active()
    if bool(active.all()):
        return
    for p, p0, slot in zip(pack.net.params, pack.init, pack.net.layout, strict=True):
        p.copy_(torch.where(_view(active, p, slot), p, p0))


def _train_epoch(
    pack: PackRun, run: list[int], epoch: int, sigterm: SigtermFlag
) -> tuple[Tensor, int, float]:
    """The epoch's steps from the saved position: (sums (K, 4), rows seen, seconds)."""
    rows, sums = _epoch_position(pack)
    seen = int(sums[run[0], 2])
    start = pack.members[run[0]].state.batch
    pack.net.train(True)
    t0 = time.perf_counter()
    for b in range(start, pack.spec.steps_per_epoch):
        if sigterm.raised:
            _preempt(pack, run, epoch, b, sums, seen, t0)
        try:
            n = _step(pack, rows, epoch, b, sums, t0)
        except RuntimeError as err:
            n = _failed_step(pack, err, epoch, b, sums, t0)
        if n is None:  # every member diverged
            break
        seen += n
    return sums, seen, time.perf_counter() - t0


def _epoch_position(pack: PackRun) -> tuple[Tensor, Tensor]:
    """Each member's training rows in its data order (drawn at the epoch's start), (K,
    n_train), and running sums (K, 4): loss sum, correct, seen, clipped steps."""
    n_train = len(pack.members[0].train_idx)
    rows: list[Tensor] = []
    for m in pack.members:
        if m.running and m.state.perm is None:
            m.state.perm = torch.randperm(n_train, generator=m.data_gen)
            m.state.sums = torch.zeros(4, dtype=torch.float64)
        perm = m.state.perm.to(pack.spec.device) if m.running else torch.arange(n_train)
        rows.append(m.train_idx[perm])
    zeros = torch.zeros(4, dtype=torch.float64)
    sums = torch.stack([m.state.sums if m.running else zeros for m in pack.members])
    return torch.stack(rows), sums.to(pack.spec.device)


def _preempt(
    pack: PackRun, run: list[int], epoch: int, b: int, sums: Tensor, seen: int, t0: float
) -> NoReturn:
    saved = []
    for i in run:
        m = pack.members[i]
        if m.running:
            m.state.batch = b
            sums[i, 2] = seen
            m.state.sums = sums[i].cpu()
            m.state.elapsed += time.perf_counter() - t0
            _checkpoint(pack, i)
            saved.append(str(m.outdir / "last.pt"))
    where = saved[0] if len(saved) == 1 else f"the last.pt of {len(saved)} members"
    # the checkpoint's position, as the resume line names it: epochs completed, then batches
    raise Preempted(f"SIGTERM at epoch {epoch - 1} batch {b}; saved {where}")


def _step(pack: PackRun, rows: Tensor, epoch: int, b: int, sums: Tensor, t0: float) -> int | None:
    """One batched optimizer step; a member whose loss, gradient or parameters go
    non-finite is recorded diverged. Returns the batch size, None once none runs.

    A pack of one on CUDA checks no step (a check is a device sync, and there is no other
    member to keep NaN from): its non-finite loss sum is caught when the epoch ends."""
    k, spec = pack.k, pack.spec
    if not checks_every_step(pack):
        return _unchecked_step(pack, rows, b, sums)
    active = pack.active()
    xb, yb = _member_batches(pack, rows, active.nonzero().flatten().tolist(), b)
    with torch.autocast(spec.device.type, dtype=torch.bfloat16, enabled=spec.amp):
        out = pack.net.forward(xb)
        out_f = out.float() if spec.amp else out
        # per-member mean loss (K,), as the solo loss module's mean
        losses = pack.loss_fn(out_f.flatten(0, 1), yb.flatten(0, 1)).reshape(k, -1).mean(1)
    pack.bundle.zero_grad()
    torch.where(active, losses, torch.zeros_like(losses)).sum().backward()
    with_grad = [(p.grad, s) for p, s in zip(pack.net.params, pack.net.layout, strict=True)
                 if p.grad is not None]  # fmt: skip
    grads, layout = [g for g, _ in with_grad], [s for _, s in with_grad]
    bad = active & ~torch.isfinite(losses.detach())
    clipped = _clip(grads, layout, spec.clip, k)
    bad_grad = active & ~bad & ~_member_finite(grads, layout, k)
    for flag, why in ((bad, "non-finite loss"), (bad_grad, "non-finite gradient")):
        for i in flag.nonzero().flatten().tolist():
            _diverge(pack, i, epoch, b, why, sums, t0)
    active = pack.active()
    if not bool(active.any()):
        return None
    if not bool(active.all()):
        for g, slot in zip(grads, layout, strict=True):
            g.masked_fill_(~_view(active, g, slot), 0)
    pack.bundle.step()
    params = [p.detach() for p in pack.net.params]
    bad_param = active & ~_member_finite(params, pack.net.layout, k)
    for i in bad_param.nonzero().flatten().tolist():
        _diverge(pack, i, epoch, b, "non-finite parameter after the step", sums, t0)
    _project(pack, pack.active())  # finite weights only: an SVD of inf fails
    for sched in pack.schedulers:
        sched.step()
    with torch.no_grad():
        sums[:, 0] += losses.detach().double() * yb.shape[1]
        if not spec.regression:
            sums[:, 1] += (out.argmax(-1) == yb).sum(1)
        sums[:, 3] += clipped
    _freeze_inactive(pack)
    return yb.shape[1]


def checks_every_step(pack: PackRun) -> bool:
    """Whether the pack's steps check finiteness (else its epoch's loss sum is checked when
    the epoch ends): all but a pack of one on CUDA (see :func:`_step`)."""
    return pack.k > 1 or pack.spec.device.type != "cuda"


def _unchecked_step(pack: PackRun, rows: Tensor, b: int, sums: Tensor) -> int:
    """A pack of one's step without finiteness checks (see :func:`_step`)."""
    spec = pack.spec
    xb, yb = _member_batches(pack, rows, [0], b)
    with torch.autocast(spec.device.type, dtype=torch.bfloat16, enabled=spec.amp):
        out = pack.net.forward(xb)
        out_f = out.float() if spec.amp else out
        loss = pack.loss_fn(out_f.flatten(0, 1), yb.flatten(0, 1)).mean()
    pack.bundle.zero_grad()
    loss.backward()
    grads = [p.grad for p in pack.net.params if p.grad is not None]
    clipped = _clip(grads, [None] * len(grads), spec.clip, 1)
    pack.bundle.step()
    _project(pack, torch.ones(1, dtype=torch.bool))
    for sched in pack.schedulers:
        sched.step()
    with torch.no_grad():
        sums[0, 0] += loss.detach().double() * yb.shape[1]
        if not spec.regression:
            sums[0, 1] += (out.argmax(-1) == yb).sum()
        sums[0, 3] += clipped[0]
    return yb.shape[1]


def _failed_step(
    pack: PackRun, err: RuntimeError, epoch: int, b: int, sums: Tensor, t0: float
) -> None:
    """A step that raised: a pack of one whose linear algebra failed on non-finite values
    (its loss, gradients or parameters) diverged there; anything else is an error naming
    the cells. A pack's members reach no batched linear algebra with non-finite values
    (each is checked and frozen first), so a failure there is an error too."""
    net = pack.net
    tensors = [p.detach() for p in net.params] + [p.grad for p in net.params if p.grad is not None]
    if pack.k == 1 and pack.members[0].running and runstate.linalg_diverged(err, tensors):
        why = f"linear-algebra failure on non-finite values ({type(err).__name__})"
        _diverge(pack, 0, epoch, b, why, sums, t0)
        return None
    cells = ", ".join(m.cell.path for m in pack.members)
    raise RuntimeError(f"{cells}: epoch {epoch} step {b}: {err}") from err


def _member_batches(pack: PackRun, rows: Tensor, live: list[int], b: int) -> tuple[Tensor, Tensor]:
    """(x, y) of shape (K, B, …): the running members' own batches (``rows``: each
    member's training rows in its epoch's order); a frozen member computes on a running
    member's batch (its result is unused)."""
    size, members = pack.spec.batch, pack.members
    idx = rows[:, b * size : (b + 1) * size]
    if len(live) < pack.k:
        idx = idx[[i if i in live else live[0] for i in range(pack.k)]]
    xb, yb = pack.data["x_all"][idx], pack.data["y_all"][idx]
    if pack.augment:
        xb = torch.stack(
            [augment_batch(xb[i], pack.augment, members[i].aug_gen) if i in live else xb[i]
             for i in range(pack.k)]
        )  # fmt: skip
    return xb, yb


def _clip(grads: list[Tensor], layout: list[Slot | None], clip: float | None, k: int) -> Tensor:
    """Per-member gradient-norm clipping, in place; (K,) bool: whose gradient it changed."""
    if not clip:
        return torch.zeros(k, dtype=torch.bool, device=grads[0].device)
    if all(s is None for s in layout):
        norms = torch.stack([torch.linalg.vector_norm(g.reshape(k, -1), dim=1) for g in grads])
        total = torch.linalg.vector_norm(norms, dim=0)
    else:  # stacked blocks: the sum of squares over a member's rows (equal up to rounding)
        sq = torch.zeros(k, dtype=torch.float64, device=grads[0].device)
        for g, slot in zip(grads, layout, strict=True):
            slot = slot or Slot(0, torch.arange(k))
            rows = torch.linalg.vector_norm(_member_rows(g, slot), dim=1).double() ** 2
            sq.index_add_(0, slot.ids.to(sq.device), rows)
        total = sq.sqrt().to(grads[0].dtype)
    coef = (clip / (total + 1e-6)).clamp(max=1.0)
    for g, slot in zip(grads, layout, strict=True):
        g.mul_(_view(coef, g, slot).to(g.dtype))
    return total > clip


@torch.no_grad()
def _project(pack: PackRun, active: Tensor) -> None:
    """The procrustes projection of the running members, on the optimizer's schedule."""
    bundle = pack.bundle
    if not pack.projections or bundle.steps % bundle.project_every:
        return
    for skip in pack.projections:
        for i in active.nonzero().flatten().tolist():
            pack.net.project(skip, i)


def _diverged_late(pack: PackRun, i: int, epoch: int, sums: Tensor) -> bool:
    """Whether member i's epoch loss sum is non-finite (only unchecked steps let one through,
    :func:`_step`); if so it is recorded diverged at the epoch's last step and checkpointed."""
    if math.isfinite(float(sums[i, 0])):
        return False
    m, last = pack.members[i], pack.spec.steps_per_epoch - 1
    runstate.record_divergence(m.state, m.cell.path, epoch, last, "non-finite loss",
                               float(sums[i, 3]), pack.lr)  # fmt: skip
    _checkpoint(pack, i)
    return True


def _end_epoch(
    pack: PackRun, run: list[int], epoch: int, sums: Tensor, seen: int, elapsed: float
) -> None:
    """Record the members that finished the epoch, apply the stopping rule, checkpoint."""
    members, spec = pack.members, pack.spec
    ended, rows = [], []
    for i in (i for i in run if members[i].running):
        m = members[i]
        m.state.elapsed += elapsed
        m.state.update(epoch=epoch, batch=0, perm=None, sums=None)
        if _diverged_late(pack, i, epoch, sums):
            continue
        ended.append(i)
        y_train = pack.data["y_all"][members[i].train_idx]
        loss, score, clipped = runstate.epoch_train_stats(sums[i].tolist(), seen, y_train, spec)
        rows.append(((loss, score), clipped))
    if ended:
        _record(pack, ended, epoch, rows)
    due = pack.clock.due()  # one decision for all: the members' checkpoints stay at one step
    for i in ended:
        m = members[i]
        runstate.apply_stop(
            m.state, spec, m.cell.path, epoch, functools.partial(pack.net.member_state, i)
        )
        if m.running and m.state.epoch >= spec.epochs:
            m.state.status = "ok"
        if due or not m.running:
            _checkpoint(pack, i)
    if due:
        pack.clock.written()
    _freeze_inactive(pack)


def _finish(pack: PackRun, stopped_only: bool = False) -> dict[str, str]:
    """Each member's history, snapshots and status.json (only those no longer training
    with ``stopped_only``); their statuses by cell path."""
    statuses = {}
    riemann = pack.bundle.metadata()
    hand = isinstance(pack.net, HandMLP)
    for k, m in enumerate(pack.members):
        if stopped_only and m.running:
            continue
        if m.state.status == "running":
            m.state.status = "ok"
        # the member's solo optimizer's description, with the batched Newton–Schulz counts
        # where the member has a Riemannian step
        solo = pack.net.solo_metadata(k)
        solo_meta = solo["optimizer"]
        if solo_meta["n_manifold_params"]:
            solo_meta.update({k: v for k, v in riemann.items() if k.startswith("retraction_")})
        # a pack of one calls its own module (orthskip.training.single)
        engine = "hand" if hand else "vmap" if pack.sizes[0] > 1 else "module"
        packed = {**(pack.label or {"mode": "vectorised", "size": pack.sizes[0]}),
                  "engine": engine}  # fmt: skip
        if len(pack.sizes) > 1:  # trained on in smaller packs once others had stopped
            packed["compacted_to"] = pack.sizes[1:]
        meta = {
            "task": pack.task,
            "n_params": solo["n_params"],
            "n_skip_params": solo["n_skip_params"],
            "optimizer": solo_meta,
            "pack": packed,
        }
        write_outputs(m.cfg, m.state, m.outdir, pack.spec.device, m.cfg_hash, meta)
        statuses[m.cell.path] = m.state.status
    return statuses
