"""The planted equalities on a GPU, where one is present (skipped elsewhere, CI included): the injection
engine's fast path against the naive hooked forward, and the KV channel's identity map against the
full-context prompt, on GPT-NeoX, Llama with a BOS and Gemma-3 with a sliding window shorter than the prompt,
in float32 (the tolerance of the CPU tests) and in bfloat16 (a looser one: each path rounds differently)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actbridge.kv.channel import Channel, kv_channel_rows
from actbridge.kv.conditions import KV_CONDITIONS
from actbridge.kv.fit import fit_kv_map
from actbridge.kv.segments import segment_ids, segments_of
from actbridge.models.edited_scoring import Edits, Example, fast_scores, naive_scores
from actbridge.models.encoding import with_gold
from actbridge.models.handle import ModelHandle
from test_bounded_scoring import ARCHITECTURES, bos_tokenizer  # noqa: F401 - the fixture
from test_kv_channel import CASES, naive_of, partial_rows

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 0.25}


def on_gpu(architecture, tokenizer, dtype):
    return ARCHITECTURES[architecture](tokenizer).to(device="cuda", dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("architecture,which", CASES)
def test_fast_edits_equal_the_naive_forward_on_the_gpu(architecture, which, dtype, eval_table, tokenizer,
                                                       bos_tokenizer):
    tok = tokenizer if which == "plain" else bos_tokenizer
    model = on_gpu(architecture, tok, dtype)
    d = model.config.hidden_size
    generator = torch.Generator().manual_seed(0)
    examples, edits = [], []
    for row in eval_table.slice(0, 6).to_pylist():
        ids = tok(row["full_prompt"])["input_ids"]
        cands = [tok(" " + c, add_special_tokens=False)["input_ids"] for c in row["candidates"]]
        examples.append(Example(ids, len(ids) // 2, cands))
        edits.append(Edits(torch.tensor([1.0, 0.0, 1.0]), 0.1 * torch.randn(3, d, generator=generator),
                           torch.tensor([False, True, True])))
    fast, naive = fast_scores(model, examples, 1, edits), naive_scores(model, examples, 1, edits)
    for f, n in zip(fast, naive):
        np.testing.assert_allclose(f.logprob, n.logprob, atol=TOLERANCE[dtype] * max(1.0, np.abs(n.logprob).max() / 10),
                                   rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("architecture,which", CASES)
def test_identity_kv_channel_reproduces_the_full_context_prompt_on_the_gpu(architecture, which, dtype, eval_table,
                                                                           tokenizer, bos_tokenizer):
    tok = tokenizer if which == "plain" else bos_tokenizer
    handle = ModelHandle.of(on_gpu(architecture, tok, dtype), tok)
    rows = partial_rows(eval_table)
    texts = eval_table.column("full_prompt").to_pylist()
    kv_map = fit_kv_map("identity", handle, handle, texts[:6], texts[6:10], batch_tokens=4000)
    channel = Channel.of(handle, handle, kv_map)
    table = kv_channel_rows(channel, rows, conditions=list(KV_CONDITIONS.names()),
                            layers_sent=channel.receiver_layout.num_layers, seed=0, batch_tokens=1500)
    by = {(r["example_id"], r["condition"]): r for r in table.to_pylist()}
    ids = segment_ids(handle, [segments_of(s, r) for s, r in zip(rows.column("sender_prompt").to_pylist(),
                                                                   rows.column("receiver_prompt").to_pylist())])
    named = [with_gold(c, a) for c, a in zip(rows.column("candidates").to_pylist(), rows.column("answer").to_pylist())]
    full = naive_of(handle, [s.head + s.context + s.tail for s in ids],
                    [handle.continuation_ids(names) for names, _ in named], [g for _, g in named])
    scale = max(1.0, max(abs(f["gold_logprob"]) for f in full) / 10)
    for n, example in enumerate(rows.column("example_id").to_pylist()):
        for condition in ("kv_sent", "kv_own"):
            assert by[(example, condition)]["gold_logprob"] == pytest.approx(full[n]["gold_logprob"],
                                                                             abs=TOLERANCE[dtype] * scale)
