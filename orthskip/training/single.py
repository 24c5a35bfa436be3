"""A pack of one: the engine's net for a single member, its own module called directly.

Nothing is stacked: the member's parameters are the module's, its optimizer is the one a
lone model gets (``build_optimizer``), and ``last.pt`` holds that optimizer's state as it
is. Called without vmap, the module may be compiled (``train.compile``), run in
``channels_last`` and use any skip kind on images (orth_jacobian's spectral convolution,
which vmap does not batch). The engine treats it as a pack whose member dimension is
broadcast: a (1,) mask or coefficient broadcasts over any parameter's shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from orthskip.nn.optim import OptimizerBundle, build_optimizer
from orthskip.nn.skips import skip_identity_gap
from orthskip.training.runstate import RunSpec


class Single:
    """One member's module, with the interface of the engine's stacked nets (k = 1)."""

    k = 1

    def __init__(
        self, model: nn.Module, tcfg: Mapping[str, Any], skip_cfg: Mapping[str, Any]
    ) -> None:
        self.model = model
        self.skip_cfg = dict(skip_cfg)
        self.channels_last = bool(tcfg["channels_last"])
        self.call = torch.compile(model) if tcfg["compile"] else model
        self.bundle: OptimizerBundle  # build_bundle's
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.layout: list[None] = [None] * len(self.params)  # the member dim is broadcast

    def build_bundle(self, tcfg: Mapping[str, Any], spec: RunSpec) -> OptimizerBundle:
        del spec
        self.bundle = build_optimizer(self.model, tcfg["optimizer"], self.skip_cfg)
        return self.bundle

    def optimizer_state(self, k: int, bundle: OptimizerBundle) -> dict[str, Any]:
        return bundle.state_dict()

    def solo_metadata(self, k: int) -> dict[str, Any]:
        """Parameter counts and the optimizer's description (it is the member's own)."""
        return {
            "n_params": self.model.n_params(),
            "n_skip_params": self.model.n_skip_params(),
            "optimizer": self.bundle.metadata(),
        }

    def scheduler_states(self, k: int, schedulers: list[Any]) -> list[dict[str, Any]]:
        return [s.state_dict() for s in schedulers]

    def load_optimizer(
        self,
        ckpts: list[dict[str, Any] | None],
        live: list[bool],
        bundle: OptimizerBundle,
        schedulers: list[Any],
    ) -> None:
        ckpt = ckpts[0]
        assert ckpt is not None and live[0]
        bundle.load_state_dict(ckpt["optimizer"])
        for sched, sd in zip(schedulers, ckpt["schedulers"], strict=True):
            sched.load_state_dict(sd)

    def forward(self, x: Tensor, shared_input: bool = False) -> Tensor:
        """The member's outputs (1, N, …) on x (1, N, …), or on one x (N, …)."""
        x = x if shared_input else x[0]
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.call(x).unsqueeze(0)

    @torch.no_grad()
    def project(self, skip: Any, k: int) -> None:
        """The procrustes projection of the member's ``skip``."""
        skip.project()

    def train(self, mode: bool = True) -> None:
        self.model.train(mode)

    def member_state(self, k: int) -> dict[str, Tensor]:
        """The state dict, on the CPU."""
        return {n: t.detach().to("cpu", copy=True) for n, t in self.model.state_dict().items()}

    @torch.no_grad()
    def load_member(self, k: int, state: Mapping[str, Tensor]) -> None:
        self.model.load_state_dict(state)

    @torch.no_grad()
    def skip_identity_gaps(self) -> list[float]:
        return [skip_identity_gap(self.model)]
