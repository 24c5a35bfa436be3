"""Prepared files: checksum verification, clear errors for missing/corrupt data, atomicity."""

from __future__ import annotations

import json

import pytest
import torch

from orthskip.data import load_prepared, read_manifest
from orthskip.errors import DatasetError
from orthskip.stages.prepare import prepare_dataset


@pytest.fixture
def prepared(tmp_path):
    out, man = tmp_path / "moons.pt", tmp_path / "moons.json"
    prepare_dataset("moons", {"n_train": 64, "n_test": 32}, out, man)
    return out, man


def test_manifest_describes_the_file(prepared):
    import hashlib

    out, man = prepared
    info = read_manifest(man)
    assert info["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert info["bytes"] == out.stat().st_size
    assert info["file"] == "moons.pt"
    assert (info["n_train"], info["n_test"], info["num_classes"]) == (64, 32, 2)
    assert info["input_shape"] == [2] and info["classes"] == ["0", "1"]
    assert info["spec"] == {"source": "moons", "n_train": 64, "n_test": 32, "seed": 0, "noise": 0.1}
    assert sum(info["class_counts_train"]) == 64
    assert set(info["versions"]) >= {"torch", "numpy", "scikit-learn", "torchvision"}
    # the file loads with weights_only=True and stores float32 vectors + int64 labels
    raw = torch.load(out, weights_only=True)
    assert raw["x_train"].dtype == torch.float32 and raw["y_test"].dtype == torch.int64


def test_corrupted_file_is_refused(prepared):
    out, man = prepared
    data = bytearray(out.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    out.write_bytes(bytes(data))
    with pytest.raises(DatasetError) as err:
        load_prepared(out, man)
    msg = str(err.value)
    assert str(out) in msg and "sha256" in msg and "prepare_dataset" in msg and "dvc pull" in msg


def test_truncated_file_without_manifest_is_refused(prepared):
    out, _ = prepared
    out.write_bytes(out.read_bytes()[:100])
    with pytest.raises(DatasetError) as err:
        load_prepared(out)
    assert str(out) in str(err.value) and "cannot be read" in str(err.value)


def test_stale_manifest_is_refused(tmp_path, prepared):
    out, man = prepared
    prepare_dataset("moons", {"n_train": 64, "n_test": 32, "seed": 1}, out, tmp_path / "o.json")
    with pytest.raises(DatasetError, match="does not match"):
        load_prepared(out, man)
    assert load_prepared(out, tmp_path / "o.json").x_train.shape == (64, 2)


def test_missing_files_name_the_path(tmp_path, prepared):
    out, man = prepared
    with pytest.raises(DatasetError) as err:
        load_prepared(tmp_path / "nope.pt", man)
    assert str(tmp_path / "nope.pt") in str(err.value) and "does not exist" in str(err.value)
    with pytest.raises(DatasetError) as err:
        load_prepared(out, tmp_path / "nope.json")
    assert str(tmp_path / "nope.json") in str(err.value)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DatasetError, match="unreadable"):
        load_prepared(out, tmp_path / "bad.json")


def test_test_split_uses_training_statistics(prepared):
    out, man = prepared
    p = load_prepared(out, man)
    raw = torch.load(out, weights_only=True)
    mean, std = raw["x_train"].mean(0), raw["x_train"].std(0, unbiased=False)
    torch.testing.assert_close(p.x_test, (raw["x_test"] - mean) / std, rtol=1e-5, atol=1e-5)
    assert p.meta["spec"] == json.loads(man.read_text())["spec"]


def test_failed_prepare_leaves_no_output(tmp_path, monkeypatch):
    from orthskip.stages import prepare as prep_mod

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(prep_mod, "write_json", boom)
    out, man = tmp_path / "d" / "c.pt", tmp_path / "d" / "c.json"
    with pytest.raises(RuntimeError):
        prepare_dataset("circles", {"n_train": 10, "n_test": 10}, out, man)
    # the tensor file may exist, but no manifest: nothing that looks complete
    assert not man.exists()
    assert [f.name for f in (tmp_path / "d").iterdir() if f.name.startswith(".")] == []
