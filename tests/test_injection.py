"""Planted injections: a model bridged to itself, and self-patching from the full-context prompt."""

from __future__ import annotations

import numpy as np
import pytest

from actbridge.models.handle import ModelHandle
from actbridge.activations.store import ActivationStore, ExtractionPlan, extract_activations
from actbridge.bridges.maps import Bridge, Normalizer
from actbridge.data.worlds import DataConfig, build_split
from actbridge.models.scoring import score_answers
from actbridge.injection.jobs import InjectionSite, run_injection
from tests.test_activations import tiny_model

D = 32


@pytest.fixture(scope="module")
def setup(big_tokenizer, tmp_path_factory):
    model = tiny_model(big_tokenizer, layers=2, hidden=D)
    config = DataConfig(seed=9, hops=(1, 2), distractors=2,
                        sizes={"lm_train": 10, "bridge_train": 10, "bridge_val": 10, "eval": 24})
    table = build_split(config, "eval")
    root = tmp_path_factory.mktemp("acts")
    for prompt in ("sender", "full"):
        plan = ExtractionPlan(layers=(1, 2), roles=("last", "bridge"), prompt=prompt)
        extract_activations(ModelHandle.of(model, big_tokenizer), table, plan=plan, out_dir=root / prompt, identity={"kind": "test"})
    return model, table, ActivationStore(root / "sender"), ActivationStore(root / "full")


def identity_bridge() -> Bridge:
    unit = Normalizer(np.zeros(D), 1.0)
    return Bridge("identity", unit, unit, np.eye(D), np.zeros(D))


@pytest.mark.parametrize("role", ["last", "bridge"])
def test_a_model_bridged_to_itself_changes_no_answer_under_replacement(setup, big_tokenizer, role):
    model, table, sender, _ = setup
    ids, states = sender.read(1, role)
    result = run_injection(ModelHandle.of(model, big_tokenizer), table, InjectionSite(1, role), identity_bridge(),
                           sender_keys=ids, sender_states=states,
                           conditions=["none", "replace", "replace_rescaled", "random"], alphas=[0.5]).to_pylist()
    shared = [r for r in result if r["mode"] == "shared"]
    assert shared
    by_key = {(r["example_id"], r["condition"]): r for r in shared}
    for r in shared:
        base = by_key[(r["example_id"], "none")]
        assert r["cos_hb"] == pytest.approx(1.0, abs=1e-5)  # b is exactly the receiver's own state
        if r["condition"] in ("replace", "replace_rescaled"):
            assert r["gold_logprob"] == pytest.approx(base["gold_logprob"], abs=1e-4)
            assert r["exact_match"] == base["exact_match"] and r["gold_rank"] == base["gold_rank"]
    assert any(abs(r["gold_logprob"] - by_key[(r["example_id"], "none")]["gold_logprob"]) > 1e-3
               for r in shared if r["condition"] == "random")  # a new direction is a real change
    # (adding α h would not do: the next block reads the state through a LayerNorm, blind to its scale)


def test_self_patch_at_the_last_layer_recovers_the_full_context_answer(setup, big_tokenizer):
    """Single-token answers: the last position's final state decides them, so patching it in from the
    full prompt must give the full-context scores exactly."""
    model, table, sender, full = setup
    ids, states = sender.read(2, "last")
    full_ids, full_states = full.read(2, "last")
    result = run_injection(ModelHandle.of(model, big_tokenizer), table, InjectionSite(2, "last"), identity_bridge(),
                           sender_keys=ids, sender_states=states, conditions=["none", "self_patch"], alphas=[],
                           full_keys=full_ids, full_states=full_states).to_pylist()
    rows = table.to_pylist()
    for mode in ("asymmetric", "relay"):
        single = [r for r in rows if r["mode"] == mode and all(
            len(big_tokenizer(" " + c, add_special_tokens=False)["input_ids"]) == 1 for c in r["candidates"])]
        assert len(single) >= 3
        expected = score_answers(ModelHandle.of(model, big_tokenizer), [r["full_prompt"] for r in single],
                                 [r["answer"] for r in single], [r["candidates"] for r in single])
        patched = {r["example_id"]: r for r in result if r["condition"] == "self_patch" and r["mode"] == mode}
        unpatched = {r["example_id"]: r for r in result if r["condition"] == "none" and r["mode"] == mode}
        for row, gold, em in zip(single, expected.gold_logprob, expected.exact_match):
            assert patched[row["example_id"]]["gold_logprob"] == pytest.approx(gold, abs=1e-4)
            assert patched[row["example_id"]]["exact_match"] == em
        assert any(abs(unpatched[r["example_id"]]["gold_logprob"] - g) > 1e-3
                   for r, g in zip(single, expected.gold_logprob))  # the receiver's own prompt really differs


def test_shuffled_control_takes_another_example_of_the_same_mode():
    from actbridge.injection.controls import within_mode_derangement

    modes = ["shared"] * 5 + ["asymmetric"] * 4 + ["lonely"]
    permutation = within_mode_derangement(modes, seed=3)
    assert sorted(permutation[:5]) == list(range(5)) and sorted(permutation[5:9]) == list(range(5, 9))
    assert all(permutation[i] != i for i in range(len(modes)))
    assert all(modes[permutation[i]] == modes[i] for i in range(9))  # the lone mode borrows from another


def test_perturbation_is_relative_to_the_clean_state():
    from actbridge.injection.jobs import build_edits
    from actbridge.injection.conditions import ConditionInputs, condition_labels
    from actbridge.injection.jobs import relative_perturbation

    rng = np.random.default_rng(0)
    h, b = rng.normal(size=8), rng.normal(size=8)
    inputs = ConditionInputs(b, rng.normal(size=8), np.eye(8)[0], np.zeros(8), None)
    labels = condition_labels(["none", "add", "add_rescaled", "replace", "interpolate"], [0.5])
    values = dict(zip(labels, relative_perturbation(h, build_edits(labels, inputs))))
    norm = np.linalg.norm(h)
    assert values[("none", None)] == 0
    assert values[("add", 0.5)] == pytest.approx(0.5 * np.linalg.norm(b) / norm, rel=1e-5)
    assert values[("add_rescaled", 0.5)] == pytest.approx(0.5, rel=1e-5)  # alpha is already relative to ||h||
    assert values[("replace", None)] == pytest.approx(np.linalg.norm(b - h) / norm, rel=1e-5)
    assert values[("interpolate", 0.5)] == pytest.approx(0.5 * np.linalg.norm(b - h) / norm, rel=1e-5)


def test_self_patch_is_skipped_where_the_receiver_reads_the_full_prompt(setup, big_tokenizer):
    model, table, sender, full = setup
    ids, states = sender.read(2, "last")
    full_ids, full_states = full.read(2, "last")
    result = run_injection(ModelHandle.of(model, big_tokenizer), table, InjectionSite(2, "last"), identity_bridge(),
                           sender_keys=ids, sender_states=states, conditions=["none", "self_patch"], alphas=[],
                           full_keys=full_ids, full_states=full_states).to_pylist()
    assert {r["mode"] for r in result if r["condition"] == "self_patch"} == {"asymmetric", "relay"}
    assert {r["mode"] for r in result if r["condition"] == "none"} == {"shared", "asymmetric", "relay"}


@pytest.mark.parametrize("layer", [1, 2])
def test_a_perfect_bridge_in_relay_mode_delivers_the_whole_upper_bound(setup, big_tokenizer, layer):
    """Planted channel: a model bridged to itself reads the full prompt on the sender side in relay mode,
    so `replace` injects exactly the state `self_patch` does, at any layer: channel efficiency 1."""
    model, table, sender, full = setup
    ids, states = sender.read(layer, "last")
    full_ids, full_states = full.read(layer, "last")
    result = run_injection(ModelHandle.of(model, big_tokenizer), table, InjectionSite(layer, "last"), identity_bridge(),
                           sender_keys=ids, sender_states=states, conditions=["none", "replace", "self_patch"],
                           alphas=[], full_keys=full_ids, full_states=full_states).to_pylist()
    relay = {(r["example_id"], r["condition"]): r for r in result if r["mode"] == "relay"}
    examples = {example for example, _ in relay}
    assert len(examples) >= 3
    for example in examples:
        bridged, bound = relay[(example, "replace")], relay[(example, "self_patch")]
        assert bridged["gold_logprob"] == pytest.approx(bound["gold_logprob"], abs=1e-5)
        assert bridged["exact_match"] == bound["exact_match"]
    assert any(abs(relay[(e, "replace")]["gold_logprob"] - relay[(e, "none")]["gold_logprob"]) > 1e-3
               for e in examples)  # and it is a real change from the receiver alone
