"""STL-10 through torchvision's STL10 class, from files in STL-10's real binary layout.

Only the MD5 check is bypassed (``fakedata.bypass_md5``): generated files cannot match the
real files' MD5s; torchvision's reader itself parses the files.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fakedata import STL10_NAMES, bypass_md5, write_stl10

from orthskip.data import load_prepared, read_manifest
from orthskip.data.spec import resolve_spec
from orthskip.errors import DatasetError
from orthskip.stages.prepare import prepare_dataset


def test_stl10_round_trip_through_torchvision(tmp_path, monkeypatch):
    bypass_md5(monkeypatch)
    want = write_stl10(tmp_path / "root", n_train=20, n_test=10)
    out, man = tmp_path / "stl.pt", tmp_path / "stl.json"
    prepare_dataset("stl10", {"root": str(tmp_path / "root")}, out, man)
    raw = torch.load(out, weights_only=True)
    assert raw["x_train"].dtype == torch.uint8 and raw["x_train"].shape == (20, 3, 96, 96)
    # NCHW rows first, pixel for pixel: the column-major planes were transposed back
    assert np.array_equal(raw["x_train"].numpy(), want["x_train"])
    assert np.array_equal(raw["x_test"].numpy(), want["x_test"])
    assert np.array_equal(raw["y_train"].numpy(), want["y_train"])  # 1-based on disk → 0-9
    assert np.array_equal(raw["y_test"].numpy(), want["y_test"])
    p = load_prepared(out, man)
    assert p.input_shape == (3, 96, 96) and p.num_classes == 10
    assert p.meta["augment"] == "cifar"
    mean = want["x_train"].astype(np.float64).mean(axis=(0, 2, 3))
    np.testing.assert_allclose(p.meta["mean"], mean, rtol=1e-6)
    info = read_manifest(man)
    assert info["classes"] == list(STL10_NAMES)
    assert info["provenance"]["verified"] == "torchvision-md5"
    assert sorted(info["provenance"]["files_sha256"]) == [
        f"stl10_binary/{f}"
        for f in ("test_X.bin", "test_y.bin", "train_X.bin", "train_y.bin", "unlabeled_X.bin")
    ]


def test_stl10_layout_is_column_major_per_plane(tmp_path, monkeypatch):
    """A hand-made image whose pixel value is its row index: on disk it varies fastest."""
    bypass_md5(monkeypatch)
    write_stl10(tmp_path / "root", n_train=10, n_test=10)
    img = np.broadcast_to(np.arange(96, dtype=np.uint8)[:, None], (3, 96, 96))  # value = row
    base = tmp_path / "root" / "stl10_binary"
    data = bytearray(base.joinpath("train_X.bin").read_bytes())
    first = np.ascontiguousarray(img.transpose(0, 2, 1)).tobytes()
    assert first[:96] == bytes(range(96))  # the first stored column runs down the rows
    data[: len(first)] = first
    base.joinpath("train_X.bin").write_bytes(bytes(data))
    out, man = tmp_path / "s.pt", tmp_path / "s.json"
    prepare_dataset("stl10", {"root": str(tmp_path / "root")}, out, man)
    x0 = torch.load(out, weights_only=True)["x_train"][0].numpy()
    assert np.array_equal(x0, img)


def test_stl10_without_class_names_and_subsets(tmp_path, monkeypatch):
    bypass_md5(monkeypatch)
    want = write_stl10(tmp_path / "root", n_train=20, n_test=10, class_names=False)
    out, man = tmp_path / "s.pt", tmp_path / "s.json"
    spec = {"root": str(tmp_path / "root"), "n_train": 8, "n_test": 4, "seed": 3}
    prepare_dataset("stl10", spec, out, man)
    raw = torch.load(out, weights_only=True)
    assert raw["x_train"].shape[0] == 8 and raw["x_test"].shape[0] == 4
    # every kept image is one of the written ones, with its label
    for x, y in zip(raw["x_train"].numpy(), raw["y_train"].numpy(), strict=True):
        hits = [i for i in range(20) if np.array_equal(want["x_train"][i], x)]
        assert len(hits) == 1 and want["y_train"][hits[0]] == y
    assert read_manifest(man)["classes"] == list(STL10_NAMES)
    assert resolve_spec("stl10", {"source": "stl10"})["augment"] == "cifar"


def test_stl10_missing_and_corrupt_files_name_the_path(tmp_path, monkeypatch):
    root = tmp_path / "root"
    write_stl10(root, n_train=10, n_test=10)
    (root / "stl10_binary" / "unlabeled_X.bin").unlink()
    out, man = tmp_path / "s.pt", tmp_path / "s.json"
    with pytest.raises(DatasetError, match=r"missing: stl10_binary/unlabeled_X\.bin"):
        prepare_dataset("stl10", {"root": str(root)}, out, man)
    write_stl10(root, n_train=10, n_test=10)
    # without the bypass, torchvision's own MD5 check refuses the generated files
    with pytest.raises(DatasetError, match=r"STL10 train split.*corrupt"):
        prepare_dataset("stl10", {"root": str(root)}, out, man)
