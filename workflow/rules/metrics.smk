rule extract_metrics:
    input:
        data="results/data/{dataset}.pt",
        manifest="results/data/{dataset}.manifest.json",
        snapshots=f"results/cells/{CELL}/snapshots.pt",
    output:
        metrics=f"results/cells/{CELL}/metrics.parquet",
        warp=f"results/cells/{CELL}/warp.parquet",
    log:
        f"results/logs/extract_metrics/{CELL}.log",
    group:
        cell_group
    conda:
        ENV
    threads: config["train"]["threads"]
    params:
        cfg=metrics_config_json,
        code=source_hash("metrics", "cell_metrics", "models", "skips"),
    shell:
        "python -m orthskip metrics --cell-config {params.cfg:q} --data {input.data}"
        " --manifest {input.manifest} --snapshots {input.snapshots}"
        " --out {output.metrics} --warp-out {output.warp} > {log} 2>&1"


rule aggregate:
    input:
        status=expand("{cell}/status.json", cell=cell_dirs()),
        history=expand("{cell}/history.parquet", cell=cell_dirs()),
        metrics=expand("{cell}/metrics.parquet", cell=cell_dirs()),
        warp=expand("{cell}/warp.parquet", cell=cell_dirs()),
    output:
        cells="results/metrics/cells.parquet",
        history="results/metrics/history.parquet",
        layers="results/metrics/layers.parquet",
        warp="results/metrics/warp.parquet",
    log:
        "results/logs/aggregate.log",
    conda:
        ENV
    params:
        outdir=lambda wildcards, output: os.path.dirname(output.cells),
        code=source_hash("aggregate"),
    shell:
        "python -m orthskip aggregate --status {input.status} --history {input.history}"
        " --metrics {input.metrics} --warp {input.warp}"
        " --out-dir {params.outdir} > {log} 2>&1"


rule dvc_summary:
    input:
        cells="results/metrics/cells.parquet",
    output:
        json="results/metrics/summary.json",
        csv="results/metrics/accuracy_vs_depth.csv",
    log:
        "results/logs/dvc_summary.log",
    conda:
        ENV
    params:
        code=source_hash("dvc_summary"),
    shell:
        "python -m orthskip dvc-summary --cells {input.cells} --json {output.json}"
        " --csv {output.csv} > {log} 2>&1"
