# code: orthskip/stages/train.py (train_pack)
# One job per pack (execution.pack): its members train in one process, those of one depth
# as one vectorised computation, each writing its own cell directory. One rule per members
# tuple.
for i, (members, keys) in enumerate(PACKS.items()):

    rule:
        name:
            pack_rule_name("train", i)
        input:
            data=pack_data,
            manifest=pack_manifest,
        output:
            history=member_files("results/cells/{cell}/history.parquet", members),
            snapshots=member_files("results/cells/{cell}/snapshots.pt", members),
            status=member_files("results/cells/{cell}/status.json", members),
        log:
            pack=pack_log("train", members),
            members=member_files("results/logs/train/{cell}.log", members),
        wildcard_constraints:
            pack=pack_pattern(keys),
        group:
            cell_group
        conda:
            ENV
        threads: config["train"]["threads"]
        resources:
            gpu=train_gpus,
            cpus_per_gpu=4,
            mem_mb=train_mem(members),
            runtime=train_runtime(members),
            # SIGTERM 2 min before the time limit: training checkpoints, the retry resumes.
            slurm_extra="--signal=TERM@120 --open-mode=append",
        params:
            cfg=pack_config_json(members, with_metrics=False),
            outdirs=lambda wildcards, output: [
                os.path.dirname(p) for p in output.status
            ],
            code=code_fingerprint("train-pack"),
            sequential=sequential_flag,
        shell:
            "python -m orthskip train-pack --pack-config - --data {input.data}"
            " --manifest {input.manifest} --outs {params.outdirs} --logs {log.members}"
            " {params.sequential} <<< {params.cfg:q} > {log.pack} 2>&1"
