# Stage "causal": does the sender's own answer depend on the states the bridges translate? (reviewer's request)
# And does the receiver read from the sites where bridges inject, and what could a perfect bridge deliver there?


rule sender_causal:
    input:
        model=f"{RESULTS}/models/sender",
        eval=f"{RESULTS}/data/eval.parquet",
        eval_states=f"{RESULTS}/activations/sender/eval",
        train_states=f"{RESULTS}/activations/sender/bridge_train",
    output:
        examples=f"{RESULTS}/causal/sender_examples.parquet",
        patching=f"{RESULTS}/causal/sender_patching_examples.parquet",
        table=f"{RESULTS}/causal/sender.parquet",
        markdown=report(f"{RESULTS}/causal/sender.md", caption="../report/causal_sender.rst", category="Causal"),
    params:
        layers=bridged_sender_layers,
        roles=config["activations"]["roles"],
        stats=STATS_SETTINGS,
        dtype=config["dtype"],
        code=script_code("sender_causal"),
    threads: 1
    resources:
        mem_mb=model_memory("sender"),
        gpu=GPUS,
    log:
        "logs/causal/sender.log",
    benchmark:
        f"{RESULTS}/benchmarks/causal/sender.tsv"
    conda:
        "../envs/models.yaml"
    script:
        "../scripts/sender_causal.py"


rule receiver_causal:
    input:
        unpack(receiver_causal_inputs),
    output:
        patching=f"{RESULTS}/causal/receiver_patching_examples.parquet",
        self_patch=f"{RESULTS}/causal/receiver_self_patch_examples.parquet",
        table=f"{RESULTS}/causal/receiver.parquet",
        markdown=report(f"{RESULTS}/causal/receiver.md", caption="../report/causal_receiver.rst", category="Causal"),
    params:
        layers=bridged_receiver_layers,
        roles=config["injection"]["roles"],
        stats=STATS_SETTINGS,
        dtype=config["dtype"],
        code=script_code("receiver_causal"),
    threads: 1
    resources:
        mem_mb=model_memory("receiver"),
        gpu=GPUS,
    log:
        "logs/causal/receiver.log",
    benchmark:
        f"{RESULTS}/benchmarks/causal/receiver.tsv"
    conda:
        "../envs/models.yaml"
    script:
        "../scripts/receiver_causal.py"
