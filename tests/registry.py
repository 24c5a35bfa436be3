"""Registering a toy variation point from a test: config checks against the schema as
``orthskip config schema --write`` would write it with the toy registered (the committed file
holds only the library's own entries), and a tiny trained cell to measure."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from orthskip.config.grid import CellConfig, cell_config, cells, prepare_config
from orthskip.stages.prepare import prepare_dataset
from orthskip.training.stacked import train_cell
from tests.workflow import tiny_config


def use_registered_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every config check read the schema generated from the registries as they are
    now (call it after registering the toy)."""
    from orthskip.config import grid, schema

    generated = schema.generate(grid.load_schema())
    monkeypatch.setattr(grid, "load_schema", lambda path=grid.SCHEMA: copy.deepcopy(generated))


def one_cell(cfg: dict[str, Any]) -> CellConfig:
    """The checked config's only cell."""
    cfg = prepare_config(cfg)
    (cell,) = cells(cfg)
    return cell_config(cfg, cell)


def tiny_cell(**grid: Any) -> dict[str, Any]:
    """tiny_config with one cell: an MLP of 2 blocks, seed 0, on circles (``grid`` overrides
    the grid entry)."""
    cfg = tiny_config()
    cfg["grid"][0].update({"variants": ["identity"], "depths": [2], "seeds": [0], **grid})
    return cfg


def train(cell_cfg: CellConfig, workdir: Path) -> tuple[Path, Path, Path]:
    """Prepare the cell's dataset and train it (it must end ``ok``): (data, manifest, cell)."""
    name = cell_cfg.cell.dataset
    data, manifest = workdir / f"{name}.pt", workdir / f"{name}.json"
    prepare_dataset(name, dict(cell_cfg.dataset), data, manifest)
    assert train_cell(cell_cfg, data, manifest, workdir / "cell") == "ok"
    return data, manifest, workdir / "cell"


def measure_and_draw(cell_cfg: CellConfig, data: Path, manifest: Path, cell: Path, figure: str):
    """Run the metrics stage on a trained cell, aggregate it alone and draw ``figure`` from
    that: the figure (matplotlib), for the caller to inspect, and the metrics table."""
    import pandas as pd

    from orthskip.figures import style
    from orthskip.stages.aggregate import aggregate
    from orthskip.stages.figures import draw_figure
    from orthskip.stages.metrics import cell_metrics

    work = cell.parent
    metrics, warp = work / "metrics.parquet", work / "warp.parquet"
    cell_metrics(cell_cfg, data, manifest, cell / "snapshots.pt", metrics, warp)
    out = work / "aggregated"
    out.mkdir()
    aggregate([cell / "status.json"], [cell / "history.parquet"], [metrics], [warp], out)
    with style.style():
        return draw_figure(figure, out), pd.read_parquet(metrics)


def legend_entries(fig) -> dict[str, tuple[str, str]]:
    """Label -> (colour, marker) of every figure legend entry."""
    from matplotlib.colors import to_hex

    out = {}
    for legend in fig.legends:
        for handle, text in zip(legend.legend_handles, legend.get_texts(), strict=True):
            out[text.get_text()] = (to_hex(handle.get_color()), handle.get_marker())
    return out
