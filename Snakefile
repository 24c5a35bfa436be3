# orthskip: does an orthogonal skip connection replace the identity in deep residual nets?
# Data -> train every (dataset x arch x skip x depth x seed) cell -> per-layer metrics
# -> aggregated Parquet -> figures, tables and the HTML report.
from snakemake.utils import min_version, validate

from orthskip.config import check_grid, check_options, check_top_keys

min_version("9.0")


configfile: "config/config.yaml"


# Registry names first (the messages list the allowed values), then types and defaults.
check_top_keys(config)
check_grid(config)
validate(config, "workflow/schemas/config.schema.yaml")
check_options(config)


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


wildcard_constraints:
    dataset="[A-Za-z0-9_-]+",
    arch="[a-z0-9_]+",
    skip="[a-z_]+",
    depth="[0-9]+",
    seed="[0-9]+",
    name="[a-z_]+",


include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/figures.smk"


localrules:
    all,
    figure,
    table,
    dvc_summary,


rule all:
    default_target: True
    input:
        all_figures(),
        all_tables(),
        "results/metrics/summary.json",
        "results/metrics/accuracy_vs_depth.csv",
