"""A model's attention cache shape, read without torch or the weights where the config or the files say it:
what the workflow checks while it builds the job graph, so that a KV map kind that needs equal shapes, or a
model whose cache the channel cannot handle, fails before any job, naming the key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

# Architectures whose cache holds one [batch, kv_heads, seq, head_dim] key and value tensor per block, with keys
# rotated by rotate-half rotary embeddings: what the channel can undo and redo.
SUPPORTED_ARCHITECTURES: tuple[str, ...] = ("gpt_neox", "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2",
                                            "gemma3", "gemma3_text")
# llama.cpp's names of the supported architectures, where they differ from transformers' model types
GGUF_ARCHITECTURES = {"gptneox": "gpt_neox", "gemma3": "gemma3_text"}


def cache_problem(architecture: str, model: str) -> str | None:
    """Why the KV channel cannot run on ``models.<model>`` of ``architecture``; None if it can."""
    if architecture in SUPPORTED_ARCHITECTURES:
        return None
    return (f"config key kv.enabled: the KV channel does not support the attention cache of models.{model} "
            f"(architecture {architecture!r}); supported: {list(SUPPORTED_ARCHITECTURES)}")


def cache_shape(spec: Mapping, gguf_metadata: Mapping | None = None) -> dict | None:
    """``architecture``, ``num_layers``, ``kv_heads``, ``head_dim`` of one ``models.<name>`` entry, from the
    config (micro), the GGUF header's metadata (``gguf_metadata``, read by the caller) or a local directory's
    config.json; None where only the built model knows (a hub id)."""
    if "micro" in spec:
        micro = spec["micro"]
        return {"architecture": "gpt_neox", "num_layers": int(micro["layers"]), "kv_heads": int(micro["heads"]),
                "head_dim": int(micro["hidden"]) // int(micro["heads"])}
    if gguf_metadata is not None:
        arch = str(gguf_metadata["general.architecture"])
        heads = int(gguf_metadata[f"{arch}.attention.head_count"])
        head_dim = gguf_metadata.get(f"{arch}.attention.key_length") or \
            int(gguf_metadata[f"{arch}.embedding_length"]) // heads
        return {"architecture": GGUF_ARCHITECTURES.get(arch, arch), "num_layers": int(gguf_metadata[f"{arch}.block_count"]),
                "kv_heads": int(gguf_metadata.get(f"{arch}.attention.head_count_kv") or heads),
                "head_dim": int(head_dim)}
    if "path" in spec and (Path(spec["path"]) / "config.json").is_file():
        config = json.loads((Path(spec["path"]) / "config.json").read_text())
        config = config.get("text_config", config)
        heads = int(config["num_attention_heads"])
        return {"architecture": str(config["model_type"]), "num_layers": int(config["num_hidden_layers"]),
                "kv_heads": int(config.get("num_key_value_heads") or heads),
                "head_dim": int(config.get("head_dim") or int(config["hidden_size"]) // heads)}
    return None
