"""Loading a pipeline model for a job: micro models trained here, or named models on disk.

Every model the pipeline uses lives at ``results/models/{name}/`` with a
``model.json`` that says where its weights are (built by the model rule:
:mod:`actbridge.models.micro` or :mod:`actbridge.models.conversion`):

* ``micro``: the directory itself holds an HF ``save_pretrained`` layout;
* ``hf_id``: a local snapshot of a hub repository (found in the HF cache, or
  downloaded when the hub is reachable);
* ``path`` / ``gguf``: a local directory (safetensors) or a GGUF file.

Nothing is ever fetched silently when offline: a missing model fails at once
with a message naming the config key and how to provide the weights.
Remote code is never trusted and only safetensors or GGUF weights load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from actbridge.models.device import configure_threads, resolve_device, resolve_dtype
from actbridge.models.record import recorded_shape
from actbridge.models.weights import (parsed_shape, read_model_record, recorded_location, weights_fingerprint,
                                      weights_location)


def check_recorded_weights(model_dir: str | Path) -> None:
    """Weights kept outside the pipeline directory (a named model's ``path`` or hub snapshot) still hash to what
    its record says; otherwise the record is moved aside, so that the next run rebuilds it and everything
    computed from the old weights. Weights inside the directory are covered by its seal."""
    from actbridge import integrity

    record = read_model_record(model_dir)
    if record["kind"] == "micro" or record.get("converted"):
        return
    path, gguf_file = recorded_location(Path(model_dir), record)
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


def layer_count(model_dir: str | Path) -> int:
    """Number of transformer blocks of a pipeline model directory, from its record (no weights parsed)."""
    shape = recorded_shape(model_dir)
    if shape is not None:
        return shape["num_layers"]
    path, gguf_file = weights_location(model_dir)  # a record that carries no shape
    return parsed_shape(path, gguf_file)["num_layers"]
