# Config validation (at parse time, before any job) and input/params functions.
import sys
from pathlib import Path

# The library lives in src/; rule scripts put it on their path the same way (first line of each).
SRC = str(Path(workflow.basedir).parent / "src")
if SRC not in sys.path:
    sys.path.insert(0, SRC)

import yaml
from snakemake.logging import logger

from actbridge.catalog import figure_styles, item_files, validate_config
from actbridge.config import ConfigError, model_kind, routes_over_base
from actbridge.settings import Settings
from actbridge.schemas import BASELINE
from actbridge.stats.paired import StatsSettings
from actbridge.data.worlds import SPLITS
from actbridge.bridges.methods import BRIDGE_METHODS
from actbridge.fingerprint import script_fingerprint
from actbridge.report import FIGURES
from actbridge.activations.layers import layer_pairs, layers_for, pair_name, parse_pair, resolve_layers
from actbridge.models.preflight import (built_from, device_problem, hf_snapshot_problem, model_problems,
                                       read_gguf_header)
from actbridge.models.record import recorded_shape, recorded_weights_held_bytes
from actbridge.kv import kv_method
from actbridge.kv.maps import KV_MAPS, shapes_problem
from actbridge.kv.shapes import cache_problem, cache_shape

# The Snakefile's configfile, which every --configfile is merged over.
BASE_CONFIG = "config/config.yaml"
try:
    # --configfile config/pythia.yaml names models by hub id: that replaces the default micro specs
    with open(BASE_CONFIG, encoding="utf-8") as handle:
        config = validate_config(routes_over_base(config, yaml.safe_load(handle)))
except ConfigError as error:
    raise WorkflowError(str(error)) from None
SETTINGS = Settings.from_config(config)
ITEM_FILES = item_files(config)
FIGURE_STYLES = figure_styles(config)
# the stats.* keys the statistics jobs read; the verdict alone reads the rest (metric, power)
STATS_SETTINGS = StatsSettings.keys_of(config["stats"])

MODELS = ("sender", "receiver")
BRIDGE_SPLITS = ("bridge_train", "bridge_val", "eval")
RESULTS = "results"
# GPUs a model-running job asks its scheduler for (the SLURM executor turns this into --gpus):
# one where the config asks for CUDA; none for cpu, and none for auto, which uses a GPU only if one is there.
GPUS = 1 if config["device"] == "cuda" else 0


wildcard_constraints:
    split="|".join(SPLITS),
    model="|".join(MODELS),
    pair=r"s\d+-r\d+",
    method="|".join(config["bridge"]["methods"]),
    seed=r"\d+",
    kv_map="|".join(KV_MAPS.names()),
    sent=r"all|\d+",


def model_code_path(wildcards):
    """The model rule's code path for the job's model: training a micro model, or resolving a named one."""
    return "micro" if model_kind(model_spec(wildcards)) == "micro" else "named"


def bridge_code_path(wildcards):
    """The bridge rule's code path for the job's method: an offline fit, or one that also runs the receiver."""
    return "through_receiver" if BRIDGE_METHODS[wildcards.method].through_receiver else "offline"


# Scripts that run one code path per kind of job: the job's kind, and per kind the modules (under src/actbridge/)
# only that path imports. A job's fingerprint leaves out what only the other paths import: converting a named
# model never reruns for an edit to the micro trainer (nor the data generator, nor the scoring its held-out log
# uses), training never for one to the conversion, and a closed-form bridge never for one to the scoring engine
# that a bridge trained through the receiver runs.
CODE_PATHS = {
    "build_model": (model_code_path, {"micro": ["models/micro.py"], "named": ["models/conversion.py"]}),
    "fit_bridge": (bridge_code_path, {"offline": [], "through_receiver": ["bridges/through_receiver.py",
                                                                      "models/loading.py"]}),
}


def script_code(script):
    """Fingerprint of the library code a rule's script runs: its import closure (see actbridge.fingerprint).

    Snakemake's code trigger sees only the script itself, so each job passes this as a param: changing
    the science it calls reruns it, as editing its script would; editing comments and docstrings does not.
    Of the conditions and bridge methods, only the configured ones count: adding an item reruns nothing.
    For a script of CODE_PATHS, a function of the job's wildcards: the closure of the path the job takes.
    """
    path = Path(workflow.basedir) / "scripts" / f"{script}.py"
    if script not in CODE_PATHS:
        return script_fingerprint(path, items=ITEM_FILES)
    kind_of, modules = CODE_PATHS[script]
    package = Path(SRC) / "actbridge"
    codes = {kind: script_fingerprint(path, items=ITEM_FILES, not_taken=[
                 package / module for other, others in modules.items() if other != kind
                 for module in others if module not in own])
             for kind, own in modules.items()}

    def code_of_path(wildcards):
        return codes[kind_of(wildcards)]

    return code_of_path


# What a model-running job needs beside its model's weights: activations are bounded by batch_tokens and the
# logits by actbridge.models.heads.LOGIT_BUDGET_BYTES, whatever the vocabulary (benchmarks/scoring_memory.py).
JOB_MEMORY_BESIDE_WEIGHTS_MB = 2500
# What CUDA's libraries and context hold in host memory once a job touches the GPU.
CUDA_HOST_MB = 3000 if GPUS else 0


def model_memory(model=None, base_mb=3000):
    """``mem_mb`` of a job that runs ``model`` (default: the job's ``{model}`` wildcard): ``base_mb`` for micro
    models, a named model's recorded weights in the run's dtype plus what the job needs beside them."""

    def mem_mb(wildcards):
        held = recorded_weights_held_bytes(f"{RESULTS}/models/{model or wildcards.model}", config["dtype"])
        return base_mb if held is None else max(base_mb, held // 2**20 + JOB_MEMORY_BESIDE_WEIGHTS_MB + CUDA_HOST_MB)

    return mem_mb


def build_memory(wildcards):
    """``mem_mb`` of the model rule: a GGUF file is de-quantized to float32 in memory (its tensors' elements
    times 4 bytes, from the header), everything else is trained small, copied or only recorded."""
    spec = config["models"][wildcards.model]
    if "gguf_file" not in spec:
        return 4000
    try:
        header = read_gguf_header(Path(spec["path"]).expanduser() / spec["gguf_file"])
    except (OSError, ValueError):  # preflight names the key; the job then fails on its own message
        return 4000
    return max(4000, header.float32_mb + JOB_MEMORY_BESIDE_WEIGHTS_MB)


def micro_models():
    return [m for m in MODELS if model_kind(config["models"][m]) == "micro"]


def data_params(split):
    return SETTINGS.data.split_params(split)


def split_params(wildcards):
    return data_params(wildcards.split)


def lm_train_params(wildcards):
    """The data settings that produced lm_train: part of a micro model's recipe."""
    return data_params("lm_train")


def model_spec(wildcards):
    return config["models"][wildcards.model]


# Checked while the job graph is built (snakemake -n too), once per model: see preflight().
PREFLIGHT = {}


def preflight(model):
    """What stops ``model`` from loading, reported naming the key while the job graph is built, before any job:
    a missing path, no safetensors, a model type only remote code defines (until the model is built), and what
    holds only for this machine: a ``device`` it lacks, a hub model neither on disk nor reachable. Those stop a
    local run; a dry run, or a run whose jobs go to a cluster, only warns."""
    if model in PREFLIGHT:
        return
    # once results/models/{model} is built, its record and seal stand for the weights: the DAG reads neither
    spec = config["models"][model]
    built = built_from(spec, f"{RESULTS}/models/{model}")
    problems = [] if built else model_problems(spec, key=f"models.{model}")
    # what holds only for this machine: fatal where the jobs run here, a warning in a dry run or on a cluster
    local = [PREFLIGHT.setdefault("device", device_problem(config["device"]))]
    if "hf_id" in spec and not built:
        local.append(hf_snapshot_problem(spec["hf_id"], spec.get("revision", "main"), key=f"models.{model}"))
    for problem in filter(None, local):
        if workflow.local_exec and not workflow.dryrun:
            problems.append(problem)
        elif problem not in PREFLIGHT.setdefault("warned", set()):
            PREFLIGHT["warned"].add(problem)
            logger.warning(f"{problem} (a local run stops here, before any job; jobs that run elsewhere may not)")
    if problems:
        raise WorkflowError("\n".join(problems))
    PREFLIGHT[model] = True


def model_inputs(wildcards):
    """A micro model trains on lm_train with the shared tokenizer; a named one needs nothing."""
    preflight(wildcards.model)
    if model_kind(config["models"][wildcards.model]) != "micro":
        return {}
    return {
        "lm_train": f"{RESULTS}/data/lm_train.parquet",
        "tokenizer": f"{RESULTS}/models/tokenizer",
    }


def shipped_weights(wildcards):
    """Where pre-trained micro weights are looked up, as configured (relative to the repository root).

    Kept relative in params so that moving the checkout does not look like a changed parameter.
    """
    return config["models"]["shipped_weights"]


def activation_layers(wildcards):
    return layers_for(config["activations"]["layers"], wildcards.model)


def activation_settings(wildcards):
    return SETTINGS.activations.params()


def model_layer_count(model):
    """Blocks in a model: from the config for micro models, from the resolved weights otherwise."""
    spec = config["models"][model]
    if model_kind(spec) == "micro":
        return spec["micro"]["layers"]
    model_dir = checkpoints.model.get(model=model).output[0]
    shape = recorded_shape(model_dir)
    # a record from before shapes were recorded: models.layer_count parses the config (a GGUF file whole); only
    # then is torch imported, which layout (imported by torch-free rule scripts too) must not pull in
    if shape is None:
        from actbridge.models.loading import layer_count

        return layer_count(model_dir)
    return shape["num_layers"]


def extracted_layers(model):
    try:
        return resolve_layers(layers_for(config["activations"]["layers"], model), model_layer_count(model))
    except ValueError as error:
        raise WorkflowError(f"config key activations.layers ({model}): {error}") from None


def bridged_pairs():
    """``bridge.pairs`` resolved to pair names such as ``s3-r6``."""
    try:
        pairs = layer_pairs(config["bridge"]["pairs"], extracted_layers("sender"), extracted_layers("receiver"),
                            n_sender=model_layer_count("sender"), n_receiver=model_layer_count("receiver"))
    except ValueError as error:
        raise WorkflowError(str(error)) from None
    return [pair_name(i, j) for i, j in pairs]


if all(model_kind(config["models"][m]) == "micro" for m in MODELS):
    bridged_pairs()  # layer counts are known now: a bad bridge.pairs stops here, before any job


def bridged_sender_layers(wildcards=None):
    """Sender layers that some bridge translates: where the sender-side causal profile ablates. Read from the
    sender's depth alone (every extracted layer for ``relative_depth`` and ``grid``, the listed ones
    otherwise), so its rule never waits on the receiver's checkpoint; ``bridged_pairs`` checks the pairs."""
    spec = config["bridge"]["pairs"]
    if spec in ("relative_depth", "grid"):
        return list(extracted_layers("sender"))
    return sorted({int(i) for i, _ in spec})


def bridged_receiver_layers(wildcards=None):
    """Receiver layers where some bridge injects: where the receiver-side causal profile patches. Only
    ``relative_depth`` needs the sender's depth for them (see ``receiver_causal_inputs``)."""
    spec = config["bridge"]["pairs"]
    if spec == "grid":
        return list(extracted_layers("receiver"))
    if spec != "relative_depth":
        return sorted({int(j) for _, j in spec})
    return sorted({parse_pair(pair)[1] for pair in bridged_pairs()})


def receiver_causal_inputs(wildcards):
    """The receiver and eval; with ``relative_depth`` pairs and a named sender, the sender's record too: its
    depth places the receiver ends (ancient: only that depth matters, and it reaches the job as a param)."""
    inputs = {"model": f"{RESULTS}/models/receiver", "eval": f"{RESULTS}/data/eval.parquet"}
    if config["bridge"]["pairs"] == "relative_depth" and model_kind(config["models"]["sender"]) != "micro":
        inputs["sender"] = ancient(f"{RESULTS}/models/sender")
    return inputs


def bridge_dirs(wildcards=None):
    return expand(f"{RESULTS}/bridges/{{pair}}/{{method}}/seed{{seed}}", pair=bridged_pairs(),
                  method=config["bridge"]["methods"], seed=range(config["bridge"]["seeds"]))


def bridge_inputs(wildcards):
    """Every model x split's shards; a bridge trained through the receiver also needs the receiver and the
    prompts and answers of the splits it trains and selects on."""
    inputs = {f"{model}_{split}": f"{RESULTS}/activations/{model}/{split}" for model in MODELS
              for split in BRIDGE_SPLITS}
    if BRIDGE_METHODS[wildcards.method].through_receiver:
        inputs["receiver"] = f"{RESULTS}/models/receiver"
        inputs.update({split: f"{RESULTS}/data/{split}.parquet" for split in ("bridge_train", "bridge_val")})
    return inputs


def bridge_settings(wildcards):
    return SETTINGS.bridge.method_params(wildcards.method, dtype=SETTINGS.run.dtype)


def bridge_memory(wildcards):
    """A method trained through the receiver holds the receiver; the offline fits read shards only."""
    return model_memory("receiver", 2000)(wildcards) if BRIDGE_METHODS[wildcards.method].through_receiver else 2000


def bridge_gpus(wildcards):
    return GPUS if BRIDGE_METHODS[wildcards.method].through_receiver else 0


def bridge_fit(wildcards):
    return SETTINGS.bridge.fit_params(SETTINGS.data.context_modes)


def injected_runs():
    """(pair, method, seed) of every injection job."""
    return [(pair, method, seed) for pair in bridged_pairs() for method in config["injection"]["methods"]
            for seed in range(config["bridge"]["seeds"])]


def injection_inputs(wildcards):
    """The receiver, eval, the bridge, and the stored states the configured conditions read."""
    return {
        "receiver": f"{RESULTS}/models/receiver",
        "eval": f"{RESULTS}/data/eval.parquet",
        "bridge": f"{RESULTS}/bridges/{wildcards.pair}/{wildcards.method}/seed{wildcards.seed}",
        **{name: f"{RESULTS}/activations/{model}/{split}"
           for name, (model, split) in SETTINGS.injection.stored_inputs().items()},
    }


def injection_settings(wildcards):
    return SETTINGS.injection.params()


def seed_injections(wildcards):
    """Every seed's injection rows of one pair and method: the input of its statistics."""
    return [f"{RESULTS}/injection/{wildcards.pair}/{wildcards.method}/seed{seed}.parquet"
            for seed in range(config["bridge"]["seeds"])]


def condition_stats_tables(kind):
    return [f"{RESULTS}/stats/{pair}/{method}/{kind}.parquet" for pair in bridged_pairs()
            for method in config["injection"]["methods"]]


def stats_tables(kind):
    """Input function over every pair x method's ``kind`` table: with named models the pairs are
    known only once the model checkpoint has run, so they must not be listed at parse time."""

    def tables(wildcards):
        return condition_stats_tables(kind) + kv_tables(kind)

    return tables




def kv_cache_shape(model):
    """``model``'s cache shape where the config or its files say it without loading it (None: a hub id)."""
    spec = config["models"][model]
    metadata = None
    if "gguf_file" in spec:
        try:
            metadata = read_gguf_header(Path(spec["path"]).expanduser() / spec["gguf_file"]).metadata
        except (OSError, ValueError):  # preflight names the key
            return None
    return cache_shape(spec, metadata)


def kv_preflight():
    """What stops the KV channel, named by key before any job: a cache layout it cannot handle, a map kind
    that needs equal shapes given unequal ones, more blocks sent than the receiver has."""
    shapes = {model: kv_cache_shape(model) for model in MODELS}
    problems = [cache_problem(shape["architecture"], model) for model, shape in shapes.items() if shape]
    if all(shapes.values()):
        problems += [shapes_problem(kind, shapes["sender"], shapes["receiver"]) for kind in config["kv"]["maps"]]
    if shapes["receiver"]:
        problems += [kv_sent_problem(sent, shapes["receiver"]["num_layers"]) for sent in config["kv"]["layers_sent"]]
    problems = [problem for problem in problems if problem]
    if problems:
        raise WorkflowError("\n".join(problems))


def kv_sent_problem(sent, n_blocks):
    if sent != "all" and int(sent) > n_blocks:
        return f"config key kv.layers_sent: {sent} blocks asked for, but the receiver has {n_blocks}"
    return None


if config["kv"]["enabled"]:
    kv_preflight()


def kv_blocks_sent(wildcards):
    """The number of receiver blocks a KV injection job sends: its ``sent`` wildcard, ``all`` resolved."""
    n_blocks = model_layer_count("receiver")
    if problem := kv_sent_problem(wildcards.sent, n_blocks):
        raise WorkflowError(problem)
    return n_blocks if wildcards.sent == "all" else int(wildcards.sent)


def kv_map_settings(wildcards):
    return SETTINGS.kv.map_params(wildcards.kv_map)


def kv_memory(wildcards):
    """Both models' weights in the run's dtype, and what the job needs beside them."""
    held = [recorded_weights_held_bytes(f"{RESULTS}/models/{model}", config["dtype"]) for model in MODELS]
    if all(h is None for h in held):
        return 4000
    return sum(h or 0 for h in held) // 2**20 + JOB_MEMORY_BESIDE_WEIGHTS_MB + CUDA_HOST_MB


def kv_tables(kind):
    """The KV channel's statistics tables of ``kind`` (none where it is off)."""
    if not config["kv"]["enabled"]:
        return []
    return [f"{RESULTS}/kv/stats/{kv_map}/{sent}/{kind}.parquet" for kv_map in config["kv"]["maps"]
            for sent in config["kv"]["layers_sent"]]


def kv_targets():
    if not config["kv"]["enabled"]:
        return []
    return [*expand(f"{RESULTS}/kv/maps/{{kv_map}}", kv_map=config["kv"]["maps"]),
            *expand(f"{RESULTS}/kv/injection/{{kv_map}}/{{sent}}.parquet", kv_map=config["kv"]["maps"],
                    sent=config["kv"]["layers_sent"]),
            *kv_tables("per_seed"), *kv_tables("across_seeds")]


def verdict_expectations(wildcards):
    """Column -> values whose every combination the verdict's input tables must hold: each bridged pair x
    injected method x role x condition in the statistics, each profiled layer x role in the causal tables."""
    return {
        "across_seeds": {"pair": bridged_pairs(), "method": list(config["injection"]["methods"]),
                         "role": list(config["injection"]["roles"]),
                         "condition": [c for c in config["injection"]["conditions"] if c != BASELINE]},
        "sender": {"layer": bridged_sender_layers(), "role": list(config["activations"]["roles"])},
        "receiver": {"layer": bridged_receiver_layers(), "role": list(config["injection"]["roles"])},
    }


def all_targets(wildcards=None):
    return [
        *expand(f"{RESULTS}/data/{{split}}.parquet", split=SPLITS),
        f"{RESULTS}/data/stats.parquet",
        f"{RESULTS}/data/stats.md",
        *expand(f"{RESULTS}/models/{{model}}", model=MODELS),
        f"{RESULTS}/models/accuracy.parquet",
        f"{RESULTS}/models/accuracy.md",
        f"{RESULTS}/bridges/metrics.parquet",
        f"{RESULTS}/bridges/metrics.md",
        # per-job outputs are targets too: one that is lost or quarantined as corrupt is rebuilt by the next run
        # (Snakemake does not rebuild a missing intermediate file whose consumers are up to date)
        *bridge_dirs(),
        *[f"{RESULTS}/injection/{pair}/{method}/seed{seed}.parquet" for pair, method, seed in injected_runs()],
        *condition_stats_tables("per_seed"),
        *condition_stats_tables("across_seeds"),
        *kv_targets(),
        f"{RESULTS}/stats/per_seed.parquet",
        f"{RESULTS}/stats/across_seeds.parquet",
        f"{RESULTS}/stats/summary.md",
        f"{RESULTS}/stats/verdict.md",
        f"{RESULTS}/causal/sender.parquet",
        f"{RESULTS}/causal/sender.md",
        f"{RESULTS}/causal/receiver.parquet",
        f"{RESULTS}/causal/receiver.md",
        *expand(f"{RESULTS}/figures/{{figure}}.{{ext}}", figure=list(FIGURES), ext=("pdf", "png")),
    ]
