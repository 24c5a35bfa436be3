# The orthogonal approximation of trained identity cells (docs/method.md, "The orthogonal
# approximation"): one job per cell of APPROX_CELLS, then one cheap concatenation.


# code: orthskip/stages/approx.py (approximate_cell)
rule approx_cell:
    input:
        data="results/data/{dataset}.pt",
        manifest="results/data/{dataset}.manifest.json",
        snapshots=f"results/cells/{CELL}/snapshots.pt",
        status=f"results/cells/{CELL}/status.json",
    output:
        f"results/approx/{CELL}.parquet",
    log:
        f"results/logs/approx/{CELL}.log",
    group:
        approx_group
    conda:
        ENV
    threads: config["train"]["threads"]
    resources:
        gpu=approx_gpus,
        cpus_per_gpu=4,
        mem_mb=approx_mem,
        runtime=approx_runtime,
    params:
        cfg=approx_cell_config_json,
        skip_options=approx_skip_options_json(),
        epochs=config["approx"]["epochs"],
        kinds=config["approx"]["kinds"],
        correction=(
            "--correction" if config["approx"]["correction"] else "--no-correction"
        ),
        code=code_fingerprint("approx-cell"),
    shell:
        "python -m orthskip approx-cell --cell-config {params.cfg:q} --data {input.data}"
        " --manifest {input.manifest} --snapshots {input.snapshots} --status {input.status}"
        " --out {output} --epochs {params.epochs} --kinds {params.kinds}"
        " {params.correction} --skip-options {params.skip_options:q} > {log} 2>&1"


# code: orthskip/stages/aggregate.py (aggregate_approx)
rule aggregate_approx:
    input:
        approx_outputs(),
    output:
        "results/metrics/approx.parquet",
    log:
        "results/logs/aggregate_approx.log",
    conda:
        ENV
    params:
        code=code_fingerprint("approx-aggregate"),
    shell:
        "python -m orthskip approx-aggregate --inputs {input} --out {output} > {log} 2>&1"
