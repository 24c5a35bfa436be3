"""torchvision image sets on tiny generated files in the real on-disk formats.

The real torchvision classes read the files; only CIFAR's MD5 check is bypassed
(``fakedata.bypass_md5``), because generated files cannot match the real files' MD5s.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from fakedata import bypass_md5, write_cifar, write_mnist

from orthskip.data import load_prepared, read_manifest
from orthskip.data.tv_compat import import_torchvision
from orthskip.errors import ConfigError, DatasetError
from orthskip.stages.prepare import prepare_dataset


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_torchvision_imports_and_transforms_work_on_this_machine():
    # A fresh interpreter: the import must work after tv_compat, and tv_compat must patch
    # exactly when a bare import fails with the nms error (CPU torch + CUDA wheel,
    # pytorch/vision#9085), leaving a working torchvision alone.
    code = (
        "import json\n"
        "try:\n"
        "    import torchvision\n"
        "    bare = ''\n"
        "except RuntimeError as e:\n"
        "    bare = str(e)\n"
        "import orthskip.data.tv_compat as c, torchvision, numpy as np\n"
        "from torchvision import transforms as T, datasets\n"
        "from PIL import Image\n"
        "tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),"
        " T.Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))])\n"
        "x = tf(Image.fromarray(np.full((32, 32, 3), 128, np.uint8)))\n"
        "print(json.dumps({'shape': list(x.shape), 'max': float(x.max()), 'patched': c.patched(),"
        " 'bare': bare, 'classes': [datasets.CIFAR10.__name__, datasets.FashionMNIST.__name__]}))\n"
    )
    res = _python(code)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["shape"] == [3, 32, 32]
    assert out["max"] == pytest.approx((128 / 255 - 0.5) / 0.25, abs=1e-6)
    assert out["classes"] == ["CIFAR10", "FashionMNIST"]
    if out["bare"]:
        assert "torchvision::nms does not exist" in out["bare"]
    assert out["patched"] == bool(out["bare"])


def test_compat_is_idempotent():
    from orthskip.data import tv_compat

    tv = import_torchvision()
    assert import_torchvision() is tv
    if tv_compat.patched():
        tv_compat._define_missing_schemas()  # a second call must not redefine the ops
        assert hasattr(torch.ops.torchvision, "nms")


@pytest.mark.parametrize("source", ["cifar10", "cifar100"])
def test_cifar_round_trip_through_torchvision(tmp_path, monkeypatch, source):
    bypass_md5(monkeypatch)
    want = write_cifar(tmp_path / "root", source, n_train=30, n_test=12)
    out, man = tmp_path / f"{source}.pt", tmp_path / f"{source}.json"
    prepare_dataset(source, {"root": str(tmp_path / "root")}, out, man)
    raw = torch.load(out, weights_only=True)
    assert raw["x_train"].dtype == torch.uint8
    assert np.array_equal(raw["x_train"].numpy(), want["x_train"])  # NCHW, pixel for pixel
    assert np.array_equal(raw["x_test"].numpy(), want["x_test"])
    assert np.array_equal(raw["y_train"].numpy(), want["y_train"])
    p = load_prepared(out, man)
    k = 10 if source == "cifar10" else 100
    assert p.input_shape == (3, 32, 32) and p.num_classes == k
    assert p.meta["augment"] == "cifar"
    # per-channel normalisation with training statistics
    mean = want["x_train"].astype(np.float64).mean(axis=(0, 2, 3))
    std = want["x_train"].astype(np.float64).std(axis=(0, 2, 3))
    np.testing.assert_allclose(p.meta["mean"], mean, rtol=1e-6)
    np.testing.assert_allclose(p.meta["std"], std, rtol=1e-6)
    expect = (want["x_test"] - mean[None, :, None, None]) / std[None, :, None, None]
    np.testing.assert_allclose(p.x_test.numpy(), expect, rtol=1e-5, atol=1e-5)
    info = read_manifest(man)
    assert info["classes"][:2] == ["class_0", "class_1"] and len(info["classes"]) == k
    assert info["provenance"]["verified"] == "torchvision-md5"
    assert len(info["provenance"]["files_sha256"]) == (7 if source == "cifar10" else 3)


@pytest.mark.parametrize("source", ["mnist", "fashion_mnist"])
def test_mnist_round_trip_through_torchvision(tmp_path, source):
    want = write_mnist(tmp_path / "root", source, n_train=40, n_test=20)
    out, man = tmp_path / "m.pt", tmp_path / "m.json"
    prepare_dataset(source, {}, out, man, root=tmp_path / "root")
    raw = torch.load(out, weights_only=True)
    assert np.array_equal(raw["x_train"].numpy(), want["x_train"])
    assert np.array_equal(raw["y_test"].numpy(), want["y_test"])
    p = load_prepared(out, man)
    assert p.input_shape == (1, 28, 28) and p.num_classes == 10 and p.meta["augment"] is None
    info = read_manifest(man)
    # no .gz archives: torchvision only checks the raw files exist, and we say so
    assert info["provenance"]["verified"] == "none"
    first = "0 - zero" if source == "mnist" else "T-shirt/top"
    assert info["classes"][0] == first


def test_subset_is_seeded_and_deterministic(tmp_path, monkeypatch):
    bypass_md5(monkeypatch)
    root = tmp_path / "root"
    want = write_cifar(root, "cifar10", n_train=40, n_test=20)
    spec = {"root": str(root), "n_train": 16, "n_test": 8, "seed": 5}
    files = []
    for tag in ("a", "b"):
        prepare_dataset("cifar10", spec, tmp_path / tag / "c.pt", tmp_path / tag / "c.json")
        files.append((tmp_path / tag / "c.pt").read_bytes())
    assert files[0] == files[1]
    raw = torch.load(tmp_path / "a" / "c.pt", weights_only=True)
    assert raw["x_train"].shape == (16, 3, 32, 32) and raw["x_test"].shape == (8, 3, 32, 32)
    # each kept image is one of the originals with its own label
    flat = want["x_train"].reshape(40, -1)
    for img, lab in zip(raw["x_train"].numpy(), raw["y_train"].numpy(), strict=True):
        (i,) = np.flatnonzero((flat == img.reshape(-1)).all(1))
        assert want["y_train"][i] == lab
    with pytest.raises(ConfigError, match="n_train: 99 exceeds the 40"):
        prepare_dataset("cifar10", {**spec, "n_train": 99}, tmp_path / "x.pt", tmp_path / "x.json")


def test_mnist_gz_archives_are_checked_against_torchvision_md5(tmp_path):
    write_mnist(tmp_path / "root", "mnist", gz=True)
    with pytest.raises(DatasetError) as err:
        prepare_dataset(
            "mnist", {"root": str(tmp_path / "root")}, tmp_path / "m.pt", tmp_path / "m.json"
        )
    assert "train-images-idx3-ubyte.gz" in str(err.value) and "MD5" in str(err.value)
    assert not (tmp_path / "m.json").exists()


def test_missing_root_names_the_path(tmp_path):
    missing = tmp_path / "no_such_dir"
    with pytest.raises(DatasetError) as err:
        prepare_dataset("cifar10", {"root": str(missing)}, tmp_path / "c.pt", tmp_path / "c.json")
    msg = str(err.value)
    assert str(missing) in msg and "cifar-10-batches-py/data_batch_1" in msg
    assert "download: true" in msg and "dvc pull" in msg
    with pytest.raises(ConfigError, match=r"datasets\.mnist\.root"):
        prepare_dataset("mnist", {}, tmp_path / "m.pt", tmp_path / "m.json")


def test_missing_and_corrupt_files_name_the_path(tmp_path, monkeypatch):
    root = tmp_path / "root"
    write_cifar(root, "cifar10", n_train=10, n_test=5)
    # without the bypass, torchvision's own MD5 check refuses the generated files
    with pytest.raises(DatasetError) as err:
        prepare_dataset("cifar10", {"root": str(root)}, tmp_path / "c.pt", tmp_path / "c.json")
    assert str(root) in str(err.value) and "corrupt or mismatched" in str(err.value)
    bypass_md5(monkeypatch)
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetError) as err:
        prepare_dataset("cifar10", {"root": str(root)}, tmp_path / "c.pt", tmp_path / "c.json")
    assert "missing: cifar-10-batches-py/data_batch_3" in str(err.value)
    # a truncated idx file: torchvision's reader fails, we name the split and root
    write_mnist(tmp_path / "m", "mnist")
    f = tmp_path / "m" / "MNIST" / "raw" / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:50])
    with pytest.raises(DatasetError) as err:
        prepare_dataset(
            "mnist", {"root": str(tmp_path / "m")}, tmp_path / "m.pt", tmp_path / "m.json"
        )
    assert "MNIST train split under" in str(err.value) and str(tmp_path / "m") in str(err.value)
    assert not (tmp_path / "m.json").exists() and not (tmp_path / "c.json").exists()
