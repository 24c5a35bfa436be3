# orthskip: does an orthogonal skip connection replace the identity in deep residual nets?
# Data -> train every (dataset x arch x variant x depth x seed) cell -> per-layer metrics
# -> aggregated Parquet -> figures, tables and the HTML report. Each rule runs one stage,
# `python -m orthskip COMMAND`; the comment above it names its module in orthskip/stages/.
from snakemake.utils import min_version

from orthskip.config.grid import WILDCARD_PATTERNS, check_yaml_syntax, prepare_config

min_version("9.0")


# The embedded default only when no --configfile is given: a config passed on the command
# line stands alone (keys it omits take the schema's defaults, never this file's values).
# Its syntax is checked first: Snakemake itself says only "not valid JSON or YAML", where
# this names the file, line and column (Snakemake reads a --configfile before this file).
if not workflow.overwrite_configfiles:
    check_yaml_syntax("config/config.yaml")

    configfile: "config/config.yaml"


# One check before any job: the schema (workflow/schemas/config.schema.yaml, its registry
# sections generated from the library) fills defaults and checks every key, then the
# cross-references; messages name the key and the allowed values.
prepare_config(config)


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


wildcard_constraints:
    **WILDCARD_PATTERNS,
    name="[a-z_]+",


include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/approx.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/paper.smk"


localrules:
    all,
    figure,
    figure_setting,
    table,
    findings,
    paper_numbers,
    paper,
    dvc_summary,
    aggregate_approx,


rule all:
    default_target: True
    input:
        all_figures(),
        all_tables(),
        "results/tables/findings.md",
        "results/metrics/summary.json",
        "results/metrics/accuracy_vs_depth.csv",
        # Every file the pipeline promises, not only the final ones: Snakemake does not
        # make a missing intermediate file again while what was made from it is up to date,
        # so a plain rerun would not notice a deleted status.json or cells.parquet.
        METRICS,
        APPROX_METRICS,
        cell_files(),
        approx_outputs(),
        # numbers.tex; paper.pdf where latexmk and pdflatex are on PATH (`make paper`)
        paper_target(),
