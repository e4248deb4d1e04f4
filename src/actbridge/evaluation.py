"""Answer scoring: exact match, gold log-probability and rank among candidates.

All three come from one teacher-forced pass over ``prompt + " " + candidate``
for every candidate. Greedy decoding reproduces the gold answer exactly when,
at each answer position, the arg-max given the gold prefix is the gold token,
so exact match needs no separate generation loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pyarrow as pa
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from actbridge.dataset import ACCURACY_VIEWS
from actbridge.padding import right_padded


@dataclass(frozen=True)
class AnswerScores:
    """Per-example metrics, each an array of shape [n_examples]."""

    exact_match: np.ndarray  # bool
    gold_logprob: np.ndarray  # float, sum over the gold answer's tokens
    gold_rank: np.ndarray  # int, 1 = best among candidates
    n_candidates: np.ndarray  # int


def with_gold(candidates: Sequence[str], answer: str) -> tuple[list[str], int]:
    """The candidate names, the gold answer appended if it is missing, and the gold answer's index."""
    names = list(candidates) if answer in candidates else [*candidates, answer]
    return names, names.index(answer)


def continuation_ids(tokenizer: PreTrainedTokenizerBase, continuations: Sequence[str]) -> list[list[int]]:
    """Token ids of ``" " + c`` for each continuation, encoded apart from any prompt."""
    return [tokenizer(" " + continuation, add_special_tokens=False)["input_ids"] for continuation in continuations]


def encode_continuations(tokenizer: PreTrainedTokenizerBase, prompt: str,
                         continuations: Sequence[str]) -> list[tuple[list[int], int]]:
    """Token ids of ``prompt + " " + c`` and the index where the continuation starts.

    The prompt is encoded alone and the continuation appended, so every
    candidate shares the prompt's tokens exactly (no merge across the boundary).
    """
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    return [(prompt_ids + ids, len(prompt_ids)) for ids in continuation_ids(tokenizer, continuations)]


def score_continuation(logprobs: torch.Tensor, row: int, first_prediction: int, targets: Sequence[int]
                       ) -> tuple[float, bool]:
    """Teacher-forced score of ``targets`` in row ``row`` of ``logprobs`` [batch, seq, vocab].

    ``targets[j]`` is predicted at position ``first_prediction + j``. Returns the
    summed log-probability and whether every target is the arg-max there (greedy
    decoding reproduces the continuation).
    """
    positions = torch.arange(first_prediction, first_prediction + len(targets))
    target = torch.as_tensor(targets, dtype=torch.long)
    token_logprobs = logprobs[row, positions, target]
    return float(token_logprobs.sum()), bool((logprobs[row, positions].argmax(-1) == target).all())


@torch.inference_mode()
def score_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    answers: Sequence[str],
    candidates: Sequence[Sequence[str]],
    batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> AnswerScores:
    """Score gold answers against candidate sets with teacher forcing."""
    rows: list[tuple[int, int, list[int], int]] = []  # (example, candidate, ids, start)
    gold_index = []
    for example, (prompt, answer, cands) in enumerate(zip(prompts, answers, candidates)):
        names, gold = with_gold(cands, answer)
        gold_index.append(gold)
        for cand_i, (ids, start) in enumerate(encode_continuations(tokenizer, prompt, names)):
            rows.append((example, cand_i, ids, start))
    n = len(prompts)
    max_cands = max(c for _, c, _, _ in rows) + 1
    cand_logprob = np.full((n, max_cands), -np.inf)
    cand_match = np.zeros((n, max_cands), dtype=bool)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(rows)), key=lambda r: len(rows[r][2]))  # length-bucketed batches
    for begin in range(0, len(order), batch_size):
        batch = [rows[r] for r in order[begin:begin + batch_size]]
        input_ids, attention = right_padded([ids for _, _, ids, _ in batch], pad_id)
        logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
        for row, (example, cand_i, ids, start) in enumerate(batch):
            cand_logprob[example, cand_i], cand_match[example, cand_i] = score_continuation(
                logprobs, row, start - 1, ids[start:])
    gold = np.asarray(gold_index)
    gold_lp = cand_logprob[np.arange(n), gold]
    rank = 1 + (cand_logprob > gold_lp[:, None]).sum(axis=1)
    n_cands = np.isfinite(cand_logprob).sum(axis=1)
    return AnswerScores(cand_match[np.arange(n), gold], gold_lp, rank, n_cands)


def accuracy_table(examples: pa.Table, side: str, scores: AnswerScores,
                   model_name: str) -> pa.Table:
    """Exact match, mean gold log-prob and chance level by hops and mode."""
    hops = np.asarray(examples.column("hops").to_pylist())
    modes = np.asarray(examples.column("mode").to_pylist())
    rows = []
    for mode in sorted(set(modes)):
        for hop in sorted(set(hops)):
            sel = (hops == hop) & (modes == mode)
            if not sel.any():
                continue
            rows.append({
                "model": model_name,
                "prompt": side,
                "mode": str(mode),
                "hops": int(hop),
                "n": int(sel.sum()),
                "exact_match": float(scores.exact_match[sel].mean()),
                "top1_among_candidates": float((scores.gold_rank[sel] == 1).mean()),
                "gold_logprob": float(scores.gold_logprob[sel].mean()),
                "chance": float((1.0 / scores.n_candidates[sel]).mean()),
            })
    return pa.Table.from_pylist(rows)


# (mode, prompt side) pairs worth scoring: in shared mode every side reads the same prompt.


def evaluate_model_accuracy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, examples: pa.Table,
                            model_name: str, device: torch.device | str = "cpu") -> pa.Table:
    """Accuracy by mode, prompt side and hops: shared prompts, each half of asymmetric ones, and the
    receiver's half of relay ones."""
    modes = np.asarray(examples.column("mode").to_pylist())
    tables = []
    for mode, side in ACCURACY_VIEWS:
        subset = examples.filter(pa.array(modes == mode))
        if subset.num_rows == 0:
            continue
        scores = score_answers(model, tokenizer, subset.column(f"{side}_prompt").to_pylist(),
                               subset.column("answer").to_pylist(), subset.column("candidates").to_pylist(),
                               device=device)
        tables.append(accuracy_table(subset, side, scores, model_name))
    return pa.concat_tables(tables)
