# Stage "kv": the KV channel (docs/kv.md). One map per kind fitted between both models' caches, one injection
# job per kind x number of blocks sent, and its statistics, which join the residual channel's tables.


rule kv_map:
    input:
        sender=f"{RESULTS}/models/sender",
        receiver=f"{RESULTS}/models/receiver",
        bridge_train=f"{RESULTS}/data/bridge_train.parquet",
        bridge_val=f"{RESULTS}/data/bridge_val.parquet",
    output:
        directory(f"{RESULTS}/kv/maps/{{kv_map}}"),
    params:
        settings=kv_map_settings,
        dtype=config["dtype"],
        code=script_code("fit_kv_map"),
    threads: 1
    resources:
        mem_mb=kv_memory,
        gpu=GPUS,
    log:
        "logs/kv/maps/{kv_map}.log",
    benchmark:
        f"{RESULTS}/benchmarks/kv/maps/{{kv_map}}.tsv"
    conda:
        "../envs/models.yaml"
    script:
        "../scripts/fit_kv_map.py"


rule kv_injection:
    input:
        sender=f"{RESULTS}/models/sender",
        receiver=f"{RESULTS}/models/receiver",
        eval=f"{RESULTS}/data/eval.parquet",
        map=f"{RESULTS}/kv/maps/{{kv_map}}",
    output:
        f"{RESULTS}/kv/injection/{{kv_map}}/{{sent}}.parquet",
    params:
        settings=SETTINGS.kv.injection_params(),
        blocks=kv_blocks_sent,
        dtype=config["dtype"],
        code=script_code("kv_inject"),
    threads: 1
    resources:
        mem_mb=kv_memory,
        gpu=GPUS,
    log:
        "logs/kv/injection/{kv_map}/{sent}.log",
    benchmark:
        f"{RESULTS}/benchmarks/kv/injection/{{kv_map}}/{{sent}}.tsv"
    conda:
        "../envs/models.yaml"
    script:
        "../scripts/kv_inject.py"


rule kv_stats:
    input:
        injection=f"{RESULTS}/kv/injection/{{kv_map}}/{{sent}}.parquet",
        eval=f"{RESULTS}/data/eval.parquet",
    output:
        per_seed=f"{RESULTS}/kv/stats/{{kv_map}}/{{sent}}/per_seed.parquet",
        across_seeds=f"{RESULTS}/kv/stats/{{kv_map}}/{{sent}}/across_seeds.parquet",
    params:
        settings=STATS_SETTINGS,
        conditions=list(config["kv"]["conditions"]),
        code=script_code("kv_stats"),
    threads: 1
    resources:
        mem_mb=3000,
    log:
        "logs/kv/stats/{kv_map}/{sent}.log",
    benchmark:
        f"{RESULTS}/benchmarks/kv/stats/{{kv_map}}/{{sent}}.tsv"
    conda:
        "../envs/stats.yaml"
    script:
        "../scripts/kv_stats.py"
