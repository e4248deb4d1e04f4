"""Scoring machinery with planted answers: a model's own greedy output must score as an exact match."""

from __future__ import annotations

import numpy as np
import torch
from transformers import GPTNeoXForCausalLM

from actbridge.models.handle import ModelHandle
from actbridge.models.scoring import evaluate_model_accuracy, score_answers
from actbridge.stats.summaries import accuracy_markdown
from actbridge.models.micro_training import MicroModelConfig, build_gpt_neox_config


def tiny_model(tokenizer, seed=0):
    torch.manual_seed(seed)
    config = build_gpt_neox_config(MicroModelConfig(layers=2, hidden=32, heads=2, steps=1), tokenizer)
    return GPTNeoXForCausalLM(config).eval()


def greedy_answers(model, tokenizer, prompts, n_tokens=1):
    """Each prompt's greedy continuation, kept only where decode -> encode round-trips."""
    out = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            generated = model.generate(ids, max_new_tokens=n_tokens, do_sample=False,
                                       pad_token_id=tokenizer.pad_token_id)[0, ids.shape[1]:].tolist()
        text = tokenizer.decode(generated)
        if text.startswith(" ") and tokenizer(text, add_special_tokens=False)["input_ids"] == generated:
            out.append((prompt, text[1:]))
    return out


def test_own_greedy_output_is_an_exact_match_and_others_are_not(eval_table, tokenizer):
    model = tiny_model(tokenizer)
    prompts = [p[:cut] for p in eval_table.column("full_prompt").to_pylist() for cut in (-1, -3, -6, -9)]
    pairs = greedy_answers(model, tokenizer, prompts)
    assert len(pairs) >= 5
    prompts, answers = zip(*pairs)
    candidates = [[answer, "Paris", "blue"] for answer in answers]
    scores = score_answers(ModelHandle.of(model, tokenizer), prompts, answers, candidates, batch_tokens=97)
    assert scores.exact_match.all()
    # the greedy output's tokens each have the highest probability, so nothing outranks... its first token
    wrong = score_answers(ModelHandle.of(model, tokenizer), prompts, ["Paris"] * len(prompts), candidates)
    assert not wrong.exact_match[[a != "Paris" for a in answers]].any()
    assert (scores.n_candidates == 3).all()


def test_multi_token_greedy_output_is_an_exact_match(eval_table, tokenizer):
    model = tiny_model(tokenizer, seed=3)
    prompts = [p[:cut] for p in eval_table.column("full_prompt").to_pylist()[:12] for cut in range(-10, 0)]
    pairs = [(p, a) for p, a in greedy_answers(model, tokenizer, prompts, n_tokens=2)
             if len(tokenizer(" " + a, add_special_tokens=False)["input_ids"]) == 2]
    assert len(pairs) >= 3
    prompts, answers = zip(*pairs)
    scores = score_answers(ModelHandle.of(model, tokenizer), prompts, answers, [[a, "Paris"] for a in answers])
    assert scores.exact_match.all()


def test_rank_and_logprob_follow_the_model(eval_table, tokenizer):
    model = tiny_model(tokenizer, seed=1)
    rows = eval_table.to_pylist()[:10]
    prompts = [r["full_prompt"] for r in rows]
    candidates = [r["candidates"] for r in rows]
    scores = score_answers(ModelHandle.of(model, tokenizer), prompts, [r["answer"] for r in rows], candidates)
    for i, row in enumerate(rows):
        per_candidate = score_answers(ModelHandle.of(model, tokenizer), [prompts[i]] * len(candidates[i]), candidates[i],
                                      [candidates[i]] * len(candidates[i]))
        np.testing.assert_allclose(per_candidate.gold_logprob[candidates[i].index(row["answer"])],
                                   scores.gold_logprob[i], rtol=1e-5)
        assert scores.gold_rank[i] == 1 + (per_candidate.gold_logprob > scores.gold_logprob[i] + 1e-6).sum()


def test_batching_and_padding_do_not_change_scores(eval_table, tokenizer):
    model = tiny_model(tokenizer, seed=2)
    rows = eval_table.to_pylist()[:12]
    args = ([r["full_prompt"] for r in rows], [r["answer"] for r in rows], [r["candidates"] for r in rows])
    one, many = score_answers(ModelHandle.of(model, tokenizer), *args, batch_tokens=1), score_answers(ModelHandle.of(model, tokenizer), *args)
    np.testing.assert_allclose(one.gold_logprob, many.gold_logprob, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(one.gold_rank, many.gold_rank)


def test_accuracy_table_covers_every_view(eval_table, tokenizer):
    table = evaluate_model_accuracy(ModelHandle.of(tiny_model(tokenizer), tokenizer), eval_table, model_name="sender")
    views = {(r["mode"], r["prompt"], r["hops"]) for r in table.to_pylist()}
    assert ("shared", "full", 1) in views and ("asymmetric", "receiver", 2) in views
    assert ("asymmetric", "receiver", 1) not in views
    markdown = accuracy_markdown(table)
    assert "MISSED (>= 0.90)" in markdown  # an untrained model misses the chaining targets


def test_the_first_token_metric_sees_a_right_first_token_and_not_a_shared_one(eval_table, tokenizer):
    """Planted: the model's own greedy first token, followed by a token it would not write. Exact match misses
    it, the first-token metric finds it; a candidate that shares that first token never outranks the gold."""
    model = tiny_model(tokenizer, seed=3)
    prompts = [p[:cut] for p in eval_table.column("full_prompt").to_pylist()[:12] for cut in range(-10, 0)]
    pairs = greedy_answers(model, tokenizer, prompts)
    assert len(pairs) >= 5
    handle = ModelHandle.of(model, tokenizer)
    vocabulary = {text: i for text, i in tokenizer.get_vocab().items()}
    # a second token that round-trips after the first: the answer becomes two tokens whose first is greedy
    tail = next(t for t in ("ta", "ko", "ri", "zu") if t in vocabulary)
    rows = [(prompt, answer + tail) for prompt, answer in pairs
            if tokenizer(" " + answer + tail, add_special_tokens=False)["input_ids"][:1]
            == tokenizer(" " + answer, add_special_tokens=False)["input_ids"]]
    assert len(rows) >= 3
    prompts, answers = zip(*rows)
    def first(name):
        return tokenizer(" " + name, add_special_tokens=False)["input_ids"][0]

    other = [next(c for c in ("Paris", "blue", "Rome", "Oslo") if first(c) != first(a)) for a in answers]
    scores = score_answers(handle, prompts, answers, [[a, o] for a, o in zip(answers, other)])
    assert scores.first_token_top.all()
    # the gold's first token shared with a distractor (the greedy answer itself): still top, never outranked
    shared = score_answers(handle, prompts, answers, [[a, a[: -len(tail)], o] for a, o in zip(answers, other)])
    assert shared.first_token_top.all()
    np.testing.assert_allclose(shared.first_token_logprob, scores.first_token_logprob, atol=1e-5)
    # a distractor as the gold: its first token is not the greedy one
    wrong = score_answers(handle, prompts, other, [[a, o] for a, o in zip(answers, other)])
    assert not wrong.first_token_top.any()
