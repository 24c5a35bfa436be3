rule train:
    input:
        data="results/data/{dataset}.pt",
        manifest="results/data/{dataset}.manifest.json",
    output:
        history=f"results/cells/{CELL}/history.parquet",
        snapshots=f"results/cells/{CELL}/snapshots.pt",
        status=f"results/cells/{CELL}/status.json",
    log:
        f"results/logs/train/{CELL}.log",
    group:
        cell_group
    conda:
        ENV
    threads: config["train"]["threads"]
    resources:
        gpu=train_gpus,
        cpus_per_gpu=4,
        mem_mb=train_mem,
        runtime=train_runtime,
        # SIGTERM 2 min before the time limit: training checkpoints, the retry resumes.
        slurm_extra="--signal=TERM@120 --open-mode=append",
    params:
        cfg=train_config_json,
        outdir=lambda wildcards, output: os.path.dirname(output.status),
        code=source_hash("train", "models", "skips", "optim", "orth", "config"),
    shell:
        "python -m orthskip train --cell-config {params.cfg:q} --data {input.data}"
        " --manifest {input.manifest} --out {params.outdir} > {log} 2>&1"
