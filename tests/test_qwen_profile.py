"""``config/qwen.yaml``'s code path through the workflow, on tiny generated models of the real pair's kind: two
Qwen2 models (q/k/v biases, grouped-query attention, tied LM head) written as GGUF files with weights, of
different depths and widths, sharing one tokenizer. The profile's file is the config, only its models, sizes
and layers made tiny, so its bfloat16 compute and its relative-depth grid run as configured.

* The GGUF header is read without decoding the tokenizer's arrays, and gives the float32 size the model rule
  asks memory for.
* data -> verdict (and the receiver-side causal checks) runs; both models are de-quantized once, and share their tokenizer.
"""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import yaml

from actbridge.data.worlds import DataConfig, build_split
from actbridge.models.preflight import read_gguf_header
from actbridge.models.tokenizer import train_bpe_tokenizer
from tests.gguf_writer import tiny_qwen2, write_llama_gguf
from tests.pipeline import ROOT, copy_workflow, snakemake

pytestmark = pytest.mark.workflow

pytest.importorskip("gguf")
pytest.importorskip("accelerate")


@pytest.fixture(scope="module")
def qwen_workdir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("qwen_profile")
    copy_workflow(workdir)
    config = yaml.safe_load((ROOT / "config" / "qwen.yaml").read_text())
    data = DataConfig.from_config({**config, "data": {**config["data"], "sizes": {"lm_train": 300}}})
    tokenizer = train_bpe_tokenizer(build_split(data, "lm_train").column("full_prompt").to_pylist(), vocab_size=600)
    tiny = workdir / "tiny"
    tiny.mkdir()
    write_llama_gguf(tiny_qwen2(tokenizer, seed=1, layers=2, hidden=48), tokenizer, tiny / "sender.gguf")
    receiver = tiny_qwen2(tokenizer, seed=2, layers=4, hidden=64)
    write_llama_gguf(receiver, tokenizer, tiny / "receiver.gguf")
    # parameters() counts the tied head once, as the GGUF file stores it
    (tiny / "receiver.parameters").write_text(str(sum(p.numel() for p in receiver.parameters())))
    config.update(device="cpu", threads=1)
    config["models"] = {role: {"path": str(tiny), "gguf_file": f"{role}.gguf"} for role in ("sender", "receiver")}
    config["data"]["sizes"] = {"lm_train": 10, "bridge_train": 40, "bridge_val": 20, "eval": 24}
    config["activations"]["layers"] = {"sender": [2], "receiver": [4]}
    config["bridge"].update(pairs="relative_depth", seeds=1, methods=["ridge"])
    config["stats"] = {"resamples": 500, "hierarchical_resamples": 200}
    (workdir / "qwen.yaml").write_text(yaml.safe_dump(config))
    return workdir


def test_the_gguf_header_gives_the_float32_size_without_decoding_the_vocabulary(qwen_workdir, tmp_path):
    from gguf import GGUFReader

    path = qwen_workdir / "tiny" / "receiver.gguf"
    header = read_gguf_header(path)
    assert header.architecture == "qwen2" and "output.weight" not in header.tensor_elements  # tied head
    assert header.tensor_elements == {t.name: int(t.n_elements) for t in GGUFReader(path).tensors}
    parameters = int((qwen_workdir / "tiny" / "receiver.parameters").read_text())
    assert sum(header.tensor_elements.values()) == parameters and header.float32_mb == parameters * 4 // 2**20
    assert header.shape() == (4, 64, header.metadata["tokenizer.ggml.tokens"])  # the vocabulary's length, not decoded
    from actbridge.plan import model_shape

    shape = model_shape({"path": str(path.parent), "gguf_file": path.name}, vocab_size=0)  # make plan, no config.json
    assert (shape.layers, shape.hidden, shape.vocab) == header.shape()
    (tmp_path / "cut.gguf").write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ValueError, match="header ends after"):
        read_gguf_header(tmp_path / "cut.gguf")


@pytest.fixture(scope="module")
def qwen_run(qwen_workdir):
    # to the verdict: the figures of named models are test_named_models' (each figure job costs seconds)
    snakemake(qwen_workdir, "results/stats/verdict.md", "results/causal/receiver.md", "--configfile", "qwen.yaml",
              "--cores", "2")
    return qwen_workdir


def test_the_qwen_profile_runs_data_to_verdict_in_bfloat16(qwen_run):
    results = qwen_run / "results"
    for role, layers in (("sender", 2), ("receiver", 4)):
        record = json.loads((results / "models" / role / "model.json").read_text())
        assert record["kind"] == "gguf" and record["converted"] and record["shape"]["num_layers"] == layers
    manifest = json.loads((results / "activations" / "receiver" / "eval" / "manifest.json").read_text())
    assert "bfloat16" in json.dumps(manifest)
    verdict = (results / "stats" / "verdict.md").read_text()
    assert "## " in verdict
    injected = pq.read_table(results / "injection" / "s2-r4" / "ridge" / "seed0.parquet").to_pylist()
    assert {row["mode"] for row in injected} == {"shared", "asymmetric", "relay"}
    conditions = {row["condition"] for row in injected}
    assert conditions == set(yaml.safe_load((ROOT / "config" / "qwen.yaml").read_text())["injection"]["conditions"])
    assert sorted(path.name for path in (results / "bridges").iterdir()) == ["s2-r4"]  # 2/2 and 4/4 of depth


def test_weights_larger_than_the_free_memory_fail_before_loading_naming_dtype(qwen_run, monkeypatch):
    from actbridge.models import memory
    from actbridge.models.loading import load_for_job

    receiver = qwen_run / "results" / "models" / "receiver"
    record = json.loads((receiver / "model.json").read_text())
    assert record["parameters"] == int((qwen_run / "tiny" / "receiver.parameters").read_text())
    monkeypatch.setattr(memory, "available_bytes", lambda device: 4 * record["parameters"])  # 80% is usable
    with pytest.raises(memory.BatchMemoryError, match=r"receiver model's weights need about .* float32 .* "
                                                      r"config key dtype: bfloat16 halves it"):
        load_for_job(receiver, "cpu", "float32")
    assert load_for_job(receiver, "cpu", "bfloat16").model.dtype.is_floating_point  # half of it fits
