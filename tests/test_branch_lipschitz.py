"""branch_lipschitz: power-iteration σ_max of the residual branch vs dense Jacobians."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from orthskip.analysis.metrics import FAMILIES, extract_metrics
from orthskip.analysis.metrics.lipschitz import branch_lipschitz, segment_points, sigma_max_power
from orthskip.nn.models import build_model
from orthskip.nn.models.base import PreMapBlock


def _dense_sigma(f, pts: torch.Tensor) -> np.ndarray:
    """σ_max of the full Jacobian at each point, one point at a time (the slow, obvious way)."""
    out = []
    for p in pts:
        jac = torch.autograd.functional.jacobian(lambda v: f(v.unsqueeze(0)).squeeze(0), p)
        jac = jac.reshape(f(p.unsqueeze(0)).numel(), p.numel()).double()
        out.append(float(torch.linalg.matrix_norm(jac, ord=2)))
    return np.array(out)


def _mlp(skip: str = "identity", depth: int = 2, width: int = 6):
    torch.manual_seed(0)
    net = build_model("mlp", depth, skip, (3,), 2, {"width": width}).double().eval()
    return net


def test_power_iteration_matches_dense_on_mlp_branch() -> None:
    net = _mlp()
    branch = net.blocks[0].branch
    x = torch.randn(20, 6, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    est = sigma_max_power(branch, x, steps=300, generator=gen, tol=0.0).numpy()
    dense = _dense_sigma(branch, x)
    assert np.all(est <= dense * (1 + 1e-9))  # a lower bound at every point
    assert est == pytest.approx(dense, rel=1e-6)


def test_power_iteration_matches_dense_on_cnn_block() -> None:
    torch.manual_seed(1)
    net = build_model("cifar_resnet", 8, "identity", (3, 6, 6), 3).double().eval()
    for i in (0, 1):  # an ordinary block and a stride-2 transition (16 → 32 channels)
        block = net.blocks[i]
        c = block.skip.c_in
        x = torch.randn(3, c, 6, 6, dtype=torch.float64)
        gen = torch.Generator().manual_seed(0)
        est = sigma_max_power(block.branch, x, steps=400, generator=gen, tol=0.0).numpy()
        dense = _dense_sigma(block.branch, x)
        assert np.all(est <= dense * (1 + 1e-9))
        assert est == pytest.approx(dense, rel=1e-4)


@pytest.mark.parametrize(
    ("dense_max_dim", "method"), [(0, "power_iteration"), (64, "dense_jacobian")]
)
def test_branch_lipschitz_is_max_over_probe_and_segments(dense_max_dim, method) -> None:
    net = _mlp()
    block = net.blocks[1]
    x = torch.randn(10, 6, dtype=torch.float64)
    stats, used = branch_lipschitz(
        block, x, segments=15, steps=300, seed=3, dense_max_dim=dense_max_dim
    )
    assert used == method
    gen = torch.Generator().manual_seed(3)
    pts = torch.cat([x, segment_points(x, 15, gen)])
    dense = _dense_sigma(block.branch, pts)
    assert stats["max"] == pytest.approx(dense.max(), rel=1e-6)
    assert stats["max_probe"] == pytest.approx(dense[:10].max(), rel=1e-6)
    assert stats["mean"] == pytest.approx(dense.mean(), rel=1e-6)
    assert stats["max"] >= stats["max_probe"]


def test_segment_points_lie_between_distinct_probe_pairs() -> None:
    x = torch.randn(5, 4, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    pts = segment_points(x, 200, gen)
    # each point is (1 − t) x_a + t x_b for some pair a ≠ b and t in [0, 1]
    for p in pts:
        ok = False
        for a in range(5):
            for b in range(5):
                if a == b:
                    continue
                d = x[b] - x[a]
                t = float((p - x[a]) @ d / (d @ d))
                if 0 <= t <= 1 and torch.allclose(x[a] + t * d, p, atol=1e-10):
                    ok = True
        assert ok


def test_linear_branch_lipschitz_is_its_spectral_norm() -> None:
    """F(x) = A x: Lip(F) = ‖A‖₂ exactly, at every point."""

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.branch = nn.Linear(5, 5, bias=False).double()
            self.skip = nn.Identity()

    block = Block()
    x = torch.randn(4, 5, dtype=torch.float64)
    stats, _ = branch_lipschitz(block, x, steps=500, dense_max_dim=0)
    spec = float(torch.linalg.matrix_norm(block.branch.weight.detach(), ord=2))
    assert stats["max"] == pytest.approx(spec, rel=1e-6)
    assert stats["mean"] == pytest.approx(spec, rel=1e-6)


def test_procrustes_branch_is_evaluated_at_the_mapped_input() -> None:
    torch.manual_seed(2)
    net = build_model("cifar_resnet", 8, "procrustes", (3, 6, 6), 3).double().eval()
    block = net.blocks[1]  # transition: z = S(x), y = z + F(z)
    assert isinstance(block, PreMapBlock)
    x = torch.randn(3, 16, 6, 6, dtype=torch.float64)
    stats, method = branch_lipschitz(block, x, segments=0, steps=400)
    assert method == "power_iteration"  # 32 x 3 x 3 = 288 numbers per sample
    with torch.no_grad():
        z = block.skip(x)
    assert stats["max"] == pytest.approx(_dense_sigma(block.branch, z).max(), rel=1e-4)


def test_extract_metrics_rows_per_block_and_none_for_orth_jacobian() -> None:
    assert "branch_lipschitz" in FAMILIES
    net = _mlp("orth_learned", depth=3).float()
    x = torch.randn(16, 3)
    y = (x[:, 0] > 0).long()
    df = extract_metrics(
        net,
        x,
        y,
        families=["branch_lipschitz"],
        lipschitz_samples=8,
        lipschitz_segments=8,
        lipschitz_steps=20,
    )
    assert sorted(df["layer_index"].unique()) == [0, 1, 2]
    assert set(df["stat"]) == {"max", "max_probe", "mean"}
    assert set(df["param"]) == {f"blocks.{i}.branch" for i in range(3)}
    assert not df["exact"].any() and set(df["method"]) == {"dense_jacobian"}  # width 6
    assert (df["value"] > 0).all() and np.isfinite(df["value"]).all()
    jac = _mlp("orth_jacobian", depth=2).float()
    df = extract_metrics(
        jac,
        x,
        y,
        families=["branch_lipschitz"],
        lipschitz_samples=8,
        lipschitz_segments=8,
        lipschitz_steps=20,
    )
    assert df.empty  # orth_jacobian has no branch: the block is the skip


def test_zero_branch_has_zero_lipschitz() -> None:
    net = _mlp()
    with torch.no_grad():
        net.blocks[0].branch[-1].weight.zero_()
        net.blocks[0].branch[-1].bias.zero_()
    for dense_max_dim in (0, 64):
        stats, _ = branch_lipschitz(
            net.blocks[0], torch.randn(6, 6, dtype=torch.float64), dense_max_dim=dense_max_dim
        )
        assert stats["max"] == 0.0 and not math.isnan(stats["mean"])


def test_extract_metrics_on_a_regression_probe() -> None:
    """Float targets (the diffeo task): grad_norm_ratio uses the MSE, every family runs."""
    from orthskip.analysis.metrics.gradflow import grad_norm_ratios

    torch.manual_seed(3)
    net = build_model("mlp", 3, "orth_learned", (2,), 2, {"width": 2}).eval()
    x = torch.randn(16, 2)
    y = torch.randn(16, 2)
    df = extract_metrics(net, x, y, lipschitz_samples=8, lipschitz_segments=8, lipschitz_steps=10)
    assert {"grad_norm_ratio", "branch_lipschitz", "jacobian_sv"} <= set(df["metric"])
    # independent: ratios of gradient norms of the MSE w.r.t. each block's input/output
    acts = [net.stem(x).detach().requires_grad_(True)]
    h = acts[0]
    for block in net.blocks:
        h = block(h)
        acts.append(h)
    loss = torch.nn.functional.mse_loss(net.head(h), y)
    grads = torch.autograd.grad(loss, acts, retain_graph=True)
    expected = [float(grads[i].norm() / grads[i + 1].norm()) for i in range(3)]
    got = df[df["metric"] == "grad_norm_ratio"].sort_values("layer_index")["value"].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert grad_norm_ratios(acts, net.head(h), y) == pytest.approx(expected, rel=1e-5)
