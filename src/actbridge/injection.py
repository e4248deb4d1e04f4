"""Inject bridged sender states into the receiver on eval and score every condition per example.

One call covers one bridge (layer pair, method, seed) at one role. The
receiver reads its own prompt (in ``asymmetric`` mode, without the first-hop
facts); the edit site is the role's token in that prompt. Rows of the result
are paired by ``example_id`` with the ``none`` condition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pyarrow as pa

from actbridge.activations import RowKey
from actbridge.bridges import Bridge
from actbridge.conditions import (ConditionInputs, build_edits, condition_labels, derangement,
                                  random_directions)
from actbridge.evaluation import continuation_ids, with_gold
from actbridge.interventions import Example, fast_scores
from actbridge.roles import role_positions_for_table

if TYPE_CHECKING:  # hints only
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

RESULT_SCHEMA = pa.schema([
    ("example_id", pa.string()), ("mode", pa.string()), ("hops", pa.int8()), ("role", pa.string()),
    ("condition", pa.string()), ("alpha", pa.float64()), ("exact_match", pa.bool_()),
    ("gold_logprob", pa.float64()), ("gold_rank", pa.int16()), ("n_candidates", pa.int16()),
    ("h_norm", pa.float64()), ("b_norm", pa.float64()), ("cos_hb", pa.float64()),
])


@dataclass(frozen=True)
class InjectionSite:
    """Where to inject: receiver ``hidden_states`` index and token role."""

    layer: int
    role: str


def run_injection(receiver: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase", examples: pa.Table,
                  site: InjectionSite, bridge: Bridge, sender_keys: Sequence[RowKey], sender_states: np.ndarray,
                  conditions: Sequence[str], alphas: Sequence[float], full_keys: Sequence[RowKey] | None = None,
                  full_states: np.ndarray | None = None, seed: int = 0, batch_size: int = 8) -> pa.Table:
    """Per-example scores of every (condition, α) at ``site``.

    ``sender_states`` [n, d_s] are the sender's raw states at the bridged layer
    and this role, keyed by (example_id, mode) in ``sender_keys``; ``full_states``
    (keyed by ``full_keys``) are the receiver's own states at ``site`` on the
    full-context prompt, needed by ``self_patch`` only. Examples without the
    role (no bridge entity in a 1-hop question) are skipped.
    """
    labels = condition_labels(conditions, alphas)
    positions = role_positions_for_table(tokenizer, examples, "receiver", [site.role])[site.role]
    ids = examples.column("example_id").to_pylist()
    modes = examples.column("mode").to_pylist()
    keys = list(zip(ids, modes))
    sender_row = {key: row for row, key in enumerate(sender_keys)}
    keep = [i for i, key in enumerate(keys) if positions[i] >= 0 and key in sender_row]
    if len(keep) < 2:
        raise ValueError(f"fewer than two examples have role {site.role!r} and sender states")
    bridged = bridge.apply(sender_states[[sender_row[keys[i]] for i in keep]])  # [n, d_r], raw receiver space
    shuffled = bridged[derangement(len(keep), seed)]
    directions = random_directions(len(keep), bridged.shape[1], seed)
    full_row = {key: row for row, key in enumerate(full_keys or [])}
    prompts = examples.column("receiver_prompt").to_pylist()
    answers = examples.column("answer").to_pylist()
    candidates = examples.column("candidates").to_pylist()
    hops = examples.column("hops").to_pylist()
    columns: dict[str, list] = {field.name: [] for field in RESULT_SCHEMA}
    for begin in range(0, len(keep), batch_size):
        batch = range(begin, min(begin + batch_size, len(keep)))
        batch_examples, batch_edits, golds = [], [], []
        for n in batch:
            i = keep[n]
            names, gold = with_gold(candidates[i], answers[i])
            cand_ids = continuation_ids(tokenizer, names)
            prompt_ids = tokenizer(prompts[i], add_special_tokens=False)["input_ids"]
            batch_examples.append(Example(prompt_ids, int(positions[i]), cand_ids))
            golds.append(gold)
            full = full_states[full_row[keys[i]]] if keys[i] in full_row else None
            inputs = ConditionInputs(bridged[n], shuffled[n], directions[n], bridge.receiver.mean, full)
            batch_edits.append(build_edits(labels, inputs))
        scores = fast_scores(receiver, batch_examples, site.layer, batch_edits,
                             pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
        for n, score, gold in zip(batch, scores, golds):
            i = keep[n]
            h = score.clean_state.astype(np.float64)
            b = bridged[n]
            h_norm, b_norm = float(np.linalg.norm(h)), float(np.linalg.norm(b))
            cos_hb = float(h @ b / (h_norm * b_norm)) if h_norm > 0 and b_norm > 0 else float("nan")
            for k, (condition, alpha) in enumerate(labels):
                gold_logprob = score.logprob[k, gold]
                columns["example_id"].append(ids[i])
                columns["mode"].append(modes[i])
                columns["hops"].append(hops[i])
                columns["role"].append(site.role)
                columns["condition"].append(condition)
                columns["alpha"].append(alpha)
                columns["exact_match"].append(bool(score.exact[k, gold]))
                columns["gold_logprob"].append(float(gold_logprob))
                columns["gold_rank"].append(int(1 + np.sum(score.logprob[k] > gold_logprob)))
                columns["n_candidates"].append(score.logprob.shape[1])
                columns["h_norm"].append(h_norm)
                columns["b_norm"].append(b_norm)
                columns["cos_hb"].append(cos_hb)
    return pa.table(columns, schema=RESULT_SCHEMA)
