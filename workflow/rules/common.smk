import json

from orthskip.config import Cell, cell_config, cells
from orthskip.figures import FIGURES
from orthskip.provenance import source_hash
from orthskip.tables import TABLES

CELL = "{dataset}/{arch}/{skip}/d{depth}/s{seed}"
CELLS = cells(config)


wildcard_constraints:
    dataset="[A-Za-z0-9_-]+",
    arch="[a-z0-9_]+",
    skip="[a-z_]+",
    depth="[0-9]+",
    seed="[0-9]+",
    name="[a-z_]+",


def cell_dirs():
    return [f"results/cells/{c.path}" for c in CELLS]


def cell_of(wildcards):
    return Cell(
        wildcards.dataset,
        wildcards.arch,
        wildcards.skip,
        int(wildcards.depth),
        int(wildcards.seed),
    )


def train_config_json(wildcards):
    """What training depends on: a change reruns only the affected cells."""
    part = cell_config(config, cell_of(wildcards))
    part.pop("metrics")
    return json.dumps(part, sort_keys=True)


def metrics_config_json(wildcards):
    return json.dumps(cell_config(config, cell_of(wildcards)), sort_keys=True)


def dataset_spec_json(wildcards):
    return json.dumps(config["datasets"][wildcards.dataset], sort_keys=True)


def train_gpus(wildcards):
    return 0 if config["train"]["device"] == "cpu" else 1


def all_figures():
    return expand("results/figures/{name}.{ext}", name=FIGURES, ext=("pdf", "png"))


def all_tables():
    return expand("results/tables/{name}.{ext}", name=TABLES, ext=("md", "tex"))
