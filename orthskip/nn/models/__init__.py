"""Architectures: residual MLP, CIFAR ResNets (post-/pre-act.), torchvision-style ResNets, ViT.

``build_model(arch, depth, skip, input_shape, num_classes, model_cfg, skip_cfg)`` returns a
``ResidualNet`` (stem, blocks, head). ``model_cfg`` is ``config["model"][arch]``; every key's
type, default and allowed values are in ``MODEL_SPECS``. What each skip kind does at transition
blocks is documented in ``orthskip.nn.skips``.

Depths: ``mlp`` any number of blocks >= 1; ``cifar_resnet``/``cifar_preresnet`` 6n + 2
(n >= 1 basic blocks per stage: 8, 14, 20, 32, 44, 56, 110, ...); ``resnet`` counts weighted
layers of torchvision's family: 10 ([1,1,1,1]), 18 ([2,2,2,2]), 34 ([3,4,6,3]) with basic blocks,
50 ([3,4,6,3]), 101 ([3,4,23,3]), 152 ([3,8,36,3]) with bottlenecks (``orthskip.nn.models.resnet``);
``resnet18`` is the alias kept from before: ``resnet`` with the CIFAR stem, depths 10/18/34;
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

from collections.abc import Mapping
from typing import Any

from orthskip.config.constraints import Constraint, DataShape, enforce
from orthskip.config.options import Option, check_options, defaults, unknown
from orthskip.errors import ConfigError
from orthskip.nn.models import mlp, vit
from orthskip.nn.models.base import BLOCKS, Block, ResidualNet, make_block
from orthskip.nn.models.init import INITS
from orthskip.nn.models.resnet import BASIC_STAGES, RESNET_STAGES, STEMS
from orthskip.nn.models.vit import POOLS, POS_EMBEDS
from orthskip.nn.skips import SKIPS, skip_options, validate_skip_options


def _width(default: int, text: str = "channels of the first stage") -> Option:
    return Option("integer", default, text, minimum=1)


_INIT = Option("string", "kaiming", "kaiming (He/LeCun normal) or torch_default", choices=INITS)
_MLP_CHOICES = {"activation": ("relu", "tanh", "gelu"), "norm": ("none", "batch", "layer"),
                "stem": ("linear", "identity"), "head": ("linear", "identity"),
                "branch_scale": ("none", "inv_depth", "inv_sqrt_depth")}  # fmt: skip


def _mlp(key: str, text: str) -> Option:
    choices = _MLP_CHOICES[key]
    return Option("string", choices[0], text, choices=choices)


# Every architecture's options (config["model"][arch]): type, default, allowed values.
MODEL_SPECS: dict[str, dict[str, Option]] = {
    "mlp": {
        "width": Option("integer", 32, "stream width (0: the input dimension)", minimum=0),
        "activation": _mlp("activation", "the branch's nonlinearity"),
        "norm": _mlp("norm", "normalisation in the branch"),
        "init": _INIT,
        "stem": _mlp("stem", "input -> stream map (identity keeps the input dimension)"),
        "head": _mlp("head", "stream -> output map"),
        "hidden": Option("integer", 0, "the branch's inner width (0: width)", minimum=0),
        "branch_scale": _mlp("branch_scale", "F scaled by 1, 1/depth or 1/sqrt(depth)"),
    },
    "cifar_resnet": {"width": _width(16), "init": _INIT},
    "cifar_preresnet": {"width": _width(16), "init": _INIT},
    "resnet18": {"width": _width(64), "init": _INIT},
    "vit": {
        "width": _width(192, "token width d"),
        "heads": Option("integer", 3, "attention heads (divide width)", minimum=1),
        "mlp_ratio": Option("number", 4.0, "MLP hidden width / width", exclusive_minimum=0),
        "patch": Option("integer", 4, "patch side in pixels", minimum=1),
        "pos_embed": Option("string", "learned", "position embedding", choices=POS_EMBEDS),
        "pool": Option("string", "cls", "cls token or mean of the tokens", choices=POOLS),
        "init": _INIT,
    },
    "resnet": {
        "width": _width(64),
        "stem": Option(
            "string", "cifar", "cifar (3x3) or imagenet (7x7 + max pool) stem", choices=STEMS
        ),
        "init": _INIT,
    },
}
ARCHS: tuple[str, ...] = tuple(MODEL_SPECS)


def _image(arch: str) -> Constraint:
    def test(cfg: Mapping[str, Any], data: DataShape | None) -> str | None:
        if data is None or len(data.input_shape) == 3:
            return None
        return (
            f"arch {arch} needs image inputs (C, H, W); the dataset gives shape "
            f"{data.input_shape} (use arch mlp for vector data)"
        )

    return Constraint("image_input", None, f"{arch} needs image inputs", test)


# What each architecture's builder needs of its options and the data, beyond the option
# tables: enforced by build_model and, for every cell, by the config check before any job.
MODEL_CONSTRAINTS: dict[str, tuple[Constraint, ...]] = {
    "mlp": mlp.CONSTRAINTS,
    "cifar_resnet": (_image("cifar_resnet"),),
    "cifar_preresnet": (_image("cifar_preresnet"),),
    "resnet18": (_image("resnet18"),),
    "vit": (_image("vit"), *vit.CONSTRAINTS),
    "resnet": (_image("resnet"),),
}
assert set(MODEL_CONSTRAINTS) == set(ARCHS)
MODEL_OPTIONS: dict[str, dict[str, Any]] = {a: defaults(t) for a, t in MODEL_SPECS.items()}
RESNET18_STAGES: dict[int, tuple[int, ...]] = BASIC_STAGES


def allowed_depths(arch: str) -> str:
    return {
        "mlp": "any integer >= 1 (number of residual blocks)",
        "cifar_resnet": "6n+2 with n >= 1: 8, 14, 20, 32, 44, 56, 110, ...",
        "cifar_preresnet": "6n+2 with n >= 1: 8, 14, 20, 32, 44, 56, 110, ...",
        "resnet18": ", ".join(str(d) for d in RESNET18_STAGES),
        "vit": "any integer >= 1 (number of transformer blocks, two residual sublayers each)",
        "resnet": ", ".join(str(d) for d in RESNET_STAGES),
    }[arch]


def _check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise unknown("arch", arch, ARCHS, "architecture")


def check_depth(arch: str, depth: int) -> None:
    """Raise ConfigError naming the allowed depths when ``arch`` cannot be built at ``depth``."""
    _check_arch(arch)
    ok = isinstance(depth, int) and not isinstance(depth, bool)
    if ok and arch in ("mlp", "vit"):
        ok = depth >= 1
    elif ok and arch in ("cifar_resnet", "cifar_preresnet"):
        ok = depth >= 8 and (depth - 2) % 6 == 0
    elif ok and arch == "resnet":
        ok = depth in RESNET_STAGES
    elif ok:
        ok = depth in RESNET18_STAGES
    if not ok:
        raise ConfigError(
            f"depth = {depth!r} for arch {arch}: allowed depths are {allowed_depths(arch)}"
        )


def validate_model_options(arch: str, model_cfg: dict | None) -> None:
    """Raise ConfigError for an unknown key or bad value in config['model'][arch]."""
    _check_arch(arch)
    check_options(MODEL_SPECS[arch], model_cfg or {}, f"model.{arch}")


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
    if arch == "mlp":
        return mlp.build_mlp(depth, skip, input_shape, num_classes, cfg, skip_cfg)
    if arch in ("cifar_resnet", "cifar_preresnet"):
        from orthskip.nn.models.cifar_resnet import build_cifar_resnet

        return build_cifar_resnet(
            depth, skip, input_shape, num_classes, cfg, skip_cfg, pre_act=arch == "cifar_preresnet"
        )
    if arch == "vit":
        return vit.build_vit(depth, skip, input_shape, num_classes, cfg, skip_cfg)
    from orthskip.nn.models.resnet import build_resnet

    # resnet18 is the alias of resnet with the CIFAR stem (its options have no stem)
    return build_resnet(depth, skip, input_shape, num_classes, cfg, skip_cfg, arch=arch)


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
    enforce(MODEL_CONSTRAINTS[arch], cfg, data, f"model.{arch}")
    enforce(SKIPS[skip].constraints, opts, data, f"skip_options.{skip}")
    return cfg, input_shape


__all__ = [
    "ARCHS",
    "BLOCKS",
    "INITS",
    "MODEL_CONSTRAINTS",
    "MODEL_OPTIONS",
    "MODEL_SPECS",
    "SKIPS",
    "Block",
    "ResidualNet",
    "allowed_depths",
    "build_model",
    "check_depth",
    "initial_state",
    "make_block",
    "model_options",
    "validate_model_options",
]
