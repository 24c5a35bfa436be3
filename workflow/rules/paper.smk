# code: orthskip/stages/paper.py (write_numbers)
rule paper_numbers:
    input:
        METRICS,
        APPROX_METRICS,
    output:
        "results/paper/numbers.tex",
    log:
        "results/logs/paper_numbers.log",
    conda:
        ENV
    params:
        metrics_dir=lambda wildcards, input: os.path.dirname(input[0]),
        code=code_fingerprint("paper-numbers"),
    shell:
        "python -m orthskip paper-numbers --metrics-dir {params.metrics_dir} --out {output}"
        " > {log} 2>&1"


# code: orthskip/stages/paper.py (build_paper). The LaTeX source is paper/ of this checkout
# (PAPER_DIR): not an input, whose absolute path would differ in every clone and rerun the
# rule after a `dvc pull`, but the hash of its files as a param (an edit reruns the rule).
rule paper:
    input:
        numbers="results/paper/numbers.tex",
        figures=expand("results/figures/{name}.pdf", name=paper_figures()),
        tables=expand("results/tables/{name}.tex", name=PAPER_TABLES),
        long_tables=expand("results/tables/{name}.long.tex", name=PAPER_TABLES),
    output:
        report(
            "results/paper/paper.pdf",
            caption="../report/paper.rst",
            category="Paper",
        ),
    log:
        "results/logs/paper.log",
    conda:
        ENV
    params:
        # a function of input: not compared between runs (the path differs per clone)
        source=lambda wildcards, input: PAPER_DIR,
        source_hash=paper_source_hash(),
        figures_dir=lambda wildcards, input: os.path.dirname(input.figures[0]),
        tables_dir=lambda wildcards, input: os.path.dirname(input.tables[0]),
        code=code_fingerprint("paper"),
    shell:
        "python -m orthskip paper --source {params.source:q} --numbers {input.numbers}"
        " --figures-dir {params.figures_dir} --tables-dir {params.tables_dir} --out {output}"
        " > {log} 2>&1"
