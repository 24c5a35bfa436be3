"""Atomic file writing: a killed job never leaves a file that looks complete."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp makes 0600 files; results are shared (DVC remotes, group clusters).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


# A payload with at least this many tensors is written with its tensors pooled (below);
# fewer (prepared datasets: a handful of large arrays) are written as torch.save writes them.
POOL_MIN_TENSORS = 16
_POOL = "__orthskip_tensor_pool__"
_REF = "__orthskip_tensor__"
_STATE = "__orthskip_tensor_names__"
_FIRST = "__orthskip_first_tensor__"


def save_torch(path: str | Path, obj: Any) -> None:
    """torch.save, atomically and byte-reproducibly: given a path, torch.save names the
    archive's entries after the file (here a random temporary name), so equal tensors
    gave other bytes and reran everything downstream; given an open file it names them
    ``archive/...`` always.

    A payload of many small tensors (a deep net's state dict, optimizer state and
    snapshots: thousands per file) has them pooled into one flat tensor per dtype, each
    replaced by a reference: torch.save spends ~0.1 ms of pickling per tensor, far more
    than writing its bytes. ``load_torch`` restores the same nested structure, with every
    tensor's values, dtype and shape."""
    import torch  # planning and the table and figure jobs use this module without torch

    if isinstance(obj, dict) and _has_tensors(obj, POOL_MIN_TENSORS):
        obj = _pooled(obj)
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        torch.save(obj, fh)


def load_torch(path: str | Path, mmap: bool = False) -> Any:
    """What ``save_torch`` saved (on the CPU; only tensors and plain containers).
    ``mmap`` maps the file instead of reading it: for reading a few small entries."""
    import torch  # planning and the table and figure jobs use this module without torch

    obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    if isinstance(obj, dict) and _POOL in obj:
        obj = _unpooled(obj)
    return obj


def _has_tensors(obj: Any, n: int) -> bool:
    """Whether ``obj`` holds at least ``n`` tensors (a walk that stops once it has seen n)."""
    import torch  # planning and the table and figure jobs use this module without torch

    stack, seen = [obj], 0
    while stack:
        x = stack.pop()
        if isinstance(x, torch.Tensor):
            seen += 1
            if seen >= n:
                return True
        elif isinstance(x, dict):
            stack.extend(x.values())
        elif isinstance(x, (list, tuple)):
            stack.extend(x)
    return False


def _pooled(obj: dict[Any, Any]) -> dict[Any, Any]:
    """``obj`` with its tensors moved to ``obj[_POOL]``: one flat tensor per dtype and each
    tensor's dtype, offset and shape, as tensors too. A dict of tensors under string keys (a
    state dict, one parameter's optimizer state) becomes ``{_STATE: keys joined by a newline,
    _FIRST: its first tensor's index}``, any other tensor ``{_REF: index}``: the pickler's
    cost is per object, and a deep net's state dict is thousands of them.

    The walk only collects the tensors; what the pool needs of them is then read in one
    pass per attribute (a packed run writes hundreds of files of ~10^4 tensors each, where
    a call per tensor was most of the writing)."""
    import torch  # planning and the table and figure jobs use this module without torch

    found: list[torch.Tensor] = []

    def is_state(x: dict[Any, Any]) -> bool:
        return bool(x) and all(
            isinstance(k, str) and "\n" not in k and isinstance(v, torch.Tensor)
            for k, v in x.items()
        )

    def swap(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            found.append(x)
            return {_REF: len(found) - 1}
        if isinstance(x, dict) and is_state(x):
            first = len(found)
            found.extend(x.values())
            return {_STATE: "\n".join(x), _FIRST: first}
        return _rebuilt(x, swap)

    if _POOL in obj:
        raise ValueError(f"save_torch: the key {_POOL!r} is reserved")
    tree = swap(obj)
    flat = [
        (t.detach() if t.requires_grad else t).reshape(-1).cpu() for t in found
    ]  # .cpu() is the tensor itself on the CPU
    codes = [t.dtype for t in flat]
    order = sorted(set(codes), key=str)
    code = {dtype: i for i, dtype in enumerate(order)}
    offsets, running = [], dict.fromkeys(order, 0)
    for dtype, t in zip(codes, flat, strict=True):
        offsets.append(running[dtype])
        running[dtype] += t.numel()
    data = (
        [torch.cat(flat)]
        if len(order) == 1
        else [torch.cat([t for t, c in zip(flat, codes, strict=True) if c == d]) for d in order]
    )
    tree[_POOL] = {
        "dtypes": [str(d).removeprefix("torch.") for d in order],
        "dtype": torch.tensor([code[d] for d in codes], dtype=torch.int64),
        "offset": torch.tensor(offsets, dtype=torch.int64),
        "ndim": torch.tensor([t.dim() for t in found], dtype=torch.int64),
        "shape": torch.tensor([n for t in found for n in t.shape], dtype=torch.int64),
        "data": data,
    }
    return tree


def _unpooled(obj: dict[Any, Any]) -> dict[Any, Any]:
    pool = obj.pop(_POOL)
    data = pool["data"]
    dims, flat = pool["ndim"].tolist(), pool["shape"].tolist()
    ends = list(itertools.accumulate(dims))
    # each its own copy, as torch.load gives: a view into the pool is no tensor of its own
    # (Generator.set_state, for one, reads a view's storage from its start: a wrong state)
    tensors = []
    codes, offsets = pool["dtype"].tolist(), pool["offset"].tolist()
    for d, offset, end, ndim in zip(codes, offsets, ends, dims, strict=True):
        shape = flat[end - ndim : end]
        tensors.append(data[d][offset : offset + math.prod(shape)].view(shape).clone())

    def swap(x: Any) -> Any:
        if isinstance(x, dict):
            if len(x) == 1 and _REF in x:
                return tensors[x[_REF]]
            if len(x) == 2 and _STATE in x:
                first = x[_FIRST]
                names = x[_STATE].split("\n")
                return dict(zip(names, tensors[first : first + len(names)], strict=True))
        return _rebuilt(x, swap)

    return swap(obj)


def _rebuilt(x: Any, swap: Callable[[Any], Any]) -> Any:
    """A dict, list or tuple rebuilt from ``swap`` of its items; anything else as it is."""
    if isinstance(x, dict):
        return {k: swap(v) for k, v in x.items()}
    if isinstance(x, list):
        return [swap(v) for v in x]
    if isinstance(x, tuple):
        return tuple(swap(v) for v in x)
    return x


def write_parquet(path: str | Path, table: Any) -> None:
    """Write a pandas DataFrame or pyarrow Table atomically."""
    # only the jobs that write Parquet pay pyarrow's import
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not isinstance(table, pa.Table):
        table = pa.Table.from_pandas(table, preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (prepared datasets are large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
