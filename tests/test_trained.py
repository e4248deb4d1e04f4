"""Bridges trained through the receiver: a planted channel is found, and the verdict says so."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from actbridge.models.handle import ModelHandle
from actbridge.activations.store import hidden_states_at
from actbridge.bridges.maps import fit_normalizers
from actbridge.bridges.methods import fit_bridge
from actbridge.bridges.methods.trained import TrainedSettings
from actbridge.data.worlds import DataConfig, build_split
from actbridge.bridges.jobs import BridgeRun
from actbridge.injection.jobs import InjectionSite, run_injection, tag_rows
from actbridge.schemas import EFFECT_SCHEMA
from actbridge.stats.paired import StatsSettings, condition_statistics
from actbridge.bridges.through_receiver import (AnswerRows, answer_loss, answer_rows, cached_prefix_answer_loss,
                               train_bridge, whole_sequence_answer_loss)
from actbridge.stats.verdict import VerdictSettings, verdict_table
from tests.test_activations import tiny_model

LAYERS = 2  # the edit site hidden_states[2] of a 2-block model is the final, normed state: logits = W_U h


def single_token_rows(table: pa.Table, tokenizer) -> pa.Table:
    keep = [all(len(tokenizer(" " + c, add_special_tokens=False)["input_ids"]) == 1 for c in candidates)
            for candidates in table.column("candidates").to_pylist()]
    return table.filter(pa.array(keep))


@pytest.fixture(scope="module")
def channel(big_tokenizer):
    """A toy receiver whose answer is a known linear readout of the injected state (the unembedding W_U at
    the final state), and a sender whose state is that readout's row for the gold answer, plus noise: a
    channel exists, and a map trained for the receiver must find it."""
    torch.manual_seed(0)
    receiver = tiny_model(big_tokenizer, layers=LAYERS, hidden=128)
    with torch.no_grad():  # a confident readout: logits of order 10 for a state of the receiver's own scale
        receiver.get_output_embeddings().weight.mul_(20.0)
    unembedding = receiver.get_output_embeddings().weight.detach().numpy().astype(np.float64)  # [V, d]
    config = DataConfig(seed=21, hops=(1,), distractors=2, context_modes=("shared",),
                        sizes={"lm_train": 10, "bridge_train": 700, "bridge_val": 40, "eval": 90})
    rng = np.random.default_rng(0)
    splits = {}
    for split in ("bridge_train", "bridge_val", "eval"):
        table = single_token_rows(build_split(config, split), big_tokenizer)
        answers = [big_tokenizer(" " + a, add_special_tokens=False)["input_ids"][0]
                   for a in table.column("answer").to_pylist()]
        sender = unembedding[answers] + 0.05 * rng.normal(size=(len(answers), unembedding.shape[1]))
        ids = big_tokenizer(table.column("full_prompt").to_pylist(), add_special_tokens=False)["input_ids"]
        last = np.array([[len(x) - 1] for x in ids])
        receiver_states = hidden_states_at(receiver, ids, last, [LAYERS], 0, "cpu")[:, 0, 0]
        keys = list(zip(table.column("example_id").to_pylist(), table.column("mode").to_pylist()))
        splits[split] = (table, keys, sender, receiver_states)
    return receiver, splits


def offline_start(splits):
    """The ridge bridge from the sender's state to the receiver's own state, as the pipeline fits it."""
    def stream(split):
        return lambda: iter([(splits[split][2], splits[split][3])])
    sender_norm, receiver_norm = fit_normalizers(stream("bridge_train")())
    return fit_bridge("ridge", stream("bridge_train"), stream("bridge_val"), sender_norm, receiver_norm,
                      settings={"subsample": 1.0}, seed=0)


def test_the_answer_loss_is_the_teacher_forced_answer_log_probability(channel, big_tokenizer):
    receiver, splits = channel
    table, keys, sender, _ = splits["eval"]
    rows = answer_rows(ModelHandle.for_tokenizer(big_tokenizer), table, "last", keys, sender)
    start = offline_start(splits)
    bridged = torch.tensor(start.apply(rows.sender_states[:4]), dtype=torch.float32)
    index = np.arange(4)
    loss = answer_loss(receiver, LAYERS, rows, index, bridged, "replace", 0)
    expected = []
    for i in index:  # one example at a time, by hand: log-softmax of W_U b at the last prompt token
        logits = receiver.get_output_embeddings()(bridged[i])
        expected.append(-torch.log_softmax(logits, -1)[rows.token_ids[i][rows.answer_start[i]]])
    assert loss.item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-4)


@pytest.mark.parametrize("injection", ["replace", "add"])
@pytest.mark.parametrize("layer", [0, 1, LAYERS])
def test_the_cached_prefix_answer_loss_equals_the_whole_sequence_one_value_and_gradient(channel, big_tokenizer,
                                                                                        injection, layer):
    """Edit sites anywhere in the prompt (the first token, where no prefix exists, included), answers of
    several tokens, rows of different lengths in one batch: the loss that runs only the tokens from the
    edit on with a gradient equals the whole-sequence one, and so does its gradient."""
    receiver, splits = channel
    table, keys, sender, _ = splits["eval"]
    prompts, answers = table.column("full_prompt").to_pylist(), table.column("answer").to_pylist()
    rng = np.random.default_rng(layer)
    token_ids, starts, positions = [], [], []
    for prompt, answer in zip(prompts[:12], answers[:12]):
        prompt_ids = big_tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer_ids = big_tokenizer(" " + answer + " and more", add_special_tokens=False)["input_ids"]
        token_ids.append(prompt_ids + answer_ids)
        starts.append(len(prompt_ids))
        positions.append(int(rng.integers(0, len(prompt_ids))))
    positions[0], positions[1] = 0, starts[1] - 1
    rows = AnswerRows(token_ids, np.array(starts), np.array(positions), sender[:12])
    for index in (np.arange(12), np.array([0])):  # a batch whose only prefix is empty: no cache at all
        vectors = torch.tensor(rng.normal(size=(len(index), receiver.config.hidden_size)), dtype=torch.float32)
        losses, gradients = [], []
        for loss_of in (cached_prefix_answer_loss, whole_sequence_answer_loss, answer_loss):
            bridged = vectors.clone().requires_grad_(True)
            loss = loss_of(receiver, layer, rows, index, bridged, injection, 0)
            loss.backward()
            losses.append(loss.item())
            gradients.append(bridged.grad)
        for loss, gradient in zip(losses[1:], gradients[1:]):
            assert losses[0] == pytest.approx(loss, rel=1e-5)
            torch.testing.assert_close(gradients[0], gradient, rtol=1e-4, atol=1e-6)


def test_a_trained_bridge_finds_the_planted_channel_and_the_verdict_says_it_helps(channel, big_tokenizer):
    receiver, splits = channel
    start = offline_start(splits)
    rows = {split: answer_rows(ModelHandle.for_tokenizer(big_tokenizer), table, "last", keys, sender)
            for split, (table, keys, sender, _) in splits.items()}
    table, keys, sender, _ = splits["eval"]
    site = InjectionSite(LAYERS, "last")
    results = {"ridge": {}, "trained": {}}
    for seed in (0, 1):
        trained = train_bridge(receiver, LAYERS, start, rows["bridge_train"], rows["bridge_val"],
                               TrainedSettings.of(epochs=2, learning_rate=0.02, batch_size=16, max_rows=10_000), seed=seed, pad_id=0)
        assert trained.info["best_epoch"] > 0 and trained.info["val_loss_by_epoch"][-1] < trained.info[
            "val_loss_by_epoch"][0]
        for method, bridge in (("ridge", start), ("trained", trained)):
            result = run_injection(ModelHandle.of(receiver, big_tokenizer), table, site, bridge, sender_keys=keys,
                                   sender_states=sender, conditions=["none", "replace"], alphas=[], seed=seed)
            results[method][seed] = tag_rows(result, BridgeRun(1, LAYERS, method, seed))
    verdicts = {}
    for method, by_seed in results.items():
        _, across = condition_statistics(by_seed, "s1-r2", method, settings=StatsSettings(
            resamples=2000, hierarchical_resamples=500), twins={})
        for row in verdict_table(across, EFFECT_SCHEMA.empty_table(), EFFECT_SCHEMA.empty_table(),
                                 settings=VerdictSettings(confidence=0.95)).to_pylist():
            verdicts[(method, row["condition"])] = row
    accuracy = {m: np.mean([r["exact_match"] for t in by_seed.values() for r in t.to_pylist()
                            if r["condition"] == "replace"]) for m, by_seed in results.items()}
    assert accuracy["trained"] >= 0.9 > 0.6 > accuracy["ridge"]
    assert verdicts[("trained", "replace")]["verdict"].startswith("helps")
    assert not verdicts[("ridge", "replace")]["verdict"].startswith("helps")


def test_training_stops_after_patience_epochs_without_a_better_val_loss(channel, big_tokenizer, monkeypatch):
    """Scripted bridge_val losses: the best is epoch 1; with patience 2, epochs 2 and 3 fail to beat it and
    training stops there instead of running all 8, keeping epoch 1's weights."""
    import actbridge.bridges.through_receiver as trained_module

    receiver, splits = channel
    start = offline_start(splits)
    rows = {split: answer_rows(ModelHandle.for_tokenizer(big_tokenizer), table, "last", keys, sender)
            for split, (table, keys, sender, _) in splits.items()}
    scripted = iter([5.0, 4.0, 4.5, 4.6, 3.0, 2.0, 1.0, 0.5, 0.1])
    monkeypatch.setattr(trained_module, "_mean_loss", lambda *args, **kwargs: next(scripted))
    trained = train_bridge(receiver, LAYERS, start, rows["bridge_train"], rows["bridge_val"],
                           TrainedSettings.of(epochs=8, learning_rate=0.02, max_rows=64, patience=2), seed=0, pad_id=0)
    assert trained.info["val_loss_by_epoch"] == [5.0, 4.0, 4.5, 4.6] and trained.info["best_epoch"] == 1
    with pytest.raises(ValueError, match="bridge.trained.patience"):
        TrainedSettings.of(patience=0)
