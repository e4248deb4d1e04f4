# Stage "models": the shared micro tokenizer, sender and receiver, and their accuracy on eval.


rule micro_tokenizer:
    input:
        f"{RESULTS}/data/lm_train.parquet",
    output:
        directory(f"{RESULTS}/models/tokenizer"),
    params:
        vocab_size=config["models"]["tokenizer"]["vocab_size"],
        code=script_code("micro_tokenizer"),
    log:
        "logs/models/tokenizer.log",
    conda:
        "../envs/models.yaml"
    script:
        "../scripts/micro_tokenizer.py"


checkpoint model:
    input:
        unpack(model_inputs),
    output:
        directory(f"{RESULTS}/models/{{model}}"),
    params:
        spec=model_spec,
        lm_train=lm_train_params,
        tokenizer=config["models"]["tokenizer"],
        shipped=shipped_weights,
        code=script_code("build_model"),
    # One thread: with shipped weights this job only copies them, and a 2-thread job waits for both cores
    # while a 1-thread job holds one, leaving the other idle; two trainings from scratch run side by side at
    # one thread each, the thread count the shipped weights were trained at.
    threads: 1
    resources:
        mem_mb=build_memory,
        gpu=GPUS,
    log:
        "logs/models/{model}.log",
    benchmark:
        f"{RESULTS}/benchmarks/models/{{model}}.tsv"
    conda:
        "../envs/models.yaml"
    script:
        "../scripts/build_model.py"


rule model_accuracy:
    input:
        model=f"{RESULTS}/models/{{model}}",
        eval=f"{RESULTS}/data/eval.parquet",
    output:
        f"{RESULTS}/models/accuracy_{{model}}.parquet",
    params:
        dtype=config["dtype"],
        code=script_code("model_accuracy"),
    threads: 1  # as model and activations: beside other 1-thread jobs rather than alone on both cores
    resources:
        mem_mb=model_memory(),
        gpu=GPUS,
    log:
        "logs/models/accuracy_{model}.log",
    benchmark:
        f"{RESULTS}/benchmarks/models/accuracy_{{model}}.tsv"
    conda:
        "../envs/models.yaml"
    script:
        "../scripts/model_accuracy.py"


rule accuracy_summary:
    input:
        expand(f"{RESULTS}/models/accuracy_{{model}}.parquet", model=MODELS),
    output:
        table=f"{RESULTS}/models/accuracy.parquet",
        markdown=report(f"{RESULTS}/models/accuracy.md", caption="../report/accuracy.rst", category="Models"),
    params:
        code=script_code("accuracy_summary"),
    log:
        "logs/models/accuracy_summary.log",
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/accuracy_summary.py"
