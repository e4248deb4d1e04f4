"""Sender-side causal profile: does the sender's own answer depend on the states a bridge translates?

High alignment may sit on features the sender does not use, so a failed
injection says little until the translated states are shown to matter (the
reference study's reviewer). For every bridged sender layer and role this
module ablates the sender's state on its own ``shared`` prompts and scores
the sender's answer:

* ``mean``: the state replaced by its ``bridge_train`` mean (same layer, role and mode);
* ``resample``: the state replaced by the state of another eval example (same mode);
* ``patch`` (counterfactual activation patching): the state replaced by the
  sender's state at the same role on the example's counterfactual prompt
  (the same facts but the first hop's object, so another bridge entity and
  another answer; see :func:`actbridge.data.worlds.counterfactual_world`). The
  ``moved`` metric is the rate at which the answer moves to the
  counterfactual's answer: how much of the answer the state carries.

``asymmetric`` prompts are left out: there the sender lacks the later facts
and cannot answer at all, so its answer cannot show what the state carries.

Receiver side, at every layer and role where a bridge injects:

* ``patch`` as above, inside the receiver on its ``shared`` prompts: is the
  injection site one the receiver reads its answer from at all?
* ``self_patch`` on ``asymmetric`` prompts (the receiver lacks the first-hop
  fact) and ``relay`` prompts (it lacks every fact of a 1-hop question): the
  state replaced by the receiver's own state at the same role on the
  full-context prompt. Its gain is the upper bound any bridge could reach at
  that site in that mode, the denominator of channel efficiency.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from actbridge.activations.store import ActivationStore, hidden_states_at
from actbridge.injection.conditions import derangement
from actbridge.data.worlds import PARTIAL_MODES
from actbridge.models.encoding import prompt_token_ids
from actbridge.models.scoring import DEFAULT_BATCH_TOKENS
from actbridge.injection.engine import Edits, score_under_edits
from actbridge.logs import Progress
from actbridge.activations.roles import role_positions_for_table
from actbridge.schemas import EFFECT_SCHEMA
from actbridge.stats.paired import METRICS, StatsSettings, bca_intervals, bootstrap_means, paired_test, with_holm
from actbridge.stats.summaries import pooled

if TYPE_CHECKING:  # hints only
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

ABLATIONS: tuple[str, ...] = ("mean", "resample")
MODE = "shared"

EXAMPLE_SCHEMA = pa.schema([
    ("example_id", pa.string()), ("mode", pa.string()), ("hops", pa.int8()), ("layer", pa.int16()),
    ("role", pa.string()), ("condition", pa.string()), ("exact_match", pa.bool_()), ("gold_logprob", pa.float64()),
    ("gold_rank", pa.int16()),
    ("counterfactual_top1", pa.bool_()),  # patching rows: the counterfactual's answer ranks first among candidates
])
PATCH_METRICS = {**METRICS, "moved": "counterfactual_top1"}



def ablation_edits(mean: np.ndarray, resampled: np.ndarray) -> Edits:
    """none, mean ablation, resample ablation of one example's state ([d] vectors)."""
    vectors = np.stack([np.zeros_like(mean), mean, resampled]).astype(np.float32)
    return Edits(torch.tensor([1.0, 0.0, 0.0]), torch.from_numpy(vectors), torch.zeros(3, dtype=torch.bool))


def _score_rows(model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase", table: pa.Table, keep: Sequence[int],
                positions: np.ndarray, layer: int, role: str, edits: Sequence[Edits], conditions: Sequence[str],
                batch_tokens: int, side: str = "sender") -> pa.Table:
    """Score the model's answer on ``table``'s ``side`` prompts (rows ``keep``) under each example's edits."""
    ids = table.column("example_id").to_pylist()
    modes = table.column("mode").to_pylist()
    hops = table.column("hops").to_pylist()
    alternatives = (table.column("counterfactual_answer").to_pylist() if "counterfactual_answer" in table.column_names
                    else [None] * table.num_rows)
    prompts, answers = table.column(f"{side}_prompt").to_pylist(), table.column("answer").to_pylist()
    candidates = table.column("candidates").to_pylist()
    columns: dict[str, list] = {field.name: [] for field in EXAMPLE_SCHEMA}
    scored = score_under_edits(model, tokenizer, layer, [prompts[i] for i in keep], [positions[i] for i in keep],
                               [answers[i] for i in keep], [candidates[i] for i in keep], edits.__getitem__,
                               batch_tokens=batch_tokens,
                               progress=Progress(len(keep), f"{side} layer {layer}, role {role}: {conditions[-1]}"))
    for n, _, score, names, gold in scored:
        i = keep[n]
        alternative = names.index(alternatives[i]) if alternatives[i] in names else None
        for k, condition in enumerate(conditions):
            columns["example_id"].append(ids[i])
            columns["mode"].append(modes[i])
            columns["hops"].append(hops[i])
            columns["layer"].append(layer)
            columns["role"].append(role)
            columns["condition"].append(condition)
            columns["exact_match"].append(bool(score.exact[k, gold]))
            columns["gold_logprob"].append(float(score.logprob[k, gold]))
            columns["gold_rank"].append(score.gold_rank(k, gold))
            columns["counterfactual_top1"].append(
                None if alternative is None else bool(np.argmax(score.logprob[k]) == alternative))
    return pa.table(columns, schema=EXAMPLE_SCHEMA)


def shared_rows(examples: pa.Table) -> pa.Table:
    return examples.filter(pc.equal(examples.column("mode"), MODE))


def sender_ablation_rows(model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase", examples: pa.Table,
                         layer: int, role: str, eval_store: ActivationStore, train_store: ActivationStore,
                         seed: int = 0, batch_tokens: int = DEFAULT_BATCH_TOKENS) -> pa.Table:
    """Per-example scores of the sender's own answer, clean and under each ablation, at one layer and role."""
    shared = shared_rows(examples)
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
    return _score_rows(model, tokenizer, shared, keep, positions, layer, role,
                       [ablation_edits(mean, resampled[n]) for n in range(len(keep))], ("none", *ABLATIONS),
                       batch_tokens)


def donor_edits(model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase", donor_prompts: Sequence[str],
                donor_positions: np.ndarray, layer: int, batch_tokens: int) -> list[Edits]:
    """Per example: none, and the state replaced by the model's own state at ``donor_positions`` of its donor prompt."""
    donors = prompt_token_ids(tokenizer, donor_prompts)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    rows = max(1, batch_tokens // max(len(ids) for ids in donors))  # the donor pass, sized in tokens too
    states = np.concatenate([
        hidden_states_at(model, donors[begin:begin + rows], donor_positions[begin:begin + rows][:, None],
                         [layer], pad_id, device)[:, 0, 0]
        for begin in range(0, len(donors), rows)])  # [n, d]
    return [Edits(torch.tensor([1.0, 0.0]), torch.from_numpy(np.stack([np.zeros_like(state), state])),
                  torch.zeros(2, dtype=torch.bool)) for state in states]


def _donor_patch_rows(model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase", table: pa.Table, layer: int,
                      role: str, side: str, donor_side: str, condition: str, batch_tokens: int) -> pa.Table:
    """Scores on ``table``'s ``side`` prompts, clean and with the state at (layer, role) replaced by the model's
    own state at the same role of the ``donor_side`` prompt (``condition`` names the patched rows)."""
    positions = role_positions_for_table(tokenizer, table, side, [role])[role]
    donor_positions = role_positions_for_table(tokenizer, table, donor_side, [role])[role]
    keep = [i for i in range(table.num_rows) if positions[i] >= 0 and donor_positions[i] >= 0]
    if len(keep) < 2:
        raise ValueError(f"fewer than two examples have a {donor_side} prompt and role {role!r}")
    donors = table.column(f"{donor_side}_prompt").to_pylist()
    edits = donor_edits(model, tokenizer, [donors[i] for i in keep], donor_positions[keep], layer, batch_tokens)
    return _score_rows(model, tokenizer, table, keep, positions, layer, role, edits, ("none", condition),
                       batch_tokens, side=side)


def patching_rows(model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase", examples: pa.Table,
                  layer: int, role: str, batch_tokens: int = DEFAULT_BATCH_TOKENS) -> pa.Table:
    """Per-example scores on ``shared`` prompts, clean and with the state at (layer, role) taken from the
    counterfactual prompt. In ``shared`` mode both models read the full prompt, so this serves either."""
    shared = shared_rows(examples)
    shared = shared.filter(pc.is_valid(shared.column("counterfactual_prompt")))
    return _donor_patch_rows(model, tokenizer, shared, layer, role, "sender", "counterfactual", "patch", batch_tokens)


def self_patch_rows(model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase", examples: pa.Table,
                    layer: int, role: str, batch_tokens: int = DEFAULT_BATCH_TOKENS) -> pa.Table:
    """Per-example scores of the receiver on its ``asymmetric`` and ``relay`` prompts, clean and with the state
    at (layer, role) taken from its own full-context prompt: what a perfect bridge could deliver there."""
    partial = examples.filter(pc.and_(pc.is_in(examples.column("mode"), pa.array(PARTIAL_MODES)),
                                      pc.not_equal(examples.column("receiver_prompt"), examples.column("full_prompt"))))
    tables = []
    for mode in sorted(set(partial.column("mode").to_pylist())):
        of_mode = partial.filter(pc.equal(partial.column("mode"), mode))
        positions = role_positions_for_table(tokenizer, of_mode, "receiver", [role])[role]
        if (positions >= 0).sum() < 2:  # e.g. no bridge mention in a relay prompt
            continue
        tables.append(_donor_patch_rows(model, tokenizer, of_mode, layer, role, "receiver", "full", "self_patch",
                                        batch_tokens))
    return _concat(tables)


def sender_causal_tables(model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase", examples: pa.Table,
                         layers: Sequence[int], roles: Sequence[str], eval_store: ActivationStore,
                         train_store: ActivationStore, batch_tokens: int = DEFAULT_BATCH_TOKENS
                         ) -> tuple[pa.Table, pa.Table]:
    """(ablation rows, patching rows) for every layer and role; patching where counterfactual prompts exist."""
    ablations, patches = [], []
    has_counterfactuals = ("counterfactual_prompt" in examples.column_names
                           and pc.sum(pc.is_valid(shared_rows(examples).column("counterfactual_prompt"))).as_py())
    for layer in layers:
        for role in roles:
            ablations.append(sender_ablation_rows(model, tokenizer, examples, layer, role, eval_store, train_store,
                                                  seed=layer, batch_tokens=batch_tokens))
            if has_counterfactuals:
                patches.append(patching_rows(model, tokenizer, examples, layer, role, batch_tokens))
            log.info("sender layer %d role %s: %d ablation rows, %d patching rows", layer, role,
                     ablations[-1].num_rows, patches[-1].num_rows if patches else 0)
    return pa.concat_tables(ablations), _concat(patches)


def _concat(tables: Sequence[pa.Table]) -> pa.Table:
    return pa.concat_tables(tables) if tables else EXAMPLE_SCHEMA.empty_table()


def receiver_causal_tables(model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase", examples: pa.Table,
                           layers: Sequence[int], roles: Sequence[str], batch_tokens: int = DEFAULT_BATCH_TOKENS
                           ) -> tuple[pa.Table, pa.Table]:
    """(counterfactual patching rows on shared prompts, self-patch rows on asymmetric and relay prompts) at
    the receiver's injection layers and roles; either is empty where the eval split has no such rows."""
    patches, self_patches = [], []
    has_counterfactuals = ("counterfactual_prompt" in examples.column_names
                           and pc.sum(pc.is_valid(shared_rows(examples).column("counterfactual_prompt"))).as_py())
    for layer in layers:
        for role in roles:
            if has_counterfactuals:
                patches.append(patching_rows(model, tokenizer, examples, layer, role, batch_tokens))
            self_patches.append(self_patch_rows(model, tokenizer, examples, layer, role, batch_tokens))
            log.info("receiver layer %d role %s: %d patching rows, %d self-patch rows", layer, role,
                     patches[-1].num_rows if patches else 0, self_patches[-1].num_rows)
    return _concat(patches), _concat(self_patches)


def paired_effects(rows: pa.Table, conditions: Sequence[str], metrics: dict[str, str],
                   settings: StatsSettings) -> pa.Table:
    """Δ of each condition against ``none``, per context mode, layer, role and hop count (and all hops), with
    BCa CIs.

    ``metrics`` maps a metric's name to its column. Holm families: the
    conditions x layers of one mode, role, hop subset and metric.
    """
    data = rows.to_pylist()
    rng = np.random.Generator(np.random.PCG64(settings.seed))
    out = []
    for mode, role in sorted({(r["mode"], r["role"]) for r in data}):
        of_role = [r for r in data if (r["mode"], r["role"]) == (mode, role)]
        hops = sorted({str(r["hops"]) for r in of_role})
        for subset in (["all", *hops] if len(hops) > 1 else hops):  # "all" only where it pools several
            selected = [r for r in of_role if subset == "all" or str(r["hops"]) == subset]
            for layer in sorted({r["layer"] for r in selected}):
                by_condition: dict[str, dict[str, dict]] = {}
                for r in selected:
                    if r["layer"] == layer:
                        by_condition.setdefault(r["condition"], {})[r["example_id"]] = r
                order = sorted(by_condition["none"])
                columns = [(condition, metric) for condition in conditions for metric in metrics]
                values = {(c, m): np.array([by_condition[c][i][metrics[m]] for i in order], dtype=np.float64)
                          for c in ("none", *conditions) for m in metrics}
                differences = np.stack([values[(c, m)] - values[("none", m)] for c, m in columns], axis=1)
                boot = bootstrap_means(differences, settings.resamples, rng)
                low, high, method = bca_intervals(differences, boot, settings.confidence)
                for j, (condition, metric) in enumerate(columns):
                    test, p_value = paired_test(metric, values[("none", metric)], values[(condition, metric)])
                    out.append({"mode": mode, "layer": layer, "role": role, "hops": subset, "condition": condition,
                                "metric": metric, "n": len(order), "clean_value": float(values[("none", metric)].mean()),
                                "value": float(values[(condition, metric)].mean()),
                                "delta": float(differences[:, j].mean()), "ci_low": float(low[j]),
                                "ci_high": float(high[j]), "ci_method": str(method[j]), "test": test,
                                "p_value": p_value, "p_holm": float("nan")})
    return pa.Table.from_pylist(with_holm(out, ["mode", "role", "hops", "metric"]), schema=EFFECT_SCHEMA)


def ablation_effects(rows: pa.Table, settings: StatsSettings) -> pa.Table:
    return paired_effects(rows, ABLATIONS, METRICS, settings)


def patching_effects(rows: pa.Table, settings: StatsSettings) -> pa.Table:
    return paired_effects(rows, ("patch",), PATCH_METRICS, settings)


def self_patch_effects(rows: pa.Table, settings: StatsSettings) -> pa.Table:
    return paired_effects(rows, ("self_patch",), METRICS, settings)


def causal_markdown(effects: pa.Table, confidence: float) -> str:
    """Per role: each layer's ablation effect on the sender's own answer, then counterfactual patching."""
    rows = effects.to_pylist()
    lines = ["# Sender-side causal profile", "",
             "Does the sender's own answer (its `shared` prompts) depend on the states the bridges translate? "
             "`mean`: the state at that layer and role replaced by its bridge_train mean; `resample`: by another "
             "eval example's state; `patch`: by the state at the same role of the counterfactual prompt (the "
             "first hop's object swapped: another bridge entity, another answer). Δ = intervened − clean, with "
             f"{confidence:.0%} BCa intervals; Holm across the conditions × layers of one role, hop subset and "
             "metric.", ""]
    keyed = {(r["role"], r["layer"], r["hops"], r["condition"], r["metric"]): r for r in rows}
    for role in sorted({r["role"] for r in rows}):
        lines += [f"## role `{role}`: ablation", "",
                  "| layer | hops | n | clean accuracy | ablation | Δ accuracy, points | Δ gold log-prob | p (Holm) |",
                  "|---|---|---|---|---|---|---|---|"]
        for (r_role, layer, hops, condition, metric) in sorted(keyed):
            if r_role != role or metric != "accuracy" or condition not in ABLATIONS:
                continue
            accuracy, logprob = keyed[(role, layer, hops, condition, "accuracy")], keyed[(role, layer, hops, condition,
                                                                                         "logprob")]
            lines.append(f"| {layer} | {hops} | {accuracy['n']} | {accuracy['clean_value']:.3f} | {condition} | "
                         f"{_points(accuracy)} | {logprob['delta']:+.2f} [{logprob['ci_low']:+.2f}, "
                         f"{logprob['ci_high']:+.2f}] | {accuracy['p_holm']:.2g} |")
        moved = [keyed[k] for k in sorted(keyed) if k[0] == role and k[3] == "patch" and k[4] == "moved"]
        if moved:
            lines += ["", f"## role `{role}`: counterfactual patching", "",
                      "| layer | hops | n | answer = counterfactual's, clean → patched | Δ, points | "
                      "Δ accuracy (original answer), points | p (Holm, moved) |", "|---|---|---|---|---|---|---|"]
            for row in moved:
                accuracy = keyed[(role, row["layer"], row["hops"], "patch", "accuracy")]
                lines.append(f"| {row['layer']} | {row['hops']} | {row['n']} | {row['clean_value']:.3f} → "
                             f"{row['value']:.3f} | {_points(row)} | {_points(accuracy)} | {row['p_holm']:.2g} |")
        lines.append("")
    return "\n".join(lines)


def _points(row: dict) -> str:
    return f"{100 * row['delta']:+.1f} [{100 * row['ci_low']:+.1f}, {100 * row['ci_high']:+.1f}]"


def receiver_causal_markdown(effects: pa.Table, confidence: float) -> str:
    """Per role and injection layer: does counterfactual patching move the receiver's answer (shared), and
    how much does self-patching from the full-context prompt restore (asymmetric, relay)?"""
    rows = effects.to_pylist()
    lines = ["# Receiver-side causal profile", "",
             "At each receiver layer and role where a bridge injects. `patch` (shared prompts): the state replaced "
             "by the receiver's state on the counterfactual prompt; if the answer moves to the counterfactual's, "
             "the receiver reads its answer from this site. `self_patch` (asymmetric prompts, the first-hop fact "
             "missing; relay prompts, every fact of a 1-hop question missing): the state replaced by the "
             "receiver's own state on the full-context prompt; its gain is the upper bound any bridge could "
             f"deliver at this site in that mode. Δ = intervened − clean, {confidence:.0%} BCa intervals; Holm "
             "across the layers of one mode, role, hop subset and metric.", ""]
    partial_modes = sorted({r["mode"] for r in rows if r["condition"] == "self_patch"})
    for role in sorted({r["role"] for r in rows}):
        header = ["layer", "counterfactual patch: answer moved, clean → patched", "Δ moved, points"]
        for mode in partial_modes:
            header += [f"self-patch ({mode}): accuracy, clean → patched", "Δ accuracy, points", "Δ gold log-prob",
                       "p (Holm)"]
        lines += [f"## role `{role}`", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for layer in sorted({r["layer"] for r in rows if r["role"] == role}):
            moved = pooled(rows, role, layer, "patch", "moved")
            cells = [str(layer), *([f"{moved['clean_value']:.3f} → {moved['value']:.3f}", _points(moved)] if moved
                                   else ["n/a", "n/a"])]
            for mode in partial_modes:
                gain, gain_logprob = (pooled(rows, role, layer, "self_patch", metric, mode=mode)
                                      for metric in ("accuracy", "logprob"))
                cells += ([f"{gain['clean_value']:.3f} → {gain['value']:.3f}", _points(gain),
                           f"{gain_logprob['delta']:+.2f} [{gain_logprob['ci_low']:+.2f}, "
                           f"{gain_logprob['ci_high']:+.2f}]", f"{gain['p_holm']:.2g}"] if gain else ["n/a"] * 4)
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)
