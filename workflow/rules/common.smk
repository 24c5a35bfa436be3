import functools
import hashlib
import json
import re
import sys

from orthskip.config.grid import (
    CELL_PATH,
    Cell,
    approx_cells,
    cell_config,
    cells,
    pack_cells,
    pack_config_text,
    packs,
)
from orthskip.config.summary import grid_summary
from orthskip.data.spec import train_size
from orthskip.integrity import check_prepared, check_snapshots
from orthskip.nn.skip_specs import skip_options
from orthskip.stages.catalog import (
    FIGURE_SOURCES,
    PAPER_TABLES,
    PER_SETTING,
    TABLE_SOURCES,
    paper_figures,
    setting_draws,
    tex_engine,
)

# Workflow-only helpers live beside the rules, not in the library.
sys.path.insert(0, os.path.join(workflow.basedir, "workflow", "lib"))
import cluster
from code_fingerprint import code_fingerprint as _code_fingerprint

# One per command, not one per pack rule.
code_fingerprint = functools.cache(_code_fingerprint)

# Jobs run `python -m orthskip` from this checkout: also inside a conda env per job
# (--sdm conda), where the package is not installed, PYTHONPATH finds it.
shell.prefix(
    f"set -euo pipefail; export PYTHONPATH={workflow.basedir}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; "
)
ENV = "../../environment.yml"
# a cell's path as a wildcard pattern (its wildcards constrained in the Snakefile)
CELL = CELL_PATH
CELLS = cells(config)
# The report's landing page reads only `config`: the grid in words, per variant's effective
# recipe (not the top-level train section). Added after validation; jobs never read it.
config["_report_grid"] = grid_summary(config)
# members (`sSEED`, `dDEPTH/sSEED` with execution.pack: family, `VARIANT/dDEPTH/sSEED`
# for packs across kinds) -> pack keys; one
# train and one metrics rule per members tuple
PACKS = packs(config)
# what figures, tables and findings read (rule aggregate; rule aggregate_approx)
METRICS = multiext(
    "results/metrics/",
    "cells.parquet",
    "history.parquet",
    "layers.parquet",
    "warp.parquet",
)
APPROX_METRICS = "results/metrics/approx.parquet"
# identity cells of the approximation stage (config `approx`: enabled, filters)
APPROX_CELLS = approx_cells(config)


def check_prepared_datasets():
    """Stop here when a prepared dataset no longer matches its manifest.

    Otherwise Snakemake sees a changed input, plans every cell on it again and deletes
    their good outputs before the first train job fails on the hash. Only the main
    process checks: job processes re-read this file while a prepare job may be writing.
    """
    for name in sorted({c.dataset for c in CELLS}):
        check_prepared(f"results/data/{name}.pt", f"results/data/{name}.manifest.json")


def check_snapshots_files():
    """Stop here when a cell's snapshots.pt is truncated (a failed copy, say).

    Otherwise its pack's metrics job fails, and Snakemake deletes the metrics of every
    member of the pack. The message names the file and the fix (delete it and ask for it:
    the train job writes it again from the cell's last.pt without retraining).
    """
    for c in CELLS:
        path = f"results/cells/{c.path}/snapshots.pt"
        if os.path.exists(path):
            check_snapshots(path, full=False)


if workflow.is_main_process:
    check_prepared_datasets()
    check_snapshots_files()


def cell_dirs():
    return [f"results/cells/{c.path}" for c in CELLS]


# What the train and metrics rules write per cell (last.pt is their working state, not a
# promise: train.log and it are kept by the train stage itself).
CELL_FILES = (
    "status.json",
    "history.parquet",
    "snapshots.pt",
    "metrics.parquet",
    "warp.parquet",
)


def cell_files():
    return expand("{cell}/{name}", cell=cell_dirs(), name=CELL_FILES)


def pack_rule_name(stage, i):
    return stage if i == 0 else f"{stage}_{i + 1}"


def pack_pattern(keys):
    """The `pack` wildcard of one rule matches exactly its packs."""
    return "|".join(re.escape(k) for k in keys)


def pack_log(stage, members):
    """The job's log. Packs across kinds (members `VARIANT/dDEPTH/sSEED`) of one dataset
    and arch share their key: their members name the file."""
    if members[0].count("/") < 2:
        return f"results/logs/{stage}/{{pack}}/pack.log"
    tag = hashlib.sha256("|".join(members).encode()).hexdigest()[:12]
    return f"results/logs/{stage}/{{pack}}/pack.{tag}.log"


def member_files(pattern, members):
    """One path per member: `pattern` below results/ with {cell} = the member's path."""
    return [pattern.format(cell=f"{{pack}}/{m}") for m in members]


def pack_config_json(members, with_metrics):
    """What a pack's job depends on, per member: a change reruns only the affected packs."""

    def config_json(wildcards):
        parts = [cell_config(config, c) for c in pack_cells(wildcards.pack, members)]
        if not with_metrics:
            parts = [part.without_metrics() for part in parts]
        return pack_config_text(parts)

    return config_json


def _spec(wildcards):
    return config["datasets"][wildcards.pack.split("/")[0]]


def _n_train(dataset):
    """Training examples of a dataset as its spec prepares it (the cluster estimates)."""
    return train_size(dataset, config["datasets"][dataset])


def sequential_flag(wildcards):
    return "" if config.get("execution", {}).get("vectorise", True) else "--sequential"


def pack_data(wildcards):
    return f"results/data/{wildcards.pack.split('/')[0]}.pt"


def pack_manifest(wildcards):
    return f"results/data/{wildcards.pack.split('/')[0]}.manifest.json"


def dataset_spec_json(wildcards):
    return json.dumps(config["datasets"][wildcards.dataset], sort_keys=True)


def train_gpus(wildcards):
    """0 on CPU runs and for short cells (synthetic, digits); else one GPU per job."""
    if config["train"]["device"] == "cpu":
        return 0
    return cluster.train_gpus(_spec(wildcards)["source"])


def cell_group(wildcards):
    """Short cells share cluster jobs (see slurm/config.yaml); long cells run alone."""
    return cluster.train_group(_spec(wildcards)["source"])


def train_runtime(members):
    """The sum of the members' estimates (a vectorised pack is faster, not slower)."""

    def runtime(wildcards, attempt):
        spec = _spec(wildcards)
        return sum(
            cluster.train_runtime_minutes(
                spec["source"],
                c.arch,
                c.depth,
                config["train"]["epochs"],
                attempt=attempt,
                n_train=_n_train(c.dataset),
            )
            for c in pack_cells(wildcards.pack, members)
        )

    return runtime


def train_mem(members):
    """The largest member's estimate (members of one depth are stacked: K times that)."""

    def mem(wildcards):
        spec = _spec(wildcards)
        cells = pack_cells(wildcards.pack, members)
        per_depth = max(
            sum(1 for c in cells if c.depth == d) for d in {c.depth for c in cells}
        )
        one = max(
            cluster.train_mem_mb(
                spec["source"], c.arch, c.depth, n_train=_n_train(c.dataset)
            )
            for c in cells
        )
        return one * per_depth

    return mem


def _measured_families():
    """(dataset, arch) -> the metric families of each variant there (None: all)."""
    out = {}
    one_per_variant = {(c.dataset, c.arch, c.variant): c for c in CELLS}
    for c in one_per_variant.values():
        fams = cell_config(config, c).metrics.get("families")
        out.setdefault((c.dataset, c.arch), []).append(
            None if fams is None else frozenset(fams)
        )
    return out


def all_figures():
    """Paper and whole-run figures as results/figures/{name}.{ext}; the per-setting report
    figures (PER_SETTING) as results/figures/{name}/{dataset}/{arch}.{ext}, for the settings
    that measure what they draw."""
    whole = [n for n in FIGURE_SOURCES if n not in PER_SETTING]
    measured = _measured_families()
    per = [
        f"results/figures/{n}/{d}/{a}.{ext}"
        for n in sorted(PER_SETTING)
        for (d, a), fams in sorted(measured.items())
        if setting_draws(n, fams)
        for ext in ("pdf", "png")
    ]
    return expand("results/figures/{name}.{ext}", name=whole, ext=("pdf", "png")) + per


def figure_inputs(wildcards):
    """Every figure reads the aggregated metrics; paper_approximation also the stage's."""
    extra = [APPROX_METRICS] if wildcards.name == "paper_approximation" else []
    return [*METRICS, *extra]


def table_inputs(wildcards):
    """Every table reads the aggregated metrics; orthogonal_approximation also the stage's."""
    extra = [APPROX_METRICS] if wildcards.name == "orthogonal_approximation" else []
    return [*METRICS, *extra]


def all_tables():
    return expand(
        "results/tables/{name}.{ext}", name=TABLE_SOURCES, ext=("md", "tex", "long.tex")
    )


# ---- the approximation stage: one job per cell of APPROX_CELLS (workflow/rules/approx.smk)


def approx_outputs():
    return [f"results/approx/{c.path}.parquet" for c in APPROX_CELLS]


def _approx_cell(wildcards):
    cell = Cell(
        wildcards.dataset,
        wildcards.arch,
        wildcards.variant,
        int(wildcards.depth),
        int(wildcards.seed),
    )
    if cell not in APPROX_CELLS:
        raise ValueError(
            f"results/approx/{cell.path}.parquet: {cell.path} is not a cell of the "
            "approximation stage (an identity-kind cell of the grid kept by `approx:`)"
        )
    return cell


def approx_cell_config_json(wildcards):
    """The identity cell's own config (train and metrics included): the stage reuses both."""
    return cell_config(config, _approx_cell(wildcards)).to_json()


def approx_skip_options_json():
    """Resolved options of the skips swapped in (a changed default reruns the stage)."""
    kinds = config["approx"]["kinds"]
    return json.dumps(
        {k: skip_options(k, config["skip_options"]) for k in kinds}, sort_keys=True
    )


def _dataset_spec(wildcards):
    return config["datasets"][wildcards.dataset]


def approx_gpus(wildcards):
    if config["train"]["device"] == "cpu":
        return 0
    return cluster.train_gpus(_dataset_spec(wildcards)["source"])


def approx_group(wildcards):
    return cluster.train_group(_dataset_spec(wildcards)["source"])


def approx_runtime(wildcards, attempt):
    """Fine-tuning is `approx.epochs` epochs of the cell's training set per kind."""
    spec = _dataset_spec(wildcards)
    return cluster.train_runtime_minutes(
        spec["source"],
        wildcards.arch,
        int(wildcards.depth),
        config["approx"]["epochs"] * len(config["approx"]["kinds"]),
        attempt=attempt,
        n_train=_n_train(wildcards.dataset),
    )


def approx_mem(wildcards):
    spec = _dataset_spec(wildcards)
    return cluster.train_mem_mb(
        spec["source"],
        wildcards.arch,
        int(wildcards.depth),
        n_train=_n_train(wildcards.dataset),
    )


# ---- the paper (workflow/rules/paper.smk): LaTeX source in paper/ of this checkout
PAPER_DIR = os.path.join(workflow.basedir, "paper")


def paper_source_hash():
    """sha256 over the (relative path, content) of every file of paper/; 16 hex digits."""
    digest = hashlib.sha256()
    for root, _, files in sorted(os.walk(PAPER_DIR)):
        for name in sorted(files):
            path = os.path.join(root, name)
            digest.update(os.path.relpath(path, PAPER_DIR).encode() + b"\0")
            with open(path, "rb") as f:
                digest.update(f.read() + b"\0")
    return digest.hexdigest()[:16]


def paper_target():
    """The paper's numbers always (results/paper is a DVC output), the paper itself when a
    TeX engine (latexmk, pdflatex) is on PATH."""
    pdf = [] if tex_engine() else ["results/paper/paper.pdf"]
    return ["results/paper/numbers.tex", *pdf]
