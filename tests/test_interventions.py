"""The fast injection path equals a naive hooked forward, for every kind of edit, padded batches included."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from actbridge.models.edited_scoring import Edits, Example, fast_scores, naive_scores, residual_edit
from tests.test_activations import tiny_model


def mixed_edits(d: int, generator: torch.Generator) -> Edits:
    """none, add, add_rescaled, replace, replace_rescaled, interpolate (alpha 0.3) with a random vector."""
    vector = torch.randn(d, generator=generator) * 2
    unit = vector / vector.norm()
    keep = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.7])
    vectors = torch.stack([torch.zeros(d), 0.5 * vector, 0.5 * unit, vector, unit, 0.3 * vector])
    norm_scaled = torch.tensor([False, False, True, False, True, False])
    return Edits(keep, vectors, norm_scaled)


def examples_for(tokenizer, table, n=5, role="last", candidates=3):
    prompts = table.column("full_prompt").to_pylist()[:n]
    out = []
    for i, prompt in enumerate(prompts):
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        position = len(ids) - 1 if role == "last" else len(ids) // 2
        cands = [tokenizer(" " + name, add_special_tokens=False)["input_ids"]
                 for name in table.column("candidates").to_pylist()[i][:candidates]]
        out.append(Example(ids, position, cands))
    return out


def assert_same(fast, naive):
    for a, b in zip(fast, naive):
        np.testing.assert_allclose(a.logprob, b.logprob, atol=1e-4, rtol=0)
        np.testing.assert_array_equal(a.exact, b.exact)
        np.testing.assert_allclose(a.first_logprob, b.first_logprob, atol=1e-4, rtol=0)
        np.testing.assert_array_equal(a.first_tokens, b.first_tokens)
        np.testing.assert_allclose(a.clean_state, b.clean_state, atol=1e-4)


@pytest.mark.parametrize("role", ["last", "middle"])
@pytest.mark.parametrize("layer", [0, 1, 2])
def test_fast_path_equals_naive_on_a_micro_model(tokenizer, eval_table, layer, role):
    model = tiny_model(tokenizer, layers=2, hidden=32)
    generator = torch.Generator().manual_seed(layer)
    examples = examples_for(tokenizer, eval_table, role=role)  # prompts of different lengths: padded batches
    edits = [mixed_edits(32, generator) for _ in examples]
    assert_same(fast_scores(model, examples, layer, edits), naive_scores(model, examples, layer, edits))


def test_edits_change_the_scores_and_identity_does_not(tokenizer, eval_table):
    model = tiny_model(tokenizer, layers=2, hidden=32)
    examples = examples_for(tokenizer, eval_table, n=3)
    generator = torch.Generator().manual_seed(0)
    scores = fast_scores(model, examples, 1, [mixed_edits(32, generator) for _ in examples])
    for score in scores:
        assert not np.allclose(score.logprob[0], score.logprob[3])  # replace moves the answer's log-prob
    identity = fast_scores(model, examples, 1, [Edits.identity(32, 2) for _ in examples])
    unedited = naive_scores(model, examples, 1, [Edits.identity(32, 1) for _ in examples])
    for a, b in zip(identity, unedited):
        np.testing.assert_allclose(a.logprob, np.repeat(b.logprob, 2, axis=0), atol=1e-4)


def test_replacing_a_state_with_itself_is_a_no_op(tokenizer, eval_table):
    """Planted: the clean state written back (replace with h, read from hidden_states) changes nothing."""
    model = tiny_model(tokenizer, layers=2, hidden=32)
    examples = examples_for(tokenizer, eval_table, n=3)
    layer = 1
    edits = []
    for example in examples:
        with torch.inference_mode():
            hidden = model(torch.as_tensor([example.prompt_ids]), output_hidden_states=True).hidden_states
        edits.append(Edits(torch.zeros(1), hidden[layer][0, example.position][None], torch.zeros(1, dtype=torch.bool)))
    patched = fast_scores(model, examples, layer, edits)
    clean = naive_scores(model, examples, layer, [Edits.identity(32) for _ in examples])
    assert_same(patched, clean)
    for edit, score in zip(edits, patched):  # the recorded clean state is the state hidden_states reports
        np.testing.assert_allclose(score.clean_state, edit.vector[0].numpy(), atol=1e-5)


def test_the_last_layer_edits_the_final_norm_output(tokenizer, eval_table):
    model = tiny_model(tokenizer, layers=2, hidden=32)
    ids = tokenizer(eval_table.column("full_prompt")[0].as_py(), add_special_tokens=False)["input_ids"]
    position = torch.as_tensor([len(ids) - 1])
    target = torch.randn(1, 32)
    first_row = torch.zeros(1, dtype=torch.long)
    with torch.inference_mode(), residual_edit(model, 2, first_row, position, torch.zeros(1), target,
                                               torch.zeros(1, dtype=torch.bool)):
        out = model(torch.as_tensor([ids]), output_hidden_states=True)
    np.testing.assert_allclose(out.hidden_states[2][0, -1].numpy(), target[0].numpy(), atol=1e-6)
    expected_logits = model.get_output_embeddings()(target)[0]
    np.testing.assert_allclose(out.logits[0, -1].numpy(), expected_logits.detach().numpy(), atol=1e-5)


def test_fast_path_equals_naive_on_a_pythia_160m_shaped_model(tokenizer, eval_table):
    """Random init, Pythia-160M's shape (12 x 768, 12 heads, rotary 0.25, parallel residual)."""
    config = GPTNeoXConfig(vocab_size=50304, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                           intermediate_size=3072, use_parallel_residual=True,
                           rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                            "partial_rotary_factor": 0.25})
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(config).eval()
    examples = examples_for(tokenizer, eval_table, n=3, candidates=2)
    generator = torch.Generator().manual_seed(1)
    edits = [mixed_edits(768, generator) for _ in examples]
    assert_same(fast_scores(model, examples, 6, edits), naive_scores(model, examples, 6, edits))


def test_every_injection_condition_equals_naive(tokenizer, eval_table):
    """The edits of every condition the pipeline injects, built as run_injection builds them."""
    from actbridge.injection.jobs import build_edits
    from actbridge.injection.conditions import CONDITIONS, ConditionInputs, condition_labels

    model = tiny_model(tokenizer, layers=2, hidden=32)
    examples = examples_for(tokenizer, eval_table, n=4, role="middle")
    rng = np.random.default_rng(0)
    labels = condition_labels(CONDITIONS, [0.1, 1.0])
    # conditions that read more than an example's vectors, bound as a job binds them (bases from random rows)
    bound = {"subspace_swap": CONDITIONS["subspace_swap"]({"shared": np.linalg.qr(rng.normal(size=(32, 5)))[0]})}
    edits = []
    for _ in examples:
        unit = rng.normal(size=32)
        inputs = ConditionInputs(rng.normal(size=32) * 3, rng.normal(size=32) * 3, unit / np.linalg.norm(unit),
                                 rng.normal(size=32), rng.normal(size=32) * 3, "shared")
        edits.append(build_edits(labels, inputs, bound))
    assert_same(fast_scores(model, examples, 1, edits), naive_scores(model, examples, 1, edits))
