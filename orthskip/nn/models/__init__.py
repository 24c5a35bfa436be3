"""Architectures: residual MLP, CIFAR ResNets (post-/pre-act.), torchvision-style ResNets, ViT.

``build_model(arch, depth, skip, input_shape, num_classes, model_cfg, skip_cfg)`` returns a
``ResidualNet`` (stem, blocks, head). Each architecture is one ``Arch`` entry in ``ARCHS``
(``register_arch`` adds one): its options (``config["model"][arch]``: every key's type,
default and allowed values), the depths it builds, its builder, its training cost (read by
the cluster resources) and its constraints. What each skip kind does at transition
blocks is documented in ``orthskip.nn.skips``.

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

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orthskip.config.constraints import Constraint, DataShape, enforce
from orthskip.config.options import Option, Table, check_options, defaults, unknown
from orthskip.errors import ConfigError
from orthskip.nn.models import mlp, vit
from orthskip.nn.models.base import BLOCKS, Block, ResidualNet, make_block
from orthskip.nn.models.cifar_resnet import build_cifar_resnet
from orthskip.nn.models.init import INITS
from orthskip.nn.models.resnet import RESNET_STAGES, STEMS, build_resnet
from orthskip.nn.models.vit import POOLS, POS_EMBEDS
from orthskip.nn.skips import SKIPS, skip_options, validate_skip_options

if TYPE_CHECKING:
    from orthskip.config.grid import CellConfig

#: ``build(depth, skip, input_shape, num_classes, model_cfg, skip_cfg)``: the model, with
#: options resolved and every constraint checked already (``build_model``).
Builder = Callable[[int, str, tuple[int, ...], int, dict, dict | None], ResidualNet]


@dataclass(frozen=True)
class Depths:
    """The depths an architecture builds: a test and the same rule in words (messages)."""

    text: str
    allows: Callable[[int], bool]

    @classmethod
    def listed(cls, values: Mapping[int, Any] | tuple[int, ...]) -> Depths:
        """Exactly ``values`` (a table keyed by depth, e.g. the stages per depth)."""
        allowed = tuple(values)
        return cls(", ".join(str(d) for d in allowed), lambda d: d in allowed)


@dataclass(frozen=True)
class Cost:
    """What training costs per layer, read by the cluster's resource estimates
    (workflow/lib/cluster.py): seconds per training sample per layer (forward + backward +
    on-device augmentation) on a V100-class GPU, and host memory per layer (snapshots,
    optimizer state)."""

    sec_per_sample_layer: float
    mem_mb_per_layer: float = 8.0


@dataclass(frozen=True)
class Arch:
    """An architecture: its options (``config["model"][name]``: the schema's source), the
    depths it builds, its builder, its training cost, and what it needs of its options and
    the data beyond the option table (enforced by ``build_model`` and, for every cell, by
    the config check before any job)."""

    name: str
    options: Table
    depths: Depths
    build: Builder
    cost: Cost
    constraints: tuple[Constraint, ...] = ()


#: Every architecture, in the order of the config's choices. ``register_arch`` adds one.
ARCHS: dict[str, Arch] = {}


def register_arch(arch: Arch) -> Arch:
    if arch.name in ARCHS:
        raise ValueError(f"architecture {arch.name!r} is registered already")
    ARCHS[arch.name] = arch
    return arch


class _PerArch(Mapping[str, Any]):
    """A live view of one thing per registered architecture."""

    def __init__(self, of: Callable[[Arch], Any]) -> None:
        self._of = of

    def __getitem__(self, name: str) -> Any:
        return self._of(ARCHS[name])

    def __iter__(self) -> Iterator[str]:
        return iter(list(ARCHS))

    def __len__(self) -> int:
        return len(ARCHS)


# Every architecture's options (config["model"][arch]), their defaults and its constraints.
MODEL_SPECS: Mapping[str, Table] = _PerArch(lambda a: a.options)
MODEL_OPTIONS: Mapping[str, dict[str, Any]] = _PerArch(lambda a: defaults(a.options))
MODEL_CONSTRAINTS: Mapping[str, tuple[Constraint, ...]] = _PerArch(lambda a: a.constraints)


def _width(default: int, text: str = "channels of the first stage") -> Option:
    return Option("integer", default, text, minimum=1)


_INIT = Option("string", "kaiming", "kaiming (He/LeCun normal) or torch_default", choices=INITS)
_MLP_CHOICES = {"activation": ("relu", "tanh", "gelu"), "norm": ("none", "batch", "layer"),
                "stem": ("linear", "identity"), "head": ("linear", "identity"),
                "branch_scale": ("none", "inv_depth", "inv_sqrt_depth")}  # fmt: skip


def _mlp(key: str, text: str) -> Option:
    choices = _MLP_CHOICES[key]
    return Option("string", choices[0], text, choices=choices)


def _image(arch: str) -> Constraint:
    def test(cfg: Mapping[str, Any], data: DataShape | None) -> str | None:
        if data is None or len(data.input_shape) == 3:
            return None
        return (
            f"arch {arch} needs image inputs (C, H, W); the dataset gives shape "
            f"{data.input_shape} (use arch mlp for vector data)"
        )

    return Constraint("image_input", None, f"{arch} needs image inputs", test)


def _cifar(pre_act: bool) -> Builder:
    def build(depth, skip, input_shape, num_classes, cfg, skip_cfg) -> ResidualNet:
        return build_cifar_resnet(
            depth, skip, input_shape, num_classes, cfg, skip_cfg, pre_act=pre_act
        )

    return build


_CIFAR_DEPTHS = Depths(
    "6n+2 with n >= 1: 8, 14, 20, 32, 44, 56, 110, ...", lambda d: d >= 8 and (d - 2) % 6 == 0
)
# Costs from ResNet-110 ≈ 30 s and PreResNet-164 ≈ 60 s per CIFAR epoch on a V100-class
# GPU; the MLP's is kernel-launch bound; ImageNet-style ResNet blocks are wider layers.
for _arch in (
    Arch(
        "mlp",
        {
            "width": Option("integer", 32, "stream width (0: the input dimension)", minimum=0),
            "activation": _mlp("activation", "the branch's nonlinearity"),
            "norm": _mlp("norm", "normalisation in the branch"),
            "init": _INIT,
            "stem": _mlp("stem", "input -> stream map (identity keeps the input dimension)"),
            "head": _mlp("head", "stream -> output map"),
            "hidden": Option("integer", 0, "the branch's inner width (0: width)", minimum=0),
            "branch_scale": _mlp("branch_scale", "F scaled by 1, 1/depth or 1/sqrt(depth)"),
        },
        Depths("any integer >= 1 (number of residual blocks)", lambda d: d >= 1),
        mlp.build_mlp,
        Cost(1.0e-6),
        mlp.CONSTRAINTS,
    ),
    Arch("cifar_resnet", {"width": _width(16), "init": _INIT}, _CIFAR_DEPTHS, _cifar(False),
         Cost(5.5e-6), (_image("cifar_resnet"),)),
    Arch("cifar_preresnet", {"width": _width(16), "init": _INIT}, _CIFAR_DEPTHS, _cifar(True),
         Cost(7.5e-6), (_image("cifar_preresnet"),)),
    Arch(
        "vit",
        {
            "width": _width(192, "token width d"),
            "heads": Option("integer", 3, "attention heads (divide width)", minimum=1),
            "mlp_ratio": Option("number", 4.0, "MLP hidden width / width", exclusive_minimum=0),
            "patch": Option("integer", 4, "patch side in pixels", minimum=1),
            "pos_embed": Option("string", "learned", "position embedding", choices=POS_EMBEDS),
            "pool": Option("string", "cls", "cls token or mean of the tokens", choices=POOLS),
            "init": _INIT,
        },
        Depths("any integer >= 1 (number of transformer blocks, two residual sublayers each)",
               lambda d: d >= 1),
        vit.build_vit,
        Cost(3.0e-5),
        (_image("vit"), *vit.CONSTRAINTS),
    ),
    Arch(
        "resnet",
        {
            "width": _width(64),
            "stem": Option(
                "string", "cifar", "cifar (3x3) or imagenet (7x7 + max pool) stem", choices=STEMS
            ),
            "init": _INIT,
        },
        Depths.listed(RESNET_STAGES),
        build_resnet,
        Cost(3.0e-5, 40.0),
        (_image("resnet"),),
    ),
):  # fmt: skip
    register_arch(_arch)


def allowed_depths(arch: str) -> str:
    return ARCHS[arch].depths.text


def _check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise unknown("arch", arch, ARCHS, "architecture")


def check_depth(arch: str, depth: int) -> None:
    """Raise ConfigError naming the allowed depths when ``arch`` cannot be built at ``depth``."""
    _check_arch(arch)
    ok = isinstance(depth, int) and not isinstance(depth, bool)
    if not (ok and ARCHS[arch].depths.allows(depth)):
        raise ConfigError(
            f"depth = {depth!r} for arch {arch}: allowed depths are {allowed_depths(arch)}"
        )


def validate_model_options(arch: str, model_cfg: dict | None) -> None:
    """Raise ConfigError for an unknown key or bad value in config['model'][arch]."""
    _check_arch(arch)
    check_options(ARCHS[arch].options, model_cfg or {}, f"model.{arch}")


def model_options(arch: str, model_cfg: dict | None) -> dict[str, Any]:
    validate_model_options(arch, model_cfg)
    return {**MODEL_OPTIONS[arch], **(model_cfg or {})}


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
    return ARCHS[arch].build(depth, skip, input_shape, num_classes, cfg, skip_cfg)


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
    if arch != "mlp":
        raise ValueError(f"initial_state: arch {arch} has no drawn state; build the model")
    return mlp.initial_state(depth, skip, input_shape, num_classes, cfg, skip_cfg)


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
    opts = skip_options(skip, skip_cfg)  # unknown kind / bad option -> ConfigError first
    validate_skip_options(skip_cfg)
    cfg = model_options(arch, model_cfg)
    input_shape = tuple(int(s) for s in input_shape)
    data = DataShape(input_shape, int(num_classes))
    enforce(ARCHS[arch].constraints, cfg, data, f"model.{arch}")
    enforce(SKIPS[skip].constraints, opts, data, f"skip_options.{skip}")
    return cfg, input_shape


def build_cell_model(cell_cfg: CellConfig, data: Any) -> ResidualNet:
    """A cell's model for its prepared dataset (``data``: its ``input_shape`` and
    ``num_classes``), initialised from torch's global RNG (seed it first)."""
    cell, kind = cell_cfg.cell, cell_cfg.skip
    return build_model(cell.arch, cell.depth, kind, tuple(data.input_shape), data.num_classes,
                       cell_cfg.model, {kind: cell_cfg.skip_options})  # fmt: skip


__all__ = [
    "ARCHS",
    "BLOCKS",
    "INITS",
    "MODEL_CONSTRAINTS",
    "MODEL_OPTIONS",
    "MODEL_SPECS",
    "SKIPS",
    "Arch",
    "Block",
    "Cost",
    "Depths",
    "ResidualNet",
    "allowed_depths",
    "build_cell_model",
    "build_model",
    "check_depth",
    "initial_state",
    "make_block",
    "model_options",
    "register_arch",
    "validate_model_options",
]
