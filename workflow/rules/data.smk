# Stage "data": synthetic multi-hop splits and their statistics (rows, prompt lengths, chance levels).


rule dataset_split:
    output:
        f"{RESULTS}/data/{{split}}.parquet",
    params:
        data=split_params,
        code=script_code("dataset_split"),
    log:
        "logs/data/{split}.log",
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/dataset_split.py"


rule dataset_stats:
    input:
        splits=expand(f"{RESULTS}/data/{{split}}.parquet", split=SPLITS),
        models=expand(f"{RESULTS}/models/{{model}}", model=MODELS),
    output:
        table=report(f"{RESULTS}/data/stats.parquet", caption="../report/dataset_stats.rst", category="Data"),
        markdown=report(f"{RESULTS}/data/stats.md", caption="../report/dataset_stats.rst", category="Data"),
    params:
        code=script_code("dataset_stats"),
    log:
        "logs/data/stats.log",
    conda:
        "../envs/models.yaml"
    script:
        "../scripts/dataset_stats.py"
