"""Model resolution: Pythia shapes through the same loading path as the hub, offline failures that
name the config key, safetensors only, and shipped micro weights reused only for their exact recipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from actbridge.models.conversion import describe_named_model
from actbridge.models.device import resolve_device
from actbridge.models.loading import load_model, load_tokenizer
from actbridge.models.preflight import ModelUnavailableError
from actbridge.models.weights import write_model_record

PYTHIA_SHAPES = {  # name: (layers, hidden, heads, ffn, parameters)
    "pythia-160m": (12, 768, 12, 3072, 162_322_944),
    "pythia-410m": (24, 1024, 16, 4096, 405_334_016),
}


def pythia_config(layers: int, hidden: int, heads: int, ffn: int) -> GPTNeoXConfig:
    return GPTNeoXConfig(vocab_size=50304, hidden_size=hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, intermediate_size=ffn, max_position_embeddings=2048,
                         use_parallel_residual=True, tie_word_embeddings=False)


@pytest.mark.parametrize("name", PYTHIA_SHAPES)
def test_pythia_shapes_have_pythia_parameter_counts(name):
    layers, hidden, heads, ffn, expected = PYTHIA_SHAPES[name]
    config = pythia_config(layers, hidden, heads, ffn)
    assert config.rope_parameters["partial_rotary_factor"] == 0.25
    with torch.device("meta"):
        model = GPTNeoXForCausalLM(config)
    assert sum(p.numel() for p in model.parameters()) == expected


@pytest.mark.parametrize("name", PYTHIA_SHAPES)
def test_random_pythia_shapes_load_through_the_path_route(tmp_path, tokenizer, name):
    layers, hidden, heads, ffn, expected = PYTHIA_SHAPES[name]
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(pythia_config(layers, hidden, heads, ffn)).eval()
    model.save_pretrained(tmp_path / "weights", safe_serialization=True)
    tokenizer.save_pretrained(tmp_path / "weights")
    record = describe_named_model({"path": str(tmp_path / "weights")}, key="models.sender")
    assert record["kind"] == "path" and list(record["weights_sha256"]) == ["model.safetensors"]
    (tmp_path / "resolved").mkdir()
    write_model_record(tmp_path / "resolved", record)
    loaded = load_model(tmp_path / "resolved", device="cpu")
    assert sum(p.numel() for p in loaded.parameters()) == expected
    assert loaded.config.num_hidden_layers == layers and loaded.config.hidden_size == hidden
    ids = load_tokenizer(tmp_path / "resolved")("Facts: Bako's city is Paris.", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
        # bfloat16 through the same route stays close to float32
        half = load_model(tmp_path / "resolved", device="cpu", dtype=torch.bfloat16)
        assert half.dtype == torch.bfloat16
        cosine = torch.nn.functional.cosine_similarity(
            half(ids).logits.float().flatten(), model(ids).logits.flatten(), dim=0)
        assert cosine > 0.99


HUB_SCRIPT = textwrap.dedent("""
    import sys
    from actbridge.models.conversion import ModelUnavailableError, describe_named_model
    try:
        record = describe_named_model({"hf_id": sys.argv[1], "revision": "main"}, key="models.sender")
        print("RESOLVED:", record["path"])
    except ModelUnavailableError as error:
        print("ERROR:", error)
""")


def test_cached_hub_model_resolves_offline_through_the_hf_cache(tmp_path, tokenizer):
    """The hf_id route with the weights already in the HF cache: no network needed."""
    model = tiny_gpt_neox(tokenizer)
    snapshot = tmp_path / "hf" / "hub" / "models--acme--tiny" / "snapshots" / ("0" * 40)
    model.save_pretrained(snapshot, safe_serialization=True)
    tokenizer.save_pretrained(snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run([sys.executable, "-c", HUB_SCRIPT, "acme/tiny"], env=env, capture_output=True,
                            text=True, timeout=120)
    assert f"RESOLVED: {snapshot}" in result.stdout, result.stdout + result.stderr


def test_unreachable_hub_fails_at_once_without_the_offline_switch(tmp_path):
    """No HF_HUB_OFFLINE, but the hub does not answer (here: a closed local port): no hang, a clear error."""
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT="http://127.0.0.1:9")
    result = subprocess.run([sys.executable, "-c", HUB_SCRIPT, "EleutherAI/pythia-410m"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert "ERROR: config key models.sender: EleutherAI/pythia-410m@main is not on disk" in result.stdout, (
        result.stdout + result.stderr)


def tiny_gpt_neox(tokenizer):
    from actbridge.models.micro_training import MicroModelConfig, build_gpt_neox_config

    return GPTNeoXForCausalLM(build_gpt_neox_config(MicroModelConfig(layers=1, hidden=16, heads=2, steps=1),
                                                    tokenizer))


def test_offline_hub_model_fails_at_once_naming_the_key(tmp_path):
    # A fresh interpreter so the offline switch is read at import time, with an empty cache.
    script = textwrap.dedent("""
        from actbridge.models.conversion import ModelUnavailableError, describe_named_model
        try:
            describe_named_model({"hf_id": "EleutherAI/pythia-160m", "revision": "main"}, key="models.sender")
        except ModelUnavailableError as error:
            print("ERROR:", error)
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert "ERROR: config key models.sender" in result.stdout, result.stderr
    assert "EleutherAI/pythia-160m@main" in result.stdout and "{path: /that/directory}" in result.stdout


def test_pickle_weights_are_refused(tmp_path):
    model_dir = tmp_path / "pt"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps({"model_type": "gpt_neox"}))
    (model_dir / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ModelUnavailableError, match="models.receiver: .* no \\*.safetensors"):
        describe_named_model({"path": str(model_dir)}, key="models.receiver")


@pytest.mark.parametrize("spec,message", [
    ({"path": "/nonexistent/dir"}, "does not exist"),
    ({"path": "/tmp", "gguf_file": "missing.gguf"}, "GGUF file"),
])
def test_missing_local_weights_name_the_key(spec, message):
    with pytest.raises(ModelUnavailableError, match=f"config key models.sender: .*{message}"):
        describe_named_model(spec, key="models.sender")


def write_gguf_header(path, architecture):
    gguf = pytest.importorskip("gguf")
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_gguf_of_an_architecture_transformers_cannot_load_is_refused_early(tmp_path):
    write_gguf_header(tmp_path / "pythia.gguf", "gpt_neox")
    with pytest.raises(ModelUnavailableError, match="models.sender: GGUF architecture 'gpt_neox'"):
        describe_named_model({"path": str(tmp_path), "gguf_file": "pythia.gguf"}, key="models.sender")
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(ModelUnavailableError, match="not a readable GGUF"):
        describe_named_model({"path": str(tmp_path), "gguf_file": "junk.gguf"}, key="models.sender")


def test_gguf_of_a_supported_architecture_is_described(tmp_path):
    write_gguf_header(tmp_path / "tiny.gguf", "llama")
    record = describe_named_model({"path": str(tmp_path), "gguf_file": "tiny.gguf"}, key="models.receiver")
    assert record["kind"] == "gguf" and list(record["weights_sha256"]) == ["tiny.gguf"]


def test_cuda_without_a_gpu_names_the_device_key():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ModelUnavailableError, match="config key device"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


def test_the_record_keeps_the_shape_so_the_dag_never_parses_the_weights(tmp_path, tokenizer):
    """The workflow asks for layer counts in every input function after the model checkpoint: they come from
    ``model.json``, written once by the model rule, not from the config or weights (a GGUF file is parsed whole)."""
    from actbridge.models.record import recorded_shape
    from actbridge.models.loading import layer_count

    GPTNeoXForCausalLM(pythia_config(3, 64, 4, 256)).save_pretrained(tmp_path / "weights", safe_serialization=True)
    tokenizer.save_pretrained(tmp_path / "weights")
    record = describe_named_model({"path": str(tmp_path / "weights")}, key="models.receiver")
    assert record["shape"] == {"num_layers": 3, "hidden_size": 64, "vocab_size": 50304}
    (tmp_path / "resolved").mkdir()
    write_model_record(tmp_path / "resolved", record)
    (tmp_path / "weights" / "config.json").unlink()  # nothing after the record may read the model's files
    assert recorded_shape(tmp_path / "resolved") == record["shape"] and layer_count(tmp_path / "resolved") == 3
    # a record from before shapes were recorded still answers, by parsing the config
    old = {key: value for key, value in record.items() if key != "shape"}
    GPTNeoXForCausalLM(pythia_config(2, 64, 4, 256)).config.save_pretrained(tmp_path / "weights")
    write_model_record(tmp_path / "resolved", old)
    assert recorded_shape(tmp_path / "resolved") is None and layer_count(tmp_path / "resolved") == 2


def test_a_gguf_file_with_weights_is_dequantized_once_and_scores_as_the_original(tmp_path, tokenizer, eval_table):
    """A random Llama written as GGUF (llama.cpp's layout, through the gguf package) goes through the real
    path: the model rule de-quantizes it once into safetensors with its tokenizer, clearing the quantized flag
    that makes save_pretrained refuse; every later job loads that copy and gets the original's logits."""
    pytest.importorskip("gguf")
    pytest.importorskip("accelerate")  # transformers needs it to load a GGUF file
    from tests.gguf_writer import tiny_llama, write_llama_gguf

    from actbridge.models.conversion import CONVERTED_DIR, build_named_model
    from actbridge.models.loading import load_for_job

    original = tiny_llama(tokenizer)
    (tmp_path / "gguf").mkdir()
    write_llama_gguf(original, tokenizer, tmp_path / "gguf" / "tiny.gguf")
    record = build_named_model({"path": str(tmp_path / "gguf"), "gguf_file": "tiny.gguf"}, key="models.sender",
                               out_dir=tmp_path / "sender")
    assert record["converted"] == CONVERTED_DIR and record["kind"] == "gguf"
    assert record["shape"] == {"num_layers": 2, "hidden_size": 64, "vocab_size": len(tokenizer)}
    assert any((tmp_path / "sender" / CONVERTED_DIR).glob("*.safetensors"))
    handle = load_for_job(tmp_path / "sender", "cpu", "float32")
    model, loaded_tokenizer = handle.model, handle.tokenizer
    assert handle.shape == record["shape"]
    assert getattr(model, "hf_quantizer", None) is None and not getattr(model, "is_quantized", False)
    prompt = eval_table.column("full_prompt")[0].as_py()
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert loaded_tokenizer(prompt, add_special_tokens=False)["input_ids"] == ids
    with torch.inference_mode():
        gap = (model(torch.tensor([ids])).logits - original(torch.tensor([ids])).logits).abs().max()
    assert float(gap) < 1e-5


def test_a_truncated_gguf_file_is_refused_naming_the_key(tmp_path, tokenizer):
    pytest.importorskip("gguf")
    from tests.gguf_writer import tiny_llama, write_llama_gguf

    path = write_llama_gguf(tiny_llama(tokenizer), tokenizer, tmp_path / "tiny.gguf")
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(ModelUnavailableError, match="models.receiver: .*truncated"):
        describe_named_model({"path": str(tmp_path), "gguf_file": "tiny.gguf"}, key="models.receiver")
