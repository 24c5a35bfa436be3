# code: orthskip/stages/metrics.py (metrics_pack)
for i, (members, keys) in enumerate(PACKS.items()):

    rule:
        name:
            pack_rule_name("extract_metrics", i)
        input:
            data=pack_data,
            manifest=pack_manifest,
            snapshots=member_files("results/cells/{cell}/snapshots.pt", members),
        output:
            metrics=member_files("results/cells/{cell}/metrics.parquet", members),
            warp=member_files("results/cells/{cell}/warp.parquet", members),
        log:
            pack=pack_log("extract_metrics", members),
            members=member_files("results/logs/extract_metrics/{cell}.log", members),
        wildcard_constraints:
            pack=pack_pattern(keys),
        group:
            cell_group
        conda:
            ENV
        threads: config["train"]["threads"]
        params:
            cfg=pack_config_json(members, with_metrics=True),
            code=code_fingerprint("metrics-pack"),
        shell:
            "python -m orthskip metrics-pack --pack-config - --data {input.data}"
            " --manifest {input.manifest} --snapshots {input.snapshots}"
            " --outs {output.metrics} --warp-outs {output.warp} --logs {log.members}"
            " <<< {params.cfg:q} > {log.pack} 2>&1"


# code: orthskip/stages/aggregate.py (aggregate)
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
        code=code_fingerprint("aggregate"),
    shell:
        "python -m orthskip aggregate --status {input.status} --history {input.history}"
        " --metrics {input.metrics} --warp {input.warp}"
        " --out-dir {params.outdir} > {log} 2>&1"


# code: orthskip/stages/dvc_summary.py (write_summary)
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
        code=code_fingerprint("dvc-summary"),
    shell:
        "python -m orthskip dvc-summary --cells {input.cells} --json {output.json}"
        " --csv {output.csv} > {log} 2>&1"
