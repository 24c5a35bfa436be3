"""The MLP pack hand-batched: M members' parameters stacked, every block one set of bmm calls.

``torch.func.vmap`` (``orthskip.training.stacked.Stacked``) batches a pack over its members
but still runs the model's Python once per block per step, and the backward of each per-block
parameter slice materialises a full-size gradient. Here the members' tensors are stacked as
``[depth, M, …]`` (block tensors) or ``[M, …]`` (stem, head), unbound once per step, and each
block is three ``baddbmm`` calls over all members at once. Members may differ in skip kind:
each member's skip matrix Q is produced by its kind, one batched computation per kind group —
identity (I), none (0), linear (W), orth_fixed (frozen Q), orth_learned (one
``map_to_orthogonal`` call per map over every member and block), orth_manifold (Q, stepped by
``RiemannianOrthogonal``, batched) — and the residual sum is Q x + F(x) for every kind (I x and
0 x are exact, so identity and none members compute their solo values).

Each member's tensors are drawn from its seed as its solo model's constructor draws them
(``orthskip.nn.models.mlp.initial_state``: bit-identical, without building M deep models), so
init is the solo init. What the members of one variant (skip kind and options) share is read
once per pack from a depth-1 model of the variant (``_Variant``): the state dict's names at
the pack's depth, which are parameters, and the solo optimizer's layout — a solo optimizer and
its schedulers over placeholder tensors, never stepped, through which a member's state is
translated to and from a solo run's checkpoint format (``member_state``, ``optimizer_state``):
a packed member's ``last.pt`` is a solo run's.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from orthskip.config.grid import CellConfig
from orthskip.nn.models import build_model, model_options
from orthskip.nn.models.mlp import branch_scale
from orthskip.nn.optim import (
    OptimizerBundle,
    RiemannianOrthogonal,
    build_optimizer,
    optimizer_bundle,
)
from orthskip.nn.orth import identity_gap, map_to_orthogonal
from orthskip.nn.skip_specs import MATRIX_KINDS
from orthskip.nn.skips import skip_options
from orthskip.training.runstate import RunSpec, lr_schedulers

# MATRIX_KINDS: the kinds whose skip is a matrix (Q = I, 0, W, frozen, parametrized,
# manifold), stated torch-free for the config's kinds_signature
_BLOCK = re.compile(r"blocks\.(\d+)\.(.*)")
_ORIGINAL = "skip.q.parametrizations.weight.original"
_BASE = "skip.q.parametrizations.weight.0.base"


def hand_batched_reason(cfgs: list[CellConfig]) -> str | None:
    """Why these members cannot run hand-batched (then vmap or one by one), or None."""
    first = cfgs[0]
    if first.cell.arch != "mlp":
        return f"arch {first.cell.arch} is batched by vmap"
    kinds = {c.skip for c in cfgs}
    if not kinds <= set(MATRIX_KINDS):
        return f"skip kinds {sorted(kinds - set(MATRIX_KINDS))} are not matrix skips"
    for c in cfgs:
        for section in ("dataset", "model", "train"):
            if getattr(c, section) != getattr(first, section):
                return f"{c.cell.path} differs from {first.cell.path} in its {section} settings"
        if c.cell.depth != first.cell.depth or c.cell.dataset != first.cell.dataset:
            return f"{c.cell.path} differs from {first.cell.path} in depth or dataset"
    manifold = {_manifold_key(c) for c in cfgs if c.skip == "orth_manifold"}
    if len(manifold) > 1:
        return "orth_manifold members with different Riemannian step options"
    return None


def _manifold_key(cfg: CellConfig) -> tuple[Any, ...]:
    """The options of the one Riemannian optimizer a pack's orth_manifold members share:
    every option but the initial map's."""
    opts = skip_options("orth_manifold", {"orth_manifold": dict(cfg.skip_options)})
    return tuple(sorted((k, v) for k, v in opts.items() if k not in ("init", "allow_negative_det")))


def _group(cfg: CellConfig) -> str:
    """The member's skip group: members whose Q is computed by one batched call."""
    if cfg.skip == "orth_learned":
        return f"orth_learned[{cfg.skip_options['map']}]"
    return cfg.skip


@dataclass(frozen=True)
class Slot:
    """Where a stacked tensor's rows come from: the member dim and the member of each row."""

    member_dim: int
    ids: Tensor  # (rows,) long: the member of each row along member_dim


def _variant_key(cfg: CellConfig) -> tuple[str, str]:
    return cfg.skip, repr(sorted(cfg.skip_options.items()))


class _Variant:
    """What the members of one variant share at the pack's depth, read from a depth-1 model
    of the variant (an mlp's blocks are alike): the solo state dict's names in order, which
    are parameters, and the solo optimizer (``build_optimizer``'s partition and order)
    and its schedulers over placeholder tensors (meta, never stepped): the format a
    member's optimizer state is translated to and from."""

    def __init__(self, cfg: CellConfig, data: Any, state: dict[str, Tensor], spec: RunSpec):
        opts = {cfg.skip: dict(cfg.skip_options)}
        ref = build_model(cfg.cell.arch, 1, cfg.skip, tuple(data.input_shape), data.num_classes,
                          dict(cfg.model), opts)  # fmt: skip
        self.ref = ref
        self.names = list(state)  # mlp.initial_state's keys: the solo state dict's, in order
        ref_bundle = build_optimizer(ref, dict(cfg.train["optimizer"]), opts)
        part: dict[str, str] = {}  # depth-1 parameter name -> main / skip / manifold
        by_id = {id(p): n for n, p in ref.named_parameters()}
        for opt in ref_bundle.optimizers:
            for group in opt.param_groups:
                where = "manifold" if isinstance(opt, RiemannianOrthogonal) else group["name"]
                part.update({by_id[id(p)]: where for p in group["params"]})
        ref_params = {n for n, _ in ref.named_parameters()}
        # the solo model's parameters at the pack's depth in named_parameters' order (the
        # state dict's, which puts each module's buffers after its parameters)
        self.params = [n for n in self.names if _at_depth_1(n) in ref_params]
        self.trained = {n for n in self.params if _at_depth_1(n) in part}
        self.n_params = sum(state[n].numel() for n in self.params)
        self.n_skip_params = sum(state[n].numel() for n in self.params if _BLOCK_SKIP.match(n))
        lists: dict[str, list[Tensor]] = {"main": [], "skip": [], "manifold": []}
        self.placeholder: dict[int, str] = {}
        for name in self.params:
            if name in self.trained:
                t = nn.Parameter(torch.empty_like(state[name], device="meta"))
                lists[part[_at_depth_1(name)]].append(t)
                self.placeholder[id(t)] = name
        # the skip step rule at the pack's depth (skip_lr: per_block divides by its blocks)
        self.solo = optimizer_bundle(lists["main"], lists["skip"], lists["manifold"], [],
                                     dict(cfg.train["optimizer"]), opts,
                                     n_skips=cfg.cell.depth)  # fmt: skip
        self.schedulers = lr_schedulers(
            self.solo.optimizers, spec.steps_per_epoch, spec.epochs, cfg.train["schedule"]
        )
        # (optimizer's index, parameter's index in its state dict, parameter name)
        self.slots: list[tuple[int, int, str]] = []
        for j, opt in enumerate(self.solo.optimizers):
            ps = [t for group in opt.param_groups for t in group["params"]]
            self.slots += [(j, i, self.placeholder[id(t)]) for i, t in enumerate(ps)]


_BLOCK_SKIP = re.compile(r"blocks\.\d+\.skip\.")


def _at_depth_1(name: str) -> str:
    """A state-dict name as block 0's (the depth-1 model's), stem and head as they are."""
    match = _BLOCK.fullmatch(name)
    return name if match is None else f"blocks.0.{match[2]}"


class HandMLP:
    """M residual MLPs (``orthskip.nn.models.mlp``) as stacked tensors; members may differ
    in skip kind. The interface of ``stacked.Stacked`` plus the optimizer translation."""

    def __init__(
        self, states: list[dict[str, Tensor]], cfgs: list[CellConfig], data: Any, spec: RunSpec
    ) -> None:
        """``states``: each member's initial state dict (``mlp.initial_state``, on the CPU in
        its solo model's dtypes), stacked onto ``spec``'s device and dtype."""
        self.k = len(states)
        self.cfgs = cfgs
        self.depth = cfgs[0].cell.depth
        self.training = True
        self.variants: dict[tuple[str, str], _Variant] = {}
        for cfg, state in zip(cfgs, states, strict=True):
            if _variant_key(cfg) not in self.variants:
                self.variants[_variant_key(cfg)] = _Variant(cfg, data, state, spec)
        self.member_variant = [self.variants[_variant_key(c)] for c in cfgs]
        self._read_structure(self.member_variant[0].ref, cfgs[0])
        kinds = {_group(c) for c in cfgs}
        self.groups = sorted(kinds, key=lambda g: (MATRIX_KINDS.index(g.split("[")[0]), g))
        self.where: list[dict[str, tuple[str, tuple[int, ...]]]] = []
        self.tensors: dict[str, Tensor] = {}
        self.slots: dict[str, Slot] = {}
        self._stack(states, cfgs, spec)
        self.params = [t for t in self.tensors.values() if t.requires_grad]
        self.layout = [self.slots[n] for n, t in self.tensors.items() if t.requires_grad]
        # the member order of the concatenated per-group skip matrices, and its inverse
        order = torch.cat([self.slots[self._skip_key(g)].ids for g in self.groups])
        self.unsort = None if bool((order == torch.arange(self.k)).all()) else order.argsort()

    # -- structure -----------------------------------------------------------------------

    def _read_structure(self, ref: nn.Module, cfg: CellConfig) -> None:
        """The branch's norm, activation and scale, and whether there is a stem and a head
        (``ref``: a depth-1 model of the pack; the scale is the pack's depth's)."""
        branch = ref.blocks[0].branch
        norm, act = branch[1], branch[2]
        self.norm = (
            "batch" if isinstance(norm, nn.BatchNorm1d)
            else "layer" if isinstance(norm, nn.LayerNorm) else "none"
        )  # fmt: skip
        self.eps = float(getattr(norm, "eps", 0.0))
        self.momentum = float(getattr(norm, "momentum", 0.1) or 0.1)
        if isinstance(norm, nn.BatchNorm1d) and norm.momentum is None:
            raise ValueError("BatchNorm with cumulative averaging is not hand-batched")
        # the module's own function, called once per block per forward: nn.Module.__call__'s
        # hook handling (~1/3 of a small ReLU's time) bought nothing here
        self.act = act.forward
        self.scale = branch_scale(model_options("mlp", dict(cfg.model)), self.depth)
        self.stem = isinstance(ref.stem[1], nn.Linear)
        self.head = isinstance(ref.head, nn.Linear)

    def _skip_key(self, group: str) -> str:
        return f"skip<{group}>"

    def _stack(
        self, states: list[dict[str, Tensor]], cfgs: list[CellConfig], spec: RunSpec
    ) -> None:
        """Stack every member's state-dict tensors; record where each solo name lives."""
        rows: dict[str, list[tuple[tuple[int, ...], Tensor, int]]] = {}
        group_rows: dict[str, list[int]] = {}
        requires: dict[str, bool] = {}
        for k, (state, cfg) in enumerate(zip(states, cfgs, strict=True)):
            group = _group(cfg)
            g_row = len(group_rows.setdefault(group, []))
            group_rows[group].append(k)
            grads = self.member_variant[k].trained
            where: dict[str, tuple[str, tuple[int, ...]]] = {}
            for name, t in state.items():
                match = _BLOCK.fullmatch(name)
                if match is None:
                    key, idx = name, (k,)
                else:
                    i, rest = int(match[1]), match[2]
                    if rest.startswith("skip."):
                        key, idx = f"{self._skip_key(group)}.{rest}", (i, g_row)
                    else:
                        key, idx = rest, (i, k)
                where[name] = (key, idx)
                rows.setdefault(key, []).append((idx, t, k))
                requires[key] = name in grads
            self.where.append(where)
        for group, members in group_rows.items():
            # a group without tensors (identity, none) still records its members
            self.slots[self._skip_key(group)] = Slot(1, torch.tensor(members))
        for key, found in rows.items():
            blockwise = len(found[0][0]) == 2
            n_rows = len({idx[-1] for idx, _, _ in found})
            t0 = found[0][1]
            shape = ((self.depth,) if blockwise else ()) + (n_rows, *t0.shape)
            stacked = torch.empty(shape, dtype=t0.dtype)
            ids = torch.empty(n_rows, dtype=torch.long)
            for idx, t, k in found:
                stacked[idx].copy_(t)
                ids[idx[-1]] = k
            # as a solo model's .to(device) and, in a float64 or bfloat16 run, .to(dtype):
            # float32 runs keep the skips' float64 generators
            cast = stacked.is_floating_point() and spec.dtype != torch.float32
            stacked = stacked.to(spec.device, spec.dtype if cast else None)
            if requires[key]:
                stacked = nn.Parameter(stacked)
            self.tensors[key] = stacked
            self.slots[key] = Slot(1 if blockwise else 0, ids)

    # -- forward -------------------------------------------------------------------------

    def train(self, mode: bool = True) -> None:
        self.training = mode

    def forward(self, x: Tensor, shared_input: bool = False) -> Tensor:
        """Outputs (M, N, …) of the members on x (M, N, …), or on one x (N, …) for all."""
        t = self.tensors
        if shared_input:
            x = x.unsqueeze(0).expand(self.k, *x.shape)
        # features × rows: every product below then has the batch as its wide side (N = B);
        # with the rows first, the d = 2 outputs of the branch's second linear are a slow
        # shape for the batched GEMM (~2.5× the time of the whole block otherwise)
        x = x.reshape(self.k, x.shape[1], -1).mT.contiguous()
        if self.stem:
            x = torch.baddbmm(t["stem.1.bias"].unsqueeze(-1), t["stem.1.weight"], x)
        qs = self._skip_matrices(x.dtype).unbind(0)
        # one unbind per step: the backward stacks the blocks' gradients once, where
        # indexing block i would materialise a full-size zero gradient per block
        w1, b1 = t["branch.0.weight"].unbind(0), t["branch.0.bias"].unsqueeze(-1).unbind(0)
        w2, b2 = t["branch.3.weight"], t["branch.3.bias"].unsqueeze(-1)
        if self.scale != 1.0:  # Scale(s) folded into the second linear, once for all blocks
            w2, b2 = w2 * self.scale, b2 * self.scale
        w2, b2 = w2.unbind(0), b2.unbind(0)
        norm = self._norm_params()
        for i in range(self.depth):
            h = torch.baddbmm(b1[i], w1[i], x)
            h = self.act(self._normalise(h, i, norm))
            f = torch.baddbmm(b2[i], w2[i], h)
            x = torch.baddbmm(f, qs[i], x)  # S(x) + F(x) in one kernel, S = Q of the kind
        if self.head:
            x = torch.baddbmm(t["head.bias"].unsqueeze(-1), t["head.weight"], x)
        return x.mT

    def _norm_params(self) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]] | None:
        if self.norm == "none":
            return None
        t = self.tensors
        return t["branch.1.weight"].unsqueeze(-1).unbind(0), t["branch.1.bias"].unsqueeze(
            -1
        ).unbind(0)

    def _normalise(self, h: Tensor, i: int, norm: Any) -> Tensor:
        """The branch's norm per member: h (M, H, B), features × rows."""
        if norm is None:
            return h
        weight, bias = norm[0][i], norm[1][i]
        if self.norm == "layer":
            mean, var = h.mean(1, keepdim=True), h.var(1, unbiased=False, keepdim=True)
            return (h - mean) * torch.rsqrt(var + self.eps) * weight + bias
        t = self.tensors
        mean_run, var_run = t["branch.1.running_mean"][i], t["branch.1.running_var"][i]
        if self.training:
            mean, var = h.mean(2), h.var(2, unbiased=False)
            with torch.no_grad():  # as nn.BatchNorm1d: the running variance is unbiased
                n = h.shape[2]
                mean_run.lerp_(mean.detach(), self.momentum)
                var_run.lerp_(var.detach() * (n / max(n - 1, 1)), self.momentum)
                t["branch.1.num_batches_tracked"][i].add_(1)
        else:
            mean, var = mean_run, var_run
        return (h - mean.unsqueeze(-1)) * torch.rsqrt(var.unsqueeze(-1) + self.eps) * weight + bias

    def _skip_matrices(self, dtype: torch.dtype) -> Tensor:
        """Every member's skip matrix at every block, (depth, M, w, w), in member order."""
        parts = []
        width = self.tensors["branch.3.weight"].shape[-2]
        for group in self.groups:
            key = self._skip_key(group)
            n = len(self.slots[key].ids)
            if group in ("identity", "none"):
                eye = torch.eye(width, dtype=dtype, device=self.params[0].device)
                m = eye if group == "identity" else torch.zeros_like(eye)
                parts.append(m.expand(self.depth, n, width, width))
            elif group.startswith("orth_learned"):
                x = self.tensors[f"{key}.{_ORIGINAL}"]
                base = self.tensors[f"{key}.{_BASE}"]
                kind = group[len("orth_learned[") : -1]
                q = map_to_orthogonal(x.flatten(0, 1), base.flatten(0, 1), kind)
                parts.append(q.view(x.shape).to(dtype))
            else:  # linear's W, orth_fixed's and orth_manifold's Q
                name = "skip.weight" if group == "linear" else "skip.Q"
                parts.append(self.tensors[f"{key}.{name}"].to(dtype))
        q = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        return q if self.unsort is None else q[:, self.unsort.to(q.device)]

    @torch.no_grad()
    def skip_identity_gaps(self) -> list[float]:
        """Each member's mean ‖Q − I‖_F/√n over its blocks, in float64, as
        ``skip_identity_gap`` of its solo model: NaN for the identity and none kinds."""
        q = self._skip_matrices(torch.float64)
        gaps = identity_gap(q).mean(0).cpu()
        for group in ("identity", "none"):
            if group in self.groups:
                gaps[self.slots[self._skip_key(group)].ids] = math.nan
        return gaps.tolist()

    # -- members' states -----------------------------------------------------------------

    def member_state(self, k: int) -> dict[str, Tensor]:
        """Member k's state dict, on the CPU (the keys of its solo model's state dict).
        A block tensor's member row is copied once for all blocks (one copy per stacked
        tensor, not one per block: snapshots and checkpoints read thousands)."""
        rows: dict[str, tuple[Tensor, ...]] = {}
        state = {}
        for name, (key, idx) in self.where[k].items():
            if len(idx) == 2:  # (block, row)
                if key not in rows:
                    rows[key] = self.tensors[key].detach()[:, idx[1]].to("cpu", copy=True).unbind()
                state[name] = rows[key][idx[0]]
            else:
                state[name] = self.tensors[key][idx].detach().to("cpu", copy=True)
        return state

    @torch.no_grad()
    def load_member(self, k: int, state: Mapping[str, Tensor]) -> None:
        for name, (key, idx) in self.where[k].items():
            self.tensors[key][idx].copy_(state[name])

    # -- optimizer -----------------------------------------------------------------------

    def build_bundle(self, tcfg: Mapping[str, Any], spec: RunSpec) -> OptimizerBundle:
        """The solo partition on the stacked tensors: skip parameters (linear's W,
        orth_learned's generators) in the ``skip`` group (``skip_weight_decay``),
        orth_manifold's Q to the Riemannian optimizer, everything else ``main``. Each
        variant's solo optimizer and schedulers (``_Variant``) translate a member's part of
        the state to and from the checkpoint format."""
        del spec  # the variants' solo schedulers were made with the members' states
        main, skip, manifold = [], [], []
        for key, t in self.tensors.items():
            if not t.requires_grad:
                continue
            if key.startswith("skip<orth_manifold>"):
                manifold.append(t)
            elif key.startswith("skip<"):
                skip.append(t)
            else:
                main.append(t)
        skip_cfg = next(
            ({c.skip: dict(c.skip_options)} for c in self.cfgs if c.skip == "orth_manifold"), None
        )
        return optimizer_bundle(
            main, skip, manifold, [], dict(tcfg["optimizer"]), skip_cfg, n_skips=self.depth
        )

    def solo_metadata(self, k: int) -> dict[str, Any]:
        """Member k's parameter counts and its solo optimizer's description."""
        v = self.member_variant[k]
        return {
            "n_params": v.n_params,
            "n_skip_params": v.n_skip_params,
            "optimizer": v.solo.metadata(),
        }

    def scheduler_states(
        self, k: int, schedulers: list[torch.optim.lr_scheduler.LambdaLR]
    ) -> list[dict[str, Any]]:
        """Member k's solo schedulers' states at the pack's step."""
        steps = schedulers[0].last_epoch
        solo = self.member_variant[k].schedulers
        for sched in solo:
            set_schedule(sched, steps)
        return [s.state_dict() for s in solo]

    def optimizer_state(self, k: int, pack: OptimizerBundle) -> dict[str, Any]:
        """Member k's part of the stacked optimizer state, in its solo optimizer's format
        (its group rates set by ``scheduler_states``' closed form, as the pack's). A block
        tensor's state is copied once for all blocks, as in ``member_state``."""
        v = self.member_variant[k]
        solo = v.solo
        by_type = {type(o): o for o in pack.optimizers}
        rows: dict[tuple[int, str], tuple[Tensor, ...]] = {}
        out = solo.state_dict()  # the param groups; the state filled in below
        for opt in out["optimizers"]:
            opt["state"] = {}
        for j, index, name in v.slots:
            twin = by_type[type(solo.optimizers[j])]
            key, idx = self.where[k][name]
            st = twin.state.get(self.tensors[key])
            if st:
                member: dict[str, Any] = {}
                for sname, value in st.items():
                    if isinstance(value, Tensor) and value.dim() and len(idx) == 2:
                        if (id(value), sname) not in rows:
                            rows[id(value), sname] = value.detach()[:, idx[1]].clone().unbind()
                        member[sname] = rows[id(value), sname][idx[0]]
                    else:
                        member[sname] = _slice(value, idx)
                out["optimizers"][j]["state"][index] = member
        for j, opt in enumerate(solo.optimizers):
            twin = by_type[type(opt)]
            for group, saved in zip(opt.param_groups, out["optimizers"][j]["param_groups"],
                                    strict=True):  # fmt: skip
                named = next(g for g in twin.param_groups if g.get("name") == group.get("name"))
                saved["lr"] = named["lr"]
        out["steps"] = pack.steps
        return out

    @torch.no_grad()
    def load_optimizer(
        self,
        ckpts: list[dict[str, Any] | None],
        live: list[bool],
        pack: OptimizerBundle,
        schedulers: list[torch.optim.lr_scheduler.LambdaLR],
    ) -> None:
        """Stack the running members' solo optimizer states (the others' rows stay zero:
        they are frozen) and put the schedulers at their step."""
        steps = None
        by_type = {type(o): o for o in pack.optimizers}
        for k, (ckpt, ok) in enumerate(zip(ckpts, live, strict=True)):
            if ckpt is None or not ok:
                continue
            v = self.member_variant[k]
            saved = ckpt["optimizer"]["optimizers"]
            if len(saved) != len(v.solo.optimizers) or any(
                [len(g["params"]) for g in s["param_groups"]]
                != [len(g["params"]) for g in o.param_groups]
                for s, o in zip(saved, v.solo.optimizers, strict=True)
            ):
                raise ValueError(f"{self.cfgs[k].cell.path}: optimizer state of another model")
            for j, index, name in v.slots:
                key, idx = self.where[k][name]
                t = self.tensors[key]
                st = by_type[type(v.solo.optimizers[j])].state[t]
                for sname, value in saved[j]["state"].get(index, {}).items():
                    if isinstance(value, Tensor) and value.dim():
                        if sname not in st:  # in the solo parameter's dtype, as torch loads it
                            dtype = t.dtype if value.is_floating_point() else value.dtype
                            st[sname] = torch.zeros(t.shape, dtype=dtype, device=t.device)
                        st[sname][idx].copy_(value)
                    elif isinstance(value, Tensor):  # step counts
                        st[sname] = value.clone()
                    else:
                        st[sname] = copy.deepcopy(value)
            pack.steps = int(ckpt["optimizer"]["steps"])
            steps = int(ckpt["schedulers"][0]["last_epoch"])
        for sched in schedulers if steps is not None else []:
            set_schedule(sched, steps)


def _slice(value: Any, idx: tuple[int, ...]) -> Any:
    if isinstance(value, Tensor):
        return value[idx].clone() if value.dim() else value.clone()
    return copy.deepcopy(value)


def set_schedule(sched: torch.optim.lr_scheduler.LambdaLR, steps: int) -> None:
    """Put a LambdaLR where ``steps`` calls of ``step()`` would (its closed form), the
    optimizer's rates included: a member's solo scheduler state, or the pack's on resume."""
    sched.last_epoch = steps
    sched._step_count = steps + 1
    lrs = [base * fn(steps) for base, fn in zip(sched.base_lrs, sched.lr_lambdas, strict=True)]
    for group, lr in zip(sched.optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr
    sched._last_lr = lrs
