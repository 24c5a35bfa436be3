"""Weight initialisation, a stated model option: ``model.<arch>.init`` = kaiming | torch_default.

``torch_default`` leaves every layer as PyTorch constructs it (Linear / Conv2d:
kaiming_uniform_(a=√5), i.e. U(±1/√fan_in), variance 1/(3·fan_in); biases U(±1/√fan_in);
BatchNorm weight 1, bias 0). A residual-free MLP block Linear–ReLU–Linear then shrinks the
second moment by 1/3 · 1/2 · 1/3 = 1/18: a deep PlainNet (skip ``none``) starts with no signal.

``kaiming`` (the default; Oyedotun et al. uses He init) draws every weight from N(0, gain²/fan) with
zero bias, the gain chosen by what the layer's output feeds:

- MLP stem Linear(D, w): fan-in, gain 1 (LeCun-normal). It feeds the residual stream, not a
  nonlinearity, so it keeps the input's second moment.
- MLP branch, first Linear: fan-in, gain of the configured activation that follows it
  (``nn.init.calculate_gain``: relu √2, tanh 5/3; gelu has no entry there and takes relu's √2,
  since GELU(z) → ReLU(z) away from 0).
- MLP branch, last Linear: fan-in, gain 1 (LeCun-normal). It feeds the residual sum, not a
  nonlinearity; the gain √2 of the first layer already compensates the ReLU's halving, so the
  branch as a whole keeps the second moment (2 · 1/2 · 1 = 1) and a plain stack (``none``) of
  any depth starts with its input's scale. Putting the √2 on the last layer instead (He et al.'s
  "layer after a ReLU") gives the same product; this way the pre-activations, not the branch
  output, carry the larger scale. With a skip, the stream's second moment grows by the branch's
  share per block (×2 for an isometric skip at init), as it does in every unnormalised ResNet.
- Head Linear(w, classes) (every architecture): fan-in, gain 1 (LeCun-normal), zero bias.
- CNNs (cifar_resnet, cifar_preresnet, resnet): every 3×3 convolution outside the skips (stem
  and branches) He-normal, fan-out, gain √2 — what these builders already did before ``init``
  was an option (torchvision's ResNet convention: fan-out keeps the backward signal's scale; for
  stride-1 3×3 convs with C_in = C_out fan-in and fan-out coincide). BatchNorm weight 1, bias 0
  (PyTorch's default, unchanged).

Skip parameters keep their own initialisation (``skip_options``: identity / Haar / kaiming for
``linear``) under both choices: this module never touches a ``Skip``'s parameters.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from orthskip.nn.skips import Skip


def activation_gain(activation: str) -> float:
    """The He gain for a layer that feeds ``activation`` (relu, tanh, gelu)."""
    if activation == "gelu":  # no entry in calculate_gain; GELU is a smoothed ReLU
        return nn.init.calculate_gain("relu")
    return nn.init.calculate_gain(activation)


def _fans(weight: torch.Tensor) -> tuple[int, int]:
    receptive = math.prod(weight.shape[2:])
    return weight.shape[1] * receptive, weight.shape[0] * receptive


@torch.no_grad()
def normal_init_(layer: nn.Linear | nn.Conv2d, gain: float, mode: str = "fan_in") -> None:
    """weight ~ N(0, gain² / fan) (fan = fan_in or fan_out), bias = 0."""
    normal_fill_(layer.weight, layer.bias, gain, mode)


@torch.no_grad()
def normal_fill_(
    weight: torch.Tensor, bias: torch.Tensor | None, gain: float, mode: str = "fan_in"
) -> None:
    """``normal_init_`` on a layer's bare tensors (``orthskip.nn.models.mlp.initial_state``
    draws a model's tensors without building its modules)."""
    fan_in, fan_out = _fans(weight)
    fan = fan_in if mode == "fan_in" else fan_out
    weight.normal_(0.0, gain / math.sqrt(fan))
    if bias is not None:
        bias.zero_()


def outside_skips(net: nn.Module, kind: type[nn.Module]) -> list[nn.Module]:
    """The modules of type ``kind`` in ``net`` that do not belong to a Skip."""
    found: list[nn.Module] = []

    def walk(m: nn.Module) -> None:
        if isinstance(m, Skip):
            return
        if isinstance(m, kind):
            found.append(m)
        for child in m.children():
            walk(child)

    walk(net)
    return found


def init_mlp(net: nn.Module, activation: str) -> None:
    """``kaiming`` for the residual MLP (stem, branches, head); see the module docstring."""
    for layer in (net.stem[1], net.head):  # nn.Identity with stem/head: identity
        if isinstance(layer, nn.Linear):
            normal_init_(layer, 1.0)
    for block in net.blocks:
        if block.branch is not None:
            normal_init_(block.branch[0], activation_gain(activation))
            normal_init_(block.branch[3], 1.0)  # the last linear (a Scale may follow)


def init_cnn(net: nn.Module) -> None:
    """``kaiming`` for the CNNs: He fan-out on every conv outside the skips, LeCun head."""
    for conv in outside_skips(net, nn.Conv2d):
        normal_init_(conv, nn.init.calculate_gain("relu"), mode="fan_out")
    for linear in outside_skips(net.head, nn.Linear):
        normal_init_(linear, 1.0)
