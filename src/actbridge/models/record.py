"""A pipeline model directory's ``model.json``: where its weights are and, for a named model, its shape and size.
Read without torch or the weights: the workflow reads it at parse time, for every input function after the
model checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

MODEL_RECORD = "model.json"


def _record(model_dir: str | Path) -> dict | None:
    """A pipeline model directory's ``model.json``, read without torch or the weights (None where not built)."""
    record_path = Path(model_dir) / MODEL_RECORD
    return json.loads(record_path.read_text()) if record_path.is_file() else None


def recorded_shape(model_dir: str | Path) -> dict[str, int] | None:
    """``num_layers``, ``hidden_size``, ``vocab_size`` from a named model's ``model.json``, read without torch or
    the weights (the workflow calls this for every input function after the model checkpoint); ``None`` where
    the record carries no shape (micro models, whose shape is in the config, and records written without one)."""
    record = _record(model_dir)
    if record is None:
        raise FileNotFoundError(f"{Path(model_dir) / MODEL_RECORD} missing: rerun the rule that builds {model_dir}")
    shape = record.get("shape")
    return None if shape is None else {key: int(value) for key, value in shape.items()}


def recorded_weights_mb(model_dir: str | Path) -> int | None:
    """Size of a named model's weights on disk in MB, from its ``model.json`` (None where not recorded or not built)."""
    size = (_record(model_dir) or {}).get("weights_bytes")
    return None if size is None else int(size) // 2**20


def recorded_parameters(model_dir: str | Path) -> int | None:
    """Elements of a named model's stored tensors, from its ``model.json`` (None where not recorded or not built)."""
    parameters = (_record(model_dir) or {}).get("parameters")
    return None if parameters is None else int(parameters)
