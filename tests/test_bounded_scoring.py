"""Planted equality: the bounded scoring path (trunk only, vocabulary projected a chunk at a time where an
answer token is predicted, the prompt's key/value cache shared by the candidates, batches sized in tokens)
gives the scores of the naive one (each whole prompt + candidate through the model's own forward, a
log-softmax over the full vocabulary at every position), on three architectures and two tokenizers, one
of which puts a BOS token before every prompt."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tokenizers import processors
from transformers import (Gemma3ForCausalLM, Gemma3TextConfig, GPTNeoXForCausalLM, LlamaConfig,
                          LlamaForCausalLM)

from actbridge.models.handle import ModelHandle
from actbridge.models.encoding import prompt_token_ids, special_prefix
from actbridge.models.scoring import naive_answer_scores, score_answers
from actbridge.models.heads import check_output_head, output_logits, token_scores
from actbridge.models.edited_scoring import Edits, Example, fast_scores, naive_scores
from actbridge.activations.roles import role_positions_for_table
from actbridge.models.tokenizer import EOS_TOKEN, train_bpe_tokenizer
from actbridge.models.micro_training import MicroModelConfig, build_gpt_neox_config

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def bos_tokenizer(lm_table):
    """A tokenizer that puts a BOS before every text, as Gemma's and Llama's do."""
    tokenizer = train_bpe_tokenizer(lm_table.column("full_prompt").to_pylist(), vocab_size=700)
    bos = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{EOS_TOKEN} $A", special_tokens=[(EOS_TOKEN, bos)])
    return tokenizer


def micro_model(tokenizer):
    torch.manual_seed(0)
    return GPTNeoXForCausalLM(build_gpt_neox_config(MicroModelConfig(layers=2, hidden=32, heads=2, steps=1),
                                                    tokenizer)).eval()


def llama_model(tokenizer):
    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=False)
    return LlamaForCausalLM(config).eval()


def gemma3_model(tokenizer, sliding_window=512):
    torch.manual_seed(2)
    config = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=48, intermediate_size=96, num_hidden_layers=3,
                              num_attention_heads=4, num_key_value_heads=1, head_dim=16,
                              max_position_embeddings=512, sliding_window=sliding_window,
                              final_logit_softcapping=5.0, query_pre_attn_scalar=16,
                              layer_types=["sliding_attention", "full_attention", "sliding_attention"])
    model = Gemma3ForCausalLM(config).eval()
    with torch.no_grad():  # random init leaves the norms at zero gain, which hides the soft-capping
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model


ARCHITECTURES = {"gpt_neox": micro_model, "llama": llama_model, "gemma3": gemma3_model,
                 # a window shorter than the prompts: the prefix cache must keep every key, the masks drop them
                 "gemma3_sliding": lambda tokenizer: gemma3_model(tokenizer, sliding_window=6)}


def prompts_and_candidates(eval_table, n=12):
    rows = eval_table.slice(0, n).to_pylist()
    return ([r["full_prompt"] for r in rows], [r["answer"] for r in rows], [r["candidates"] for r in rows])


def test_the_bos_tokenizer_adds_a_prefix_and_the_micro_one_none(tokenizer, bos_tokenizer):
    assert special_prefix(tokenizer) == []
    assert special_prefix(bos_tokenizer) == [bos_tokenizer.convert_tokens_to_ids(EOS_TOKEN)]
    plain = tokenizer("a b c", add_special_tokens=False)["input_ids"]
    assert prompt_token_ids(tokenizer, ["a b c"]) == [plain]
    assert prompt_token_ids(bos_tokenizer, ["a b c"])[0] == bos_tokenizer("a b c")["input_ids"]


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
@pytest.mark.parametrize("which", ["plain", "bos"])
def test_bounded_answer_scores_equal_the_naive_full_vocabulary_ones(architecture, which, eval_table, tokenizer,
                                                                    bos_tokenizer):
    tok = tokenizer if which == "plain" else bos_tokenizer
    model = ARCHITECTURES[architecture](tok)
    check_output_head(model)
    prompts, answers, candidates = prompts_and_candidates(eval_table)
    naive = naive_answer_scores(ModelHandle.of(model, tok), prompts, answers, candidates)
    for batch_tokens in (1, 300, 100_000):  # one example a batch, a few, all at once
        bounded = score_answers(ModelHandle.of(model, tok), prompts, answers, candidates, batch_tokens=batch_tokens)
        np.testing.assert_allclose(bounded.gold_logprob, naive.gold_logprob, atol=TOLERANCE, rtol=0)
        np.testing.assert_array_equal(bounded.exact_match, naive.exact_match)
        np.testing.assert_array_equal(bounded.gold_rank, naive.gold_rank)
        np.testing.assert_array_equal(bounded.n_candidates, naive.n_candidates)
        np.testing.assert_allclose(bounded.first_token_logprob, naive.first_token_logprob, atol=TOLERANCE, rtol=0)
        np.testing.assert_array_equal(bounded.first_token_top, naive.first_token_top)
    assert np.isfinite(naive.gold_logprob).all() and naive.gold_logprob.std() > 0  # not a constant
    assert (naive.first_token_logprob >= naive.gold_logprob - TOLERANCE).all()  # one token of the answer's sum


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_bounded_edit_scores_equal_the_naive_hooked_forward_with_a_bos(architecture, eval_table, bos_tokenizer):
    """The injection engine's edits at role positions that count the BOS: same scores as the naive path."""
    model = ARCHITECTURES[architecture](bos_tokenizer)
    rows = eval_table.slice(0, 6)
    positions = role_positions_for_table(ModelHandle.for_tokenizer(bos_tokenizer), rows, "full", ["last", "subject"])
    prompt_ids = prompt_token_ids(bos_tokenizer, rows.column("full_prompt").to_pylist())
    assert (positions["last"] == np.array([len(ids) - 1 for ids in prompt_ids])).all()
    d = model.config.hidden_size
    generator = torch.Generator().manual_seed(0)
    examples, edits = [], []
    for i, row in enumerate(rows.to_pylist()):
        cands = [bos_tokenizer(" " + c, add_special_tokens=False)["input_ids"] for c in row["candidates"]]
        examples.append(Example(prompt_ids[i], int(positions["subject"][i]), cands))
        edits.append(Edits(torch.tensor([1.0, 0.0, 1.0]), torch.randn(3, d, generator=generator),
                           torch.tensor([False, True, True])))
    for layer in (0, 1, model.config.num_hidden_layers):
        fast, naive = fast_scores(model, examples, layer, edits), naive_scores(model, examples, layer, edits)
        for f, n in zip(fast, naive):
            np.testing.assert_allclose(f.logprob, n.logprob, atol=TOLERANCE, rtol=0)
            np.testing.assert_array_equal(f.exact, n.exact)


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_the_prefix_cache_goes_in_under_the_keyword_the_model_reads(architecture, eval_table, bos_tokenizer,
                                                                    monkeypatch):
    """transformers 5.24 renamed ``past_key_values`` to ``cache``; a release before it ignores ``cache=``
    silently. The keyword is read off the forward: ``cache`` on the locked release, and the old keyword, which
    the releases before 5.24 read, gives the same scores (it only warns here)."""
    import inspect

    from actbridge.models import cache_api

    model = ARCHITECTURES[architecture](bos_tokenizer)
    keyword = cache_api.cache_keyword(model.base_model)
    assert keyword in inspect.signature(type(model.base_model).forward).parameters
    assert keyword == "cache"  # the locked transformers' name: no deprecated call of ours
    rows = eval_table.slice(0, 4).to_pylist()
    prompt_ids = prompt_token_ids(bos_tokenizer, [row["full_prompt"] for row in rows])
    examples = [Example(ids, len(ids) - 2, [bos_tokenizer(" " + c, add_special_tokens=False)["input_ids"]
                                            for c in row["candidates"]]) for ids, row in zip(prompt_ids, rows)]
    generator = torch.Generator().manual_seed(3)
    edits = [Edits(torch.tensor([1.0, 0.0]), torch.randn(2, model.config.hidden_size, generator=generator),
                   torch.tensor([False, True])) for _ in examples]
    current = fast_scores(model, examples, 1, edits)
    monkeypatch.setattr(cache_api, "_keyword", lambda forward_owner: "past_key_values")
    with pytest.warns(FutureWarning, match="past_key_values"):
        old = fast_scores(model, examples, 1, edits)
    for a, b in zip(current, old):
        np.testing.assert_allclose(a.logprob, b.logprob, atol=1e-6, rtol=0)


def test_a_forward_without_a_cache_keyword_is_named():
    from actbridge.models.cache_api import cache_keyword

    class BeforeTheRename(torch.nn.Module):
        def forward(self, input_ids, past_key_values=None, use_cache=None):
            return input_ids

    class NoCache(torch.nn.Module):
        def forward(self, input_ids):
            return input_ids

    assert cache_keyword(BeforeTheRename()) == "past_key_values"
    with pytest.raises(TypeError, match="NoCache.forward takes no key/value cache"):
        cache_keyword(NoCache())


def test_chunked_vocabulary_scores_equal_one_chunk_with_and_without_a_gradient(bos_tokenizer):
    model = gemma3_model(bos_tokenizer)
    hidden = torch.randn(7, model.config.hidden_size, requires_grad=True)
    predictor = torch.tensor([0, 0, 1, 3, 3, 6, 5, 2])  # several targets share a predicting state
    targets = torch.randint(0, len(bos_tokenizer), (8,))
    vocab_bytes = 4 * len(bos_tokenizer)
    whole = token_scores(model, hidden, predictor, targets, budget_bytes=100 * vocab_bytes)
    chunked = token_scores(model, hidden, predictor, targets, budget_bytes=2 * vocab_bytes)  # 4 chunks
    reference = torch.log_softmax(output_logits(model, hidden).float(), -1)[predictor, targets]
    torch.testing.assert_close(whole.logprob, reference, atol=1e-5, rtol=0)
    torch.testing.assert_close(chunked.logprob, reference, atol=1e-5, rtol=0)
    assert torch.equal(chunked.is_argmax, whole.is_argmax)
    (grad_whole,) = torch.autograd.grad(whole.logprob.sum(), hidden)
    (grad_chunked,) = torch.autograd.grad(chunked.logprob.sum(), hidden)
    torch.testing.assert_close(grad_chunked, grad_whole, atol=1e-5, rtol=0)


def test_an_unknown_logit_post_processing_fails_loudly(tokenizer):
    model = micro_model(tokenizer)
    original = model.forward

    def doubled_logits(*args, **kwargs):
        out = original(*args, **kwargs)
        out.logits = out.logits * 2
        return out

    model.forward = doubled_logits
    with pytest.raises(RuntimeError, match="post-processes logits"):
        check_output_head(model)


def test_a_batch_that_cannot_fit_fails_before_it_runs_naming_the_key(tokenizer, eval_table, monkeypatch):
    import actbridge.models.memory as memory

    model = micro_model(tokenizer)
    prompts, answers, candidates = prompts_and_candidates(eval_table, n=4)
    monkeypatch.setattr(memory, "available_bytes", lambda device: 10 * 2**20)  # 10 MB free
    with pytest.raises(memory.BatchMemoryError, match="lower config key batch_tokens \\(now 4096\\)"):
        score_answers(ModelHandle.of(model, tokenizer), prompts, answers, candidates, batch_tokens=4096)


def test_running_out_of_memory_names_the_key(tokenizer):
    import actbridge.models.memory as memory

    with pytest.raises(memory.BatchMemoryError, match="lower config key activations.batch_size \\(now 32\\)"):
        with memory.batches_sized_by("activations.batch_size", 32):
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
    with pytest.raises(ValueError, match="unrelated"):  # other errors pass through untouched
        with memory.batches_sized_by("activations.batch_size", 32):
            raise ValueError("unrelated")
