# Stage "bridges": one job per layer pair x method x seed, then every job's metrics in one table.


rule bridge:
    input:
        unpack(bridge_inputs),
    output:
        directory(f"{RESULTS}/bridges/{{pair}}/{{method}}/seed{{seed}}"),
    params:
        settings=bridge_settings,
        roles=config["activations"]["roles"],
        fit=bridge_fit,
        code=script_code("fit_bridge"),
    threads: 1
    resources:
        mem_mb=bridge_memory,
        gpu=bridge_gpus,
    log:
        "logs/bridges/{pair}/{method}/seed{seed}.log",
    benchmark:
        f"{RESULTS}/benchmarks/bridges/{{pair}}/{{method}}/seed{{seed}}.tsv"
    conda:
        "../envs/models.yaml"
    script:
        "../scripts/fit_bridge.py"


rule bridge_metrics:
    input:
        bridge_dirs,
    output:
        table=f"{RESULTS}/bridges/metrics.parquet",
        markdown=report(f"{RESULTS}/bridges/metrics.md", caption="../report/bridge_metrics.rst",
                        category="Bridges"),
    params:
        code=script_code("bridge_metrics"),
    log:
        "logs/bridges/metrics.log",
    conda:
        "../envs/models.yaml"
    script:
        "../scripts/bridge_metrics.py"
