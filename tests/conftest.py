"""Suite-wide settings: one torch thread for every test (small ops on a machine with few,
shared cores get much slower with more threads), and tests marked ``cuda`` skipped with the
reason where no CUDA GPU is usable."""

import pytest
import torch

from orthskip.stages.prepare import prepare_dataset

torch.set_num_threads(1)


def _no_cuda_reason() -> str | None:
    """Why the ``cuda`` tests cannot run here, or None when a GPU is usable."""
    if torch.cuda.is_available():
        return None
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    return (
        f"needs a CUDA GPU: torch.cuda.is_available() is false (torch {torch.__version__}, "
        f"{build}); on a GPU machine run `make gpu-check` or `pytest -m cuda`"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # marked at collection, so a skipped test sets up none of its (GPU) fixtures
    reason = _no_cuda_reason()
    if reason is None:
        return
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="module")
def circles(tmp_path_factory):
    """A tiny prepared circles set: (data file, manifest)."""
    d = tmp_path_factory.mktemp("data")
    spec = {"source": "circles", "n_train": 96, "n_test": 64, "noise": 0.05}
    prepare_dataset("circles", spec, d / "circles.pt", d / "circles.json")
    return d / "circles.pt", d / "circles.json"


@pytest.fixture(scope="module")
def metrics_dir(tmp_path_factory):
    """The synthetic aggregated results of tests/fixture_results.py, written once per module."""
    from tests.fixture_results import write_fixture

    d = tmp_path_factory.mktemp("metrics")
    write_fixture(d)
    return d
