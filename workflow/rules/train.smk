rule train:
    input:
        data="results/data/{dataset}.pt",
        manifest="results/data/{dataset}.manifest.json",
    output:
        history=f"results/cells/{CELL}/history.parquet",
        snapshots=f"results/cells/{CELL}/snapshots.pt",
        status=f"results/cells/{CELL}/status.json",
    params:
        cfg=train_config_json,
        outdir=lambda wildcards, output: os.path.dirname(output.status),
        code=source_hash("train", "models", "skips", "optim", "orth", "config"),
    threads: config["train"]["threads"]
    resources:
        gpu=train_gpus,
    log:
        f"results/logs/train/{CELL}.log",
    shell:
        "orthskip train --cell-config {params.cfg:q} --data {input.data}"
        " --manifest {input.manifest} --out {params.outdir} > {log} 2>&1"
