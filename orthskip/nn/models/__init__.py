"""Architectures: residual MLP, CIFAR ResNets (post-/pre-act.), torchvision-style ResNets, ViT.

``build_model(arch, depth, skip, input_shape, num_classes, model_cfg, skip_cfg)`` returns a
``ResidualNet`` (stem, blocks, head). Each architecture is one ``Arch`` entry in ``ARCHS``
(``register_arch`` adds one): its spec (``orthskip.nn.arch_specs.ArchSpec``, torch-free: its
options, ``config["model"][arch]``: every key's type, default and allowed values; the depths
it builds; its training cost, read by the cluster resources; its constraints) and its
builder. What each skip kind does at transition blocks is documented in ``orthskip.nn.skips``.

Depths: ``mlp`` any number of blocks >= 1; ``cifar_resnet``/``cifar_preresnet`` 6n + 2
(n >= 1 basic blocks per stage: 8, 14, 20, 32, 44, 56, 110, ...); ``resnet`` counts weighted
layers of torchvision's family: 10 ([1,1,1,1]), 18 ([2,2,2,2]), 34 ([3,4,6,3]) with basic blocks,
50 ([3,4,6,3]), 101 ([3,4,23,3]), 152 ([3,8,36,3]) with bottlenecks (``orthskip.nn.models.resnet``);
``vit`` any number of transformer blocks >= 1 (each two residual sublayers, so the model has
2·depth ``blocks``; ``orthskip.nn.models.vit``).

Initialisation: ``model.<arch>.init`` = ``kaiming`` (default: He-normal before ReLUs, LeCun-normal
where a layer feeds the residual stream or the logits, zero biases; the CNNs' convs He fan-out
as before; the ViT's rule in ``orthskip.nn.models.vit``)
or ``torch_default`` (PyTorch's own init, untouched); the rule per layer is stated in
``orthskip.nn.models.init``. Skip parameters keep their own init under both.

Parameter counts (``ResidualNet.n_params`` / ``n_skip_params``) count stored tensors: the
orthogonal parametrization of orth_learned / orth_jacobian (``orthskip.nn.orth.OrthogonalMap``, the
construction of torch's ``parametrizations.orthogonal``) stores a full C_out × C_in generator
(only its strictly lower triangle, C(C−1)/2 numbers for a square Q, is used); orth_jacobian's
spatial B (``kernel_size`` k > 1, the default on images) stores a C × C × k × k kernel V of which
the skew-adjoint part V − Vᵀ is used (about half the numbers); procrustes with ``kernel_size`` > 1
stores a full-support C_out × 4·C_in × h' × w' kernel per transition.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orthskip.config.constraints import Constraint, DataShape, enforce
from orthskip.config.options import Table
from orthskip.nn.arch_specs import (
    ARCH_SPECS,
    INITS,
    MODEL_CONSTRAINTS,
    MODEL_OPTIONS,
    MODEL_SPECS,
    ArchSpec,
    Cost,
    Depths,
    allowed_depths,
    check_depth,
    model_options,
    register_arch_spec,
    validate_model_options,
)
from orthskip.nn.models import mlp, vit
from orthskip.nn.models.base import BLOCKS, Block, ResidualNet, make_block
from orthskip.nn.models.cifar_resnet import build_cifar_resnet
from orthskip.nn.models.resnet import build_resnet
from orthskip.nn.skips import SKIPS, skip_options, validate_skip_options

if TYPE_CHECKING:
    from orthskip.config.grid import CellConfig

#: ``build(depth, skip, input_shape, num_classes, model_cfg, skip_cfg)``: the model, with
#: options resolved and every constraint checked already (``build_model``).
Builder = Callable[[int, str, tuple[int, ...], int, dict, dict | None], ResidualNet]


@dataclass(frozen=True)
class Arch:
    """An architecture: its spec (``orthskip.nn.arch_specs``: options, depths, cost,
    constraints; torch-free, read by the config checks) and its builder."""

    spec: ArchSpec
    build: Builder

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def options(self) -> Table:
        return self.spec.options

    @property
    def depths(self) -> Depths:
        return self.spec.depths

    @property
    def cost(self) -> Cost:
        return self.spec.cost

    @property
    def constraints(self) -> tuple[Constraint, ...]:
        return self.spec.constraints


#: Every architecture with a builder, in the order of the config's choices.
ARCHS: dict[str, Arch] = {}


def register_arch(arch: Arch) -> Arch:
    """Add ``arch``: its spec to ``orthskip.nn.arch_specs.ARCH_SPECS`` (unless that spec is
    registered already, as the built-in ones are) and its builder here."""
    if arch.name in ARCHS:
        raise ValueError(f"architecture {arch.name!r} is registered already")
    if ARCH_SPECS.get(arch.name) is not arch.spec:
        register_arch_spec(arch.spec)
    ARCHS[arch.name] = arch
    return arch


def _cifar(pre_act: bool) -> Builder:
    def build(depth, skip, input_shape, num_classes, cfg, skip_cfg) -> ResidualNet:
        return build_cifar_resnet(
            depth, skip, input_shape, num_classes, cfg, skip_cfg, pre_act=pre_act
        )

    return build


# The built-in architectures' builders; their specs are arch_specs'.
for _name, _build in {
    "mlp": mlp.build_mlp,
    "cifar_resnet": _cifar(False),
    "cifar_preresnet": _cifar(True),
    "vit": vit.build_vit,
    "resnet": build_resnet,
}.items():
    register_arch(Arch(ARCH_SPECS[_name], _build))


def build_model(
    arch: str,
    depth: int,
    skip: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    model_cfg: dict | None = None,
    skip_cfg: dict | None = None,
) -> ResidualNet:
    """Build ``arch`` at ``depth`` with skip kind ``skip`` (ConfigError on any bad value)."""
    cfg, input_shape = _checked(arch, depth, skip, input_shape, num_classes, model_cfg, skip_cfg)
    return _build(arch, depth, skip, input_shape, num_classes, cfg, skip_cfg)


def _build(
    arch: str,
    depth: int,
    skip: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    cfg: dict[str, Any],
    skip_cfg: dict | None,
) -> ResidualNet:
    if arch not in ARCHS:
        raise ValueError(f"arch {arch} has a spec but no builder (register_arch adds one)")
    return ARCHS[arch].build(depth, skip, tuple(input_shape), num_classes, cfg, skip_cfg)


def initial_state(
    arch: str,
    depth: int,
    skip: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    model_cfg: dict | None = None,
    skip_cfg: dict | None = None,
) -> dict[str, Any]:
    """``build_model(...).state_dict()`` without building the model, from the same draws
    (``mlp.initial_state``); the mlp only (the packed trainer's hand-batched engine)."""
    cfg, input_shape = _checked(arch, depth, skip, input_shape, num_classes, model_cfg, skip_cfg)
    return _initial_state(arch, depth, skip, input_shape, num_classes, cfg, skip_cfg)


def _initial_state(
    arch: str,
    depth: int,
    skip: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    cfg: dict[str, Any],
    skip_cfg: dict | None,
) -> dict[str, Any]:
    if arch != "mlp":
        raise ValueError(f"initial_state: arch {arch} has no drawn state; build the model")
    return mlp.initial_state(depth, skip, tuple(input_shape), num_classes, cfg, skip_cfg)


def _checked(
    arch: str,
    depth: int,
    skip: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    model_cfg: dict | None,
    skip_cfg: dict | None,
) -> tuple[dict[str, Any], tuple[int, ...]]:
    """The model options and input shape, every value checked (ConfigError)."""
    check_depth(arch, depth)
    opts = skip_options(skip, skip_cfg)  # unknown kind -> ConfigError first
    validate_skip_options(skip_cfg)
    validate_model_options(arch, model_cfg)
    cfg = model_options(arch, model_cfg)
    input_shape = tuple(int(s) for s in input_shape)
    data = DataShape(input_shape, int(num_classes))
    enforce(ARCH_SPECS[arch].constraints, cfg, data, f"model.{arch}")
    enforce(SKIPS[skip].constraints, opts, data, f"skip_options.{skip}")
    return cfg, input_shape


def build_cell_model(cell_cfg: CellConfig, data: Any) -> ResidualNet:
    """A cell's model for its prepared dataset (``data``: its ``input_shape`` and
    ``num_classes``), initialised from torch's global RNG (seed it first). Not checked again:
    ``prepare_config`` checked the cell's options and constraints, and ``cell_config``
    resolved them."""
    cell, kind = cell_cfg.cell, cell_cfg.skip
    return _build(cell.arch, cell.depth, kind, tuple(data.input_shape), data.num_classes,
                  dict(cell_cfg.model), {kind: dict(cell_cfg.skip_options)})  # fmt: skip


def initial_cell_state(cell_cfg: CellConfig, data: Any) -> dict[str, Any]:
    """``build_cell_model(cell_cfg, data).state_dict()`` from the same draws, without the
    modules (the mlp only: ``initial_state``)."""
    cell, kind = cell_cfg.cell, cell_cfg.skip
    return _initial_state(cell.arch, cell.depth, kind, tuple(data.input_shape),
                          data.num_classes, dict(cell_cfg.model),
                          {kind: dict(cell_cfg.skip_options)})  # fmt: skip


__all__ = [
    "ARCHS",
    "ARCH_SPECS",
    "BLOCKS",
    "INITS",
    "MODEL_CONSTRAINTS",
    "MODEL_OPTIONS",
    "MODEL_SPECS",
    "SKIPS",
    "Arch",
    "ArchSpec",
    "Block",
    "Cost",
    "Depths",
    "ResidualNet",
    "allowed_depths",
    "build_cell_model",
    "build_model",
    "check_depth",
    "initial_cell_state",
    "initial_state",
    "make_block",
    "model_options",
    "register_arch",
    "validate_model_options",
]
