"""Optimizers: one Euclidean optimizer, a Riemannian one for orth_manifold, post-step projections.

``build_optimizer(model, optim_cfg, skip_cfg)`` partitions the parameters into
- ``main``: everything outside skips, with ``weight_decay``;
- ``skip``: parameters of skip modules (linear W, the skew generators of orth_learned and of
  orth_jacobian's B, procrustes conv*), with ``skip_weight_decay`` (default 0: weight decay on a
  skew generator pulls Q towards its base and would confound "Q converges to the identity");
- ``manifold``: orth_manifold matrices, stepped only by ``RiemannianOrthogonal`` (never also by
  SGD/AdamW, and never weight-decayed).
After each step (every ``skip_options.procrustes.every`` steps) the procrustes transition convs
are projected so that their operator's nonzero singular values equal ``scale``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from orthskip.nn.optim_specs import optim_options
from orthskip.nn.orth import MSIGN_FLOOR, manifold_step
from orthskip.nn.skips import Skip, skip_options


class RiemannianOrthogonal(torch.optim.Optimizer):
    """Steepest descent on O(n) / the Stiefel manifold (``orthskip.nn.orth.manifold_step``).

    The direction's msign has the relative singular-value floor ``msign_floor``; the retraction's
    Newton–Schulz runs to ``ns_tol``. The per-parameter state records the retraction's iteration
    count of the last step, its maximum so far, and how many steps did not converge within
    ``ns_max_iter`` (``nonconverged``).
    """

    def __init__(
        self,
        params,
        lr: float,
        msign_floor: float = MSIGN_FLOOR,
        ns_tol: float = 1e-7,
        ns_max_iter: int = 100,
    ) -> None:
        defaults = {
            "lr": lr,
            "msign_floor": msign_floor,
            "ns_tol": ns_tol,
            "ns_max_iter": ns_max_iter,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            # one batched step per matrix shape: few, large kernels instead of many small ones
            by_shape: dict[tuple, list[torch.Tensor]] = {}
            for p in group["params"]:
                if p.grad is not None:
                    by_shape.setdefault((tuple(p.shape), p.dtype, p.device), []).append(p)
            for params in by_shape.values():
                w = torch.stack([p.detach() for p in params])
                g = torch.stack([p.grad for p in params])
                new, stats = manifold_step(
                    w,
                    g,
                    group["lr"],
                    floor=group["msign_floor"],
                    tol=group["ns_tol"],
                    max_iter=group["ns_max_iter"],
                )
                for p, value in zip(params, new.unbind(0), strict=True):
                    p.copy_(value)
                    st = self.state[p]
                    st["steps"] = st.get("steps", 0) + 1
                    st["retraction_iterations"] = stats.retraction_iterations
                    st["max_retraction_iterations"] = max(
                        st.get("max_retraction_iterations", 0), stats.retraction_iterations
                    )
                    st["nonconverged"] = st.get("nonconverged", 0) + int(not stats.converged)
        return loss

    def stats(self) -> dict[str, int]:
        states = [self.state[p] for g in self.param_groups for p in g["params"] if p in self.state]
        return {
            "retraction_max_iterations": max(
                (s["max_retraction_iterations"] for s in states), default=0
            ),
            "retraction_nonconverged_steps": sum(s["nonconverged"] for s in states),
        }


class OptimizerBundle:
    """The optimizers of one model, stepped together; schedulers wrap each of ``optimizers``."""

    def __init__(
        self,
        optimizers: list[torch.optim.Optimizer],
        projections: list[Skip],
        project_every: int,
        metadata: dict[str, Any],
    ) -> None:
        self.optimizers = optimizers
        self.projections = projections
        self.project_every = project_every
        self.steps = 0
        self._metadata = metadata

    def zero_grad(self) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()
        self.steps += 1
        if self.projections and self.steps % self.project_every == 0:
            for skip in self.projections:
                skip.project()

    def metadata(self) -> dict[str, Any]:
        """What to record in the cell's metadata (weight-decay choices, NS iteration counts)."""
        out = dict(self._metadata)
        for opt in self.optimizers:
            if isinstance(opt, RiemannianOrthogonal):
                out.update(opt.stats())
        return out

    def state_dict(self) -> dict:
        return {"optimizers": [o.state_dict() for o in self.optimizers], "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        if len(state["optimizers"]) != len(self.optimizers):
            raise ValueError("optimizer state does not match this model's optimizers")
        for opt, st in zip(self.optimizers, state["optimizers"], strict=True):
            opt.load_state_dict(st)
        self.steps = int(state["steps"])


def _skips(model: nn.Module) -> list[Skip]:
    return [m for m in model.modules() if isinstance(m, Skip)]


def build_optimizer(
    model: nn.Module, optim_cfg: dict | None, skip_cfg: dict | None = None
) -> OptimizerBundle:
    skips = _skips(model)
    manifold = [p for s in skips for p in s.manifold_parameters()]
    manifold_ids = {id(p) for p in manifold}
    skip_params = [
        p for s in skips for p in s.parameters() if p.requires_grad and id(p) not in manifold_ids
    ]
    skip_ids = {id(p) for p in skip_params} | manifold_ids
    main = [p for p in model.parameters() if p.requires_grad and id(p) not in skip_ids]
    projections = [s for s in skips if s.optimizer_projects()]
    return optimizer_bundle(
        main, skip_params, manifold, projections, optim_cfg, skip_cfg, n_skips=len(skips)
    )


def optimizer_bundle(
    main: list[torch.Tensor],
    skip_params: list[torch.Tensor],
    manifold: list[torch.Tensor],
    projections: list[Skip],
    optim_cfg: dict | None,
    skip_cfg: dict | None = None,
    n_skips: int = 1,
) -> OptimizerBundle:
    """The optimizers of parameters already partitioned (see the module docstring): the
    packed trainer's stacked tensors take the same groups and settings as a solo model's.
    ``n_skips``: the skip modules of one net (``skip_lr: per_block`` divides their step by
    it, ``main_lr: times_blocks`` multiplies the other parameters' step by it)."""
    cfg = optim_options(optim_cfg)
    lr = float(cfg["lr"])
    skip_lr = lr / max(n_skips, 1) if cfg["skip_lr"] == "per_block" else lr
    main_lr = lr * max(n_skips, 1) if cfg["main_lr"] == "times_blocks" else lr
    groups = [
        {"params": ps, "weight_decay": wd, "name": name, "lr": group_lr}
        for name, ps, wd, group_lr in (
            ("main", main, float(cfg["weight_decay"]), main_lr),
            ("skip", skip_params, float(cfg["skip_weight_decay"]), skip_lr),
        )
        if ps
    ]
    optimizers: list[torch.optim.Optimizer] = []
    if groups:
        if cfg["name"] == "sgd":
            optimizers.append(
                torch.optim.SGD(
                    groups,
                    lr=lr,
                    momentum=float(cfg["momentum"]),
                    nesterov=cfg["nesterov"],
                    foreach=True,  # one call per step, not one per tensor (CPU's default)
                )
            )
        else:
            optimizers.append(
                torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg["betas"]), foreach=True)
            )
    if manifold:
        opts = skip_options("orth_manifold", skip_cfg)
        optimizers.append(
            RiemannianOrthogonal(
                manifold,
                lr=skip_lr * float(opts["lr_scale"]),
                msign_floor=float(opts["msign_floor"]),
                ns_tol=float(opts["ns_tol"]),
                ns_max_iter=int(opts["ns_max_iter"]),
            )
        )
    every = int(skip_options("procrustes", skip_cfg)["every"])
    metadata = {
        "optimizer": cfg["name"],
        "weight_decay": float(cfg["weight_decay"]),
        "skip_weight_decay": float(cfg["skip_weight_decay"]),
        "skip_lr": skip_lr,
        "main_lr": main_lr,
        "n_skip_params": sum(p.numel() for p in skip_params) + sum(p.numel() for p in manifold),
        "n_manifold_params": sum(p.numel() for p in manifold),
        "procrustes_every": every if projections else 0,
        "n_projected_convs": len(projections),
    }
    return OptimizerBundle(optimizers, projections, every, metadata)
