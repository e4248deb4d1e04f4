"""Answer scoring: exact match, gold log-probability, rank among candidates and the first-token metric.

All of them come from teacher forcing ``prompt + " " + candidate`` for every candidate. Greedy
decoding reproduces the gold answer exactly when, at each answer position, the arg-max given the
gold prefix is the gold token, so exact match needs no separate generation loop.

The work is the injection engine's with one identity edit at the prompt's last token
(:func:`actbridge.models.edited_scoring.score_under_edits`): the prompt runs once per example and its
key/value cache serves every candidate, the vocabulary is projected only where an answer token is
predicted, and batches are sized in tokens. ``naive_answer_scores`` is the full-vocabulary,
whole-sequence-per-candidate reference it is tested against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pyarrow as pa
import torch

from actbridge.data.worlds import ACCURACY_VIEWS, cue_counts
from actbridge.models.encoding import with_gold
from actbridge.models.handle import ModelHandle
from actbridge.models.edited_scoring import Edits, score_under_edits
from actbridge.logs import Progress
from actbridge.models.padding import right_padded


@dataclass(frozen=True)
class AnswerScores:
    """Per-example metrics, each an array of shape [n_examples]."""

    exact_match: np.ndarray  # bool
    gold_logprob: np.ndarray  # float, sum over the gold answer's tokens
    gold_rank: np.ndarray  # int, 1 = best among candidates
    n_candidates: np.ndarray  # int
    first_token_top: np.ndarray  # bool: the gold's first token beats every other first token among the candidates
    first_token_logprob: np.ndarray  # float: the gold's first token's log-probability


def score_answers(handle: ModelHandle, prompts: Sequence[str],
                  answers: Sequence[str], candidates: Sequence[Sequence[str]], *,
                  batch_tokens: int | None = None, batch_key: str = "batch_tokens",
                  progress: "Progress | None" = None) -> AnswerScores:
    """Score gold answers against candidate sets with teacher forcing, in bounded memory."""
    n_examples = len(prompts)
    out = AnswerScores(np.zeros(n_examples, bool), np.zeros(n_examples), np.zeros(n_examples, np.int64),
                       np.zeros(n_examples, np.int64), np.zeros(n_examples, bool), np.zeros(n_examples))
    if n_examples == 0:
        return out
    identity = Edits.identity(handle.shape["hidden_size"])
    last = [len(ids) - 1 for ids in handle.prompt_ids(prompts)]
    for example, _, scores, names, gold in score_under_edits(handle, 0, prompts, last, answers, candidates,
                                                             lambda _: identity, batch_tokens=batch_tokens,
                                                             batch_key=batch_key, progress=progress):
        out.exact_match[example], out.gold_logprob[example] = scores.exact[0, gold], scores.logprob[0, gold]
        out.gold_rank[example], out.n_candidates[example] = scores.gold_rank(0, gold), len(names)
        out.first_token_top[example] = scores.first_token_top(0, gold)
        out.first_token_logprob[example] = scores.first_logprob[0, gold]
    return out


@torch.inference_mode()
def naive_answer_scores(handle: ModelHandle, prompts: Sequence[str],
                        answers: Sequence[str], candidates: Sequence[Sequence[str]], *, batch_size: int = 64
                        ) -> AnswerScores:
    """Reference for :func:`score_answers`: each whole ``prompt + candidate`` through the model's forward,
    log-softmax over the full vocabulary at every position (memory grows with vocabulary x sequence x batch)."""
    from actbridge.models.edited_scoring import score_continuation

    device = handle.device
    rows: list[tuple[int, int, list[int], int]] = []  # (example, candidate, ids, start)
    gold_index = []
    for example, (prompt, answer, example_candidates) in enumerate(zip(prompts, answers, candidates)):
        names, gold = with_gold(example_candidates, answer)
        gold_index.append(gold)
        for candidate, (ids, start) in enumerate(handle.encode_continuations(prompt, names)):
            rows.append((example, candidate, ids, start))
    n_examples = len(prompts)
    max_candidates = max(candidate for _, candidate, _, _ in rows) + 1
    candidate_logprob = np.full((n_examples, max_candidates), -np.inf)
    candidate_match = np.zeros((n_examples, max_candidates), dtype=bool)
    first_logprob = np.full((n_examples, max_candidates), -np.inf)
    first_token = np.full((n_examples, max_candidates), -1)
    for example, candidate, ids, start in rows:
        first_token[example, candidate] = ids[start]
    for begin in range(0, len(rows), batch_size):
        batch = rows[begin:begin + batch_size]
        input_ids, attention = right_padded([ids for _, _, ids, _ in batch], handle.pad_id)
        logits = handle.model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
        for row, (example, candidate, ids, start) in enumerate(batch):
            (candidate_logprob[example, candidate], candidate_match[example, candidate],
             first_logprob[example, candidate]) = score_continuation(logprobs, row, start - 1, ids[start:])
    every = np.arange(n_examples)
    gold = np.asarray(gold_index)
    gold_logprob = candidate_logprob[every, gold]
    rank = 1 + (candidate_logprob > gold_logprob[:, None]).sum(axis=1)
    n_candidates = np.isfinite(candidate_logprob).sum(axis=1)
    other_first = first_token != first_token[every, gold][:, None]
    beaten = (other_first & (first_logprob > first_logprob[every, gold][:, None])).any(axis=1)
    return AnswerScores(candidate_match[every, gold], gold_logprob, rank, n_candidates, ~beaten,
                        first_logprob[every, gold])


def accuracy_table(examples: pa.Table, side: str, scores: AnswerScores, *, model_name: str) -> pa.Table:
    """Exact match, top-1 among candidates, the first-token metric, mean gold log-probs and chance level by hops
    and mode."""
    hops = np.asarray(examples.column("hops").to_pylist())
    modes = np.asarray(examples.column("mode").to_pylist())
    # the one-cue ceilings of each question's world (actbridge.data.worlds.cue_counts), beside the model's score
    cues = np.asarray([cue_counts(prompt, subject, relations)[1:] for prompt, subject,
                       relations in zip(*(examples.column(c).to_pylist() for c in ("full_prompt", "subject",
                                                                                   "relations")))], dtype=float)
    rows = []
    for mode in sorted(set(modes)):
        for n_hops in sorted(set(hops)):
            selected = (hops == n_hops) & (modes == mode)
            if not selected.any():
                continue
            rows.append({
                "model": model_name,
                "prompt": side,
                "mode": str(mode),
                "hops": int(n_hops),
                "n": int(selected.sum()),
                "exact_match": float(scores.exact_match[selected].mean()),
                "top1_among_candidates": float((scores.gold_rank[selected] == 1).mean()),
                "first_token_top": float(scores.first_token_top[selected].mean()),
                "gold_logprob": float(scores.gold_logprob[selected].mean()),
                "first_token_logprob": float(scores.first_token_logprob[selected].mean()),
                "chance": float((1.0 / scores.n_candidates[selected]).mean()),
                "subject_ceiling": float((1.0 / cues[selected, 0]).mean()),
                "relations_ceiling": float((1.0 / cues[selected, 1]).mean()),
            })
    return pa.Table.from_pylist(rows)


def evaluate_model_accuracy(handle: ModelHandle, examples: pa.Table, *,
                            model_name: str, batch_tokens: int | None = None) -> pa.Table:
    """Accuracy by mode, prompt side and hops: shared prompts, each half of asymmetric ones, and the
    receiver's half of relay ones. Batches are sized by config key ``batch_tokens``."""

    modes = np.asarray(examples.column("mode").to_pylist())
    views = [(mode, side, examples.filter(pa.array(modes == mode))) for mode, side in ACCURACY_VIEWS]
    views = [(mode, side, subset) for mode, side, subset in views if subset.num_rows]
    progress = Progress(sum(subset.num_rows for *_, subset in views), f"{model_name} accuracy", unit="prompts")
    tables = []
    for mode, side, subset in views:
        scores = score_answers(handle, subset.column(f"{side}_prompt").to_pylist(),
                               subset.column("answer").to_pylist(), subset.column("candidates").to_pylist(),
                               batch_tokens=batch_tokens, progress=progress)
        tables.append(accuracy_table(subset, side, scores, model_name=model_name))
    return pa.concat_tables(tables)
