import json

from orthskip import cluster
from orthskip.config import Cell, cell_config, cells
from orthskip.data.prepare import check_prepared
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


def check_prepared_datasets():
    """Stop here when a prepared dataset no longer matches its manifest.

    Otherwise Snakemake sees a changed input, plans every cell on it again and deletes
    their good outputs before the first train job fails on the hash. Only the main
    process checks: job processes re-read this file while a prepare job may be writing.
    """
    for name in sorted({c.dataset for c in CELLS}):
        check_prepared(f"results/data/{name}.pt", f"results/data/{name}.manifest.json")


if workflow.is_main_process:
    check_prepared_datasets()


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
