"""Where a pipeline model's weights are on disk, what they hash to, and its ``model.json``: read and written
without loading a model (torch-free), by the model rule's two paths and by every job that loads a model."""

from __future__ import annotations

import json
from pathlib import Path

from actbridge.io import sha256_file, write_json
from actbridge.models.preflight import ModelUnavailableError
from actbridge.models.record import MODEL_RECORD

# A GGUF model is de-quantized once, by the model rule, into this sub-directory of its pipeline directory
# (safetensors and the tokenizer's JSON): every later job loads that in seconds, where parsing and
# de-quantizing the GGUF file would cost each job about a minute (docs/measurements.md).
CONVERTED_DIR = "weights"


def weight_files(path: Path, gguf_file: str | None = None) -> list[Path]:
    """The files that hold a model's weights: its GGUF file, or its safetensors shards."""
    return [path / gguf_file] if gguf_file else sorted(path.glob("*.safetensors"))


def weights_fingerprint(path: Path, gguf_file: str | None = None) -> dict[str, str]:
    return {weight_file.name: sha256_file(weight_file) for weight_file in weight_files(path, gguf_file)}


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
    return recorded_location(Path(model_dir), read_model_record(model_dir))


def recorded_location(model_dir: Path, record: dict) -> tuple[Path, str | None]:
    """Directory to load from and GGUF file name (if any), from a pipeline model directory and its record."""
    if record["kind"] == "micro":
        return model_dir, None
    if record.get("converted"):
        return model_dir / record["converted"], None
    return Path(record["path"]), record.get("gguf_file")


def parsed_shape(path: Path, gguf_file: str | None = None) -> dict[str, int]:
    """``num_layers``, ``hidden_size`` and ``vocab_size`` from a model's config: parsed once, by the model rule
    (for a GGUF file that reads the whole file), and kept in ``model.json`` for everything after it."""
    from transformers import AutoConfig

    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    config = AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=False, **kwargs)
    config = config.get_text_config()  # multimodal wrappers keep the LM's shape there
    return {"num_layers": int(config.num_hidden_layers), "hidden_size": int(config.hidden_size),
            "vocab_size": int(config.vocab_size)}
