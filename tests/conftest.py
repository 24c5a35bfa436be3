"""Suite-wide settings: one torch thread for every test (small ops on a machine with few,
shared cores get much slower with more threads)."""

import pytest
import torch

from orthskip.stages.prepare import prepare_dataset

torch.set_num_threads(1)


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
