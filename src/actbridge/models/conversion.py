"""Named models (a hub id, a local directory, a GGUF file) resolved into ``results/models/{name}/`` by the model
rule: the weights found on disk (never fetched silently offline), a GGUF file de-quantized once, the record
written. The micro models' path is :mod:`actbridge.models.micro`; neither imports the other, so an edit to one
never reruns the other's jobs (each is its own fingerprint, chosen by the model's kind)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from actbridge.config import model_kind
from actbridge.models.preflight import (HUB_FILE_PATTERNS, ModelUnavailableError, check_local_model, hub_reachable,
                                       not_on_disk_offline)
from actbridge.models.weights import (CONVERTED_DIR, parsed_shape, recorded_location, weight_files,
                                      weights_fingerprint, write_model_record)

log = logging.getLogger(__name__)


def resolve_hf_snapshot(hf_id: str, revision: str, *, key: str) -> Path:
    """Local snapshot directory of ``hf_id@revision``; downloads only when the hub answers."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(hf_id, revision=revision, local_files_only=True,
                                      allow_patterns=HUB_FILE_PATTERNS))
    except Exception as not_cached:  # LocalEntryNotFoundError and friends
        cache_error = not_cached
    if not hub_reachable():
        raise ModelUnavailableError(not_on_disk_offline(hf_id, revision, key=key)) from cache_error
    log.info("downloading %s@%s (safetensors only)", hf_id, revision)
    return Path(snapshot_download(hf_id, revision=revision, allow_patterns=HUB_FILE_PATTERNS))


def describe_named_model(spec: dict, *, key: str) -> dict[str, Any]:
    """The ``model.json`` record of a named model, after checking its weights are on disk."""
    kind = model_kind(spec)
    if kind == "hf_id":
        revision = spec.get("revision", "main")
        snapshot = resolve_hf_snapshot(spec["hf_id"], revision, key=key)
        check_local_model(snapshot, key=key)
        return {"kind": kind, "hf_id": spec["hf_id"], "revision": revision, "path": str(snapshot),
                "weights_sha256": weights_fingerprint(snapshot), "shape": parsed_shape(snapshot)}
    path = Path(spec["path"]).expanduser().resolve()
    gguf_file = spec.get("gguf_file")
    check_local_model(path, key=key, gguf_file=gguf_file)
    record = {"kind": kind, "path": str(path), "gguf_file": gguf_file,
              "weights_sha256": weights_fingerprint(path, gguf_file)}
    if gguf_file is None:
        record["shape"] = parsed_shape(path)
    return record


def convert_gguf(path: Path, gguf_file: str, *, destination: Path, key: str) -> dict[str, int]:
    """De-quantize a GGUF model once into ``destination`` (safetensors + tokenizer); returns its shape.

    transformers flags a model loaded from GGUF as quantized and its ``save_pretrained`` refuses it; the
    weights are plain float32 tensors by then, so the flag is cleared before saving.
    """
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, gguf_file=gguf_file, local_files_only=True,
                                                  trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(path, gguf_file=gguf_file, local_files_only=True,
                                                     trust_remote_code=False, dtype=torch.float32)
    except Exception as error:
        raise ModelUnavailableError(f"config key {key}: transformers cannot load {path / gguf_file} "
                                    f"({type(error).__name__}: {error})") from error
    dequantized(model)
    destination.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(destination, safe_serialization=True)
    tokenizer.save_pretrained(destination)
    return parsed_shape(destination)


def dequantized(model: PreTrainedModel) -> PreTrainedModel:
    """Clear the quantized flag transformers sets on a model loaded (and de-quantized) from GGUF."""
    model.hf_quantizer = None
    for holder in (model, model.config):
        for attribute in ("is_quantized", "quantization_method", "quantization_config"):
            if attribute in vars(holder):
                delattr(holder, attribute)
    return model


def build_named_model(spec: dict, *, key: str, out_dir: str | Path) -> dict[str, Any]:
    """The pipeline directory of a named model: its record, and for a GGUF file its de-quantized copy."""
    from actbridge.io import atomic_directory

    record = describe_named_model(spec, key=key)
    with atomic_directory(out_dir) as tmp:
        if record.get("gguf_file"):
            log.info("de-quantizing %s once into %s", record["gguf_file"], CONVERTED_DIR)
            record["shape"] = convert_gguf(Path(record["path"]), record["gguf_file"], destination=tmp / CONVERTED_DIR,
                                           key=key)
            record["converted"] = CONVERTED_DIR
        check_tokenizer(tmp, record, key=key)
        record["weights_bytes"] = sum(weight_file.stat().st_size
                                      for weight_file in weight_files(*recorded_location(tmp, record)))
        record["parameters"] = stored_parameters(*recorded_location(tmp, record))
        write_model_record(tmp, record)
    return record


def stored_parameters(path: Path, gguf_file: str | None = None) -> int:
    """Elements of every tensor the weights store (a tied head once), from the safetensors headers alone: what
    the jobs' memory follows in any dtype, where the files' size follows the dtype they were saved in."""
    if gguf_file is not None:
        from actbridge.models.preflight import read_gguf_header

        return sum(read_gguf_header(path / gguf_file).tensor_elements.values())
    from safetensors import safe_open

    total = 0
    for weight_file in weight_files(path):
        with safe_open(weight_file, framework="pt") as handle:
            total += sum(math.prod(handle.get_slice(name).get_shape()) for name in handle.keys())
    return total


def check_tokenizer(model_dir: Path, record: dict, *, key: str) -> None:
    """The tokenizer loads and can pad (or borrow its EOS for it), checked before any model job starts."""
    path, gguf_file = recorded_location(model_dir, record)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False,
                                                  **({"gguf_file": gguf_file} if gguf_file else {}))
    except Exception as error:
        raise ModelUnavailableError(f"config key {key}: the tokenizer at {path} does not load "
                                    f"({type(error).__name__}: {error})") from error
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is None:
        raise ModelUnavailableError(f"config key {key}: the tokenizer at {path} has neither a pad nor an EOS "
                                    "token to pad batches with; add one (tokenizer.add_special_tokens) and save it")
