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


def recorded_weights_held_bytes(model_dir: str | Path, dtype: str) -> int | None:
    """What a named model's weights hold once loaded in ``dtype``: its recorded parameter count times 2
    (``bfloat16``) or 4 bytes, the file only memory-mapped; a record from before parameter counts were kept gives
    its files' size as it is. None where nothing is recorded (micro models) or the model is not built."""
    record = _record(model_dir) or {}
    if record.get("parameters") is not None:
        return int(record["parameters"]) * (2 if dtype == "bfloat16" else 4)
    return None if record.get("weights_bytes") is None else int(record["weights_bytes"])
