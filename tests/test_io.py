"""orthskip.io: atomic, byte-reproducible torch files; many-tensor payloads pooled."""

from __future__ import annotations

import zipfile

import torch

from orthskip.io import POOL_MIN_TENSORS, load_torch, save_torch


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return (
            isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and torch.equal(a, b)
        )
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    return type(a) is type(b) and a == b


def _checkpoint_like() -> dict:
    g = torch.Generator().manual_seed(3)
    model = {f"blocks.{i}.{n}": torch.randn(4, 2, generator=g) for i in range(8) for n in "abc"}
    model["bn.num_batches_tracked"] = torch.tensor(7)
    model["skip.q"] = torch.randn(3, 3, dtype=torch.float64, generator=g).T  # not contiguous
    opt = {
        "state": {
            i: {"step": torch.tensor(5.0), "exp_avg": torch.randn(3, generator=g)} for i in range(5)
        },
        "param_groups": [{"lr": 1e-3, "params": [0, 1, 2, 3, 4], "betas": (0.9, 0.999)}],
    }
    return {
        "model": model,
        "optimizer": opt,
        "rng": torch.Generator().get_state(),  # uint8
        "odd": (torch.zeros(0, 3), torch.tensor(True), [torch.ones(2, 1, 2)]),
        "state": {"epoch": 3, "batch": None, "loss": 0.25, "name": "x"},
        # names a newline could not join, an empty dict, a tensor beside other values
        "odd_names": {"a\nb": torch.ones(2), "c": torch.zeros(1)},
        "empty": {},
        "mixed": {"w": torch.ones(3), "n": 4},
    }


def test_a_many_tensor_payload_round_trips_exactly_and_pooled(tmp_path):
    payload = _checkpoint_like()
    path = tmp_path / "last.pt"
    save_torch(path, payload)
    back = load_torch(path)
    assert _same(payload, back)
    # pooled: a few data records (one per dtype and the index), not one per tensor
    n_tensors = 24 + 2 + 1 + 10 + 1 + 3 + 2 + 1
    assert n_tensors >= POOL_MIN_TENSORS
    records = [n for n in zipfile.ZipFile(path).namelist() if "/data/" in n]
    assert len(records) < 12 < n_tensors
    # byte-reproducible: the same payload gives the same bytes
    save_torch(tmp_path / "again.pt", _checkpoint_like())
    assert path.read_bytes() == (tmp_path / "again.pt").read_bytes()
    # the small top-level entries can be read with the file memory-mapped
    assert load_torch(path, mmap=True)["state"]["epoch"] == 3


def test_a_few_large_tensors_are_written_as_torch_writes_them(tmp_path):
    data = {"x": torch.randn(64, 3), "y": torch.arange(64)}
    save_torch(tmp_path / "d.pt", data)
    raw = torch.load(tmp_path / "d.pt", weights_only=True)
    assert _same(raw, data)
    assert _same(load_torch(tmp_path / "d.pt"), data)


def test_a_loaded_generator_state_restores_the_stream(tmp_path):
    # each loaded tensor owns its storage: Generator.set_state reads a view's storage from
    # its start, so a view into the pool would restore another state (or crash)
    g = torch.Generator().manual_seed(11)
    payload = {"gen": g.get_state(), **{f"w{i}": torch.full((3,), float(i)) for i in range(20)}}
    save_torch(tmp_path / "c.pt", payload)
    back = torch.Generator()
    back.set_state(load_torch(tmp_path / "c.pt")["gen"])
    assert torch.equal(torch.rand(5, generator=back), torch.rand(5, generator=g))
