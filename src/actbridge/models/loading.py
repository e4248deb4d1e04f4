"""Model resolution and loading: micro models trained here, or named models on disk.

Every model the pipeline uses lives at ``results/models/{name}/`` with a
``model.json`` that says where its weights are:

* ``micro``: the directory itself holds an HF ``save_pretrained`` layout;
* ``hf_id``: a local snapshot of a hub repository (found in the HF cache, or
  downloaded when the hub is reachable);
* ``path`` / ``gguf``: a local directory (safetensors) or a GGUF file.

Nothing is ever fetched silently when offline: a missing model fails at once
with a message naming the config key and how to provide the weights.
Remote code is never trusted and only safetensors or GGUF weights load.
"""

from __future__ import annotations

import hashlib
import json
import math
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from actbridge.config import model_kind
from actbridge.io import sha256_file, write_json
from actbridge.models.preflight import (HUB_FILE_PATTERNS, ModelUnavailableError, check_local_model, device_problem,
                                       hub_reachable, not_on_disk_offline)
from actbridge.models.record import MODEL_RECORD, recorded_shape

log = logging.getLogger(__name__)

RECIPE_FILE = "recipe.json"
# A GGUF model is de-quantized once, by the model rule, into this sub-directory of its pipeline directory
# (safetensors and the tokenizer's JSON): every later job loads that in seconds, where parsing and
# de-quantizing the GGUF file would cost each job about a minute (docs/measurements.md).
CONVERTED_DIR = "weights"
# Bump when the training code changes in a way that changes the weights it produces.
RECIPE_VERSION = 1


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without one is an error naming ``device``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    problem = device_problem(device)
    if problem is not None:
        raise ModelUnavailableError(problem)
    return torch.device(device)


def resolve_dtype(dtype: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]


def configure_threads(threads: int) -> None:
    if threads > 0:
        torch.set_num_threads(threads)


def recipe_hash(recipe: dict) -> str:
    canonical = json.dumps(recipe, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


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


def weight_files(path: Path, gguf_file: str | None = None) -> list[Path]:
    """The files that hold a model's weights: its GGUF file, or its safetensors shards."""
    return [path / gguf_file] if gguf_file else sorted(path.glob("*.safetensors"))


def weights_fingerprint(path: Path, gguf_file: str | None = None) -> dict[str, str]:
    return {weight_file.name: sha256_file(weight_file) for weight_file in weight_files(path, gguf_file)}


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
                                      for weight_file in weight_files(*_location(tmp, record)))
        record["parameters"] = stored_parameters(*_location(tmp, record))
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
    path, gguf_file = _location(model_dir, record)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False,
                                                  **({"gguf_file": gguf_file} if gguf_file else {}))
    except Exception as error:
        raise ModelUnavailableError(f"config key {key}: the tokenizer at {path} does not load "
                                    f"({type(error).__name__}: {error})") from error
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is None:
        raise ModelUnavailableError(f"config key {key}: the tokenizer at {path} has neither a pad nor an EOS "
                                    "token to pad batches with; add one (tokenizer.add_special_tokens) and save it")


def write_model_record(model_dir: Path, record: dict) -> None:
    write_json(record, model_dir / MODEL_RECORD)


def read_model_record(model_dir: str | Path) -> dict:
    model_dir = Path(model_dir)
    record_path = model_dir / MODEL_RECORD
    if not record_path.is_file():
        raise ModelUnavailableError(f"{record_path} missing: rerun the rule that builds {model_dir}")
    return json.loads(record_path.read_text())


def weights_location(model_dir: str | Path) -> tuple[Path, str | None]:
    """Directory to load from and GGUF file name (if any) for a pipeline model directory."""
    return _location(Path(model_dir), read_model_record(model_dir))


def _location(model_dir: Path, record: dict) -> tuple[Path, str | None]:
    if record["kind"] == "micro":
        return model_dir, None
    if record.get("converted"):
        return model_dir / record["converted"], None
    return Path(record["path"]), record.get("gguf_file")


def check_recorded_weights(model_dir: str | Path) -> None:
    """Weights kept outside the pipeline directory (a named model's ``path`` or hub snapshot) still hash to what
    its record says; otherwise the record is moved aside, so that the next run rebuilds it and everything
    computed from the old weights. Weights inside the directory are covered by its seal."""
    from actbridge import integrity

    record = read_model_record(model_dir)
    if record["kind"] == "micro" or record.get("converted"):
        return
    path, gguf_file = _location(Path(model_dir), record)
    found = weights_fingerprint(path, gguf_file)
    if found != record["weights_sha256"]:
        integrity.quarantine(model_dir, f"records weights at {path} that have changed since it was built "
                                        f"(sha256 {record['weights_sha256']}, now {found})")


def load_tokenizer(model_dir: str | Path) -> PreTrainedTokenizerBase:
    path, gguf_file = weights_location(model_dir)
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False, **kwargs)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(model_dir: str | Path, *, device: torch.device | str,
               dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """Any decoder-only causal LM from a pipeline model directory, in eval mode, on ``device`` (a torch device:
    resolve the config key's ``auto`` with :func:`resolve_device`), in ``dtype`` (float32 unless asked)."""
    path, gguf_file = weights_location(model_dir)
    kwargs: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {"use_safetensors": True}
    model = AutoModelForCausalLM.from_pretrained(
        path, local_files_only=True, trust_remote_code=False, dtype=dtype, **kwargs)
    model = model.to(device).eval()
    from actbridge.models.heads import check_output_head

    check_output_head(model)  # the bounded scoring path computes the logits as this model's forward does
    return model


def load_for_job(model_dir: str | Path, device: str, dtype: str, threads: int = 0) -> "ModelHandle":
    """What a model-running job starts with, built once: torch's threads set (0 leaves them), ``device`` (the
    config key's value) resolved, the model loaded in ``dtype`` (``float32`` | ``bfloat16``) with its
    tokenizer, as one :class:`actbridge.models.handle.ModelHandle`."""
    from actbridge.models.handle import ModelHandle
    from actbridge.models.memory import check_weights_fit
    from actbridge.models.record import recorded_weights_held_bytes

    configure_threads(threads)
    check_recorded_weights(model_dir)
    torch_device = resolve_device(device)
    check_weights_fit(recorded_weights_held_bytes(model_dir, dtype), dtype=dtype, device=torch_device,
                      model=Path(model_dir).name)
    model = load_model(model_dir, device=torch_device, dtype=resolve_dtype(dtype))
    return ModelHandle.of(model, load_tokenizer(model_dir))


def find_shipped_model(shipped_root: str | Path | None, recipe: dict) -> Path | None:
    """The shipped directory trained by exactly ``recipe``, if there is one."""
    if shipped_root is None:
        return None
    candidate = Path(shipped_root) / recipe_hash(recipe)
    if not (candidate / RECIPE_FILE).is_file():
        return None
    if json.loads((candidate / RECIPE_FILE).read_text()) != recipe:
        return None
    return candidate


def same_vocabulary(first: PreTrainedTokenizerBase, second: PreTrainedTokenizerBase) -> bool:
    return first.get_vocab() == second.get_vocab()


def copy_model_files(source: Path, destination: Path) -> None:
    for item in source.iterdir():
        if item.is_file() and item.name != MODEL_RECORD:
            shutil.copy2(item, destination / item.name)


def ship_model(model_dir: str | Path, shipped_root: str | Path) -> Path:
    """Copy a trained micro model under ``shipped_root/<recipe hash>/`` for later runs to reuse."""
    model_dir = Path(model_dir)
    recipe = json.loads((model_dir / RECIPE_FILE).read_text())
    target = Path(shipped_root) / recipe_hash(recipe)
    target.mkdir(parents=True, exist_ok=True)
    copy_model_files(model_dir, target)
    return target


def parsed_shape(path: Path, gguf_file: str | None = None) -> dict[str, int]:
    """``num_layers``, ``hidden_size`` and ``vocab_size`` from a model's config: parsed once, by the model rule
    (for a GGUF file that reads the whole file), and kept in ``model.json`` for everything after it."""
    from transformers import AutoConfig

    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    config = AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=False, **kwargs)
    config = config.get_text_config()  # multimodal wrappers keep the LM's shape there
    return {"num_layers": int(config.num_hidden_layers), "hidden_size": int(config.hidden_size),
            "vocab_size": int(config.vocab_size)}


def layer_count(model_dir: str | Path) -> int:
    """Number of transformer blocks of a pipeline model directory, from its record (no weights parsed)."""
    shape = recorded_shape(model_dir)
    if shape is not None:
        return shape["num_layers"]
    path, gguf_file = weights_location(model_dir)  # a record that carries no shape
    return parsed_shape(path, gguf_file)["num_layers"]
