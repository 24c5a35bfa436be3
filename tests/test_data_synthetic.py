"""Synthetic sets and sklearn digits: specs, geometry of the generated points, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from orthskip.data import (
    SOURCE_PARAMS,
    SOURCES,
    load_prepared,
    resolve_spec,
    validate_spec,
)
from orthskip.errors import ConfigError
from orthskip.stages.prepare import prepare_dataset

SMALL = ("circles", "moons", "blobs", "parity", "gaussian_mixture", "digits")


def _prep(tmp_path: Path, name: str, spec: dict | None = None, tag: str = "a"):
    out, man = tmp_path / tag / f"{name}.pt", tmp_path / tag / f"{name}.json"
    prepare_dataset(name, spec or {}, out, man)
    return load_prepared(out, man), out, man


def _raw(p) -> np.ndarray:
    """Undo the normalisation with the stored training statistics."""
    mean = torch.tensor(p.meta["mean"]).reshape(-1, *([1] * (p.x_train.ndim - 2)))
    std = torch.tensor(p.meta["std"]).reshape(mean.shape)
    return (p.x_train * std + mean).numpy(), (p.x_test * std + mean).numpy()


def test_registry_and_params_agree():
    assert (
        set(SOURCES)
        == set(SOURCE_PARAMS)
        == {
            "circles",
            "moons",
            "blobs",
            "parity",
            "gaussian_mixture",
            "diffeo",  # the regression source
            "digits",
            "mnist",
            "fashion_mnist",
            "cifar10",
            "cifar100",
            "stl10",
        }
    )
    assert SOURCE_PARAMS["gaussian_mixture"]["dim"] == 2
    assert resolve_spec("my_moons", {"source": "moons", "noise": 0.3}) == {
        "source": "moons",
        "n_train": 1000,
        "n_test": 1000,
        "seed": 0,
        "noise": 0.3,
    }


@pytest.mark.parametrize(
    ("name", "spec", "words"),
    [
        ("moons", {"nosie": 0.1}, ["datasets.moons.nosie", "allowed keys", "noise", "n_train"]),
        ("moons", {"noise": -1}, ["datasets.moons.noise", ">= 0", "-1"]),
        ("moons", {"n_train": 10.5}, ["datasets.moons.n_train", "integer"]),
        ("moons", {"n_train": True}, ["datasets.moons.n_train", "integer"]),
        ("x", {"source": "moonz"}, ["datasets.x.source", "moonz", "circles", "cifar100"]),
        ("unknown_set", {}, ["datasets.unknown_set", "allowed sources", "digits"]),
        ("circles", {"factor": 1.0}, ["datasets.circles.factor", "0 < factor < 1"]),
        ("cifar10", {"augment": "autoaugment"}, ["datasets.cifar10.augment", "'cifar'"]),
        ("cifar10", {"download": "yes"}, ["datasets.cifar10.download", "true or false"]),
        ("parity", {"dim": 1}, ["datasets.parity.dim"]),
        ("digits", "oops", ["datasets.digits", "mapping"]),
        ("moons", {"n_train": 1}, ["datasets.moons.n_train", "fewer than the 2 classes"]),
        ("blobs", {"n_classes": 5, "n_test": 4}, ["datasets.blobs.n_test", ">= 5"]),
    ],
)
def test_bad_specs_name_the_key(name, spec, words):
    with pytest.raises(ConfigError) as err:
        validate_spec(name, spec)
    for w in words:
        assert w in str(err.value)
    # prepare_dataset validates before doing anything
    with pytest.raises(ConfigError):
        prepare_dataset(name, spec, Path("/nonexistent/x.pt"), Path("/nonexistent/x.json"))


@pytest.mark.parametrize("name", SMALL)
def test_shapes_labels_and_normalisation(tmp_path, name):
    p, _, _man = _prep(tmp_path, name)
    n_train, n_test = (1437, 360) if name == "digits" else (1000, 1000)
    assert p.x_train.shape[0] == p.y_train.shape[0] == n_train
    assert p.x_test.shape[0] == p.y_test.shape[0] == n_test
    assert p.x_train.dtype == p.x_test.dtype == torch.float32
    assert p.y_train.dtype == torch.int64
    assert tuple(p.x_train.shape[1:]) == p.input_shape
    assert int(p.y_train.min()) == 0 and int(p.y_train.max()) == p.num_classes - 1
    # stratified split: per-class counts differ by at most one between classes' shares
    share_tr = torch.bincount(p.y_train) / n_train
    share_te = torch.bincount(p.y_test) / n_test
    assert torch.allclose(share_tr, share_te, atol=0.01)
    # training statistics: per feature / channel mean 0, std 1
    dims = (0,) if p.x_train.ndim == 2 else (0, 2, 3)
    assert torch.allclose(p.x_train.mean(dim=dims), torch.zeros(1), atol=1e-5)
    assert torch.allclose(p.x_train.std(dim=dims, unbiased=False), torch.ones(1), atol=1e-4)
    assert p.meta["name"] == name and p.meta["source"] == name
    assert p.meta["augment"] is None


def test_circles_points_lie_on_the_two_circles(tmp_path):
    p, _, _ = _prep(tmp_path, "circles", {"noise": 0.0, "factor": 0.3})
    x, _ = _raw(p)
    r = np.linalg.norm(x, axis=1)
    y = p.y_train.numpy()
    np.testing.assert_allclose(r[y == 0], 1.0, atol=1e-5)  # sklearn: outer circle is class 0
    np.testing.assert_allclose(r[y == 1], 0.3, atol=1e-5)


def test_moons_points_lie_on_the_two_half_circles(tmp_path):
    p, _, _ = _prep(tmp_path, "moons", {"noise": 0.0, "n_train": 200, "n_test": 50})
    x, _ = _raw(p)
    y = p.y_train.numpy()
    np.testing.assert_allclose(np.linalg.norm(x[y == 0], axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(x[y == 1] - [1.0, 0.5], axis=1), 1.0, atol=1e-5)
    assert (x[y == 0, 1] >= -1e-6).all() and (x[y == 1, 1] <= 0.5 + 1e-6).all()


def test_parity_labels_are_xor_of_bits_and_splits_are_disjoint(tmp_path):
    p, _, _ = _prep(tmp_path, "parity", {"dim": 11, "n_train": 1200, "n_test": 800})
    for x, y in ((p.x_train, p.y_train), (p.x_test, p.y_test)):
        bits = (x > 0).to(torch.int64)  # normalised 0/1 bits: 1 ↔ positive
        assert torch.equal(bits.sum(1) % 2, y)
    pw = 2 ** torch.arange(11)
    codes_tr = set(((p.x_train > 0).long() * pw).sum(1).tolist())
    codes_te = set(((p.x_test > 0).long() * pw).sum(1).tolist())
    assert len(codes_tr) == 1200 and len(codes_te) == 800 and not codes_tr & codes_te


def test_gaussian_mixture_dimension_and_structure(tmp_path):
    spec = {"dim": 17, "n_classes": 3, "components_per_class": 1, "spread": 4.0, "n_train": 300}
    p, _, _ = _prep(tmp_path, "gaussian_mixture", spec)
    assert p.input_shape == (17,) and p.num_classes == 3
    # one well-separated Gaussian per class: a linear classifier separates it
    clf = LogisticRegression(max_iter=2000).fit(p.x_train.numpy(), p.y_train.numpy())
    assert clf.score(p.x_test.numpy(), p.y_test.numpy()) > 0.95
    # the input dimension is a free parameter (the earlier codebase only had 2-D and 3-D)
    p2, _, _ = _prep(tmp_path, "gaussian_mixture", {"dim": 5, "n_classes": 2}, tag="b")
    assert p2.input_shape == (5,)


def test_digits_are_sklearn_digits_as_images(tmp_path):
    p, _, _ = _prep(tmp_path, "digits")
    assert p.input_shape == (1, 8, 8) and p.num_classes == 10
    xtr, xte = _raw(p)
    allx = np.concatenate([xtr, xte]).reshape(-1, 64)
    np.testing.assert_allclose(allx, np.round(allx), atol=1e-4)  # integer grey levels 0..16
    d = load_digits()
    want = {tuple(row) for row in d.data.astype(int)}
    got = {tuple(row) for row in np.round(allx).astype(int)}
    assert got == want
    ally = torch.cat([p.y_train, p.y_test])
    assert torch.bincount(ally).tolist() == np.bincount(d.target).tolist()


@pytest.mark.parametrize("name", SMALL)
def test_same_spec_gives_byte_identical_files(tmp_path, name):
    spec = {"seed": 3} if name == "digits" else {"seed": 3, "n_train": 100, "n_test": 50}
    _, out_a, man_a = _prep(tmp_path, name, spec, tag="a")
    _, out_b, man_b = _prep(tmp_path, name, spec, tag="b")
    assert out_a.read_bytes() == out_b.read_bytes()
    assert man_a.read_text() == man_b.read_text()
    _, out_c, _ = _prep(tmp_path, name, {**spec, "seed": 4}, tag="c")
    assert out_a.read_bytes() != out_c.read_bytes()
    # no temporary files left behind by the atomic writers
    assert sorted(f.name for f in out_a.parent.iterdir()) == [f"{name}.json", f"{name}.pt"]
