"""Vision Transformer (Dosovitskiy et al. 2021), pre-LayerNorm, every sublayer a residual block.

stem: patch embedding (a ``patch`` × ``patch`` convolution of stride ``patch``, C → d = ``width``)
→ tokens (N, T, d), T = (H/p)(W/p), plus a class token when ``pool: cls``, plus a position
embedding (``pos_embed``: ``learned``, N(0, 0.02²) at init, or ``sincos``, the fixed 2-D
sine-cosine table of MAE / Beyer et al., a buffer; the class token's row is 0).
blocks: ``depth`` transformer blocks, each two residual blocks (so per-layer metrics see every
sublayer: ``blockI.attn`` and ``blockI.mlp``):

    x ← S(x) + Attn(LN(x)),   Attn = multi-head self-attention (``heads``; qkv and output Linear)
    x ← S(x) + MLP(LN(x)),    MLP = Linear(d, r·d) - GELU - Linear(r·d, d), r = ``mlp_ratio``

head: LN → class token (``pool: cls``) or mean over tokens (``pool: mean``) → Linear(d, classes).
No dropout.

The skip S acts per token on the width-d stream (the same map on every token; width never
changes, so no block is a transition). Per kind:
- ``identity``: x; ``none``: 0 (a plain transformer); ``linear``: W x, W d × d; ``orth_fixed``,
  ``orth_learned``, ``orth_manifold``: Q x, Q ∈ SO(d) (frozen Haar / parametrized / Riemannian),
  in both sublayers.
- ``procrustes``: acts only at transitions (before a block that changes width or resolution);
  a ViT has none, so it is exactly the identity skip (no parameters).
- ``orth_jacobian``: the MLP sublayer becomes ``layers`` (skip_options, default 2) layers
  x ← x − 2Bᵀ ReLU(Bx + b) with B ∈ SO(d) (the matrix form, on every token) and no LayerNorm
  (a normalisation would break the orthogonal Jacobian); the attention sublayer keeps an
  identity skip, x ← x + Attn(LN(x)) — attention mixes tokens and has no orthogonal-Jacobian
  form, and dropping it would leave a model that never mixes tokens.

Initialisation (``init``): ``kaiming`` (default) draws every Linear outside the skips and the
patch convolution from N(0, gain²/fan_in) with zero bias, gain √2 on the MLP's first Linear (it
feeds a GELU, ``orthskip.nn.models.init.activation_gain``) and 1 elsewhere (LeCun: they feed the
residual stream, attention logits or the logits); ``torch_default`` leaves PyTorch's init. Both
keep LayerNorm at (1, 0), the class token at 0 and the learned position embedding N(0, 0.02²).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from orthskip.errors import ConfigError
from orthskip.nn.models.base import Block, ResidualNet, make_block
from orthskip.nn.models.init import activation_gain, normal_init_, outside_skips


def sincos_2d(grid: tuple[int, int], dim: int) -> Tensor:
    """(gh·gw, dim) fixed embedding: d/4 frequencies each of sin/cos of the row and column."""
    if dim % 4:
        raise ConfigError(f"model.vit.pos_embed = sincos: width {dim} must be a multiple of 4")
    gh, gw = grid
    ys, xs = torch.meshgrid(
        torch.arange(gh, dtype=torch.float64), torch.arange(gw, dtype=torch.float64), indexing="ij"
    )
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    parts = []
    for pos in (ys.reshape(-1), xs.reshape(-1)):
        angle = pos[:, None] * omega[None, :]
        parts += [angle.sin(), angle.cos()]
    return torch.cat(parts, dim=1).float()


class PatchStem(nn.Module):
    """Image (N, C, H, W) → tokens (N, T, d): patch conv, class token, position embedding."""

    def __init__(
        self, c_in: int, width: int, patch: int, grid: tuple[int, int], pos: str, pool: str
    ) -> None:
        super().__init__()
        self.proj = nn.Conv2d(c_in, width, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width)) if pool == "cls" else None
        table = sincos_2d(grid, width) if pos == "sincos" else torch.zeros(grid[0] * grid[1], width)
        if pool == "cls":
            table = torch.cat([torch.zeros(1, width), table])
        if pos == "learned":
            self.pos_embed = nn.Parameter(table[None].normal_(0.0, 0.02))
        else:
            self.register_buffer("pos_embed", table[None])

    def forward(self, x: Tensor) -> Tensor:
        x = self.proj(x).flatten(2).transpose(1, 2)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return x + self.pos_embed.to(x.dtype)


class SelfAttention(nn.Module):
    """Multi-head self-attention on (N, T, d) with explicit qkv / proj Linears (measured)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        n, t, d = x.shape
        qkv = self.qkv(x).view(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        try:
            y = F.scaled_dot_product_attention(q, k, v)
        except NotImplementedError:
            # CPU's fused (flash) kernel has no forward-mode derivative, which the jvp-based
            # metrics (jacobian_sv, branch_lipschitz) need: the same attention, written out
            y = torch.softmax(q @ k.mT / math.sqrt(q.shape[-1]), dim=-1) @ v
        return self.proj(y.transpose(1, 2).reshape(n, t, d))


class TokenHead(nn.Module):
    def __init__(self, width: int, num_classes: int, pool: str) -> None:
        super().__init__()
        self.pool = pool
        self.norm = nn.LayerNorm(width)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(x)
        return self.fc(x[:, 0] if self.pool == "cls" else x.mean(dim=1))


def _grid(input_shape: tuple[int, ...], cfg: dict) -> tuple[int, int]:
    """The patch grid (build_model has enforced ``arch_specs.VIT_CONSTRAINTS``)."""
    patch = int(cfg["patch"])
    return int(input_shape[1]) // patch, int(input_shape[2]) // patch


def build_vit(
    depth: int,
    skip: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    cfg: dict,
    skip_cfg: dict | None,
) -> ResidualNet:
    grid = _grid(input_shape, cfg)
    d, heads = int(cfg["width"]), int(cfg["heads"])
    hidden = max(1, round(d * float(cfg["mlp_ratio"])))
    stem = PatchStem(int(input_shape[0]), d, int(cfg["patch"]), grid, cfg["pos_embed"], cfg["pool"])

    def attn(c_in: int, c_out: int, stride: int) -> nn.Module:
        return nn.Sequential(nn.LayerNorm(d), SelfAttention(d, heads))

    def mlp(c_in: int, c_out: int, stride: int) -> nn.Module:
        return nn.Sequential(nn.LayerNorm(d), nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d))

    # orth_jacobian replaces the MLP sublayer only; attention keeps the identity skip
    attn_kind = "identity" if skip == "orth_jacobian" else skip
    blocks: list[Block] = []
    for i in range(depth):
        blocks.append(make_block(f"block{i}.attn", attn_kind, d, d, 1, attn, skip_cfg))
        blocks.append(make_block(f"block{i}.mlp", skip, d, d, 1, mlp, skip_cfg))
    net = ResidualNet("vit", skip, stem, blocks, TokenHead(d, num_classes, cfg["pool"]))
    if cfg["init"] == "kaiming":
        init_vit(net)
    return net


def init_vit(net: ResidualNet) -> None:
    """``kaiming`` for the ViT (module docstring): LeCun everywhere, He before the GELU."""
    for layer in outside_skips(net, nn.Linear):
        normal_init_(layer, 1.0)
    normal_init_(net.stem.proj, 1.0)
    for block in net.blocks:
        branch = block.branch
        if branch is not None and isinstance(branch[1], nn.Linear):  # an MLP sublayer
            normal_init_(branch[1], activation_gain("gelu"))
