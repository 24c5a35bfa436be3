"""What every skip kind shares: the ``Skip`` base class, applying a matrix to features, tokens
or channels, and the float64 orthogonal parametrization of a matrix.

The kinds themselves, with their options, are in the sibling modules; ``orthskip.nn.skips``
states what each kind does inside a stage and at a transition.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from orthskip.config.constraints import Constraint
from orthskip.config.options import Table
from orthskip.errors import ConfigError
from orthskip.nn.orth import (
    OrthogonalMap,
    eye_like,
    haar_orthogonal,
    identity_gap,
    map_to_orthogonal,
)
from orthskip.nn.skip_specs import kind_options

# On CPU, oneDNN's 1×1 convolution is slow and erratic at few channels (in ResNet-56 a 16-channel
# 1×1 forward took longer than the block's 3×3 convolutions); a batched GEMM over the samples,
# with the residual addition fused in (baddbmm), is faster up to this many channels
# (bench/bench_apply.py times both per shape; the measured ratios are in the README's
# Development section): at 64 channels the conv was faster on one machine measured.
GEMM_MAX_CHANNELS = 32


def _use_gemm(x: Tensor, m: Tensor) -> bool:
    return (
        x.device.type == "cpu"
        and max(m.shape) <= GEMM_MAX_CHANNELS
        and x.is_contiguous()
        and not torch.is_autocast_enabled("cpu")
    )


def apply_channels_gemm(x: Tensor, m: Tensor, add: Tensor | None = None) -> Tensor:
    """m x (+ add) on the channels of a contiguous (N, C, H, W) x: one batched GEMM per sample."""
    n = x.shape[0]
    x3 = x.reshape(n, x.shape[1], -1)
    batch_m = m.expand(n, -1, -1)
    if add is None:
        y = torch.bmm(batch_m, x3)
    else:
        y = torch.baddbmm(add.reshape(n, m.shape[0], -1), batch_m, x3)
    return y.view(n, m.shape[0], *x.shape[2:])


def apply_channels_conv(x: Tensor, m: Tensor, add: Tensor | None = None) -> Tensor:
    """m x (+ add) on the channels of (N, C, H, W) x as a 1×1 convolution."""
    y = F.conv2d(x, m[:, :, None, None])
    return y if add is None else y + add


def apply_matrix(x: Tensor, m: Tensor, add: Tensor | None = None) -> Tensor:
    """m x (+ add): an (out × in) matrix on features (2-D x) or channels (4-D x, a 1×1 conv).

    ``add`` (shaped like the result) is added in the same kernel where that is faster:
    the residual sum S(x) + F(x) of a block.
    """
    m = m.to(x.dtype)
    if x.dim() == 2:
        return x @ m.T if add is None else torch.addmm(add, x, m.T)
    if x.dim() == 3:  # tokens (N, T, d): one GEMM over all N·T tokens
        flat = x.reshape(-1, x.shape[-1])
        y = flat @ m.T if add is None else torch.addmm(add.reshape(-1, m.shape[0]), flat, m.T)
        return y.view(*x.shape[:-1], m.shape[0])
    if _use_gemm(x, m):
        return apply_channels_gemm(x, m, add)
    return apply_channels_conv(x, m, add)


def subsample(x: Tensor, stride: int) -> Tensor:
    """Spatial stride-s subsampling (matches a 3×3/pad-1/stride-s conv's output size)."""
    if stride == 1 or x.dim() != 4:  # vectors and tokens have no spatial grid
        return x
    return x[:, :, ::stride, ::stride]


class MatrixHolder(nn.Module):
    """Holds one 2-D weight so that a torch parametrization can be registered on it.

    ``value()`` is the weight or, inside ``grouped_orthogonal_maps``, the same matrix computed
    together with the others of its shape.
    """

    def __init__(self, init: Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(init.clone())
        self.grouped: Tensor | None = None

    def value(self) -> Tensor:
        return self.weight if self.grouped is None else self.grouped


@contextmanager
def grouped_orthogonal_maps(module: nn.Module) -> Iterator[None]:
    """Within the block, every orthogonal parametrization in ``module`` is computed up front,
    in one batched call per (shape, map) group; ``MatrixHolder.value()`` returns its slice.

    Same values and gradients as computing each where it is used (tested), but the small
    float64 eigendecompositions run back to back instead of one between every pair of large
    convolutions, forward and backward (bench/bench_skips.py measures what that saves).
    Re-entrant: holders an outer block already computed are left to it.
    """
    groups: dict[tuple[Any, ...], list[MatrixHolder]] = {}
    for m in module.modules():
        if not (isinstance(m, MatrixHolder) and m.grouped is None):
            continue
        if not parametrize.is_parametrized(m, "weight"):
            continue
        omap = m.parametrizations.weight[0]
        if isinstance(omap, OrthogonalMap):
            x = m.parametrizations.weight.original
            key = (tuple(x.shape), omap.orthogonal_map, x.dtype, x.device)
            groups.setdefault(key, []).append(m)
    try:
        for (_, kind, _, _), holders in groups.items():
            xs = torch.stack([h.parametrizations.weight.original for h in holders])
            bases = torch.stack([h.parametrizations.weight[0].base for h in holders])
            for h, q in zip(holders, map_to_orthogonal(xs, bases, kind).unbind(0), strict=True):
                h.grouped = q
        yield
    finally:
        for holders in groups.values():
            for h in holders:
                h.grouped = None


def orthogonal_init(rows: int, cols: int, init: str, allow_negative_det: bool) -> Tensor:
    if init == "identity":
        return eye_like(rows, cols)
    return haar_orthogonal(rows, cols, special=not allow_negative_det)


def parametrized(init: Tensor, orthogonal_map: str) -> MatrixHolder:
    # float64 generator and map: the matrices are small (C × C), so this is cheap, and Q is
    # orthogonal to ~1e-15 before it is cast to the activations' dtype where it is applied.
    holder = MatrixHolder(init.to(torch.float64))
    # Q = base · map(A), base = the init: X = 0 is exactly the init (det kept). The construction
    # of torch's parametrizations.orthogonal, with an eigendecomposition exponential that is exact
    # at any ‖A‖ and ~2-3× cheaper to differentiate than torch.linalg.matrix_exp (orthskip.nn.orth).
    parametrize.register_parametrization(
        holder, "weight", OrthogonalMap(tuple(init.shape), orthogonal_map)
    )
    return holder


class _FromKindOptions:
    """A class attribute read from the kind's entry in ``orthskip.nn.skip_specs.KIND_OPTIONS``
    (torch-free, where the config checks read it too): the table is stated once."""

    def __init__(self, attr: str) -> None:
        self.attr = attr

    def __get__(self, obj: Any, owner: type[Any]) -> Any:
        return getattr(kind_options(getattr(owner, "kind", "")), self.attr)


_OPTIONS: Any = _FromKindOptions("options")
_CONSTRAINTS: Any = _FromKindOptions("constraints")


class Skip(nn.Module):
    """Base class of skip connections; subclasses set ``kind`` and are registered in SKIPS."""

    kind: ClassVar[str]
    # the kind's options (config["skip_options"][kind]): type, default, allowed values, text;
    # from its KIND_OPTIONS entry (orthskip.nn.skip_specs), never set on the class
    options_table: ClassVar[Table] = _OPTIONS
    # the block the skip sits in (``orthskip.nn.models.base.BLOCKS``): y = post(S(x) + F(x))
    block: ClassVar[str] = "residual"
    # what the kind needs of its options and the data beyond its options_table (enforced by
    # build_model and by the config check for every cell; orthskip.config.constraints), from
    # its KIND_OPTIONS entry too. The checks in __init__/build below are invariants of the
    # architectures (none narrows the channels or strides by more than 2), which no config
    # can break.
    constraints: ClassVar[tuple[Constraint, ...]] = _CONSTRAINTS
    # why a pack of this kind on an image architecture (its spatial form) must not train
    # under torch.func.vmap ("": it may); such packs run their members one after another
    not_vmapped_on_images: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for attr in ("options_table", "constraints"):
            if attr in vars(cls):
                raise TypeError(
                    f"{cls.__name__}.{attr}: a skip kind's options and constraints are its "
                    "entry in orthskip.nn.skip_specs.KIND_OPTIONS (register_options), not "
                    "class attributes"
                )

    def __init__(
        self,
        c_in: int,
        c_out: int,
        stride: int,
        options: dict[str, Any],
        in_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.c_in, self.c_out, self.stride = c_in, c_out, stride
        self.in_size = in_size  # spatial size of the input (CNNs); None for vector input
        self.transition = c_in != c_out or stride != 1
        self.options = dict(options)
        if c_out < c_in:
            raise ConfigError(f"skip {self.kind}: cannot narrow channels {c_in} -> {c_out}")
        self.build(self.options)

    def build(self, options: dict[str, Any]) -> None:
        """Create the kind's parameters and buffers (self.c_in, c_out, stride, in_size are set)."""

    @classmethod
    def initial_state(
        cls,
        c_in: int,
        c_out: int,
        stride: int,
        options: dict[str, Any],
        in_size: tuple[int, int] | None = None,
    ) -> dict[str, Tensor]:
        """The state dict of ``cls(c_in, c_out, stride, options, in_size)`` (``options``
        complete), from the same draws of torch's global RNG. A kind whose construction
        costs more than its draws computes it without building the module:
        ``orthskip.nn.models.mlp.initial_state`` draws the packed trainer's members, up
        to thousands of blocks each."""
        return cls(c_in, c_out, stride, options, in_size).state_dict()

    def matrices(self) -> dict[str, Tensor]:
        """Matrices to measure (Q, W, B); {} when the skip has none."""
        return {}

    def manifold_parameters(self) -> list[nn.Parameter]:
        """The parameters a Riemannian step keeps on the orthogonal manifold
        (``orthskip.nn.optim.RiemannianOrthogonal``) instead of the skip optimizer."""
        return []

    def optimizer_projects(self) -> bool:
        """Whether the optimizer projects this skip's weight after its steps (every
        ``project_every`` steps, through ``project``)."""
        return False

    def linear_map(self) -> Tensor | None:
        """M when S(x) = M · subsample(x) (the matrix skips); None for every other kind."""
        return None

    def forward(self, x: Tensor) -> Tensor:
        m = self.linear_map()
        if m is None:
            raise NotImplementedError(f"skip {self.kind} must define forward or linear_map")
        return apply_matrix(subsample(x, self.stride), m)

    def residual(self, x: Tensor, out: Tensor) -> Tensor:
        """S(x) + out, the residual sum (one fused kernel for the matrix skips)."""
        m = self.linear_map()
        if m is None:
            return self(x) + out
        return apply_matrix(subsample(x, self.stride), m, add=out)

    def extra_repr(self) -> str:
        return f"{self.c_in}->{self.c_out}, stride={self.stride}"


@torch.no_grad()
def skip_identity_gap(model: nn.Module) -> float:
    """Mean over the model's square matrix skips (``linear_map``: W or Q) of ‖M − I‖_F/√n, in
    float64: the quantity the rate experiment fits, per net. NaN when the model has none (the
    identity and none kinds, the skips without a matrix, transitions' rectangular maps)."""
    maps = [mod.linear_map() for mod in model.modules() if isinstance(mod, Skip)]
    gaps = [identity_gap(m.double()) for m in maps if m is not None and m.shape[0] == m.shape[-1]]
    return float(torch.stack(gaps).mean()) if gaps else float("nan")
