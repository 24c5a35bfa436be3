# code: orthskip/stages/prepare.py (prepare_dataset)
rule prepare_dataset:
    output:
        data="results/data/{dataset}.pt",
        manifest="results/data/{dataset}.manifest.json",
    log:
        "results/logs/prepare_dataset/{dataset}.log",
    conda:
        ENV
    params:
        spec=dataset_spec_json,
        code=code_fingerprint("prepare"),
    shell:
        "python -m orthskip prepare --name {wildcards.dataset} --spec {params.spec:q}"
        " --out {output.data} --manifest {output.manifest} > {log} 2>&1"
