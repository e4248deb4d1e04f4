"""Activation shards: what is written is what a full forward pass computes, and tampering is caught."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from transformers import GPTNeoXForCausalLM

from actbridge.models.handle import ModelHandle
from actbridge.io import seal_directory
from actbridge.activations.store import (ActivationStore, ActivationStoreError, ExtractionPlan, extract_activations,
                                   hidden_states_at, iter_aligned)
from actbridge.activations.layers import resolve_layers
from actbridge.activations.roles import role_positions_for_table
from actbridge.models.micro_training import MicroModelConfig, build_gpt_neox_config

IDENTITY = {"kind": "test"}


def tiny_model(tokenizer, seed=0, layers=2, hidden=32):
    torch.manual_seed(seed)
    return GPTNeoXForCausalLM(build_gpt_neox_config(MicroModelConfig(layers=layers, hidden=hidden, heads=2, steps=1),
                                                    tokenizer)).eval()


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_model(tokenizer)


def plan(**overrides):
    values = dict(layers=(0, 1, 2), roles=("last", "bridge"), prompt="full", dtype="float32", shard_rows=16,
                  batch_size=5)
    values.update(overrides)
    return ExtractionPlan(**values)


def test_shards_hold_the_states_of_an_unpadded_full_forward(tmp_path, model, tokenizer, eval_table):
    manifest = extract_activations(ModelHandle.of(model, tokenizer), eval_table, plan=plan(), out_dir=tmp_path / "acts",
                                   identity=IDENTITY)
    assert len(manifest["shards"]) > 1  # 30 examples, 2 rows each (shared + relay or asymmetric), 16 rows per shard
    store = ActivationStore(tmp_path / "acts")
    positions = role_positions_for_table(ModelHandle.for_tokenizer(tokenizer), eval_table, "full", ("last", "bridge"))
    prompts = eval_table.column("full_prompt").to_pylist()
    row_keys = list(zip(eval_table.column("example_id").to_pylist(), eval_table.column("mode").to_pylist()))
    assert len(set(row_keys)) == len(row_keys) == len(set(eval_table.column("example_id").to_pylist())) * 2
    for role in ("last", "bridge"):
        keys, states = store.read(2, role)
        expected_keys = [k for k, p in zip(row_keys, positions[role]) if p >= 0]
        assert keys == expected_keys  # dataset order, rows only where the role exists
        for row, key in enumerate(keys[:6]):
            i = row_keys.index(key)
            encoded = tokenizer(prompts[i], return_tensors="pt", add_special_tokens=False)
            with torch.inference_mode():
                hidden = model(**encoded, output_hidden_states=True).hidden_states
            np.testing.assert_allclose(states[row], hidden[2][0, positions[role][i]].numpy(), atol=1e-5)
    assert manifest["rows"] == sum(len(store.read(0, r)[0]) for r in ("last", "bridge"))


def test_float16_shards_and_layer_selection(tmp_path, model, tokenizer, eval_table):
    extract_activations(ModelHandle.of(model, tokenizer), eval_table, plan=plan(layers=(1,), dtype="float16"), out_dir=tmp_path / "a",
                        identity=IDENTITY)
    store = ActivationStore(tmp_path / "a")
    ids, states = store.read(1, "last")
    assert states.dtype == np.float32 and len(ids) == eval_table.num_rows
    with pytest.raises(ActivationStoreError, match="not 2"):
        store.read(2, "last")


def test_resolve_layers():
    assert resolve_layers("all", 3) == (0, 1, 2, 3)
    assert resolve_layers([3, 1, 1], 3) == (1, 3)
    with pytest.raises(ValueError, match="out of range"):
        resolve_layers([4], 3)


@pytest.fixture()
def extracted(tmp_path, model, tokenizer, eval_table):
    extract_activations(ModelHandle.of(model, tokenizer), eval_table, plan=plan(), out_dir=tmp_path / "acts", identity=IDENTITY)
    return tmp_path / "acts"


def test_each_role_is_a_row_group_of_its_own(extracted):
    """A reader of one role decodes that role's rows only: each shard holds one row group per role."""
    manifest = json.loads((extracted / "manifest.json").read_text())
    for shard in manifest["shards"]:
        parquet = pq.ParquetFile(extracted / shard["file"])
        assert parquet.metadata.num_row_groups == len(shard["row_groups"]) >= 1
        for role, index in shard["row_groups"].items():
            assert set(parquet.read_row_group(index, columns=["role"]).column("role").to_pylist()) == {role}
    store = ActivationStore(extracted)
    rows = [row for shard in manifest["shards"]  # every row of every shard, in file order
            for row in pq.read_table(extracted / shard["file"], columns=["example_id", "mode", "role"]).to_pylist()]
    for role in ("last", "bridge"):
        keys, _ = store.read(1, role)
        assert keys == [(row["example_id"], row["mode"]) for row in rows if row["role"] == role]


def test_row_groups_that_disagree_with_the_manifest_are_caught(extracted):
    manifest = json.loads((extracted / "manifest.json").read_text())
    manifest["shards"][0]["row_groups"] = {"last": 0}
    (extracted / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ActivationStoreError, match=r"\['manifest.json'\] that do not match the sha256"):
        ActivationStore(extracted)
    seal_directory(extracted)  # a writer that sealed a wrong manifest: the store's own checks still catch it
    with pytest.raises(ActivationStoreError, match="part-00000.parquet has 2 row groups"):
        ActivationStore(extracted)


def test_truncated_shard_is_named(extracted):
    shard = extracted / "part-00001.parquet"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(ActivationStoreError, match="part-00001.parquet.*rerun"):
        ActivationStore(extracted)


def test_flipped_byte_is_named(extracted):
    shard = extracted / "part-00000.parquet"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.raises(ActivationStoreError, match="part-00000.parquet.*sha256"):
        ActivationStore(extracted)


def test_missing_shard_and_manifest_are_named(extracted):
    (extracted / "part-00002.parquet").unlink()
    with pytest.raises(ActivationStoreError, match=r"lacks \['part-00002.parquet'\] listed in its SHA256SUMS"):
        ActivationStore(extracted)
    (extracted / "manifest.json").unlink()
    seal_directory(extracted)
    with pytest.raises(ActivationStoreError, match="manifest.json is missing"):
        ActivationStore(extracted)


def test_dim_mismatch_in_manifest_is_caught(extracted):
    manifest = json.loads((extracted / "manifest.json").read_text())
    manifest["hidden_size"] = 64
    (extracted / "manifest.json").write_text(json.dumps(manifest))
    seal_directory(extracted)
    with pytest.raises(ActivationStoreError, match="different schema"):
        ActivationStore(extracted)


def test_aligned_streams_recut_different_shard_boundaries():
    ids = [f"e{i}" for i in range(23)]
    x = np.arange(23 * 2, dtype=np.float32).reshape(23, 2)
    y = -np.arange(23 * 3, dtype=np.float32).reshape(23, 3)

    def chunks(array, cuts):
        bounds = [0, *cuts, len(ids)]
        return iter([(ids[a:b], array[a:b]) for a, b in zip(bounds, bounds[1:])])

    pieces = list(iter_aligned(chunks(x, [5, 6, 17]), chunks(y, [10, 11])))
    np.testing.assert_array_equal(np.concatenate([p[0] for p in pieces]), x)
    np.testing.assert_array_equal(np.concatenate([p[1] for p in pieces]), y)
    with pytest.raises(ActivationStoreError, match="different examples"):
        list(iter_aligned(iter([(ids[:3], x[:3])]), iter([(ids[1:4], y[1:4])])))
    with pytest.raises(ActivationStoreError, match="different numbers of rows"):
        list(iter_aligned(iter([(ids[:3], x[:3])]), iter([(ids[:2], y[:2])])))


def test_peak_memory_is_one_chunk(tmp_path, model, tokenizer, eval_table, monkeypatch):
    """Streaming: the largest states buffer ever allocated holds one shard's examples, not the split."""
    import actbridge.activations.store as activations

    sizes = []
    real_zeros = np.zeros

    def recording_zeros(shape, *args, **kwargs):
        if isinstance(shape, tuple) and len(shape) == 4:
            sizes.append(shape[0])
        return real_zeros(shape, *args, **kwargs)

    monkeypatch.setattr(activations.np, "zeros", recording_zeros)
    extract_activations(ModelHandle.of(model, tokenizer), eval_table, plan=plan(shard_rows=8), out_dir=tmp_path / "a",
                        identity=IDENTITY)
    assert sizes and max(sizes) == 4  # 8 rows / 2 roles


SHIPPED_MODELS = sorted(p.parent for p in (Path(__file__).resolve().parents[1] / "resources" / "models")
                        .glob("*/model.safetensors"))


@pytest.mark.parametrize("weights", SHIPPED_MODELS, ids=lambda path: path.name)
def test_bfloat16_hidden_states_stay_within_cosine_0999_of_float32(weights, eval_table):
    """The `dtype: bfloat16` switch on the trained micro models: every layer's last-token and
    bridge-mention states keep their direction (cosine >= 0.999 on average, >= 0.99 each)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(weights)
    table = eval_table.slice(0, 32)
    token_ids = tokenizer(table.column("full_prompt").to_pylist(), add_special_tokens=False)["input_ids"]
    by_role = role_positions_for_table(ModelHandle.for_tokenizer(tokenizer), table, "full", ("last", "bridge"))
    positions = np.stack([by_role["last"], by_role["bridge"]], axis=1)  # [batch, roles]
    states = {}
    for dtype in (torch.float32, torch.bfloat16):
        loaded = AutoModelForCausalLM.from_pretrained(weights, dtype=dtype).eval()
        layers = list(range(loaded.config.num_hidden_layers + 1))
        with torch.inference_mode():
            states[dtype] = hidden_states_at(loaded, token_ids, positions, layers, tokenizer.pad_token_id or 0, "cpu")
    present = positions >= 0  # 1-hop rows have no bridge mention
    full, half = states[torch.float32][present], states[torch.bfloat16][present]  # [states, layers, d]
    cosine = (full * half).sum(-1) / (np.linalg.norm(full, axis=-1) * np.linalg.norm(half, axis=-1))
    print(f"bf16 vs fp32 cosine: mean {cosine.mean():.5f}, min {cosine.min():.5f}")
    assert cosine.mean() >= 0.999 and cosine.min() >= 0.99, (cosine.mean(), cosine.min())


def test_a_role_a_mode_lacks_reads_as_no_rows_of_the_right_width(extracted, eval_table):
    """Relay prompts (1-hop) have no bridge mention: asking for that role in that mode is empty, not an error."""
    store = ActivationStore(extracted)
    assert "relay" in set(eval_table.column("mode").to_pylist())
    ids, states = store.read(1, "bridge", ["relay"])
    assert ids == [] and states.shape == (0, store.hidden_size)
    ids, states = store.read(1, "last", ["relay"])
    assert len(ids) == states.shape[0] > 0 and {mode for _, mode in ids} == {"relay"}


def test_distinct_rows_maps_every_row_to_its_first_occurrence():
    from actbridge.models.encoding import distinct_rows

    keys = ["b", "a", "b", "c", "a", "b"]
    first, inverse = distinct_rows(keys)
    assert first.tolist() == [0, 1, 3] and inverse.tolist() == [0, 1, 0, 2, 1, 0]
    assert [keys[i] for i in first[inverse]] == keys
    empty_first, empty_inverse = distinct_rows([])
    assert len(empty_first) == len(empty_inverse) == 0


@pytest.mark.parametrize("prompt", ["full", "sender"])
def test_identical_prompts_run_once_and_every_row_gets_the_same_states(tmp_path, model, tokenizer, eval_table,
                                                                      monkeypatch, prompt):
    """Every world's two rows share their full prompt (and a relay row the sender's prompt of its shared row):
    extraction runs each once, in the batches (and padded widths) of running every row, so each state is
    bit-identical to running every row, except where running every row gave two copies of one prompt two
    different float32 roundings (the copies fell into batches of different widths)."""
    import actbridge.models.encoding as encoding

    handle = ModelHandle.of(model, tokenizer)
    prompts = eval_table.column(f"{prompt}_prompt").to_pylist()
    assert len(set(prompts)) < len(prompts)  # the case at hand
    ran = []
    real_states = hidden_states_at

    def counting(model, token_ids, *args, **kwargs):
        ran.extend(tuple(ids) for ids in token_ids)
        return real_states(model, token_ids, *args, **kwargs)

    monkeypatch.setattr("actbridge.activations.store.hidden_states_at", counting)
    extract_activations(handle, eval_table, plan=plan(prompt=prompt), out_dir=tmp_path / "distinct", identity=IDENTITY)
    assert len(ran) == len(set(ran)) < len(prompts)  # nothing ran twice within a shard; shards of 8 examples
    monkeypatch.setattr(encoding, "distinct_rows", lambda keys: (np.arange(len(keys)), np.arange(len(keys))))
    extract_activations(handle, eval_table, plan=plan(prompt=prompt), out_dir=tmp_path / "every", identity=IDENTITY)
    distinct, every = ActivationStore(tmp_path / "distinct"), ActivationStore(tmp_path / "every")
    prompt_of = dict(zip(zip(eval_table.column("example_id").to_pylist(), eval_table.column("mode").to_pylist()),
                         prompts))
    for role in ("last", "bridge"):
        for layer in (0, 2):
            keys, distinct_states = distinct.read(layer, role)
            assert keys == every.read(layer, role)[0]
            every_states = every.read(layer, role)[1]
            by_prompt = {}
            for key, state in zip(keys, distinct_states):  # one prompt, one state
                np.testing.assert_array_equal(by_prompt.setdefault(prompt_of[key], state), state)
            copies = {}
            for key, state in zip(keys, every_states):
                copies.setdefault(prompt_of[key], []).append(state)
            for key, mine, theirs in zip(keys, distinct_states, every_states):
                if not np.array_equal(mine, theirs):
                    twins = copies[prompt_of[key]]
                    assert any(not np.array_equal(twins[0], twin) for twin in twins)
                    np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-5)
