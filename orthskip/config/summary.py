"""What a grid trains, in words: one line per grid entry and variant, read from the effective
cell config (the variant's overrides merged in, every default filled), for the report's
landing page."""

from __future__ import annotations

from typing import Any

from orthskip.config.grid import Cell, cell_config


def _values(values: list[Any]) -> str:
    return ", ".join(str(v) for v in values)


def _recipe(train: dict[str, Any] | Any) -> str:
    opt, stop = train["optimizer"], train["stop"]
    budget = f"{train['epochs']} epochs"
    if int(stop["patience"]) > 0:
        what = ("when the skips' distance from I stops moving" if stop.get("watch") == "skips"
                else "at a training-loss plateau")  # fmt: skip
        budget = (f"up to {train['epochs']} epochs (stops {what}: "
                  f"patience {stop['patience']}, min_delta {stop['min_delta']})")  # fmt: skip
    return f"{budget}, batch size {train['batch_size']}, {opt['name']} (lr {opt['lr']})"


def _variant(name: str, kind: str) -> str:
    return name if name == kind else f"{name} ({kind})"


def grid_summary(cfg: dict[str, Any]) -> list[str]:
    """One line per grid entry and training recipe: architecture, datasets, every variant
    (with its skip kind where the name differs), depths, seeds and the recipe its cells train
    with (the variant's own epochs, batch size, optimizer and learning rate, not the
    top-level ``train`` section's)."""
    lines = []
    for entry in cfg["grid"]:
        by_recipe: dict[str, list[str]] = {}
        for variant in entry["variants"]:
            first = Cell(entry["datasets"][0], entry["arch"], variant, int(entry["depths"][0]),
                         int(entry["seeds"][0]))  # fmt: skip
            cc = cell_config(cfg, first)
            by_recipe.setdefault(_recipe(cc.train), []).append(_variant(variant, cc.skip))
        for recipe, variants in by_recipe.items():
            lines.append(
                f"{entry['arch']} on {_values(entry['datasets'])} with variants "
                f"{_values(variants)}; depths {_values(entry['depths'])}; seeds "
                f"{_values(entry['seeds'])}; {recipe}"
            )
    return lines
