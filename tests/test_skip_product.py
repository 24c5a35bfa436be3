"""The rotation the skips carry together (family ``skip_product``), against scipy's logm."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import Tensor

from orthskip.analysis.metrics import extract_metrics
from orthskip.analysis.metrics.orthogonality import (
    linear_fit_rotation,
    rotation_angle,
    skip_product,
)
from orthskip.nn.models import build_model
from orthskip.nn.orth import haar_orthogonal


def _geodesic_by_logm(q: Tensor) -> float:
    # the definition: ‖log Q‖_F / √2, the principal logarithm by scipy
    log = scipy.linalg.logm(q.detach().numpy())
    return float(np.linalg.norm(np.real(log), "fro")) / math.sqrt(2)


def _axis_angle(axis: list[float], theta: float) -> Tensor:
    k = torch.tensor(axis, dtype=torch.float64)
    k = k / k.norm()
    cross = torch.tensor(
        [[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]], dtype=torch.float64
    )
    return torch.linalg.matrix_exp(theta * cross)


def _rot2(theta: float) -> Tensor:
    c, s = math.cos(theta), math.sin(theta)
    return torch.tensor([[c, -s], [s, c]], dtype=torch.float64)


@pytest.mark.parametrize("theta", [0.0, 0.3, 1.47, 3.0])
def test_rotation_angle_of_known_rotations_is_the_logm_geodesic(theta):
    for q in (_rot2(theta), _axis_angle([1.0, 2.0, -0.5], theta)):
        got = rotation_angle(q)
        assert got["angle"] == pytest.approx(theta, abs=1e-12)
        assert got["angle"] == pytest.approx(_geodesic_by_logm(q), abs=1e-9)
        assert got["max_angle"] == pytest.approx(theta, abs=1e-12)
        assert got["det"] == pytest.approx(1.0, abs=1e-12)


def test_product_of_rotations_in_so2_adds_angles_and_in_so3_is_logm():
    angles = [0.1, -0.25, 0.4, 0.2]
    p = skip_product([_rot2(a) for a in angles])
    assert p is not None and rotation_angle(p)["angle"] == pytest.approx(0.45, abs=1e-12)
    gen = torch.Generator().manual_seed(0)
    qs = [haar_orthogonal(3, dtype=torch.float64, generator=gen) for _ in range(5)]
    p = skip_product(qs)
    assert p is not None
    assert torch.allclose(p, qs[4] @ qs[3] @ qs[2] @ qs[1] @ qs[0], atol=1e-14)
    assert rotation_angle(p)["angle"] == pytest.approx(_geodesic_by_logm(p), abs=1e-9)
    # not one map: no product
    assert skip_product([_rot2(0.1), torch.eye(3, dtype=torch.float64)]) is None
    assert skip_product([]) is None


def test_linear_fit_rotation_recovers_a_rotation_and_is_nan_for_labels():
    gen = torch.Generator().manual_seed(1)
    r = _axis_angle([0.0, 1.0, 1.0], 0.9)
    x = torch.randn(200, 3, dtype=torch.float64, generator=gen)
    y = 1.7 * x @ r.T + torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)  # scale and shift
    fit = linear_fit_rotation(x, y)
    assert fit["angle"] == pytest.approx(0.9, abs=1e-10) and fit["det"] == pytest.approx(1.0)
    assert math.isnan(linear_fit_rotation(x, torch.zeros(200, dtype=torch.long))["angle"])


def _rate_net(skip: str, depth: int = 5, d: int = 3, init: str = "haar", **options):
    torch.manual_seed(0)
    model_cfg = {"width": 0, "hidden": 8, "stem": "identity", "head": "identity", "norm": "none"}
    skip_cfg = {skip: {"init": init, **options}} if skip.startswith("orth") else {}
    return build_model("mlp", depth, skip, (d,), d, model_cfg, skip_cfg)


def test_extracted_skip_product_is_the_nets_skip_path():
    net = _rate_net("orth_learned")
    gen = torch.Generator().manual_seed(2)
    r = _axis_angle([1.0, 0.0, 0.0], 1.2)
    x = torch.randn(64, 3, generator=gen)
    y = x @ r.T.float()
    rows = extract_metrics(net, x, y, families=["skip_product"])
    stats = dict(zip(rows["stat"], rows["value"], strict=True))
    assert set(rows["metric"]) == {"skip_product"} and set(rows["layer_index"]) == {-1}
    # the product by hand: each block's skip applied to the basis, in forward order
    basis = torch.eye(3)
    for block in net.blocks:
        basis = block.skip.residual(basis, torch.zeros_like(basis))
    by_hand = basis.T.double()  # rows were mapped: columns of the map
    assert stats["angle"] == pytest.approx(_geodesic_by_logm(by_hand), abs=1e-6)
    assert stats["fit_angle"] == pytest.approx(1.2, abs=1e-6)
    # identity skips have no matrix, orth_jacobian's B is no skip path: no row;
    # classification targets: no fit
    assert extract_metrics(_rate_net("identity"), x, y, families=["skip_product"]).empty
    jac = _rate_net("orth_jacobian", layers=1)
    assert all(len(b.skip_matrices()) == 1 for b in jac.blocks)  # one matrix each, all the same
    assert extract_metrics(jac, x, y, families=["skip_product"]).empty
    labels = torch.zeros(64, dtype=torch.long)
    rows = extract_metrics(net, x, labels, families=["skip_product"])
    assert set(rows["stat"]) == {"angle", "max_angle", "det"}
