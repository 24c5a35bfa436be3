"""Architectures: every skip kind × architecture builds, runs forward/backward, counts params."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F

from orthskip.errors import ConfigError
from orthskip.nn.models import (
    ARCHS,
    MODEL_OPTIONS,
    build_model,
    check_depth,
    initial_state,
    validate_model_options,
)
from orthskip.nn.optim import build_optimizer
from orthskip.nn.orth import orth_defect
from orthskip.nn.skips import SKIPS

# (arch, two depths, input shape, model config): small sizes so the grid runs in seconds
CASES = {
    "mlp": ((1, 3), (1, 8, 8), {"width": 8}),
    "cifar_resnet": ((8, 14), (1, 8, 8), {"width": 4}),
    "cifar_preresnet": ((8, 14), (3, 8, 8), {"width": 4}),
    "resnet": ((10, 18), (3, 8, 8), {"width": 4}),
}


def block_shapes(model) -> list[tuple[int, int, bool]]:
    """(c_in, c_out, transition) of every block, read from the skip modules."""
    return [(b.skip.c_in, b.skip.c_out, b.transition) for b in model.blocks]


def expected_skip_params(kind: str, shapes, arch: str = "mlp") -> int:
    if kind in ("identity", "none", "orth_fixed"):
        return 0
    if kind in ("linear", "orth_learned", "orth_manifold"):
        return sum(ci * co for ci, co, _ in shapes)  # orth_learned: the generator stores C_out·C_in
    if kind == "procrustes":
        return sum(4 * ci * co for ci, co, t in shapes if t)  # 2×2 conv* at transitions
    if kind == "orth_jacobian":
        # defaults kernel_size 3, layers 2: two layers per block, each with a 3×3 generator V
        # on images (a C × C matrix on vectors) and a bias; transitions add a C_out × C_in map
        taps = 1 if arch == "mlp" else 9
        return sum(2 * (taps * co * co + co) + (ci * co if t else 0) for ci, co, t in shapes)
    raise AssertionError(kind)


def test_arch_registry():
    # vit is tested with its own formulas in tests/test_models_arch.py
    assert tuple(ARCHS) == ("mlp", "cifar_resnet", "cifar_preresnet", "vit", "resnet")
    assert set(CASES) | {"vit"} == set(ARCHS) == set(MODEL_OPTIONS)


@pytest.mark.parametrize("kind", list(SKIPS))
@pytest.mark.parametrize("arch", list(CASES))
def test_every_kind_and_arch_builds_runs_and_counts_parameters(arch, kind):
    depths, shape, cfg = CASES[arch]
    counts = []
    for depth in depths:
        torch.manual_seed(0)
        model = build_model(arch, depth, kind, shape, 5, cfg, {})
        x = torch.randn(4, *shape)
        out = model(x)
        assert out.shape == (4, 5)
        assert torch.isfinite(out).all()
        loss = F.cross_entropy(out, torch.tensor([0, 1, 2, 3]))
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        # gradients reach the stem through every block
        stem_grad = sum(float(p.grad.abs().sum()) for p in model.stem.parameters())
        assert stem_grad > 0
        n_params = sum(p.numel() for p in model.parameters())
        assert model.n_params() == n_params > 0
        shapes = block_shapes(model)
        assert model.n_skip_params() == expected_skip_params(kind, shapes, arch)
        meta = build_optimizer(model, {}, {}).metadata()
        assert meta["n_skip_params"] == model.n_skip_params()
        counts.append(n_params)
        # block count follows the depth
        if arch == "mlp":
            n_blocks = depth
        elif arch == "resnet":
            n_blocks = {10: 4, 18: 8}[depth]
        else:
            n_blocks = 3 * ((depth - 2) // 6)
        assert len(model.blocks) == n_blocks
    assert counts[1] > counts[0]


@pytest.mark.parametrize("arch", ["cifar_resnet", "resnet"])
def test_transitions_are_where_width_or_resolution_changes(arch):
    depths, shape, cfg = CASES[arch]
    model = build_model(arch, depths[1], "orth_learned", shape, 3, cfg, {})
    names = [b.name for b in model.blocks if b.transition]
    n_stages = 3 if arch == "cifar_resnet" else 4
    assert names == [f"stage{s}.block0" for s in range(2, n_stages + 1)]
    assert len({b.name for b in model.blocks}) == len(model.blocks)
    for b in model.blocks:
        q = b.skip_matrices()["skip.Q"]
        ci, co = b.skip.c_in, b.skip.c_out
        assert q.shape == (co, ci)
        assert orth_defect(q) < 1e-12  # orthonormal columns, also at transitions


def test_forward_is_head_of_blocks_of_stem():
    torch.manual_seed(0)
    model = build_model("cifar_preresnet", 8, "orth_manifold", (3, 8, 8), 4, {"width": 4}, {})
    model.eval()
    x = torch.randn(3, 3, 8, 8)
    h = model.stem(x)
    for b in model.blocks:
        h = b(h)
    assert torch.equal(model.head(h), model(x))


@pytest.mark.parametrize("shape", [(2,), (1, 8, 8), (3, 4, 4)])
def test_mlp_flattens_any_input_shape(shape):
    model = build_model("mlp", 2, "identity", shape, 3, {}, {})
    assert model(torch.randn(5, *shape)).shape == (5, 3)
    assert model.stem[1].in_features == torch.Size(shape).numel()
    assert model.stem[1].out_features == 32  # default width


@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu"])
def test_mlp_options(norm, activation):
    model = build_model("mlp", 2, "linear", (4,), 2, {"norm": norm, "activation": activation}, {})
    assert model(torch.randn(3, 4)).shape == (3, 2)


def test_identity_transition_is_subsample_and_zero_pad_in_the_network():
    torch.manual_seed(0)
    model = build_model("cifar_resnet", 8, "identity", (1, 8, 8), 2, {"width": 4}, {})
    block = model.blocks[1]
    assert block.transition
    x = torch.randn(2, 4, 8, 8)
    s = block.skip(x)
    assert s.shape == (2, 8, 4, 4)
    assert torch.equal(s[:, :4], x[:, :, ::2, ::2]) and torch.equal(
        s[:, 4:], torch.zeros(2, 4, 4, 4)
    )


def test_procrustes_transition_maps_before_the_block():
    torch.manual_seed(0)
    model = build_model("cifar_resnet", 8, "procrustes", (1, 8, 8), 2, {"width": 4}, {})
    block = model.blocks[1]
    x = torch.randn(2, 4, 8, 8)
    z = block.skip(x)
    assert z.shape == (2, 8, 4, 4)
    assert torch.allclose(block(x), torch.relu(z + block.branch(z)))
    w = block.skip_matrices()["skip.W"]
    assert w.shape == (8, 16)
    assert torch.allclose(w @ w.T, torch.eye(8), atol=1e-5)


@pytest.mark.parametrize(
    ("arch", "depth", "needle"),
    [
        ("cifar_resnet", 21, "6n\\+2"),
        ("cifar_preresnet", 2, "6n\\+2"),
        ("resnet", 12, "10, 18, 34"),
        ("mlp", 0, ">= 1"),
        ("mlp", 2.5, ">= 1"),
    ],
)
def test_check_depth_names_allowed_depths(arch, depth, needle):
    with pytest.raises(ConfigError, match=needle):
        check_depth(arch, depth)
    with pytest.raises(ConfigError, match=needle):
        build_model(arch, depth, "identity", (3, 8, 8), 2, {}, {})


def test_check_depth_accepts_valid_depths():
    for arch, depths in [
        ("mlp", [1, 7, 200]),
        ("cifar_resnet", [8, 20, 56, 110]),
        ("cifar_preresnet", [14, 164]),
        ("resnet", [10, 18, 34]),
    ]:
        for d in depths:
            check_depth(arch, d)


def test_config_errors_name_key_and_values():
    with pytest.raises(ConfigError, match="resnet50"):
        check_depth("resnet50", 50)
    with pytest.raises(ConfigError, match=r"model\.mlp\.widht"):
        validate_model_options("mlp", {"widht": 3})
    with pytest.raises(ConfigError, match="'batch', 'layer'"):
        validate_model_options("mlp", {"norm": "group"})
    with pytest.raises(ConfigError, match=r"model\.cifar_resnet\.width"):
        validate_model_options("cifar_resnet", {"width": 0})
    with pytest.raises(ConfigError, match="image inputs"):
        build_model("cifar_resnet", 8, "identity", (2,), 2, {}, {})


@pytest.mark.parametrize("kind", ["orth_learned", "orth_fixed", "orth_jacobian", "procrustes"])
def test_state_dict_round_trip_through_weights_only_load(kind):
    skip_cfg = {"orth_learned": {"init": "haar"}}
    torch.manual_seed(0)
    a = build_model("cifar_resnet", 8, kind, (1, 8, 8), 3, {"width": 4}, skip_cfg).eval()
    torch.manual_seed(1)  # a different init (Haar samples, parametrization bases)
    b = build_model("cifar_resnet", 8, kind, (1, 8, 8), 3, {"width": 4}, skip_cfg).eval()
    x = torch.randn(2, 1, 8, 8)
    assert not torch.allclose(a(x), b(x))
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(a(x), b(x))
    for ba, bb in zip(a.blocks, b.blocks, strict=True):
        for (ka, ma), (kb, mb) in zip(
            ba.skip_matrices().items(), bb.skip_matrices().items(), strict=True
        ):
            assert ka == kb and torch.equal(ma, mb)


# ---------------------------------------------------------------- initialisation


def _plain_mlp_second_moments(init: str, seeds=range(8)) -> torch.Tensor:
    """E|h_l|² / E|x|² after the stem and every block of a plain (skip none) ReLU MLP,
    width 64, depth 16, averaged over models (the expectation over weights is what He init
    fixes; one model's ratio is a random walk in log scale)."""
    ratios = []
    for seed in seeds:
        torch.manual_seed(seed)
        model = build_model("mlp", 16, "none", (64,), 2, {"width": 64, "init": init}, {})
        x = torch.randn(1024, 64)
        with torch.no_grad():
            h = model.stem(x)
            qs = [h.pow(2).mean()]
            for block in model.blocks:
                h = block(h)
                qs.append(h.pow(2).mean())
        ratios.append(torch.stack(qs) / x.pow(2).mean())
    return torch.stack(ratios).mean(0)


def test_kaiming_keeps_a_deep_plain_mlps_signal_and_torch_default_loses_it():
    he = _plain_mlp_second_moments("kaiming")
    assert he.shape == (17,)
    assert float(he.min()) > 1 / 4 and float(he.max()) < 4  # every block, not just the last
    default = _plain_mlp_second_moments("torch_default")
    # Var = 1/(3 fan_in) per layer: ×1/18 per block down to the biases' floor, ~1/170 here
    assert float(default[-1]) < 1e-2
    assert float(default[-1]) < 0.05 * float(he[-1])


def test_kaiming_mlp_weights_have_the_stated_std_and_zero_biases():
    for activation, gain in (("relu", 2**0.5), ("tanh", 5 / 3), ("gelu", 2**0.5)):
        torch.manual_seed(0)
        cfg = {"width": 64, "activation": activation}  # init: kaiming is the default
        model = build_model("mlp", 3, "identity", (1, 8, 8), 32, cfg, {})
        expected = [(model.stem[1], 1 / 64**0.5)]  # LeCun: feeds the residual stream
        for block in model.blocks:
            expected.append((block.branch[0], gain / 64**0.5))  # feeds the activation
            expected.append((block.branch[-1], 1 / 64**0.5))  # feeds the residual sum
        expected.append((model.head, 1 / 64**0.5))  # feeds the logits
        for layer, std in expected:
            assert abs(float(layer.weight.std()) / std - 1) < 0.06, (activation, layer)
            assert abs(float(layer.weight.mean())) < 0.1 * std
            assert torch.equal(layer.bias, torch.zeros_like(layer.bias))


def test_kaiming_cnn_convs_are_he_fan_out_as_before_and_the_head_lecun():
    # what build_cnn did before init was an option: kaiming_normal_(fan_out, relu) on the 3×3
    # convs, on top of PyTorch's construction; ``kaiming`` keeps that draw for draw
    torch.manual_seed(0)
    ours = build_model("cifar_resnet", 14, "identity", (3, 8, 8), 10, {"width": 8}, {})
    torch.manual_seed(0)
    old = build_model(
        "cifar_resnet", 14, "identity", (3, 8, 8), 10, {"width": 8, "init": "torch_default"}, {}
    )
    for m in old.modules():
        if isinstance(m, torch.nn.Conv2d) and m.weight.shape[-1] == 3:
            torch.nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    convs = [(n, m) for n, m in ours.named_modules() if isinstance(m, torch.nn.Conv2d)]
    old_convs = dict(old.named_modules())
    assert len(convs) == 1 + 2 * 6
    for name, conv in convs:
        assert torch.equal(conv.weight, old_convs[name].weight), name
        fan_out = conv.weight.shape[0] * 9
        assert abs(float(conv.weight.std()) * (fan_out / 2) ** 0.5 - 1) < 0.25
    head = ours.head[-1]
    assert torch.equal(head.bias, torch.zeros(10))
    assert abs(float(head.weight.std()) * 32**0.5 - 1) < 0.15
    bn = [m for m in ours.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in bn)
    assert all(torch.equal(m.bias, torch.zeros_like(m.bias)) for m in bn)


def test_torch_default_is_pytorchs_construction_untouched():
    # the same modules built by hand in the same order with the same seed, never re-initialised
    from torch import nn

    from orthskip.nn.models.cifar_resnet import conv3x3, post_act_branch

    torch.manual_seed(3)
    mlp = build_model("mlp", 3, "identity", (5,), 4, {"width": 16, "init": "torch_default"}, {})
    torch.manual_seed(3)
    ref = [nn.Linear(5, 16)]
    for _ in range(3):
        ref += [nn.Linear(16, 16), nn.Linear(16, 16)]
    ref.append(nn.Linear(16, 4))
    got = [m for m in mlp.modules() if isinstance(m, nn.Linear)]
    assert len(got) == len(ref)
    for a, b in zip(got, ref, strict=True):
        assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)

    torch.manual_seed(4)
    cfg = {"width": 4, "init": "torch_default"}
    cnn = build_model("cifar_resnet", 8, "identity", (3, 8, 8), 5, cfg, {})
    torch.manual_seed(4)
    ref_mods = [conv3x3(3, 4)]
    for c_in, c_out, stride in ((4, 4, 1), (4, 8, 2), (8, 16, 2)):
        ref_mods += [m for m in post_act_branch(c_in, c_out, stride) if isinstance(m, nn.Conv2d)]
    ref_mods.append(nn.Linear(16, 5))
    got = [m for m in cnn.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert len(got) == len(ref_mods)
    for a, b in zip(got, ref_mods, strict=True):
        assert torch.equal(a.weight, b.weight)
        fan_in = a.weight[0].numel()
        assert float(a.weight.abs().max()) <= fan_in**-0.5  # U(±1/√fan_in), not a normal
    assert not torch.equal(cnn.head[-1].bias, torch.zeros(5))


@pytest.mark.parametrize("kind", ["orth_fixed", "orth_learned", "linear", "orth_jacobian"])
@pytest.mark.parametrize("arch", ["mlp", "cifar_resnet"])
def test_skip_parameters_keep_their_own_init_under_both_choices(arch, kind):
    skip_cfg = {"orth_learned": {"init": "haar"}, "linear": {"init": "kaiming"}}
    states = []
    for init in ("kaiming", "torch_default"):
        torch.manual_seed(0)
        cfg = {**CASES[arch][2], "init": init}
        model = build_model(arch, CASES[arch][0][1], kind, CASES[arch][1], 3, cfg, skip_cfg)
        states.append({k: v for k, v in model.state_dict().items() if ".skip." in k})
    assert states[0] and states[0].keys() == states[1].keys()
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key


@pytest.mark.parametrize("arch", ARCHS)
def test_init_option_is_validated(arch):
    with pytest.raises(ConfigError, match=rf"model\.{arch}\.init.*'kaiming', 'torch_default'"):
        validate_model_options(arch, {"init": "xavier"})
    assert MODEL_OPTIONS[arch]["init"] == "kaiming"
    validate_model_options(arch, {"init": "torch_default"})


# the rate experiment's mlp (config/config.yaml: d = 2 blocks, no stem, head or norm) and the
# other mlp shapes: every option that changes what is drawn or in which order
_RATE_MLP = {"width": 0, "hidden": 16, "stem": "identity", "head": "identity", "norm": "none",
             "branch_scale": "inv_depth"}  # fmt: skip
_MLP_SHAPES = [
    _RATE_MLP,
    {"width": 6, "norm": "batch"},
    {"width": 5, "hidden": 3, "norm": "layer", "init": "torch_default", "activation": "tanh"},
]
_SKIP_INITS = [
    ("identity", {}), ("none", {}), ("linear", {}), ("linear", {"init": "kaiming"}),
    ("linear", {"init": "orthogonal"}), ("orth_fixed", {}), ("orth_learned", {}),
    ("orth_learned", {"init": "haar"}), ("orth_learned", {"init": "haar", "map": "cayley"}),
    ("orth_manifold", {"init": "haar"}), ("orth_jacobian", {}), ("procrustes", {}),
]  # fmt: skip


@pytest.mark.parametrize("model_cfg", _MLP_SHAPES)
@pytest.mark.parametrize(("kind", "options"), _SKIP_INITS)
def test_mlp_initial_state_is_the_built_models_state_bit_for_bit(kind, options, model_cfg):
    """The packed trainer draws its members' inits without building them: the same tensors
    (values, dtypes, key order) and the same RNG state after, for every kind and init."""
    torch.manual_seed(3)
    ref = build_model("mlp", 4, kind, (2,), 2, model_cfg, {kind: options}).state_dict()
    rng_after_build = torch.get_rng_state()
    torch.manual_seed(3)
    got = initial_state("mlp", 4, kind, (2,), 2, model_cfg, {kind: options})
    assert list(got) == list(ref)
    for name, t in ref.items():
        assert got[name].dtype == t.dtype and torch.equal(got[name], t), name
    assert torch.equal(torch.get_rng_state(), rng_after_build)


def test_initial_state_is_the_mlps_only():
    with pytest.raises(ValueError, match="cifar_resnet"):
        initial_state("cifar_resnet", 8, "identity", (1, 8, 8), 10, {"width": 4}, {})
