"""First-hop supervision: the right positions, the right entities, the right layer."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from transformers import GPTNeoXForCausalLM

from actbridge.data.worlds import Template, build_split, fact_lookup, first_relation_span, sample_world
from actbridge.models.micro_training import (MicroModelConfig, build_gpt_neox_config, initial_model, lm_and_hop_loss,
                                             tokenize_lm_split, train_micro_model)


@pytest.mark.parametrize("template", ["compact", "english"])
def test_fact_lookup_reads_every_fact_of_a_world(template):
    rng = np.random.default_rng(0)
    world = sample_world(rng, hops=3, n_distractors=4)
    style = Template(template)
    facts_text = "Facts: " + " ".join(style.fact(f)[0] for f in world.fact_order)
    assert fact_lookup(facts_text) == {(f.subject, f.relation): f.obj for f in world.fact_order}


@pytest.mark.parametrize("template", ["compact", "english"])
def test_first_relation_span_points_at_the_first_relation(template):
    question = Template(template).question("Bako", ["mentor", "friend"])
    start, end, subject, relation = first_relation_span(question)
    assert (question[start:end], subject, relation) == ("mentor", "Bako", "mentor")


@pytest.mark.parametrize("template", ["compact", "english"])
def test_hop_targets_are_the_bridge_entity_of_2hop_and_the_answer_of_1hop_questions(small_config, big_tokenizer,
                                                                                    template):
    table = build_split(dataclasses.replace(small_config, template=template), "lm_train")
    sequences = tokenize_lm_split(table, big_tokenizer, loss_on="questions", first_hop=True)
    checked = 0
    for row, ids, positions, targets in zip(table.to_pylist(), sequences.input_ids, sequences.hop_positions,
                                            sequences.hop_targets):
        questions = row["train_questions"]
        assert len(positions) == len(targets) == len(questions)
        for question, position, target in zip(questions, positions, targets):
            # the supervised position holds the last token of the question's first relation ...
            piece = big_tokenizer.decode(ids[position]).strip()
            assert piece and first_relation_span(question["question"])[3].endswith(piece)
            if question["question"] == focus_question(row, template):
                # ... and its target is the focus chain's first hop, independent of the fact parser
                first_hop = row["bridge_entity"] if row["hops"] >= 2 else row["answer"]
                assert target == big_tokenizer(f" {first_hop}", add_special_tokens=False)["input_ids"][0]
                checked += 1
    assert checked == table.num_rows
    assert tokenize_lm_split(table, big_tokenizer, loss_on="questions").hop_positions == []  # only when asked for


def focus_question(row: dict, template: str) -> str:
    return Template(template).question(row["subject"], row["relations"])


def test_hop_loss_reads_the_residual_of_the_named_layer(tokenizer):
    micro = MicroModelConfig(layers=3, hidden=32, heads=2, steps=1)
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(build_gpt_neox_config(micro, tokenizer)).eval()
    input_ids = torch.randint(5, len(tokenizer), (2, 9))
    rows, positions, targets = torch.tensor([0, 1, 1]), torch.tensor([3, 2, 7]), torch.tensor([11, 12, 13])
    with torch.no_grad():
        hidden = model(input_ids=input_ids, output_hidden_states=True).hidden_states
        for layer in (1, 2):
            _, hop_loss = lm_and_hop_loss(model, input_ids, torch.ones_like(input_ids),
                                          loss_mask=torch.ones_like(input_ids), hop_layer=layer, hop_rows=rows,
                                          hop_positions=positions, hop_targets=targets)
            logits = model.get_output_embeddings()(model.gpt_neox.final_layer_norm(hidden[layer][rows, positions]))
            expected = torch.nn.functional.cross_entropy(logits, targets)
            assert hop_loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_training_with_hop_supervision_lowers_the_hop_loss(lm_table, tokenizer):
    micro = MicroModelConfig(layers=2, hidden=32, heads=2, steps=60, batch_size=16, warmup_steps=5,
                             curriculum_steps=0, eval_every=20, hop_layer=1, learning_rate=3e-3)
    _, history = train_micro_model(micro, tokenizer, lm_table, device="cpu")
    assert [r["step"] for r in history] == [20, 40, 60]
    assert history[-1]["hop_loss"] < history[0]["hop_loss"] - 0.5


@pytest.mark.parametrize("tie", [False, True])
def test_tied_embeddings_share_one_matrix(tokenizer, tie):
    model = GPTNeoXForCausalLM(build_gpt_neox_config(MicroModelConfig(layers=1, hidden=16, heads=2, steps=1,
                                                                      tie_embeddings=tie), tokenizer))
    shared = model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    assert shared == tie


@pytest.mark.parametrize("init, embedding_std, projection_bound", [("gpt_neox", 0.02, None), ("pytorch", 1.0, 1 / 64 ** 0.5)])
def test_init_sets_the_scale_of_the_starting_weights(tokenizer, init, embedding_std, projection_bound):
    micro = MicroModelConfig(layers=2, hidden=64, heads=2, steps=1, init=init)
    torch.manual_seed(0)
    model = initial_model(micro, tokenizer)
    assert model.get_input_embeddings().weight.std().item() == pytest.approx(embedding_std, rel=0.1)
    query_key_value = model.gpt_neox.layers[0].attention.query_key_value.weight
    if projection_bound is None:
        assert query_key_value.std().item() == pytest.approx(0.02, rel=0.1)
    else:  # uniform in +-1/sqrt(fan_in): the bound is reached and never passed
        assert query_key_value.abs().max().item() == pytest.approx(projection_bound, rel=0.02)
        assert query_key_value.abs().max().item() <= projection_bound


def test_an_unknown_init_is_an_error_naming_the_key():
    with pytest.raises(ValueError, match="init"):
        MicroModelConfig.from_dict({"layers": 1, "hidden": 8, "heads": 1, "steps": 1, "init": "xavier"})


@pytest.mark.parametrize("hop_layer", [-1, 2, 5])
def test_hop_layer_must_be_inside_the_model(hop_layer):
    with pytest.raises(ValueError, match="hop_layer"):
        MicroModelConfig.from_dict({"layers": 2, "hidden": 32, "heads": 2, "steps": 1, "hop_layer": hop_layer})


class Killed(Exception):
    pass


def test_a_killed_training_resumes_from_its_checkpoint_to_the_weights_of_an_unbroken_run(lm_table, tokenizer,
                                                                                          tmp_path):
    micro = MicroModelConfig(layers=2, hidden=32, heads=2, steps=9, batch_size=8, warmup_steps=2,
                             curriculum_steps=3, eval_every=3)
    unbroken, unbroken_log = train_micro_model(micro, tokenizer, lm_table, device="cpu")

    checkpoint = tmp_path / "checkpoint.pt"

    def kill_at_step_6(record):
        if record["step"] == 6:
            raise Killed

    with pytest.raises(Killed):
        train_micro_model(micro, tokenizer, lm_table, device="cpu", checkpoint=checkpoint, progress=kill_at_step_6)
    assert torch.load(checkpoint, weights_only=True)["step"] == 6
    seen = []
    resumed, resumed_log = train_micro_model(micro, tokenizer, lm_table, device="cpu", checkpoint=checkpoint,
                                             progress=seen.append)
    assert [record["step"] for record in seen] == [9]  # steps 1-6 were not run again
    assert [r["loss"] for r in resumed_log] == [r["loss"] for r in unbroken_log]
    for name, weight in unbroken.state_dict().items():
        assert torch.equal(weight, resumed.state_dict()[name]), name


def test_the_constant_schedule_keeps_the_peak_after_the_warm_up_and_the_cosine_one_ends_at_a_tenth():
    from actbridge.models.micro_training import lr_at

    cosine = MicroModelConfig(layers=1, hidden=8, heads=1, steps=100, warmup_steps=10, learning_rate=1e-3)
    constant = dataclasses.replace(cosine, schedule="constant")
    assert lr_at(4, constant) == lr_at(4, cosine) == pytest.approx(5e-4)
    assert [lr_at(step, constant) for step in (10, 50, 99)] == [1e-3] * 3
    assert lr_at(99, cosine) == pytest.approx(1e-4, rel=1e-2)
    with pytest.raises(ValueError, match="schedule"):
        MicroModelConfig.from_dict({"layers": 1, "hidden": 8, "heads": 1, "steps": 1, "schedule": "linear"})
