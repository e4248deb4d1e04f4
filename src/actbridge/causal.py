"""Sender-side causal profile: does the sender's own answer depend on the states a bridge translates?

High alignment may sit on features the sender does not use, so a failed
injection says little until the translated states are shown to matter (the
reference study's reviewer). For every bridged sender layer and role this
module ablates the sender's state on its own ``shared`` prompts and scores
the sender's answer:

* ``mean``: the state replaced by its ``bridge_train`` mean (same layer, role and mode);
* ``resample``: the state replaced by the state of another eval example (same mode).

``asymmetric`` prompts are left out: there the sender lacks the later facts
and cannot answer at all, so its answer cannot show what the state carries.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from actbridge.activations import ActivationStore
from actbridge.conditions import derangement
from actbridge.evaluation import continuation_ids, with_gold
from actbridge.interventions import Edits, Example, fast_scores
from actbridge.roles import role_positions_for_table
from actbridge.statistics import (METRICS, StatsSettings, bca_intervals, bootstrap_means, mcnemar_exact, paired_t,
                                  with_holm)

if TYPE_CHECKING:  # hints only
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

ABLATIONS: tuple[str, ...] = ("mean", "resample")
MODE = "shared"

EXAMPLE_SCHEMA = pa.schema([
    ("example_id", pa.string()), ("hops", pa.int8()), ("layer", pa.int16()), ("role", pa.string()),
    ("condition", pa.string()), ("exact_match", pa.bool_()), ("gold_logprob", pa.float64()),
    ("gold_rank", pa.int16()),
])

EFFECT_SCHEMA = pa.schema([
    ("layer", pa.int16()), ("role", pa.string()), ("hops", pa.string()), ("condition", pa.string()),
    ("metric", pa.string()), ("n", pa.int64()), ("clean_value", pa.float64()), ("value", pa.float64()),
    ("delta", pa.float64()), ("ci_low", pa.float64()), ("ci_high", pa.float64()), ("ci_method", pa.string()),
    ("test", pa.string()), ("p_value", pa.float64()), ("p_holm", pa.float64()),
])


def ablation_edits(mean: np.ndarray, resampled: np.ndarray) -> Edits:
    """none, mean ablation, resample ablation of one example's state ([d] vectors)."""
    vectors = np.stack([np.zeros_like(mean), mean, resampled]).astype(np.float32)
    return Edits(torch.tensor([1.0, 0.0, 0.0]), torch.from_numpy(vectors), torch.zeros(3, dtype=torch.bool))


def sender_ablation_rows(model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase", examples: pa.Table,
                         layer: int, role: str, eval_store: ActivationStore, train_store: ActivationStore,
                         seed: int = 0, batch_size: int = 16) -> pa.Table:
    """Per-example scores of the sender's own answer, clean and under each ablation, at one layer and role."""
    shared = examples.filter(pc.equal(examples.column("mode"), MODE))
    positions = role_positions_for_table(tokenizer, shared, "sender", [role])[role]
    keys, states = eval_store.read(layer, role, [MODE])
    state_of = {key: row for row, key in enumerate(keys)}
    ids = shared.column("example_id").to_pylist()
    keep = [i for i, example_id in enumerate(ids) if positions[i] >= 0 and (example_id, MODE) in state_of]
    if len(keep) < 2:
        raise ValueError(f"fewer than two {MODE} examples have role {role!r} and sender states")
    _, train_states = train_store.read(layer, role, [MODE])
    mean = train_states.astype(np.float64).mean(axis=0)
    own = states[[state_of[(ids[i], MODE)] for i in keep]]
    resampled = own[derangement(len(keep), seed)]
    prompts = shared.column("sender_prompt").to_pylist()
    answers = shared.column("answer").to_pylist()
    candidates = shared.column("candidates").to_pylist()
    hops = shared.column("hops").to_pylist()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    columns: dict[str, list] = {field.name: [] for field in EXAMPLE_SCHEMA}
    for begin in range(0, len(keep), batch_size):
        batch = range(begin, min(begin + batch_size, len(keep)))
        batch_examples, golds = [], []
        for n in batch:
            names, gold = with_gold(candidates[keep[n]], answers[keep[n]])
            prompt_ids = tokenizer(prompts[keep[n]], add_special_tokens=False)["input_ids"]
            batch_examples.append(Example(prompt_ids, int(positions[keep[n]]), continuation_ids(tokenizer, names)))
            golds.append(gold)
        scores = fast_scores(model, batch_examples, layer, [ablation_edits(mean, resampled[n]) for n in batch],
                             pad_id=pad_id)
        for n, score, gold in zip(batch, scores, golds):
            for k, condition in enumerate(("none", *ABLATIONS)):
                gold_logprob = score.logprob[k, gold]
                columns["example_id"].append(ids[keep[n]])
                columns["hops"].append(hops[keep[n]])
                columns["layer"].append(layer)
                columns["role"].append(role)
                columns["condition"].append(condition)
                columns["exact_match"].append(bool(score.exact[k, gold]))
                columns["gold_logprob"].append(float(gold_logprob))
                columns["gold_rank"].append(int(1 + np.sum(score.logprob[k] > gold_logprob)))
    return pa.table(columns, schema=EXAMPLE_SCHEMA)


def sender_ablation_table(model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase", examples: pa.Table,
                          layers: Sequence[int], roles: Sequence[str], eval_store: ActivationStore,
                          train_store: ActivationStore, batch_size: int = 16) -> pa.Table:
    tables = []
    for layer in layers:
        for role in roles:
            tables.append(sender_ablation_rows(model, tokenizer, examples, layer, role, eval_store, train_store,
                                               seed=layer, batch_size=batch_size))
            log.info("sender layer %d role %s: %d rows", layer, role, tables[-1].num_rows)
    return pa.concat_tables(tables)


def ablation_effects(rows: pa.Table, settings: StatsSettings) -> pa.Table:
    """Δ of each ablation against the clean run, per layer, role and hop count (and all hops), with BCa CIs.

    Holm families: the ablations x layers of one role, hop subset and metric.
    """
    data = rows.to_pylist()
    rng = np.random.Generator(np.random.PCG64(settings.seed))
    out = []
    for role in sorted({r["role"] for r in data}):
        of_role = [r for r in data if r["role"] == role]
        hops = sorted({str(r["hops"]) for r in of_role})
        for subset in (["all", *hops] if len(hops) > 1 else hops):  # "all" only where it pools several
            selected = [r for r in of_role if subset == "all" or str(r["hops"]) == subset]
            for layer in sorted({r["layer"] for r in selected}):
                by_condition: dict[str, dict[str, dict]] = {}
                for r in selected:
                    if r["layer"] == layer:
                        by_condition.setdefault(r["condition"], {})[r["example_id"]] = r
                order = sorted(by_condition["none"])
                columns = [(condition, metric) for condition in ABLATIONS for metric in METRICS]
                values = {(c, m): np.array([by_condition[c][i][METRICS[m]] for i in order], dtype=np.float64)
                          for c in ("none", *ABLATIONS) for m in METRICS}
                differences = np.stack([values[(c, m)] - values[("none", m)] for c, m in columns], axis=1)
                boot = bootstrap_means(differences, settings.resamples, rng)
                low, high, method = bca_intervals(differences, boot, settings.confidence)
                for j, (condition, metric) in enumerate(columns):
                    if metric == "accuracy":
                        test, p_value = "mcnemar_exact", mcnemar_exact(values[("none", metric)].astype(bool),
                                                                       values[(condition, metric)].astype(bool))
                    else:
                        test, p_value = "paired_t", paired_t(differences[:, j])
                    out.append({"layer": layer, "role": role, "hops": subset, "condition": condition,
                                "metric": metric, "n": len(order), "clean_value": float(values[("none", metric)].mean()),
                                "value": float(values[(condition, metric)].mean()),
                                "delta": float(differences[:, j].mean()), "ci_low": float(low[j]),
                                "ci_high": float(high[j]), "ci_method": str(method[j]), "test": test,
                                "p_value": p_value, "p_holm": float("nan")})
    return pa.Table.from_pylist(with_holm(out, ["role", "hops", "metric"]), schema=EFFECT_SCHEMA)


def ablation_markdown(effects: pa.Table, confidence: float) -> str:
    """Per role: each layer's ablation effect on the sender's own accuracy and log-prob, by hop count."""
    rows = effects.to_pylist()
    lines = ["# Sender-side causal profile", "",
             "Does the sender's own answer (its `shared` prompts) depend on the states the bridges translate? "
             "`mean`: the state at that layer and role replaced by its bridge_train mean; `resample`: by another "
             f"eval example's state. Δ = ablated − clean, with {confidence:.0%} BCa intervals; Holm across the "
             "ablations × layers of one role, hop subset and metric.", ""]
    for role in sorted({r["role"] for r in rows}):
        lines += [f"## role `{role}`", "",
                  "| layer | hops | n | clean accuracy | ablation | Δ accuracy, points | Δ gold log-prob | p (Holm) |",
                  "|---|---|---|---|---|---|---|---|"]
        keyed = {(r["layer"], r["hops"], r["condition"], r["metric"]): r for r in rows if r["role"] == role}
        for layer, hops, condition, metric in sorted(keyed):
            if metric != "accuracy":
                continue
            accuracy = keyed[(layer, hops, condition, "accuracy")]
            logprob = keyed[(layer, hops, condition, "logprob")]
            lines.append(f"| {layer} | {hops} | {accuracy['n']} | {accuracy['clean_value']:.3f} | {condition} | "
                         f"{100 * accuracy['delta']:+.1f} [{100 * accuracy['ci_low']:+.1f}, "
                         f"{100 * accuracy['ci_high']:+.1f}] | {logprob['delta']:+.2f} [{logprob['ci_low']:+.2f}, "
                         f"{logprob['ci_high']:+.2f}] | {accuracy['p_holm']:.2g} |")
        lines.append("")
    return "\n".join(lines)
