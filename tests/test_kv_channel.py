"""Planted cases of the KV channel: with sender = receiver and the identity map, the sender's context entries
give exactly the receiver's full-context scores (GPT-NeoX's partial rotary, Llama with a BOS, Gemma-3 with a
sliding window shorter than the prompt); the own-cache upper bound is the full-context prompt and the
baseline the receiver's own prompt, each against a plain forward of the whole sequence; ridge recovers a known
linear map, and the identity between a model and itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actbridge.bridges.maps import Moments
from actbridge.kv.channel import Channel, kv_channel_rows, sent_blocks
from actbridge.kv.conditions import KV_CONDITIONS
from actbridge.kv.fit import FittedKVMap, fit_kv_map, paired_sender_blocks
from actbridge.kv.layout import CacheLayout, UnsupportedCache, rotary_tables, rotate, unrotate
from actbridge.kv.maps import KV_MAPS, shapes_problem
from actbridge.kv.segments import segment_ids, segments_of
from actbridge.models.edited_scoring import Edits, Example, naive_scores
from actbridge.models.encoding import with_gold
from actbridge.models.handle import ModelHandle
from test_bounded_scoring import ARCHITECTURES, bos_tokenizer  # noqa: F401 - the fixture

TOLERANCE = 1e-4
CASES = [("gpt_neox", "plain"), ("llama", "bos"), ("gemma3_sliding", "bos")]


def partial_rows(eval_table, n=8):
    modes = eval_table.column("mode").to_pylist()
    picked = [i for i, m in enumerate(modes) if m == "relay"][: n // 2] + \
             [i for i, m in enumerate(modes) if m == "asymmetric"][: n // 2]
    return eval_table.take(picked)


def fitted(kind, sender, receiver, table, settings=None, train=6):
    texts = table.column("full_prompt").to_pylist()
    return fit_kv_map(kind, sender, receiver, texts[:train], texts[train:train + 4], settings=settings,
                      batch_tokens=4000)


def naive_of(handle, sequences, candidates, golds):
    """Gold scores of a plain forward of each whole sequence + candidate (the reference)."""
    d = handle.model.get_input_embeddings().embedding_dim
    examples = [Example(list(s), 0, c) for s, c in zip(sequences, candidates)]
    scores = naive_scores(handle.model, examples, 0, [Edits.identity(d) for _ in examples], handle.pad_id)
    return [s.gold_scores(0, g) for s, g in zip(scores, golds)]


@pytest.mark.parametrize("architecture,which", CASES)
def test_identity_kv_channel_reproduces_the_full_context_prompt(architecture, which, eval_table, tokenizer,
                                                                bos_tokenizer):
    tok = tokenizer if which == "plain" else bos_tokenizer
    handle = ModelHandle.of(ARCHITECTURES[architecture](tok), tok)
    if which == "bos":
        assert handle.prefix, "the planted case needs a tokenizer that adds a BOS"
    rows = partial_rows(eval_table)
    channel = Channel.of(handle, handle, fitted("identity", handle, handle, eval_table))
    table = kv_channel_rows(channel, rows, conditions=list(KV_CONDITIONS.names()),
                            layers_sent=channel.receiver_layout.num_layers, seed=0, batch_tokens=1500)
    by = {(r["example_id"], r["condition"]): r for r in table.to_pylist()}
    segments = [segments_of(s, r) for s, r in zip(rows.column("sender_prompt").to_pylist(),
                                                  rows.column("receiver_prompt").to_pylist())]
    ids = segment_ids(handle, segments)
    named = [with_gold(c, a) for c, a in zip(rows.column("candidates").to_pylist(), rows.column("answer").to_pylist())]
    candidates = [handle.continuation_ids(names) for names, _ in named]
    golds = [g for _, g in named]
    full = naive_of(handle, [s.head + s.context + s.tail for s in ids], candidates, golds)
    alone = naive_of(handle, [s.head + s.tail for s in ids], candidates, golds)
    examples = rows.column("example_id").to_pylist()
    for n, example in enumerate(examples):
        for condition, reference in (("kv_sent", full[n]), ("kv_own", full[n]), ("none", alone[n])):
            row = by[(example, condition)]
            assert row["gold_logprob"] == pytest.approx(reference["gold_logprob"], abs=TOLERANCE)
            assert row["first_token_logprob"] == pytest.approx(reference["first_token_logprob"], abs=TOLERANCE)
            assert row["exact_match"] == reference["exact_match"]
            assert row["gold_rank"] == reference["gold_rank"]
    # the controls carry something else: not the full-context scores
    shuffled = np.array([by[(e, "kv_shuffled")]["gold_logprob"] for e in examples])
    assert np.abs(shuffled - np.array([f["gold_logprob"] for f in full])).max() > 1e-3
    # the residual channel's baseline encodes the receiver's prompt whole; the pieces here are encoded apart
    assert len(table) == len(examples) * len(KV_CONDITIONS)


def test_batching_does_not_change_the_rows(eval_table, tokenizer):
    handle = ModelHandle.of(ARCHITECTURES["gpt_neox"](tokenizer), tokenizer)
    rows = partial_rows(eval_table)
    channel = Channel.of(handle, handle, fitted("identity", handle, handle, eval_table))
    tables = [kv_channel_rows(channel, rows, conditions=["kv_sent", "kv_mean", "kv_shuffled"], layers_sent=1,
                              seed=3, batch_tokens=b) for b in (1, 100_000)]
    for column in ("gold_logprob", "first_token_logprob"):
        np.testing.assert_allclose(tables[0].column(column).to_numpy(), tables[1].column(column).to_numpy(),
                                   atol=TOLERANCE, rtol=0)


def test_blocks_not_sent_see_nothing(eval_table, tokenizer):
    """One block sent of two: the other block must attend as if the entries were absent, so the rows differ
    from sending both and from sending none."""
    handle = ModelHandle.of(ARCHITECTURES["gpt_neox"](tokenizer), tokenizer)
    rows = partial_rows(eval_table)
    channel = Channel.of(handle, handle, fitted("identity", handle, handle, eval_table))
    both, one = (kv_channel_rows(channel, rows, conditions=["kv_sent"], layers_sent=k, seed=0)
                 for k in (2, 1))
    sent = lambda t: np.array([r["gold_logprob"] for r in t.to_pylist() if r["condition"] == "kv_sent"])  # noqa: E731
    none = np.array([r["gold_logprob"] for r in both.to_pylist() if r["condition"] == "none"])
    assert np.abs(sent(both) - sent(one)).max() > 1e-3 and np.abs(sent(one) - none).max() > 1e-3
    assert sent_blocks(1, 2) == [0] and sent_blocks(2, 4) == [1, 2] and sent_blocks(3, 3) == [0, 1, 2]
    with pytest.raises(ValueError, match="kv.layers_sent"):
        sent_blocks(3, 2)


@pytest.mark.parametrize("architecture", ["gpt_neox", "llama", "gemma3"])
def test_unrotating_then_rotating_keys_is_exact(architecture, tokenizer):
    model = ARCHITECTURES[architecture](tokenizer)
    layout = CacheLayout.of(model)
    keys = torch.randn(2, layout.kv_heads, 7, layout.head_dim)
    positions = torch.arange(7).expand(2, -1) + 5
    for kind in set(layout.layer_types):
        cos, sin = rotary_tables(model, positions, kind)
        turned = rotate(keys, cos, sin)
        assert not torch.allclose(turned, keys)
        torch.testing.assert_close(unrotate(turned, cos, sin), keys, atol=1e-5, rtol=0)
    if architecture == "gpt_neox":  # partial rotary: the dimensions past rotary_dim never turn
        cos, _ = rotary_tables(model, positions, layout.layer_types[0])
        assert cos.shape[-1] < layout.head_dim
        torch.testing.assert_close(rotate(keys, *rotary_tables(model, positions, "full_attention"))[..., cos.shape[-1]:],
                                   keys[..., cos.shape[-1]:])


def test_ridge_recovers_a_known_linear_map():
    rng = np.random.default_rng(0)
    weight, bias = rng.normal(size=(12, 8)), rng.normal(size=8)
    x_train, x_val = rng.normal(size=(400, 12)) * 3.0, rng.normal(size=(100, 12)) * 3.0
    train, val = Moments.of([(x_train, x_train @ weight + bias)], False), Moments.of([(x_val, x_val @ weight + bias)], False)
    fitted_map = KV_MAPS["ridge"]().fit(train, val, KV_MAPS["ridge"].settings({}))
    np.testing.assert_allclose(fitted_map.weight, weight, atol=1e-3)
    np.testing.assert_allclose(fitted_map.bias, bias, atol=1e-3)


def test_ridge_between_a_model_and_itself_is_the_identity(eval_table, tokenizer):
    handle = ModelHandle.of(ARCHITECTURES["llama"](tokenizer), tokenizer)
    kv_map = fitted("ridge", handle, handle, eval_table, {"penalties": [1e-6, 1.0]}, train=24)
    for affine in kv_map.keys + kv_map.values:
        assert affine.info["penalty"] == 1e-6 and affine.info["val_r2"] > 0.999
        np.testing.assert_allclose(affine.weight, np.eye(len(affine.weight)), atol=0.02)


def test_a_map_kind_that_needs_equal_shapes_names_the_key(tokenizer, big_tokenizer):
    small, large = ({"num_layers": 2, "kv_heads": 2, "head_dim": 16}, {"num_layers": 3, "kv_heads": 1, "head_dim": 16})
    assert shapes_problem("ridge", small, large) is None
    problem = shapes_problem("identity", small, large)
    assert "kv.maps" in problem and "num_layers 2 vs 3" in problem
    sender = ModelHandle.of(ARCHITECTURES["llama"](tokenizer), tokenizer)
    receiver = ModelHandle.of(ARCHITECTURES["gemma3"](tokenizer), tokenizer)
    with pytest.raises(ValueError, match="kv.maps"):
        fit_kv_map("identity", sender, receiver, ["Facts: a b"], ["Facts: a"], batch_tokens=100)


def test_an_unsupported_cache_names_the_architecture(tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2))
    with pytest.raises(UnsupportedCache, match="'gpt2'.*kv.enabled|kv.enabled.*'gpt2'"):
        CacheLayout.of(model)


def test_pairing_by_relative_depth():
    assert paired_sender_blocks(4, 4) == [0, 1, 2, 3]
    assert paired_sender_blocks(30, 18)[0] == 0 and paired_sender_blocks(30, 18)[-1] == 29
    assert paired_sender_blocks(2, 1) == [1]


def test_a_saved_map_loads_the_same(tmp_path, eval_table, tokenizer):
    handle = ModelHandle.of(ARCHITECTURES["gpt_neox"](tokenizer), tokenizer)
    kv_map = fitted("ridge", handle, handle, eval_table)
    kv_map.save(tmp_path, {"made_by": "test"})
    loaded = FittedKVMap.load(tmp_path)
    assert loaded.sender_blocks == kv_map.sender_blocks and loaded.receiver_shape == kv_map.receiver_shape
    np.testing.assert_allclose(loaded.keys[1].weight, kv_map.keys[1].weight, atol=1e-6)
    np.testing.assert_allclose(loaded.mean_values[0], kv_map.mean_values[0], atol=1e-6)


def test_a_batch_that_cannot_fit_names_batch_tokens(eval_table, tokenizer, monkeypatch):
    from actbridge.models import memory

    handle = ModelHandle.of(ARCHITECTURES["gpt_neox"](tokenizer), tokenizer)
    channel = Channel.of(handle, handle, fitted("identity", handle, handle, eval_table))
    monkeypatch.setattr(memory, "available_bytes", lambda device: 1000)
    with pytest.raises(memory.BatchMemoryError, match="batch_tokens"):
        kv_channel_rows(channel, partial_rows(eval_table), conditions=["kv_sent"], layers_sent=1, seed=0)
