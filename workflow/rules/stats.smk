# Stage "stats": paired CIs and tests per seed and across seeds (one job per layer pair x method), then one summary.


rule condition_stats:
    input:
        injections=seed_injections,
        eval=f"{RESULTS}/data/eval.parquet",
    output:
        per_seed=f"{RESULTS}/stats/{{pair}}/{{method}}/per_seed.parquet",
        across_seeds=f"{RESULTS}/stats/{{pair}}/{{method}}/across_seeds.parquet",
    params:
        settings=STATS_SETTINGS,
        injection=injection_settings,
        code=script_code("condition_stats"),
    threads: 1
    resources:
        mem_mb=3000,
    log:
        "logs/stats/{pair}/{method}.log",
    benchmark:
        f"{RESULTS}/benchmarks/stats/{{pair}}/{{method}}.tsv"
    conda:
        "../envs/stats.yaml"
    script:
        "../scripts/condition_stats.py"


rule stats_summary:
    input:
        per_seed=stats_tables("per_seed"),
        across_seeds=stats_tables("across_seeds"),
    output:
        per_seed=f"{RESULTS}/stats/per_seed.parquet",
        across_seeds=f"{RESULTS}/stats/across_seeds.parquet",
        markdown=report(f"{RESULTS}/stats/summary.md", caption="../report/stats_summary.rst", category="Injection"),
    params:
        confidence=config["stats"]["confidence"],
        code=script_code("stats_summary"),
    log:
        "logs/stats/summary.log",
    conda:
        "../envs/stats.yaml"
    script:
        "../scripts/stats_summary.py"


rule verdict:
    input:
        across_seeds=f"{RESULTS}/stats/across_seeds.parquet",
        sender=f"{RESULTS}/causal/sender.parquet",
        receiver=f"{RESULTS}/causal/receiver.parquet",
        # the models' depths place the pairs and layers the tables must cover (ancient: nothing else of them)
        sender_model=ancient(f"{RESULTS}/models/sender"),
        receiver_model=ancient(f"{RESULTS}/models/receiver"),
    output:
        table=f"{RESULTS}/stats/verdict.parquet",
        markdown=report(f"{RESULTS}/stats/verdict.md", caption="../report/verdict.rst", category="Injection"),
    params:
        settings=config["stats"],
        expected=verdict_expectations,
        code=script_code("verdict"),
    log:
        "logs/stats/verdict.log",
    conda:
        "../envs/stats.yaml"
    script:
        "../scripts/verdict.py"
