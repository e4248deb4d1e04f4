"""What a configuration will cost before it runs: jobs, forward passes, tokens, FLOPs and disk per stage.

    python -m actbridge.plan --configfile config/pythia.yaml

``snakemake -n`` lists jobs, but with named models it stops at the model checkpoint (layer counts
come from the weights) and says nothing of size. This estimate needs no weights: model shapes
come from the micro spec, a local ``config.json``, the HF cache, or a table of Pythia shapes.
Prompt lengths are measured on a sample of generated rows with the model's tokenizer where one
is on disk, otherwise estimated at 4 characters per token (marked ``≈``).
FLOPs count forward passes at 2 x (trunk parameters) per token, training at 6 x.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import yaml

from actbridge.activations.layers import layer_pairs, layers_for, resolve_layers
from actbridge.bridges.methods import BRIDGE_METHODS
from actbridge.catalog import validate_config
from actbridge.config import merge_config, model_kind
from actbridge.data.worlds import ACCURACY_VIEWS, SPLITS, DataConfig, iter_split_rows
from actbridge.injection.conditions import condition_labels
from actbridge.kv.conditions import scored_labels
from actbridge.kv.segments import segments_of
from actbridge.report import FIGURES, SUMMARIES

# Relative to the workflow directory it is run from, as Snakemake reads them (never the package's own place:
# an installed wheel sits elsewhere).
DEFAULT_CONFIG = Path("config") / "config.yaml"
RESULTS = Path("results")
BRIDGE_SPLITS = ("bridge_train", "bridge_val", "eval")
SAMPLE_ROWS = 200
CHARS_PER_TOKEN = 4.0
BYTES = {"float16": 2, "float32": 4}
# Published shapes of the Pythia suite: (layers, hidden, vocabulary).
PYTHIA_SHAPES = {
    "EleutherAI/pythia-14m": (6, 128, 50304), "EleutherAI/pythia-70m": (6, 512, 50304),
    "EleutherAI/pythia-160m": (12, 768, 50304), "EleutherAI/pythia-410m": (24, 1024, 50304),
    "EleutherAI/pythia-1b": (16, 2048, 50304), "EleutherAI/pythia-1.4b": (24, 2048, 50304),
    "EleutherAI/pythia-2.8b": (32, 2560, 50304), "EleutherAI/pythia-6.9b": (32, 4096, 50432),
    "EleutherAI/pythia-12b": (36, 5120, 50688),
}


@dataclass(frozen=True)
class ModelShape:
    layers: int
    hidden: int
    vocab: int
    source: str  # where the shape was read

    @property
    def trunk_parameters(self) -> int:
        """Attention (4 d²) and MLP (8 d², ffn = 4 d) weights per block: the matmuls a token pays for."""
        return 12 * self.layers * self.hidden ** 2


@dataclass(frozen=True)
class StageCost:
    stage: str
    jobs: int
    forward_passes: int = 0  # sequences run through a model
    tokens: int = 0
    flops: float = 0.0
    disk_bytes: int = 0
    note: str = ""


def load_config(paths: Sequence[str | Path]) -> dict:
    """The default config overlaid with each file in turn, as Snakemake's --configfile does, then validated."""
    if not DEFAULT_CONFIG.is_file():
        raise FileNotFoundError(f"{DEFAULT_CONFIG}: not found; run from the workflow directory (the checkout's root)")
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    for path in paths:
        config = merge_config(config, yaml.safe_load(Path(path).read_text()) or {})
    return validate_config(config)


def _shape_from_config_json(path: Path, source: str) -> ModelShape | None:
    if not path.is_file():
        return None
    values = json.loads(path.read_text())
    return ModelShape(values["num_hidden_layers"], values["hidden_size"], values["vocab_size"], source)


def model_shape(spec: dict, vocab_size: int) -> ModelShape:
    """The shape of a configured model, without loading (or downloading) any weights."""
    kind = model_kind(spec)
    if kind == "micro":
        return ModelShape(spec["micro"]["layers"], spec["micro"]["hidden"], vocab_size, "micro spec")
    if kind == "gguf":
        from actbridge.models.preflight import read_gguf_header

        path = Path(spec["path"]).expanduser() / spec["gguf_file"]
        try:
            return ModelShape(*read_gguf_header(path).shape(), f"GGUF header {path}")
        except (OSError, ValueError, KeyError) as error:
            raise ValueError(f"cannot read the shape from {path}'s GGUF header ({error})") from error
    if kind == "path":
        shape = _shape_from_config_json(Path(spec["path"]) / "config.json", spec["path"])
        if shape:
            return shape
        raise ValueError(f"no config.json in {spec['path']}: cannot tell the model's shape")
    hf_id, revision = spec["hf_id"], spec.get("revision", "main")
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(hf_id, "config.json", revision=revision)
        if isinstance(cached, str):
            return _shape_from_config_json(Path(cached), f"HF cache {hf_id}@{revision}")
    except ImportError:
        pass
    if hf_id in PYTHIA_SHAPES:
        return ModelShape(*PYTHIA_SHAPES[hf_id], source=f"published shape of {hf_id}")
    raise ValueError(f"{hf_id} is neither cached nor a known Pythia id: cannot tell its shape")


def tokenizer_file(spec: dict, results: Path) -> Path | None:
    """The tokenizer.json a model will read, where it is already on disk."""
    kind = model_kind(spec)
    if kind == "micro":
        candidate = results / "models" / "tokenizer" / "tokenizer.json"
    elif kind in ("path", "gguf"):
        candidate = Path(spec["path"]) / "tokenizer.json"
    else:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return None
        cached = try_to_load_from_cache(spec["hf_id"], "tokenizer.json", revision=spec.get("revision", "main"))
        candidate = Path(cached) if isinstance(cached, str) else None
    return candidate if candidate is not None and candidate.is_file() else None


def token_counter(spec: dict, results: Path) -> tuple[Callable[[str], int], bool]:
    """(count tokens of a text, exact?) with the model's tokenizer on disk, else the 4-characters rule."""
    path = tokenizer_file(spec, results)
    if path is None:
        return (lambda text: max(1, round(len(text) / CHARS_PER_TOKEN))), False
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    return (lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)), True


@dataclass(frozen=True)
class SplitSample:
    """Rows of a split and the mean prompt length each side reads, from a sample of generated rows."""

    rows: int
    scored_prompts: float  # prompts per row the accuracy table scores (actbridge.data.worlds.ACCURACY_VIEWS)
    mean_tokens: dict[str, float]  # prompt column -> tokens
    mean_candidates: float
    mean_candidate_tokens: float


def sample_split(data: DataConfig, split: str, count: Callable[[str], int]) -> SplitSample:
    sample_config = DataConfig(**{**data.__dict__, "sizes": {**data.sizes, split: min(SAMPLE_ROWS, data.sizes[split])}})
    rows = list(iter_split_rows(sample_config, split))
    per_world = len(rows) / max(1, sample_config.sizes[split])
    tokens = {side: sum(count(r[f"{side}_prompt"]) for r in rows) / len(rows) for side in ("full", "sender", "receiver")}
    candidates = [c for r in rows for c in r["candidates"]]
    return SplitSample(rows=round(per_world * data.sizes[split]),
                       scored_prompts=sum(mode == r["mode"] for r in rows for mode, _ in ACCURACY_VIEWS) / len(rows),
                       mean_tokens=tokens,
                       mean_candidates=len(candidates) / len(rows),
                       mean_candidate_tokens=sum(count(" " + c) for c in candidates) / len(candidates))


def job_counts(config: dict, *, pairs: int, models: Sequence[str] = ("sender", "receiver")) -> dict[str, int]:
    """Jobs per rule of the workflow's DAG for ``config`` with ``pairs`` bridged layer pairs (Snakemake's
    'Job stats', ``all`` included); derived from the same lists the rules expand."""
    micro = [m for m in models if model_kind(config["models"][m]) == "micro"]
    seeds = config["bridge"]["seeds"]
    injected = len(config["injection"]["methods"])
    counts = {"dataset_split": len(SPLITS), "micro_tokenizer": 1 if micro else 0, "model": len(models),
              "model_accuracy": len(models), "activations": len(models) * len(BRIDGE_SPLITS),
              "bridge": pairs * len(config["bridge"]["methods"]) * seeds, "injection": pairs * injected * seeds,
              "condition_stats": pairs * injected, "sender_causal": 1, "receiver_causal": 1,
              **{summary: 1 for summary in SUMMARIES}, **{f"figure_{figure}": 1 for figure in FIGURES}, "all": 1}
    kv = config["kv"]
    if kv["enabled"]:
        counts.update({"kv_map": len(kv["maps"]), "kv_injection": len(kv["maps"]) * len(kv["layers_sent"]),
                       "kv_stats": len(kv["maps"]) * len(kv["layers_sent"])})
    return {rule: count for rule, count in counts.items() if count}


def kv_segment_tokens(data: DataConfig, count: Callable[[str], int]) -> tuple[int, dict[str, float]]:
    """Eval rows the KV channel scores, and the mean tokens of their head, context and tail (a sample)."""
    sample_config = DataConfig(**{**data.__dict__, "sizes": {**data.sizes, "eval": min(SAMPLE_ROWS, data.sizes["eval"])}})
    rows = [r for r in iter_split_rows(sample_config, "eval") if r["mode"] in ("asymmetric", "relay")]
    if not rows:
        return 0, {"head": 0.0, "context": 0.0, "tail": 0.0}
    pieces = [segments_of(r["sender_prompt"], r["receiver_prompt"]) for r in rows]
    means = {part: sum(count(getattr(piece, part)) for piece in pieces) / len(pieces)
             for part in ("head", "context", "tail")}
    return round(len(rows) * data.sizes["eval"] / sample_config.sizes["eval"]), means


def stage_costs(config: dict, results: Path = RESULTS) -> tuple[list[StageCost], list[str]]:
    """Per-stage costs of ``config`` and the notes on how each estimate was made."""
    data = DataConfig.from_config(config)
    vocab = config["models"]["tokenizer"]["vocab_size"]
    shapes = {m: model_shape(config["models"][m], vocab) for m in ("sender", "receiver")}
    notes = [f"{m}: {s.layers} layers x {s.hidden} ({s.source}), {s.trunk_parameters / 1e6:.1f} M trunk parameters"
             for m, s in shapes.items()]
    counters = {m: token_counter(config["models"][m], results) for m in shapes}
    notes += [f"{m} tokens: {'its tokenizer' if exact else f'≈ {CHARS_PER_TOKEN:g} characters per token'}"
              for m, (_, exact) in counters.items()]
    samples = {(m, split): sample_split(data, split, counters[m][0]) for m in shapes for split in BRIDGE_SPLITS}
    prompt_of = {"sender": "sender", "receiver": "receiver"}
    row_counts = ", ".join(f"{split} {samples['sender', split].rows}" for split in BRIDGE_SPLITS)
    layers = {m: resolve_layers(layers_for(config["activations"]["layers"], m), shapes[m].layers) for m in shapes}
    pairs = layer_pairs(config["bridge"]["pairs"], layers["sender"], layers["receiver"],
                        n_sender=shapes["sender"].layers, n_receiver=shapes["receiver"].layers)
    jobs = job_counts(config, pairs=len(pairs))
    costs: list[StageCost] = [StageCost("dataset_split", jobs=jobs["dataset_split"], note=f"rows: {row_counts}")]

    micro = [m for m in shapes if model_kind(config["models"][m]) == "micro"]
    train_tokens = {m: config["models"][m]["micro"]["steps"] * config["models"][m]["micro"]["batch_size"]
                    * sample_split(data, "lm_train", counters[m][0]).mean_tokens["full"] for m in micro}
    if jobs.get("micro_tokenizer"):
        costs.append(StageCost("micro_tokenizer", jobs=jobs["micro_tokenizer"], note="the micro models' shared BPE"))
    costs.append(StageCost("model", jobs=jobs["model"], forward_passes=sum(config["models"][m]["micro"]["steps"]
                                                                * config["models"][m]["micro"]["batch_size"] for m in micro),
                           tokens=round(sum(train_tokens.values())),
                           flops=sum(6 * shapes[m].trunk_parameters * t for m, t in train_tokens.items()),
                           note="micro training (forward + backward)" if micro else "named weights: resolved, not trained"))

    eval_sample = samples["sender", "eval"]
    accuracy_passes = {m: round(eval_sample.rows * eval_sample.scored_prompts) for m in shapes}
    accuracy_tokens = {m: accuracy_passes[m] * samples[m, "eval"].mean_tokens["full"] for m in shapes}
    costs.append(StageCost("model_accuracy", jobs=jobs["model_accuracy"], forward_passes=sum(accuracy_passes.values()),
                           tokens=round(sum(accuracy_tokens.values())),
                           flops=sum(2 * shapes[m].trunk_parameters * t for m, t in accuracy_tokens.items())))

    roles = config["activations"]["roles"]
    passes = {m: sum(samples[m, s].rows for s in BRIDGE_SPLITS) for m in shapes}
    tokens = {m: sum(samples[m, s].rows * samples[m, s].mean_tokens[prompt_of[m]] for s in BRIDGE_SPLITS) for m in shapes}
    disk = {m: passes[m] * len(roles) * len(layers[m]) * shapes[m].hidden * BYTES[config["activations"]["dtype"]]
            for m in shapes}
    costs.append(StageCost("activations", jobs=jobs["activations"], forward_passes=sum(passes.values()),
                           tokens=round(sum(tokens.values())),
                           flops=sum(2 * shapes[m].trunk_parameters * tokens[m] for m in shapes),
                           disk_bytes=sum(disk.values()),
                           note=f"{len(layers['sender'])} + {len(layers['receiver'])} layers x {len(roles)} roles, "
                                f"{config['activations']['dtype']}, uncompressed (an upper bound: zstd stored the default "
                                "config's float32 shards in 36% of it)"))

    seeds, methods = config["bridge"]["seeds"], config["bridge"]["methods"]
    d_s, d_r = shapes["sender"].hidden, shapes["receiver"].hidden
    weights = len(pairs) * len(methods) * seeds * d_s * d_r * 4
    note = (f"{len(pairs)} pairs x {len(methods)} methods x {seeds} seeds; ridge holds "
            f"{(d_s + d_r) ** 2 * 8 / 2**20:.0f} MiB of sufficient statistics")
    trained_passes = trained_tokens = 0.0
    through_receiver = [m for m in methods if BRIDGE_METHODS[m].through_receiver]
    for method in through_receiver:  # forward + backward through the receiver per training row, forward per val row
        trained = config["bridge"][method]
        train_rows = min(trained["max_rows"], samples["receiver", "bridge_train"].rows)
        per_role = trained["epochs"] * (3 * train_rows + samples["receiver", "bridge_val"].rows)
        trained_passes += len(pairs) * seeds * len(roles) * per_role
        trained_tokens = trained_passes * samples["receiver", "bridge_train"].mean_tokens["receiver"]
        note += (f"; trained: at most {trained['epochs']} epochs (fewer when bridge_val stops improving) x "
                 f"{train_rows} rows through the receiver per role")
    costs.append(StageCost("bridge", jobs=jobs["bridge"], disk_bytes=weights,
                           forward_passes=round(trained_passes), tokens=round(trained_tokens),
                           flops=2 * shapes["receiver"].trunk_parameters * trained_tokens, note=note))

    injection = config["injection"]
    labels = len(condition_labels(injection["conditions"], injection["alphas"]))
    runs = jobs["injection"]
    per_row = samples["receiver", "eval"]
    # the engine runs the prompt once, then per edit the rest of the prompt (1 token at the last
    # position, about half the prompt at the bridge mention) and each candidate's tokens but the last
    suffix = {"last": 1.0, "bridge": per_row.mean_tokens["receiver"] / 2}
    per_edit = {r: suffix.get(r, 1.0) + per_row.mean_candidates * max(0.0, per_row.mean_candidate_tokens - 1)
                for r in injection["roles"]}
    tokens_per_run = per_row.rows * sum(per_row.mean_tokens["receiver"] + labels * per_edit[r] for r in injection["roles"])
    costs.append(StageCost("injection", jobs=runs, forward_passes=runs * per_row.rows * len(injection["roles"]) * labels,
                           tokens=round(runs * tokens_per_run),
                           flops=2 * shapes["receiver"].trunk_parameters * runs * tokens_per_run,
                           note=f"{labels} edits (conditions x α) x {len(injection['roles'])} roles per eval row; "
                                "forward passes = edited evaluations (KV-cached prefix)"))

    if jobs.get("kv_map"):
        kv = config["kv"]
        fit_rows = sum(samples["receiver", split].rows for split in ("bridge_train", "bridge_val")) // 3  # shared ones
        fit_tokens = {m: fit_rows * samples[m, "bridge_train"].mean_tokens["full"] for m in shapes}
        costs.append(StageCost("kv_map", jobs=jobs["kv_map"], forward_passes=jobs["kv_map"] * 2 * fit_rows,
                               tokens=round(jobs["kv_map"] * sum(fit_tokens.values())),
                               flops=jobs["kv_map"] * sum(2 * shapes[m].trunk_parameters * t for m, t in fit_tokens.items()),
                               note="both models over the shared bridge_train and bridge_val prompts, once per map kind"))
        kv_rows, pieces = kv_segment_tokens(data, counters["receiver"][0])
        kv_labels = len(scored_labels(kv["conditions"]))
        per_condition = pieces["tail"] + per_row.mean_candidates * max(0.0, per_row.mean_candidate_tokens - 1)
        sender_tokens = 2 * kv_rows * (pieces["head"] + pieces["context"])  # each row's own and its partner's
        receiver_tokens = kv_rows * (pieces["head"] + pieces["context"] + kv_labels * per_condition)
        runs = jobs["kv_injection"]
        costs.append(StageCost("kv_injection", jobs=runs, forward_passes=runs * kv_rows * (2 + kv_labels),
                               tokens=round(runs * (sender_tokens + receiver_tokens)),
                               flops=2 * runs * (shapes["sender"].trunk_parameters * sender_tokens
                                                 + shapes["receiver"].trunk_parameters * receiver_tokens),
                               note=f"{kv_rows} asymmetric and relay eval rows x {kv_labels} conditions; per row one "
                                    "sender pass (and one for its shuffled partner) and one receiver pass over head + "
                                    "context, then per condition the tail and the candidates"))
        costs.append(StageCost("kv_stats", jobs=jobs["kv_stats"], note="the KV conditions against none, per metric"))

    stats = config["stats"]
    # every condition vs none and the rescaled pairs, in each metric (accuracy, first token, log-prob)
    contrasts = (labels + len(injection["alphas"]) + 1) * 3
    costs.append(StageCost("condition_stats", jobs=jobs["condition_stats"],
                           note=f"about {contrasts} contrasts x ({stats['resamples']} per-seed + "
                                f"{stats['hierarchical_resamples']} crossed) bootstrap resamples each"))

    sender_layers = sorted({i for i, _ in pairs})
    causal_edits = len(sender_layers) * len(roles) * 2 + len(sender_layers) * len(roles)
    causal_tokens = eval_sample.rows * (samples["sender", "eval"].mean_tokens["sender"] * (1 + causal_edits))
    costs.append(StageCost("sender_causal", jobs=jobs["sender_causal"], forward_passes=eval_sample.rows * causal_edits,
                           tokens=round(causal_tokens), flops=2 * shapes["sender"].trunk_parameters * causal_tokens,
                           note=f"{len(sender_layers)} layers x {len(roles)} roles x (mean, resample ablation "
                                "+ counterfactual patching); full prompts, an upper bound"))
    receiver_layers = sorted({j for _, j in pairs})
    receiver_edits = len(receiver_layers) * len(roles)  # patching on shared rows, self-patching on the others
    receiver_tokens = eval_sample.rows * samples["receiver", "eval"].mean_tokens["full"] * (1 + receiver_edits)
    costs.append(StageCost("receiver_causal", jobs=jobs["receiver_causal"],
                           forward_passes=eval_sample.rows * receiver_edits, tokens=round(receiver_tokens),
                           flops=2 * shapes["receiver"].trunk_parameters * receiver_tokens,
                           note=f"{len(receiver_layers)} layers x {len(roles)} roles x (counterfactual patching "
                                "on shared prompts, self-patching on the others); full prompts, an upper bound"))
    gathered = sum(jobs[rule] for rule in jobs if rule in SUMMARIES or rule.startswith("figure_") or rule == "all")
    costs.append(StageCost("figures and summaries", jobs=gathered,
                           note=f"{len(FIGURES)} figures, {len(SUMMARIES)} tables and the `all` target, run where "
                                "Snakemake runs (localrules)"))
    return costs, notes


def _si(value: float, unit: str = "") -> str:
    if value == 0:
        return "–"
    exponent = min(6, max(0, int(math.log10(abs(value)) // 3)))
    return f"{value / 10 ** (3 * exponent):.3g} {' kMGTPE'[exponent].strip()}{unit}".strip()


def plan_markdown(costs: Sequence[StageCost], notes: Sequence[str]) -> str:
    lines = ["| stage | jobs | forward passes | tokens | FLOPs | disk | how |", "|---|---|---|---|---|---|---|"]
    for c in costs:
        disk = _si(c.disk_bytes / 1.0, "B") if c.disk_bytes else "–"
        lines.append(f"| {c.stage} | {c.jobs} | {_si(c.forward_passes)} | {_si(c.tokens)} | {_si(c.flops)} | "
                     f"{disk} | {c.note} |")
    total_jobs = sum(c.jobs for c in costs)
    total_flops = sum(c.flops for c in costs)
    total_disk = sum(c.disk_bytes for c in costs)
    lines.append(f"| **total** | {total_jobs} | | | {_si(total_flops)} | {_si(total_disk, 'B')} | |")
    return "\n".join(["Models and tokens:", *[f"- {n}" for n in notes], "", *lines]) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configfile", nargs="*", default=[], help="config files overlaid on config/config.yaml")
    parser.add_argument("--results", default=str(RESULTS), help="where tokenizers may already sit")
    args = parser.parse_args(argv)
    config = load_config(args.configfile)
    costs, notes = stage_costs(config, Path(args.results))
    sys.stdout.write(plan_markdown(costs, notes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
