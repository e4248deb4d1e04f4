# Stage "injection": bridged sender states injected into the receiver on eval, every condition, per example.


rule injection:
    input:
        unpack(injection_inputs),
    output:
        f"{RESULTS}/injection/{{pair}}/{{method}}/seed{{seed}}.parquet",
    params:
        settings=injection_settings,
        dtype=config["dtype"],
        code=script_code("inject"),
    threads: 1
    resources:
        mem_mb=model_memory("receiver", base_mb=3000),
        gpu=GPUS,
    log:
        "logs/injection/{pair}/{method}/seed{seed}.log",
    benchmark:
        f"{RESULTS}/benchmarks/injection/{{pair}}/{{method}}/seed{{seed}}.tsv"
    conda:
        "../envs/models.yaml"
    script:
        "../scripts/inject.py"
