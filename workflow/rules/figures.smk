# code: orthskip/stages/figures.py (make_figure)
rule figure:
    input:
        figure_inputs,
    output:
        pdf="results/figures/{name}.pdf",
        png=report(
            "results/figures/{name}.png",
            caption="../report/figure.rst",
            category="Figures",
            subcategory="{name}",
        ),
    log:
        "results/logs/figure/{name}.log",
    conda:
        ENV
    params:
        metrics_dir=lambda wildcards, input: os.path.dirname(input[0]),
        code=code_fingerprint("figure"),
    shell:
        "python -m orthskip figure {wildcards.name} --metrics-dir {params.metrics_dir}"
        " --pdf {output.pdf} --png {output.png} > {log} 2>&1"


# code: orthskip/stages/figures.py (make_figure): the report figures of PER_SETTING, one
# file per (dataset, arch) so that none grows with the grid beyond a page
rule figure_setting:
    input:
        METRICS,
    output:
        pdf="results/figures/{name}/{dataset}/{arch}.pdf",
        png=report(
            "results/figures/{name}/{dataset}/{arch}.png",
            caption="../report/figure.rst",
            category="Figures",
            subcategory="{name}",
            labels={"figure": "{name}", "setting": "{dataset} / {arch}"},
        ),
    log:
        "results/logs/figure/{name}/{dataset}/{arch}.log",
    conda:
        ENV
    params:
        metrics_dir=lambda wildcards, input: os.path.dirname(input[0]),
        code=code_fingerprint("figure"),
    shell:
        "python -m orthskip figure {wildcards.name} --metrics-dir {params.metrics_dir}"
        " --dataset {wildcards.dataset:q} --arch {wildcards.arch:q}"
        " --pdf {output.pdf:q} --png {output.png:q} > {log:q} 2>&1"


# code: orthskip/stages/tables.py (make_table)
rule table:
    input:
        table_inputs,
    output:
        md=report(
            "results/tables/{name}.md",
            caption="../report/table.rst",
            category="Tables",
            subcategory="{name}",
        ),
        tex="results/tables/{name}.tex",
        # the same as a longtable; make_table writes it beside tex
        long_tex="results/tables/{name}.long.tex",
    log:
        "results/logs/table/{name}.log",
    conda:
        ENV
    params:
        metrics_dir=lambda wildcards, input: os.path.dirname(input[0]),
        code=code_fingerprint("table"),
    shell:
        "python -m orthskip table {wildcards.name} --metrics-dir {params.metrics_dir}"
        " --md {output.md} --tex {output.tex} > {log} 2>&1"


# code: orthskip/stages/tables.py (write_findings)
rule findings:
    input:
        METRICS,
        APPROX_METRICS,
    output:
        report(
            "results/tables/findings.md",
            caption="../report/findings.rst",
            category="Tables",
            subcategory="findings",
        ),
    log:
        "results/logs/findings.log",
    conda:
        ENV
    params:
        metrics_dir=lambda wildcards, input: os.path.dirname(input[0]),
        code=code_fingerprint("findings"),
    shell:
        "python -m orthskip findings --metrics-dir {params.metrics_dir} --out {output}"
        " > {log} 2>&1"
