# Stage "figures": each figure its own target (PDF for print, PNG in the report), captions in workflow/report/.


rule figure_dataset:
    input:
        stats=f"{RESULTS}/data/stats.parquet",
        accuracy=f"{RESULTS}/models/accuracy.parquet",
    output:
        pdf=f"{RESULTS}/figures/dataset.pdf",
        png=report(f"{RESULTS}/figures/dataset.png", caption="../report/figure_dataset.rst", category="Figures"),
    params:
        code=script_code("figure"),
    log:
        "logs/figures/dataset.log",
    conda:
        "../envs/figures.yaml"
    script:
        "../scripts/figure.py"


rule figure_bridge_quality:
    input:
        metrics=f"{RESULTS}/bridges/metrics.parquet",
    output:
        pdf=f"{RESULTS}/figures/bridge_quality.pdf",
        png=report(f"{RESULTS}/figures/bridge_quality.png", caption="../report/figure_bridge_quality.rst",
                   category="Figures"),
    params:
        code=script_code("figure"),
    log:
        "logs/figures/bridge_quality.log",
    conda:
        "../envs/figures.yaml"
    script:
        "../scripts/figure.py"


rule figure_injection_sweep:
    input:
        across_seeds=f"{RESULTS}/stats/across_seeds.parquet",
    output:
        pdf=f"{RESULTS}/figures/injection_sweep.pdf",
        png=report(f"{RESULTS}/figures/injection_sweep.png", caption="../report/figure_injection_sweep.rst",
                   category="Figures"),
    params:
        method=config["figures"]["method"],
        code=script_code("figure"),
    log:
        "logs/figures/injection_sweep.log",
    conda:
        "../envs/figures.yaml"
    script:
        "../scripts/figure.py"


rule figure_replacement:
    input:
        across_seeds=f"{RESULTS}/stats/across_seeds.parquet",
    output:
        pdf=f"{RESULTS}/figures/replacement.pdf",
        png=report(f"{RESULTS}/figures/replacement.png", caption="../report/figure_replacement.rst",
                   category="Figures"),
    params:
        method=config["figures"]["method"],
        code=script_code("figure"),
    log:
        "logs/figures/replacement.log",
    conda:
        "../envs/figures.yaml"
    script:
        "../scripts/figure.py"


rule figure_causal_sender:
    input:
        effects=f"{RESULTS}/causal/sender.parquet",
    output:
        pdf=f"{RESULTS}/figures/causal_sender.pdf",
        png=report(f"{RESULTS}/figures/causal_sender.png", caption="../report/figure_causal_sender.rst",
                   category="Figures"),
    params:
        code=script_code("figure"),
    log:
        "logs/figures/causal_sender.log",
    conda:
        "../envs/figures.yaml"
    script:
        "../scripts/figure.py"


rule figure_causal_receiver:
    input:
        effects=f"{RESULTS}/causal/receiver.parquet",
    output:
        pdf=f"{RESULTS}/figures/causal_receiver.pdf",
        png=report(f"{RESULTS}/figures/causal_receiver.png", caption="../report/figure_causal_receiver.rst",
                   category="Figures"),
    params:
        code=script_code("figure"),
    log:
        "logs/figures/causal_receiver.log",
    conda:
        "../envs/figures.yaml"
    script:
        "../scripts/figure.py"


rule figure_asymmetric:
    input:
        across_seeds=f"{RESULTS}/stats/across_seeds.parquet",
    output:
        pdf=f"{RESULTS}/figures/asymmetric.pdf",
        png=report(f"{RESULTS}/figures/asymmetric.png", caption="../report/figure_asymmetric.rst", category="Figures"),
    params:
        methods=config["injection"]["methods"],
        code=script_code("figure"),
    log:
        "logs/figures/asymmetric.log",
    conda:
        "../envs/figures.yaml"
    script:
        "../scripts/figure.py"


rule figure_relay:
    input:
        across_seeds=f"{RESULTS}/stats/across_seeds.parquet",
    output:
        pdf=f"{RESULTS}/figures/relay.pdf",
        png=report(f"{RESULTS}/figures/relay.png", caption="../report/figure_relay.rst", category="Figures"),
    params:
        methods=config["injection"]["methods"],
        code=script_code("figure"),
    log:
        "logs/figures/relay.log",
    conda:
        "../envs/figures.yaml"
    script:
        "../scripts/figure.py"
