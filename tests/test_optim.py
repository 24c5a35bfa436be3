"""build_optimizer: parameter groups, Riemannian step, procrustes projections, state round trip."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F

from orthskip.errors import ConfigError
from orthskip.nn.models import build_model
from orthskip.nn.optim import RiemannianOrthogonal, build_optimizer
from orthskip.nn.orth import manifold_step, orth_defect


def mlp(kind: str, skip_cfg: dict | None = None, depth: int = 2):
    torch.manual_seed(0)
    return build_model("mlp", depth, kind, (6,), 3, {"width": 8}, skip_cfg or {})


def train_step(model, bundle, seed: int = 0) -> float:
    gen = torch.Generator().manual_seed(seed)
    shape = (16, 1, 8, 8) if model.arch != "mlp" else (16, 6)
    x = torch.randn(*shape, generator=gen)
    y = torch.randint(0, 3, (16,), generator=gen)
    bundle.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    bundle.step()
    return float(loss.detach())


def _decay_only_step(model, bundle):
    """One step with all gradients zero: only weight decay moves parameters."""
    bundle.zero_grad()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    bundle.step()


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_no_weight_decay_on_skip_parameters_by_default(name):
    model = mlp("linear")
    bundle = build_optimizer(model, {"name": name, "lr": 0.1, "weight_decay": 0.5}, {})
    skip_before = [b.skip.weight.detach().clone() for b in model.blocks]
    head_before = model.head.weight.detach().clone()
    _decay_only_step(model, bundle)
    for b, w in zip(model.blocks, skip_before, strict=True):
        assert torch.equal(b.skip.weight, w)
    assert not torch.allclose(model.head.weight, head_before)
    assert float(model.head.weight.detach().norm()) < float(head_before.norm())
    assert bundle.metadata()["skip_weight_decay"] == 0.0


def test_skip_weight_decay_when_configured():
    model = mlp("linear")
    cfg = {"lr": 0.1, "weight_decay": 0.0, "skip_weight_decay": 0.5, "momentum": 0.0}
    bundle = build_optimizer(model, cfg, {})
    w0 = model.blocks[0].skip.weight.clone()
    _decay_only_step(model, bundle)
    # SGD weight decay: w <- w - lr * wd * w
    assert torch.allclose(model.blocks[0].skip.weight, w0 * (1 - 0.1 * 0.5), atol=1e-7)
    groups = {g["name"]: g for g in bundle.optimizers[0].param_groups}
    assert groups["skip"]["weight_decay"] == 0.5 and groups["main"]["weight_decay"] == 0.0
    assert bundle.metadata()["skip_weight_decay"] == 0.5


@pytest.mark.parametrize("kind", ["linear", "orth_learned", "orth_manifold"])
def test_per_block_skip_step_is_lr_over_the_nets_skips(kind):
    # skip_lr: per_block: each skip steps lr / L (L = 5 blocks), the rest lr; one AdamW step
    # moves a skip entry by at most lr / L (Adam's first step is lr x sign for each entry)
    model = mlp(kind, depth=5)
    q0 = [p.detach().clone() for b in model.blocks for p in b.skip.parameters()]
    cfg = {"name": "adamw", "lr": 0.1, "weight_decay": 0.0, "skip_lr": "per_block"}
    bundle = build_optimizer(model, cfg, {})
    lrs = {g.get("name", "manifold"): g["lr"] for o in bundle.optimizers for g in o.param_groups}
    assert lrs["main"] == pytest.approx(0.1)
    assert lrs["skip" if kind != "orth_manifold" else "manifold"] == pytest.approx(0.1 / 5)
    assert bundle.metadata()["skip_lr"] == pytest.approx(0.1 / 5)
    train_step(model, bundle)
    if kind != "orth_manifold":
        after = [p.detach() for b in model.blocks for p in b.skip.parameters()]
        assert max(float((a - b).abs().max()) for a, b in zip(after, q0, strict=True)) <= (
            0.1 / 5 * (1 + 1e-5)
        )
    same = build_optimizer(mlp(kind, depth=5), {**cfg, "skip_lr": "same"}, {})
    assert same.metadata()["skip_lr"] == pytest.approx(0.1)


def test_times_blocks_main_step_is_sgds_lr_times_the_nets_skips():
    # main_lr: times_blocks with SGD (no momentum): every non-skip parameter moves by exactly
    # lr x L x its gradient (L = 5 blocks), the skips by lr / L with skip_lr: per_block
    model = mlp("orth_learned", depth=5)
    cfg = {"name": "sgd", "lr": 0.01, "momentum": 0.0, "weight_decay": 0.0,
           "skip_lr": "per_block", "main_lr": "times_blocks"}  # fmt: skip
    bundle = build_optimizer(model, cfg, {})
    lrs = {g["name"]: g["lr"] for o in bundle.optimizers for g in o.param_groups}
    assert lrs == {"main": pytest.approx(0.05), "skip": pytest.approx(0.002)}
    assert bundle.metadata()["main_lr"] == pytest.approx(0.05)
    skip_ids = {id(p) for b in model.blocks for p in b.skip.parameters()}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads: dict[str, torch.Tensor] = {}
    for n, p in model.named_parameters():
        p.register_hook(lambda g, n=n: grads.__setitem__(n, g.detach().clone()))
    train_step(model, bundle)
    for n, p in model.named_parameters():
        step = 0.002 if id(p) in skip_ids else 0.05
        assert torch.allclose(p.detach(), before[n] - step * grads[n], atol=1e-7), n
    same = build_optimizer(mlp("orth_learned", depth=5), {**cfg, "main_lr": "same"}, {})
    assert same.metadata()["main_lr"] == pytest.approx(0.01)


def test_orth_learned_generators_are_skip_parameters():
    model = mlp("orth_learned")
    bundle = build_optimizer(model, {"weight_decay": 0.1}, {})
    groups = {g["name"]: g for g in bundle.optimizers[0].param_groups}
    skip_ids = {id(p) for b in model.blocks for p in b.skip.parameters()}
    assert {id(p) for p in groups["skip"]["params"]} == skip_ids
    assert not skip_ids & {id(p) for p in groups["main"]["params"]}


def test_orth_manifold_matrix_is_stepped_only_by_the_riemannian_optimizer():
    model = mlp("orth_manifold", {"orth_manifold": {"lr_scale": 0.5}})
    bundle = build_optimizer(
        model,
        {"lr": 0.2, "momentum": 0.9, "weight_decay": 0.3},
        {"orth_manifold": {"lr_scale": 0.5}},
    )
    euclid, riem = bundle.optimizers
    assert isinstance(riem, RiemannianOrthogonal)
    qs = [b.skip.Q for b in model.blocks]
    euclid_ids = {id(p) for g in euclid.param_groups for p in g["params"]}
    assert not euclid_ids & {id(q) for q in qs}
    assert riem.param_groups[0]["lr"] == pytest.approx(0.1)  # lr * lr_scale

    # the step equals one manifold_step on the gradient, nothing else
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    bundle.zero_grad()
    F.cross_entropy(model(x), y).backward()
    expected = [manifold_step(q, q.grad, 0.1)[0] for q in qs]
    q0s = [q.detach().clone() for q in qs]
    bundle.step()
    for q, e, q0 in zip(qs, expected, q0s, strict=True):
        # batched over equal shapes: equal up to the retraction's NS tolerance
        assert torch.allclose(q.detach(), e, atol=1e-6)
        assert float((q.detach() - q0).abs().max()) > 1e-3
        assert orth_defect(q) < 1e-6
    meta = bundle.metadata()
    assert meta["n_manifold_params"] == 2 * 64
    assert meta["retraction_max_iterations"] >= 1 and meta["retraction_nonconverged_steps"] == 0
    assert riem.state[qs[0]]["steps"] == 1


def test_scheduler_scales_the_manifold_learning_rate():
    model = mlp("orth_manifold")
    bundle = build_optimizer(model, {"lr": 0.4}, {})
    scheds = [torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.5) for o in bundle.optimizers]
    train_step(model, bundle)
    for s in scheds:
        s.step()
    assert [o.param_groups[0]["lr"] for o in bundle.optimizers] == [0.2, 0.2]


def test_procrustes_projection_every_k_steps():
    skip_cfg = {"procrustes": {"every": 3, "scale": 1.0}}
    torch.manual_seed(0)
    model = build_model("cifar_resnet", 8, "procrustes", (1, 8, 8), 3, {"width": 4}, skip_cfg)
    bundle = build_optimizer(model, {"lr": 0.5}, skip_cfg)
    assert bundle.metadata()["n_projected_convs"] == 2
    skip = model.blocks[1].skip

    def deviation() -> float:
        sv = torch.linalg.svdvals(skip.matrix().detach().double())
        return float((sv - 1).abs().max())

    assert deviation() < 1e-6
    devs = []
    for step in range(6):
        train_step(model, bundle, seed=step)
        devs.append(deviation())
    assert devs[0] > 1e-4 and devs[1] > 1e-4 and devs[3] > 1e-4 and devs[4] > 1e-4
    assert devs[2] < 1e-6 and devs[5] < 1e-6


def test_state_dict_round_trip_resumes_identically():
    model_a = mlp("orth_manifold", depth=3)
    cfg = {"lr": 0.05, "momentum": 0.9, "nesterov": True}
    bundle_a = build_optimizer(model_a, cfg, {})
    for s in range(3):
        train_step(model_a, bundle_a, seed=s)
    model_b = copy.deepcopy(model_a)
    bundle_b = build_optimizer(model_b, cfg, {})
    buf = io.BytesIO()  # through a file, as a resume does; weights_only must accept it
    torch.save(bundle_a.state_dict(), buf)
    buf.seek(0)
    bundle_b.load_state_dict(torch.load(buf, weights_only=True))
    assert bundle_b.steps == 3
    for s in range(3, 6):
        train_step(model_a, bundle_a, seed=s)
        train_step(model_b, bundle_b, seed=s)
    for pa, pb in zip(model_a.parameters(), model_b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_training_reduces_loss_for_every_kind():
    for kind in ("identity", "linear", "orth_learned", "orth_manifold", "orth_jacobian"):
        model = mlp(kind)
        bundle = build_optimizer(model, {"lr": 0.05}, {})
        first = train_step(model, bundle)
        for _ in range(30):
            last = train_step(model, bundle)
        assert last < first, kind


@pytest.mark.parametrize(
    ("cfg", "needle"),
    [
        ({"name": "adam"}, "train.optimizer.name"),
        ({"lr": -1}, "train.optimizer.lr"),
        ({"skip_weight_decay": "no"}, "skip_weight_decay"),
        ({"skip_lr": "per_layer"}, "skip_lr"),
        ({"name": "adamw", "nesterov": True}, "nesterov"),
    ],
)
def test_bad_optimizer_config(cfg, needle):
    with pytest.raises(ConfigError, match=needle):
        build_optimizer(mlp("identity"), cfg, {})
