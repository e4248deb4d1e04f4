"""The sender-side causal profile: clean scores equal plain scoring, and effects come out as planted."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from actbridge.models.handle import ModelHandle
from actbridge.activations.store import ActivationStore, ExtractionPlan, extract_activations
from actbridge.causal.profiles import EXAMPLE_SCHEMA, ablation_effects, sender_ablation_rows
from actbridge.data.worlds import DataConfig, build_split
from actbridge.models.scoring import score_answers
from actbridge.stats.paired import StatsSettings
from tests.test_activations import tiny_model


@pytest.fixture(scope="module")
def sender_setup(big_tokenizer, tmp_path_factory):
    model = tiny_model(big_tokenizer, layers=2, hidden=32)
    config = DataConfig(seed=5, hops=(1, 2), distractors=2,
                        sizes={"lm_train": 10, "bridge_train": 16, "bridge_val": 10, "eval": 16})
    root = tmp_path_factory.mktemp("sender")
    stores = {}
    for split in ("bridge_train", "eval"):
        plan = ExtractionPlan(layers=(0, 1, 2), roles=("last", "bridge"), prompt="sender")
        extract_activations(ModelHandle.of(model, big_tokenizer), build_split(config, split), plan=plan, out_dir=root / split,
                            identity={"kind": "test"})
        stores[split] = ActivationStore(root / split)
    return model, build_split(config, "eval"), stores


def test_clean_rows_equal_plain_scoring_and_ablations_change_the_answer(sender_setup, big_tokenizer):
    model, table, stores = sender_setup
    rows = sender_ablation_rows(ModelHandle.of(model, big_tokenizer), table, 2, "last", stores["eval"], stores["bridge_train"]).to_pylist()
    shared = [r for r in table.to_pylist() if r["mode"] == "shared"]
    expected = score_answers(ModelHandle.of(model, big_tokenizer), [r["sender_prompt"] for r in shared], [r["answer"] for r in shared],
                             [r["candidates"] for r in shared])
    clean = {r["example_id"]: r for r in rows if r["condition"] == "none"}
    assert len(clean) == len(shared)
    for row, logprob, exact in zip(shared, expected.gold_logprob, expected.exact_match):
        assert clean[row["example_id"]]["gold_logprob"] == pytest.approx(logprob, abs=1e-4)
        assert clean[row["example_id"]]["exact_match"] == exact
    # the final state of the last token decides the first answer token: replacing it moves the scores
    moved = [abs(r["gold_logprob"] - clean[r["example_id"]]["gold_logprob"]) for r in rows if r["condition"] == "mean"]
    assert max(moved) > 1e-2


def test_the_bridge_role_skips_one_hop_examples(sender_setup, big_tokenizer):
    model, table, stores = sender_setup
    rows = sender_ablation_rows(ModelHandle.of(model, big_tokenizer), table, 1, "bridge", stores["eval"], stores["bridge_train"])
    assert set(rows.column("hops").to_pylist()) == {2}


def test_planted_ablation_effects():
    """Clean: all right. mean: the first 30 of 100 go wrong. resample: nothing changes."""
    rows = []
    for i in range(100):
        for condition, right in (("none", True), ("mean", i >= 30), ("resample", True)):
            rows.append({"example_id": f"e{i:03d}", "hops": 1 + i % 2, "layer": 3, "role": "last",
                         "condition": condition, "exact_match": right, "gold_logprob": 0.0 if right else -3.0,
                         "gold_rank": 1 if right else 2})
    effects = ablation_effects(pa.Table.from_pylist(rows, schema=EXAMPLE_SCHEMA),
                               StatsSettings(resamples=2000)).to_pylist()
    keyed = {(r["hops"], r["condition"], r["metric"]): r for r in effects}
    assert set(r["hops"] for r in effects) == {"all", "1", "2"}
    mean = keyed[("all", "mean", "accuracy")]
    assert mean["delta"] == pytest.approx(-0.3) and mean["ci_high"] < 0 and mean["p_holm"] < 1e-6
    assert keyed[("all", "mean", "logprob")]["delta"] == pytest.approx(-0.9)
    resample = keyed[("all", "resample", "accuracy")]
    assert resample["delta"] == 0 and resample["ci_method"] == "degenerate" and resample["p_value"] == 1.0
    assert keyed[("1", "mean", "accuracy")]["n"] == 50
    assert np.isclose(keyed[("2", "mean", "accuracy")]["delta"], -0.3)


def test_patching_the_final_state_makes_the_prompt_answer_like_its_counterfactual(sender_setup, big_tokenizer):
    """Planted: at the last layer the last token's state alone decides a one-token answer, so patching it in
    from the counterfactual prompt gives the counterfactual prompt's scores exactly."""
    from actbridge.causal.profiles import patching_rows

    model, table, _ = sender_setup
    rows = patching_rows(ModelHandle.of(model, big_tokenizer), table, 2, "last").to_pylist()
    by_example = {r["example_id"]: r for r in table.to_pylist() if r["mode"] == "shared" and r["counterfactual_prompt"]}
    single = [r for r in by_example.values() if all(
        len(big_tokenizer(" " + c, add_special_tokens=False)["input_ids"]) == 1 for c in r["candidates"])]
    assert len(single) >= 2
    expected = score_answers(ModelHandle.of(model, big_tokenizer), [r["counterfactual_prompt"] for r in single],
                             [r["answer"] for r in single], [r["candidates"] for r in single])
    patched = {r["example_id"]: r for r in rows if r["condition"] == "patch"}
    clean = {r["example_id"]: r for r in rows if r["condition"] == "none"}
    for row, logprob in zip(single, expected.gold_logprob):
        assert patched[row["example_id"]]["gold_logprob"] == pytest.approx(logprob, abs=1e-4)
    assert any(abs(patched[r["example_id"]]["gold_logprob"] - clean[r["example_id"]]["gold_logprob"]) > 1e-3
               for r in single)  # the counterfactual prompt really differs
    assert {r["hops"] for r in rows} == {2} and all(r["counterfactual_top1"] is not None for r in rows)


def test_self_patching_the_final_state_gives_the_full_prompts_scores(sender_setup, big_tokenizer):
    """Planted upper bound: in asymmetric and relay mode, the receiver's final last-token state taken from its
    own full-context prompt makes its scores those of the full prompt (one-token answers), while the clean
    rows are those of its own prompt, which lacks facts."""
    from actbridge.causal.profiles import receiver_causal_tables, self_patch_effects

    model, table, _ = sender_setup
    patches, self_patches = receiver_causal_tables(ModelHandle.of(model, big_tokenizer), table, layers=[2], roles=["last"])
    assert patches.num_rows > 0 and set(patches.column("condition").to_pylist()) == {"none", "patch"}
    rows = self_patches.to_pylist()
    partial = {(r["example_id"], r["mode"]): r for r in table.to_pylist() if r["mode"] != "shared"}
    assert {(r["example_id"], r["mode"]) for r in rows} == set(partial)
    assert {(r["mode"], r["hops"]) for r in rows} == {("asymmetric", 2), ("relay", 1)}
    single = [r for r in partial.values() if all(
        len(big_tokenizer(" " + c, add_special_tokens=False)["input_ids"]) == 1 for c in r["candidates"])]
    assert {r["mode"] for r in single} == {"asymmetric", "relay"}
    full = score_answers(ModelHandle.of(model, big_tokenizer), [r["full_prompt"] for r in single], [r["answer"] for r in single],
                         [r["candidates"] for r in single])
    own = score_answers(ModelHandle.of(model, big_tokenizer), [r["receiver_prompt"] for r in single], [r["answer"] for r in single],
                        [r["candidates"] for r in single])
    by_condition = {(r["example_id"], r["mode"], r["condition"]): r for r in rows}
    for row, full_logprob, own_logprob in zip(single, full.gold_logprob, own.gold_logprob):
        key = (row["example_id"], row["mode"])
        assert by_condition[(*key, "self_patch")]["gold_logprob"] == pytest.approx(full_logprob, abs=1e-4)
        assert by_condition[(*key, "none")]["gold_logprob"] == pytest.approx(own_logprob, abs=1e-4)
    effects = self_patch_effects(self_patches, StatsSettings(resamples=500)).to_pylist()
    # one effect per mode: the relay (1-hop) and asymmetric (2-hop) gains are never pooled
    assert {(r["mode"], r["hops"]) for r in effects} == {("asymmetric", "2"), ("relay", "1")}
    assert {(r["condition"], r["metric"]) for r in effects} == {("self_patch", "accuracy"), ("self_patch", "logprob"),
                                                            ("self_patch", "first_token")}
