"""Each architecture's spec, torch-free: its options (``config["model"][arch]``), the depths
it builds, its training cost and its constraints.

The config checks (``orthskip.config.grid``), the schema generator and the cluster resources
(``workflow/lib/cluster.py``) read them from here without importing torch; the builders are
``orthskip.nn.models.ARCHS`` (an ``Arch`` is a spec and its builder; ``register_arch``
registers both). What the options do is documented with the builders
(``orthskip.nn.models`` and its modules).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from orthskip.config.constraints import Constraint, DataShape, divisors
from orthskip.config.options import (
    Option,
    RegistryView,
    Table,
    check_options,
    defaults,
    unknown,
)
from orthskip.errors import ConfigError


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
class ArchSpec:
    """An architecture without its builder: its options (``config["model"][name]``: the
    schema's source), the depths it builds, its training cost, and what it needs of its
    options and the data beyond the option table (enforced by ``build_model`` and, for every
    cell, by the config check before any job)."""

    name: str
    options: Table
    depths: Depths
    cost: Cost
    constraints: tuple[Constraint, ...] = ()
    #: whether a pack of its cells trains as one vmap computation on the CPU; False where a
    #: step is compute-bound there and vmap costs more than it saves (then the members train
    #: one after another, each a pack of one; on a GPU packs are vmapped either way)
    vmap_on_cpu: bool = True


#: Every architecture's spec, in the order of the config's choices.
ARCH_SPECS: dict[str, ArchSpec] = {}


def register_arch_spec(spec: ArchSpec) -> ArchSpec:
    if spec.name in ARCH_SPECS:
        raise ValueError(f"architecture {spec.name!r} is registered already")
    ARCH_SPECS[spec.name] = spec
    return spec


# Every architecture's options (config["model"][arch]), their defaults and its constraints.
MODEL_SPECS: Mapping[str, Table] = RegistryView(ARCH_SPECS, lambda n: ARCH_SPECS[n].options)
MODEL_OPTIONS: Mapping[str, dict[str, Any]] = RegistryView(
    ARCH_SPECS, lambda n: defaults(ARCH_SPECS[n].options)
)
MODEL_CONSTRAINTS: Mapping[str, tuple[Constraint, ...]] = RegistryView(
    ARCH_SPECS, lambda n: ARCH_SPECS[n].constraints
)


def allowed_depths(arch: str) -> str:
    return ARCH_SPECS[arch].depths.text


def _check_arch(arch: str) -> None:
    if arch not in ARCH_SPECS:
        raise unknown("arch", arch, ARCH_SPECS, "architecture")


def check_depth(arch: str, depth: int) -> None:
    """Raise ConfigError naming the allowed depths when ``arch`` cannot be built at ``depth``."""
    _check_arch(arch)
    ok = isinstance(depth, int) and not isinstance(depth, bool)
    if not (ok and ARCH_SPECS[arch].depths.allows(depth)):
        raise ConfigError(
            f"depth = {depth!r} for arch {arch}: allowed depths are {allowed_depths(arch)}"
        )


def validate_model_options(arch: str, model_cfg: dict | None) -> None:
    """Raise ConfigError for an unknown key or bad value in config['model'][arch]."""
    _check_arch(arch)
    check_options(ARCH_SPECS[arch].options, model_cfg or {}, f"model.{arch}")


def model_options(arch: str, model_cfg: dict | None) -> dict[str, Any]:
    """Defaults of ``arch`` overridden by ``model_cfg``; checked where a config or a call
    enters (``prepare_config``, ``build_model``: :func:`validate_model_options`)."""
    _check_arch(arch)
    return {**MODEL_OPTIONS[arch], **(model_cfg or {})}


# ---------------------------------------------------------------- the built-in architectures

# model.<arch>.init (orthskip.nn.models.init)
INITS: tuple[str, ...] = ("kaiming", "torch_default")
# model.vit's choices (orthskip.nn.models.vit)
POS_EMBEDS: tuple[str, ...] = ("learned", "sincos")
POOLS: tuple[str, ...] = ("cls", "mean")
# model.resnet: blocks per stage by depth (basic blocks, bottlenecks), and the stems
# (orthskip.nn.models.resnet)
BASIC_STAGES: dict[int, tuple[int, ...]] = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
BOTTLENECK_STAGES: dict[int, tuple[int, ...]] = {
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}
RESNET_STAGES: dict[int, tuple[int, ...]] = {**BASIC_STAGES, **BOTTLENECK_STAGES}
STEMS: tuple[str, ...] = ("cifar", "imagenet")


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


def _identity_map(key: str) -> Constraint:
    """mlp's ``stem``/``head: identity`` maps nothing: the width must be the data's
    input/output dimension (``width: 0`` is the input dimension)."""
    side = "input" if key == "stem" else "output"

    def test(cfg: Mapping[str, Any], data: DataShape | None) -> str | None:
        if data is None or cfg[key] != "identity":
            return None
        d_in = math.prod(data.input_shape)
        dim = d_in if key == "stem" else data.n_outputs
        width = int(cfg["width"]) or d_in
        if width != dim:
            return (
                f"identity needs model.mlp.width = {dim} (the data's {side} dimension"
                f"{', or 0' if key == 'stem' else ''}); width is {width}"
            )
        return None

    return Constraint(f"{key}_identity_width", key, f"{key} identity: width = {side} dim", test)


# What build_mlp needs of its options and the data (enforced by build_model and by the
# config check before any job).
MLP_CONSTRAINTS: tuple[Constraint, ...] = (_identity_map("stem"), _identity_map("head"))


def _heads(cfg: Mapping[str, Any], data: DataShape | None) -> str | None:
    width, heads = int(cfg["width"]), int(cfg["heads"])
    if width % heads:
        return f"must divide model.vit.width = {width}; allowed: {divisors(width)}"
    return None


def _patch(cfg: Mapping[str, Any], data: DataShape | None) -> str | None:
    if data is None or len(data.input_shape) != 3:
        return None  # the architecture's image-input rule says so
    patch, (h, w) = int(cfg["patch"]), data.input_shape[1:]
    if h % patch or w % patch:
        common = ", ".join(str(d) for d in range(1, min(h, w) + 1) if h % d == 0 == w % d)
        return f"must divide the image size {h}x{w}; allowed: {common}"
    return None


def _sincos(cfg: Mapping[str, Any], data: DataShape | None) -> str | None:
    width = int(cfg["width"])
    if cfg["pos_embed"] == "sincos" and width % 4:
        return f"sincos needs model.vit.width a multiple of 4; width is {width}"
    return None


# What build_vit needs of its options and the images (enforced by build_model and by the
# config check before any job).
VIT_CONSTRAINTS: tuple[Constraint, ...] = (
    Constraint("heads_divide_width", "heads", "heads divides width", _heads),
    Constraint("patch_divides_image", "patch", "patch divides the image height and width", _patch),
    Constraint("sincos_width", "pos_embed", "pos_embed sincos needs width % 4 == 0", _sincos),
)

_CIFAR_DEPTHS = Depths(
    "6n+2 with n >= 1: 8, 14, 20, 32, 44, 56, 110, ...", lambda d: d >= 8 and (d - 2) % 6 == 0
)
# Costs from ResNet-110 ≈ 30 s and PreResNet-164 ≈ 60 s per CIFAR epoch on a V100-class
# GPU; the MLP's is kernel-launch bound; ImageNet-style ResNet blocks are wider layers.
# vmap_on_cpu: bench/bench_engine.py (AMD EPYC, 1 thread) measured a vmap pack of 5 seeds at
# 0.91x the speed of the 5 members one after another for cifar_resnet-20 (its convolutions
# run at ~45 % of the matmul ceiling) and 0.87x for a 6-block ViT, against 1.9-2.0x for the
# mlp (launch-bound); the other convolutional nets are larger, so compute-bound too.
for _spec in (
    ArchSpec(
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
        Cost(1.0e-6),
        MLP_CONSTRAINTS,
    ),
    ArchSpec("cifar_resnet", {"width": _width(16), "init": _INIT}, _CIFAR_DEPTHS,
             Cost(5.5e-6), (_image("cifar_resnet"),), vmap_on_cpu=False),
    ArchSpec("cifar_preresnet", {"width": _width(16), "init": _INIT}, _CIFAR_DEPTHS,
             Cost(7.5e-6), (_image("cifar_preresnet"),), vmap_on_cpu=False),
    ArchSpec(
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
        Cost(3.0e-5),
        (_image("vit"), *VIT_CONSTRAINTS),
        vmap_on_cpu=False,
    ),
    ArchSpec(
        "resnet",
        {
            "width": _width(64),
            "stem": Option(
                "string", "cifar", "cifar (3x3) or imagenet (7x7 + max pool) stem", choices=STEMS
            ),
            "init": _INIT,
        },
        Depths.listed(RESNET_STAGES),
        Cost(3.0e-5, 40.0),
        (_image("resnet"),),
        vmap_on_cpu=False,
    ),
):  # fmt: skip
    register_arch_spec(_spec)
