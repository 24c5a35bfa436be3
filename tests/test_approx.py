"""Orthogonal approximation: Procrustes optimality, and the rebuilt net before fine-tuning."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from orthskip.analysis.approx import approximate, block_io, procrustes_fit
from orthskip.nn.models import build_model
from orthskip.nn.orth import haar_orthogonal
from tests.helpers import output_gap


def _objective(w: torch.Tensor, x: torch.Tensor, h: torch.Tensor) -> float:
    return float(((x @ w.T - h) ** 2).sum())


@pytest.mark.parametrize("n", [2, 5, 16])
def test_rotation_is_recovered_exactly(n) -> None:
    gen = torch.Generator().manual_seed(n)
    r = haar_orthogonal(n, special=True, generator=gen, dtype=torch.float64)
    x = torch.randn(40, n, generator=gen, dtype=torch.float64)
    w = procrustes_fit(x, x @ r.T)
    assert torch.allclose(w, r, atol=1e-12)
    assert float(torch.linalg.det(w)) == pytest.approx(1.0, abs=1e-12)


def test_reflection_kept_over_o_n_and_kabsch_flip_over_so_n() -> None:
    gen = torch.Generator().manual_seed(0)
    r = haar_orthogonal(4, special=False, generator=gen, dtype=torch.float64)
    if torch.linalg.det(r) > 0:
        r[:, 0] = -r[:, 0]  # a reflection: det −1
    x = torch.randn(30, 4, generator=gen, dtype=torch.float64)
    h = x @ r.T
    assert torch.allclose(procrustes_fit(x, h, special=False), r, atol=1e-12)
    w = procrustes_fit(x, h, special=True)
    assert float(torch.linalg.det(w)) == pytest.approx(1.0, abs=1e-12)
    assert torch.allclose(w.T @ w, torch.eye(4, dtype=torch.float64), atol=1e-12)


def test_matches_brute_force_over_o2() -> None:
    """2-D: every orthogonal W is a rotation or a reflection by an angle; scan 200 000 angles."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(25, 2, generator=gen, dtype=torch.float64)
    h = x @ torch.randn(2, 2, generator=gen, dtype=torch.float64).T + 0.3 * torch.randn(
        25, 2, generator=gen, dtype=torch.float64
    )
    t = torch.linspace(0, 2 * math.pi, 200_001, dtype=torch.float64)
    c, s = torch.cos(t), torch.sin(t)
    rot = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
    ref = torch.stack([torch.stack([c, s], -1), torch.stack([s, -c], -1)], -2)
    for special, cands in [(True, rot), (False, torch.cat([rot, ref]))]:
        objs = ((torch.einsum("kij,nj->kni", cands, x) - h) ** 2).sum((1, 2))
        best = float(objs.min())
        w = procrustes_fit(x, h, special=special)
        assert _objective(w, x, h) <= best + 1e-9  # at least as good as the finest grid point
        assert _objective(w, x, h) == pytest.approx(best, rel=1e-8)  # and the grid gets there


def test_svd_characterisation_and_local_optimality_on_random_data() -> None:
    gen = torch.Generator().manual_seed(5)
    n = 6
    x = torch.randn(50, n, generator=gen, dtype=torch.float64)
    h = torch.randn(50, n, generator=gen, dtype=torch.float64)
    w = procrustes_fit(x, h, special=False)
    assert torch.allclose(w.T @ w, torch.eye(n, dtype=torch.float64), atol=1e-12)
    # optimality: Wᵀ M is symmetric positive semi-definite (M = Hᵀ X), the first-order
    # condition on O(n) plus the second-order one
    m = h.T @ x
    sym = w.T @ m
    assert torch.allclose(sym, sym.T, atol=1e-10)
    assert float(torch.linalg.eigvalsh((sym + sym.T) / 2).min()) >= -1e-10
    base = _objective(w, x, h)
    # no Haar-random orthogonal matrix and no small rotation of W does better
    for _ in range(300):
        q = haar_orthogonal(n, special=False, generator=gen, dtype=torch.float64)
        assert _objective(q, x, h) >= base - 1e-9
        a = torch.randn(n, n, generator=gen, dtype=torch.float64) * 1e-3
        assert _objective(w @ torch.linalg.matrix_exp(a - a.T), x, h) >= base - 1e-12


def _identity_mlp(depth: int = 4, width: int = 5):
    torch.manual_seed(0)
    net = build_model("mlp", depth, "identity", (2,), 3, {"width": width, "norm": "batch"})
    with torch.no_grad():  # non-trivial BatchNorm statistics, as after training
        for mod in net.modules():
            if isinstance(mod, torch.nn.BatchNorm1d):
                mod.running_mean.normal_(0, 0.3)
                mod.running_var.uniform_(0.5, 2.0)
    return net.eval()


@pytest.mark.parametrize("kind", ["orth_fixed", "orth_learned"])
def test_rebuilt_net_with_correction_reproduces_the_identity_net(kind) -> None:
    net = _identity_mlp()
    x = torch.randn(64, 2)
    new, stats = approximate(net, x, kind=kind, lipschitz=(16, 8, 20))
    assert new is not net and new.skip_kind == kind and net.skip_kind == "identity"
    assert output_gap(net, new, x) < 1e-5
    assert output_gap(net, new, torch.randn(32, 2)) < 1e-5  # also off the probe
    assert stats["swapped"].all() and len(stats) == 4
    io = block_io(net, x)
    for i, block in enumerate(new.blocks):
        q = block.skip.matrices()["Q"].detach().double()
        xr, yr = io[i][0].double(), io[i][1].double()
        assert torch.allclose(q, procrustes_fit(xr, yr), atol=1e-6)
        assert torch.allclose(q.T @ q, torch.eye(5, dtype=torch.float64), atol=1e-6)
        eye = torch.eye(5, dtype=torch.float64)
        assert stats.loc[i, "dist_identity"] == pytest.approx(
            float(torch.linalg.matrix_norm(q - eye)) / math.sqrt(5), abs=1e-6
        )
        assert stats.loc[i, "procrustes_rel"] <= stats.loc[i, "identity_rel"] + 1e-12
        assert stats.loc[i, "det"] == pytest.approx(1.0, abs=1e-9)
    trainable = [p for p in new.blocks[0].skip.parameters() if p.requires_grad]
    assert bool(trainable) == (kind == "orth_learned")
    # the original net is untouched
    assert all(b.skip.kind == "identity" for b in net.blocks)


def test_without_correction_each_block_becomes_w_x_plus_f() -> None:
    net = _identity_mlp()
    x = torch.randn(64, 2)
    new, stats = approximate(net, x, correction=False, lipschitz=(16, 8, 20))
    io = block_io(net, x)
    for i, block in enumerate(new.blocks):
        xi, yi = io[i]
        with torch.no_grad():
            out = block(xi).double()
            f = net.blocks[i].branch(xi).double()
        w = procrustes_fit(xi, yi)
        assert torch.allclose(out, xi.double() @ w.T + f, atol=1e-5)
        rel = float(torch.linalg.matrix_norm(out - yi.double()) / torch.linalg.matrix_norm(yi))
        assert stats.loc[i, "fit_rel"] == pytest.approx(rel, rel=1e-3, abs=1e-6)
        # the branch is kept: same Lipschitz bound before and after
        assert stats.loc[i, "lip_new_branch"] == pytest.approx(stats.loc[i, "lip_branch"])
    assert output_gap(net, new, x) > 1e-4  # the mismatch is real


def test_cnn_swaps_only_non_transition_blocks() -> None:
    torch.manual_seed(1)
    net = build_model("cifar_resnet", 8, "identity", (3, 8, 8), 4).eval()
    x = torch.randn(6, 3, 8, 8)
    new, stats = approximate(net, x, lipschitz=(2, 0, 10))
    assert stats["swapped"].tolist() == [True, False, False]  # blocks 1, 2 are transitions
    assert new.blocks[0].skip.kind == "orth_fixed" and new.blocks[1].skip.kind == "identity"
    assert output_gap(net, new, x) < 1e-4


@pytest.mark.parametrize("kind", ["orth_fixed", "orth_learned"])
def test_vit_fits_w_per_token_and_reproduces_the_net(kind) -> None:
    """ViT sublayers act per token on the width-d stream: W_i is fitted on the (N·T, d) token
    rows, and the correction acts on the last dimension."""
    torch.manual_seed(2)
    net = build_model("vit", 2, "identity", (3, 8, 8), 4, {"width": 12, "heads": 3, "patch": 4})
    x = torch.randn(8, 3, 8, 8)
    new, stats = approximate(net.eval(), x, kind=kind, lipschitz=(2, 0, 10))
    assert stats["swapped"].all() and len(stats) == 4  # attn and mlp sublayer of 2 blocks
    assert output_gap(net, new, x) < 1e-4
    x_in, y_out = block_io(net, x)[1]
    q = new.blocks[1].skip.matrices()["Q"].detach().double()
    rows = procrustes_fit(x_in.reshape(-1, 12), y_out.reshape(-1, 12))
    assert q.shape == (12, 12) and torch.allclose(q, rows, atol=1e-6)


def test_refuses_a_net_without_identity_skips() -> None:
    net = build_model("mlp", 2, "orth_learned", (2,), 2)
    with pytest.raises(ValueError, match="identity-skip"):
        approximate(net, torch.randn(4, 2))
    with pytest.raises(ValueError, match="kind"):
        approximate(_identity_mlp(), torch.randn(4, 2), kind="linear")


def test_procrustes_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="differ"):
        procrustes_fit(torch.zeros(3, 2), torch.zeros(3, 4))
    assert np.isfinite(procrustes_fit(torch.ones(3, 2), torch.ones(3, 2)).numpy()).all()
