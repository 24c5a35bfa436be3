import json

from orthskip import cluster
from orthskip.config import Cell, cell_config, cells
from orthskip.figures import FIGURES
from orthskip.provenance import source_hash
from orthskip.tables import TABLES

# Jobs run `python -m orthskip` from this checkout: also inside a conda env per job
# (--sdm conda), where the package is not installed, PYTHONPATH finds it.
shell.prefix(
    f"set -euo pipefail; export PYTHONPATH={workflow.basedir}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; "
)
ENV = "../../environment.yml"
CELL = "{dataset}/{arch}/{variant}/d{depth}/s{seed}"
CELLS = cells(config)


def cell_dirs():
    return [f"results/cells/{c.path}" for c in CELLS]


def cell_of(wildcards):
    return Cell(
        wildcards.dataset,
        wildcards.arch,
        wildcards.variant,
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


def dataset_source(wildcards):
    return config["datasets"][wildcards.dataset]["source"]


def train_gpus(wildcards):
    """0 on CPU runs and for short cells (synthetic, digits); else one GPU per job."""
    if config["train"]["device"] == "cpu":
        return 0
    return cluster.train_gpus(dataset_source(wildcards))


def cell_group(wildcards):
    """Short cells share cluster jobs (see slurm/config.yaml); long cells run alone."""
    return cluster.train_group(dataset_source(wildcards))


def train_runtime(wildcards, attempt):
    spec = config["datasets"][wildcards.dataset]
    return cluster.train_runtime_minutes(
        spec["source"],
        wildcards.arch,
        int(wildcards.depth),
        config["train"]["epochs"],
        attempt=attempt,
        n_train=spec.get("n_train"),
    )


def train_mem(wildcards):
    spec = config["datasets"][wildcards.dataset]
    return cluster.train_mem_mb(
        spec["source"],
        wildcards.arch,
        int(wildcards.depth),
        n_train=spec.get("n_train"),
    )


def all_figures():
    return expand("results/figures/{name}.{ext}", name=FIGURES, ext=("pdf", "png"))


def all_tables():
    return expand("results/tables/{name}.{ext}", name=TABLES, ext=("md", "tex"))
