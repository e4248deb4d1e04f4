# Stage "activations": one trunk pass per model and split, every requested layer and role, in verified shards.


rule activations:
    input:
        model=f"{RESULTS}/models/{{model}}",
        examples=f"{RESULTS}/data/{{split}}.parquet",
    output:
        directory(f"{RESULTS}/activations/{{model}}/{{split}}"),
    params:
        layers=activation_layers,
        settings=activation_settings,
        dtype=config["dtype"],
        code=script_code("extract_activations"),
    wildcard_constraints:
        split="|".join(BRIDGE_SPLITS),
    # One thread per job, and ahead of the causal jobs (the bridges and injections wait for the shards): a
    # second thread speeds an extraction up far less than twofold, and a 2-thread job waits for both cores
    # while a 1-thread job holds one, leaving the other idle.
    threads: 1
    priority: 1
    resources:
        mem_mb=model_memory(base_mb=4000),
        gpu=GPUS,
    log:
        "logs/activations/{model}/{split}.log",
    benchmark:
        f"{RESULTS}/benchmarks/activations/{{model}}/{{split}}.tsv"
    conda:
        "../envs/models.yaml"
    script:
        "../scripts/extract_activations.py"
