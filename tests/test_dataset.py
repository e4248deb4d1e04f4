"""Generator properties: the answer needs exactly the stated hops, distractors never give a
second answer, asymmetric prompts really split the facts, and same seed gives the same bytes."""

from __future__ import annotations

import re

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings, strategies as st

from actbridge.data.worlds import (DataConfig, name_pool, FACTS_MARK, QUESTION_MARK, TEMPLATES, Template, build_split,
                               counterfactual_world, iter_split_rows, prompts_for_mode, sample_world)
from actbridge.io import write_parquet

FACT = {"compact": re.compile(r"(\w+) (\w+) (\w+)\."), "english": re.compile(r"(\w+)'s (\w+) is (\w+)\.")}


def parse_facts(prompt: str, template: str = "compact") -> dict[tuple[str, str], str]:
    """(subject, relation) -> object for every fact sentence; asserts no key repeats."""
    facts_text = prompt[: prompt.index(f" {QUESTION_MARK}")]
    assert facts_text.startswith(FACTS_MARK)
    found = FACT[template].findall(facts_text)
    assert len(found) == facts_text.count("."), "a fact the parser cannot read"
    table = {(s, r): o for s, r, o in found}
    assert len(table) == len(found), "a (subject, relation) pair has two objects: a second answer"
    return table


def parse_question(prompt: str, template: str = "compact") -> tuple[str, list[str]]:
    question = prompt[prompt.index(f" {QUESTION_MARK}") + len(QUESTION_MARK) + 2:]
    if template == "compact":
        subject, *relations = question.split(" ")
    else:
        subject, *relations = question.removesuffix(" is").split("'s ")
    return subject, relations


def follow(facts: dict, subject: str, relations: list[str]) -> str | None:
    entity = subject
    for relation in relations:
        entity = facts.get((entity, relation))
        if entity is None:
            return None
    return entity


worlds = st.tuples(st.integers(0, 2**32 - 1), st.integers(1, 4), st.integers(0, 5), st.sampled_from(TEMPLATES))


@settings(max_examples=150, deadline=None)
@given(worlds)
def test_answer_reachable_by_exactly_the_stated_hops(params):
    seed, hops, distractors, template = params
    world = sample_world(np.random.default_rng(seed), hops, distractors)
    prompt = prompts_for_mode(world, "shared", Template(template))["full"].text
    facts = parse_facts(prompt, template)
    subject, relations = parse_question(prompt, template)
    assert len(relations) == hops
    assert follow(facts, subject, relations) == world.focus.answer
    # no shorter path from the subject reaches the answer: every prefix of the chain ends at a person
    for k in range(1, hops):
        assert follow(facts, subject, relations[:k]) != world.focus.answer


@settings(max_examples=150, deadline=None)
@given(worlds)
def test_a_counterfactual_changes_the_bridge_entity_and_the_answer_and_nothing_else(params):
    seed, hops, distractors, template = params
    world = sample_world(np.random.default_rng(seed), hops, distractors)
    counterfactual = counterfactual_world(world)
    if hops < 2 or distractors == 0:
        assert counterfactual is None
        return
    original = prompts_for_mode(world, "shared", Template(template))["full"].text
    changed = prompts_for_mode(counterfactual, "shared", Template(template))["full"].text
    facts, changed_facts = parse_facts(original, template), parse_facts(changed, template)
    subject, relations = parse_question(changed, template)
    assert parse_question(original, template) == (subject, relations)  # the same question
    assert [key for key in facts if facts[key] != changed_facts[key]] == [(subject, relations[0])]  # one fact moved
    assert follow(changed_facts, subject, relations) == counterfactual.focus.answer != world.focus.answer
    assert counterfactual.bridge_entity != world.bridge_entity
    assert counterfactual.focus.answer in {chain.answer for chain in world.chains()}  # among the candidates


@settings(max_examples=150, deadline=None)
@given(worlds)
def test_distractors_never_create_a_second_valid_answer(params):
    seed, hops, distractors, template = params
    world = sample_world(np.random.default_rng(seed), hops, distractors)
    facts = parse_facts(prompts_for_mode(world, "shared", Template(template))["full"].text, template)
    answers = [chain.answer for chain in world.chains()]
    assert len(set(answers)) == len(answers) == distractors + 1
    assert len(facts) == len(world.fact_order)
    # every candidate is the end of exactly one chain of the question's length, and a chain end is
    # never the subject of a fact, so no longer path continues past an answer
    subjects = {s for s, _ in facts}
    assert not set(answers) & subjects


@settings(max_examples=150, deadline=None)
@given(st.tuples(st.integers(0, 2**32 - 1), st.integers(2, 4), st.integers(0, 5), st.sampled_from(TEMPLATES)))
def test_asymmetric_prompts_split_the_facts(params):
    seed, hops, distractors, template = params
    world = sample_world(np.random.default_rng(seed), hops, distractors)
    prompts = prompts_for_mode(world, "asymmetric", Template(template))
    sender, receiver = parse_facts(prompts["sender"].text, template), parse_facts(prompts["receiver"].text, template)
    subject, relations = parse_question(prompts["receiver"].text, template)
    first_hop = (subject, relations[0])
    assert first_hop in sender and first_hop not in receiver
    assert follow(receiver, subject, relations) is None  # the receiver cannot answer alone
    assert follow(sender, subject, relations) is None  # nor can the sender
    assert follow({**sender, **receiver}, subject, relations) == world.focus.answer  # together they can
    # No structural shortcut: the receiver's facts form disjoint chains of equal length, one per
    # candidate, each starting at an entity the receiver never sees as an object.
    objects = set(receiver.values())
    roots = [s for (s, r) in receiver if s not in objects]
    assert len(roots) == distractors + 1
    ends = sorted(follow(receiver, root, relations[1:]) for root in roots)
    assert ends == sorted(chain.answer for chain in world.chains())


@pytest.mark.parametrize("template", TEMPLATES)
def test_spans_point_at_the_entities(small_config, template):
    table = build_split(DataConfig(**{**small_config.__dict__, "template": template}), "eval")
    for row in table.to_pylist():
        for side in ("sender", "receiver", "full"):
            prompt = row[f"{side}_prompt"]
            start, end = row[f"{side}_subject_span"]
            assert prompt[start:end] == row["subject"]
            start, end = row[f"{side}_relation_span"]
            assert prompt[start:end] == row["relations"][0] and start > prompt.index(QUESTION_MARK)
            if row["hops"] >= 2:
                start, end = row[f"{side}_bridge_span"]
                assert prompt[start:end] == row["bridge_entity"]
                assert not prompt[end].isalpha() and not prompt[start - 1].isalpha()
            else:
                assert row[f"{side}_bridge_span"] is None


@settings(max_examples=100, deadline=None)
@given(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 5), st.sampled_from(TEMPLATES)))
def test_relay_prompts_hold_every_fact_on_the_sender_side_only(params):
    seed, distractors, template = params
    world = sample_world(np.random.default_rng(seed), 1, distractors)
    prompts = prompts_for_mode(world, "relay", Template(template))
    sender, receiver = parse_facts(prompts["sender"].text, template), parse_facts(prompts["receiver"].text, template)
    assert prompts["sender"].text == prompts["full"].text
    assert receiver == {} and len(sender) == len(world.fact_order)
    subject, relations = parse_question(prompts["receiver"].text, template)
    assert follow(sender, subject, relations) == world.focus.answer  # the sender can answer; the receiver has nothing
    assert prompts["receiver"].text.endswith(prompts["full"].text[prompts["full"].text.index(QUESTION_MARK):])
    receiver_prompt = prompts["receiver"]
    start, end = receiver_prompt.subject_span
    assert receiver_prompt.text[start:end] == subject and receiver_prompt.bridge_span is None


def test_rows_carry_the_modes_of_their_hop_count(eval_table, small_config):
    modes = {}
    for row in eval_table.to_pylist():
        modes.setdefault(row["example_id"], set()).add(row["mode"])
        assert row["answer"] in row["candidates"]
        if row["mode"] == "shared":
            assert row["sender_prompt"] == row["receiver_prompt"] == row["full_prompt"]
    by_hops = {row["example_id"]: row["hops"] for row in eval_table.to_pylist()}
    for example, found in modes.items():
        assert found == ({"shared", "relay"} if by_hops[example] == 1 else {"shared", "asymmetric"})
    assert set(by_hops.values()) == set(small_config.hops)


def test_lm_train_rows_hold_extra_questions(lm_table):
    for row in lm_table.to_pylist()[:50]:
        assert row["mode"] == "shared"
        focus_question = row["full_prompt"][row["full_prompt"].index(QUESTION_MARK):]
        assert {"question": focus_question, "answer": row["answer"], "hops": row["hops"]} in row["train_questions"]
        facts = parse_facts(row["full_prompt"])
        for pair in row["train_questions"]:
            subject, relations = parse_question(f"{FACTS_MARK} x {pair['question']}")
            assert len(relations) == pair["hops"]
            assert follow(facts, subject, relations) == pair["answer"]


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, small_config):
    for name, config in (("a", small_config), ("b", small_config),
                         ("c", DataConfig(**{**small_config.__dict__, "seed": small_config.seed + 1}))):
        write_parquet(build_split(config, "eval"), tmp_path / f"{name}.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    assert (tmp_path / "a.parquet").read_bytes() != (tmp_path / "c.parquet").read_bytes()
    assert pq.read_table(tmp_path / "a.parquet").equals(build_split(small_config, "eval"))


def test_splits_are_independent_streams(small_config):
    bigger_eval = DataConfig(**{**small_config.__dict__, "sizes": {**small_config.sizes, "eval": 60}})
    assert build_split(bigger_eval, "bridge_train").equals(build_split(small_config, "bridge_train"))
    # growing a split keeps its first rows
    grown, base = build_split(bigger_eval, "eval"), build_split(small_config, "eval")
    assert grown.slice(0, base.num_rows).equals(base)
    first_ids = {r["example_id"] for r in build_split(small_config, "bridge_train").to_pylist()}
    eval_ids = {r["example_id"] for r in base.to_pylist()}
    assert not first_ids & eval_ids


@pytest.mark.parametrize("bad", [{"hops": ()}, {"hops": (0,)}, {"distractors": 12}, {"distractors": -1},
                                 {"context_modes": ("both",)}, {"template": "yaml"}])
def test_data_config_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="data\\."):
        DataConfig(**{"seed": 0, "hops": (1, 2), "distractors": 3, "sizes": {"eval": 1}, **bad})


def test_asymmetric_mode_absent_when_not_requested():
    config = DataConfig(seed=0, hops=(2,), distractors=3, context_modes=("shared",), sizes={"eval": 5})
    assert {row["mode"] for row in iter_split_rows(config, "eval")} == {"shared"}


def test_relay_rows_only_for_one_hop_and_never_in_lm_train():
    config = DataConfig(seed=0, hops=(1, 2), distractors=3, context_modes=("shared", "relay"),
                        sizes={"eval": 6, "lm_train": 6})
    rows = list(iter_split_rows(config, "eval"))
    assert {(row["mode"], row["hops"]) for row in rows} == {("shared", 1), ("shared", 2), ("relay", 1)}
    relay = [row for row in rows if row["mode"] == "relay"]
    shared_one_hop = {row["example_id"]: row for row in rows if row["mode"] == "shared" and row["hops"] == 1}
    for row in relay:  # paired with the world's shared row: same answer, the sender reads the same prompt
        twin = shared_one_hop[row["example_id"]]
        assert (row["answer"], row["sender_prompt"], row["full_prompt"]) == (twin["answer"], twin["full_prompt"],
                                                                              twin["full_prompt"])
        assert row["receiver_prompt"].startswith(f"{FACTS_MARK} {QUESTION_MARK}")
    assert {row["mode"] for row in iter_split_rows(config, "lm_train")} == {"shared"}


def test_shots_prepend_fresh_solved_worlds_without_changing_the_question_or_leaking_its_facts(small_config):
    plain = build_split(small_config, "eval").to_pylist()
    shot = build_split(DataConfig(**{**small_config.__dict__, "template": "english", "shots": 2}), "eval").to_pylist()
    english = build_split(DataConfig(**{**small_config.__dict__, "template": "english"}), "eval").to_pylist()
    assert len(shot) == len(plain) == len(english)
    names = set(name_pool())
    for with_shots, without in zip(shot, english):
        assert with_shots["answer"] == without["answer"] and with_shots["candidates"] == without["candidates"]
        for side in ("sender", "receiver", "full"):
            prefix = with_shots[f"{side}_prompt"][: -len(without[f"{side}_prompt"])]
            assert with_shots[f"{side}_prompt"].endswith(without[f"{side}_prompt"])
            assert prefix.count("\n") == 2 and prefix.count("Q:") == 2
            shown = set(re.findall(r"[A-Z][a-z]+", prefix)) & names
            world = set(re.findall(r"[A-Z][a-z]+", without["full_prompt"])) & names
            assert shown and not shown & world  # no name of the question's world in a demonstration
            # spans move with the prefix: they still name the same text
            span = with_shots[f"{side}_subject_span"]
            assert with_shots[f"{side}_prompt"][span[0]:span[1]] == with_shots["subject"]
            if with_shots[f"{side}_bridge_span"] is not None:
                span = with_shots[f"{side}_bridge_span"]
                assert with_shots[f"{side}_prompt"][span[0]:span[1]] == with_shots["bridge_entity"]
        # the sides of one example share their demonstrations
        assert with_shots["sender_prompt"].split("\n")[:2] == with_shots["receiver_prompt"].split("\n")[:2]


def test_shots_are_not_given_to_lm_train(small_config):
    config = DataConfig(**{**small_config.__dict__, "shots": 3, "sizes": {**small_config.sizes, "lm_train": 20}})
    assert build_split(config, "lm_train").to_pylist() == build_split(
        DataConfig(**{**small_config.__dict__, "sizes": {**small_config.sizes, "lm_train": 20}}), "lm_train").to_pylist()


def test_balanced_worlds_leave_each_single_cue_exactly_half_the_questions():
    """Planted structure: every question of a balanced world has four chains, two from its subject and two along
    its relations, one of them the answer's: either cue alone scores 1/2, chance 1/4; the random form's cues
    often decide a question alone."""
    from actbridge.data.statistics import split_statistics
    from actbridge.data.worlds import cue_counts

    for template in ("compact", "english"):
        balanced = build_split(DataConfig(seed=3, hops=(1, 2, 3), distractors=3, sizes={"eval": 90}, shots=1,
                                          template=template, distractor_form="balanced"), "eval")
        for row in balanced.to_pylist():
            assert cue_counts(row["full_prompt"], row["subject"], row["relations"]) == (4, 2, 2)
            assert len(row["candidates"]) == 4 and row["answer"] in row["candidates"]
    six = build_split(DataConfig(seed=3, hops=(2,), distractors=6, sizes={"eval": 20},
                                 distractor_form="balanced"), "eval")
    assert {cue_counts(r["full_prompt"], r["subject"], r["relations"]) for r in six.to_pylist()} == {(7, 3, 3)}
    stats = split_statistics("eval", balanced, {})
    ceilings = stats.filter(mode="shared").select("statistic", "value").rows()
    assert ("subject_ceiling", 0.5) in ceilings and ("relations_ceiling", 0.5) in ceilings
    assert ("subject_decides", 0.0) in ceilings
    random = build_split(DataConfig(seed=3, hops=(2,), distractors=3, sizes={"eval": 200}), "eval")
    decided = split_statistics("eval", random, {}).filter(statistic="relations_decides")["value"].max()
    assert 0.05 < decided < 0.3  # every distractor a branch: 1 world in 8


def test_the_balanced_form_keeps_lm_train_and_the_random_splits_unchanged():
    """lm_train keeps the random form (the shipped micro weights are keyed by its recipe), and the random form's
    splits are byte-identical whether or not the key is given."""
    base = dict(seed=0, hops=(1, 2), distractors=3, sizes={"lm_train": 30, "eval": 30})
    random, balanced = DataConfig(**base), DataConfig(**base, distractor_form="balanced")
    assert build_split(random, "lm_train").equals(build_split(balanced, "lm_train"))
    assert not build_split(random, "eval").equals(build_split(balanced, "eval"))
    assert "distractor_form" not in random.split_params("eval") and "distractor_form" not in balanced.split_params(
        "lm_train")
    assert balanced.split_params("eval")["distractor_form"] == "balanced"


@pytest.mark.parametrize("distractors, hint", [(0, "smallest is 3"), (4, "multiple of 3"), (1, "smallest is 3")])
def test_a_balanced_form_that_cannot_be_built_is_a_config_error_naming_the_key(distractors, hint):
    import yaml

    from actbridge.catalog import validate_config
    from actbridge.config import ConfigError

    config = yaml.safe_load(open("config/config.yaml", encoding="utf-8"))
    config["data"].update(distractor_form="balanced", distractors=distractors)
    with pytest.raises(ConfigError, match=f"config key data.distractors: {distractors} cannot be balanced.*{hint}"):
        validate_config(config)


def test_a_balanced_lm_train_draws_whole_balanced_sets_and_changes_only_lm_train():
    """``data.lm_train_form: balanced``: every lm_train world has no distractor or whole balanced sets (the
    eval shape: four chains, two per cue), the recipe's params say so, and the other splits are untouched."""
    from actbridge.data.worlds import cue_counts

    base = dict(seed=0, hops=(1, 2), distractors=3, sizes={"lm_train": 200, "eval": 30})
    random, balanced = DataConfig(**base), DataConfig(**base, lm_train_form="balanced")
    rows = build_split(balanced, "lm_train").to_pylist()
    counts = {cue_counts(row["full_prompt"], row["subject"], row["relations"]) for row in rows}
    assert counts == {(1, 1, 1), (4, 2, 2)}
    assert 0.35 < sum(len(row["candidates"]) == 4 for row in rows) / len(rows) < 0.65
    assert build_split(random, "eval").equals(build_split(balanced, "eval"))
    assert "lm_train_form" not in random.split_params("lm_train")
    assert balanced.split_params("lm_train")["lm_train_form"] == "balanced"
    assert "lm_train_form" not in balanced.split_params("eval")
    assert DataConfig.from_split_params(balanced.split_params("lm_train"), "lm_train").lm_train_form == "balanced"


def test_a_balanced_lm_train_that_cannot_be_built_is_a_config_error_naming_its_key():
    import yaml

    from actbridge.catalog import validate_config
    from actbridge.config import ConfigError

    config = yaml.safe_load(open("config/config.yaml", encoding="utf-8"))
    config["data"].update(lm_train_form="balanced", distractors=4)
    with pytest.raises(ConfigError, match="config key data.distractors: 4 cannot be balanced: data.lm_train_form"):
        validate_config(config)
    with pytest.raises(ValueError, match="data.lm_train_form"):
        DataConfig(seed=0, hops=(2,), distractors=5, sizes={"lm_train": 3}, lm_train_form="balanced")
