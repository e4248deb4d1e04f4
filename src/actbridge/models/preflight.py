"""What can be checked about a configured model and device before any job runs, without torch or weights.

The workflow calls :func:`model_problems` while it builds the job graph (``snakemake -n`` included), so a
missing path, a directory without loadable weights, a model type only remote code defines, or a device this
machine lacks is reported naming its config key before any data job has run. The model rule checks the same
again when it builds ``results/models/{name}``.
"""

from __future__ import annotations

import json
import math
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

HUB_FILE_PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.txt", "*.model"]


class ModelUnavailableError(RuntimeError):
    """A configured model cannot be found or loaded; the message names the config key."""


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """False when HF_HUB_OFFLINE is set or the hub endpoint does not answer within ``timeout_s``."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}:
        return False
    from huggingface_hub import constants

    endpoint = urlparse(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def provide_hint(key: str, hf_id: str, revision: str) -> str:
    return (f"Provide the weights: on a machine with network run "
            f"`huggingface-cli download {hf_id} --revision {revision}` and copy its HF cache "
            f"(HF_HOME) here, or save the model to a directory and set {key} to "
            "{path: /that/directory}.")


class _ArrayLength(int):
    """An array of a GGUF header, skipped: only its length is kept."""


# GGUF value types (gguf.GGUFValueType): fixed sizes in bytes; 8 is a string, 9 an array
_GGUF_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


@dataclass(frozen=True)
class GGUFHeader:
    """What the workflow reads of a GGUF file while it builds the job graph: its scalar metadata (an array's
    length in place of the array) and the element count of every tensor."""

    metadata: dict[str, object]
    tensor_elements: dict[str, int]

    @property
    def architecture(self) -> str:
        return str(self.metadata["general.architecture"])

    def shape(self) -> tuple[int, int, int]:
        """(layers, width, vocabulary), as llama.cpp's keys name them (``{architecture}.block_count`` ...)."""
        arch = self.architecture
        vocab = self.metadata.get(f"{arch}.vocab_size") or self.metadata.get("tokenizer.ggml.tokens")
        return int(self.metadata[f"{arch}.block_count"]), int(self.metadata[f"{arch}.embedding_length"]), int(vocab)

    @property
    def float32_mb(self) -> int:
        """What the model holds once de-quantized to float32 (the model rule's peak beside its buffers), in MB."""
        return sum(self.tensor_elements.values()) * 4 // 2**20


def read_gguf_header(path: Path) -> GGUFHeader:
    """The header of a GGUF file, read in a fraction of a second: arrays (the tokenizer's 150k–260k tokens)
    are skipped, not decoded, which ``gguf.GGUFReader`` does for every field (14 s for Qwen2.5's header).
    A file that ends before its last tensor's data (a truncated download) is a ``ValueError``."""
    import struct

    with open(path, "rb") as handle:
        def take(fmt: str):
            size = struct.calcsize(fmt)
            data = handle.read(size)
            if len(data) != size:
                raise ValueError(f"header ends after {handle.tell()} bytes")
            return struct.unpack(fmt, data)[0]

        def string() -> str:
            return handle.read(take("<Q")).decode("utf-8", errors="replace")

        def value(kind: int):
            if kind == 8:
                return string()
            if kind == 9:
                item_kind, count = take("<I"), take("<Q")
                if item_kind in _GGUF_SIZES:
                    handle.seek(_GGUF_SIZES[item_kind] * count, os.SEEK_CUR)
                else:
                    for _ in range(count):
                        value(item_kind)
                return _ArrayLength(count)
            fmt = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
                   12: "<d"}.get(kind)
            if fmt is None:
                raise ValueError(f"unknown GGUF value type {kind}")
            return take(fmt)

        if handle.read(4) != b"GGUF":
            raise ValueError("no GGUF magic number")
        version = take("<I")
        if version < 2:
            raise ValueError(f"GGUF version {version} is older than transformers reads")
        tensors, fields = take("<Q"), take("<Q")
        metadata = {}
        for _ in range(fields):
            key = string()
            metadata[key] = value(take("<I"))
        elements, data_end = {}, 0
        for _ in range(tensors):
            name = string()
            dims = [take("<Q") for _ in range(take("<I"))]
            kind, offset = take("<I"), take("<Q")
            elements[name] = math.prod(dims)
            data_end = max(data_end, offset + _tensor_bytes(kind, elements[name]))
        alignment = int(metadata.get("general.alignment", 32))
        data_start = -(-handle.tell() // alignment) * alignment
        size = os.fstat(handle.fileno()).st_size
        if data_start + data_end > size:
            raise ValueError(f"the tensors end at byte {data_start + data_end}, the file at {size}: truncated")
    return GGUFHeader(metadata, elements)


def _tensor_bytes(kind: int, elements: int) -> int:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    block, block_bytes = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
    return elements // block * block_bytes


def gguf_architecture(path: Path) -> str:
    """The ``general.architecture`` of a GGUF file (reads the header only)."""
    return read_gguf_header(path).architecture


def check_gguf_loadable(path: Path, key: str) -> None:
    """transformers de-quantizes GGUF for a fixed list of architectures: fail early outside it."""
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    try:
        architecture = gguf_architecture(path)
    except Exception as error:  # not a GGUF file, truncated header, ...
        raise ModelUnavailableError(f"config key {key}: {path} is not a readable GGUF file, or is truncated "
                                    f"({error})") from error
    supported = sorted(set(GGUF_CONFIG_MAPPING) - {"general", "tokenizer"})
    if architecture not in supported:
        raise ModelUnavailableError(
            f"config key {key}: GGUF architecture {architecture!r} cannot be loaded by transformers "
            f"(supported: {supported}); use a safetensors directory ({{path: /dir}}) instead")


def check_known_architecture(path: Path, key: str) -> None:
    """A config whose ``model_type`` transformers does not ship is defined only by the repository's own code
    (``auto_map``), which actbridge never runs: say so, rather than transformers' advice to trust it."""
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    model_type = config.get("model_type")
    if "auto_map" not in config and model_type is not None:
        return
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES  # imports torch: only here

    if model_type not in CONFIG_MAPPING_NAMES:
        raise ModelUnavailableError(
            f"config key {key}: {path / 'config.json'} has model_type {model_type!r}, which this transformers "
            "does not define; its auto_map points at code shipped with the model, and actbridge never runs a "
            "model's own code (no trust_remote_code). Use a checkpoint of an architecture transformers ships "
            "(Llama, Qwen2, Gemma, GPT-NeoX, ...), or convert it to one")


def check_local_model(path: Path, *, key: str, gguf_file: str | None = None) -> None:
    if not path.is_dir():
        raise ModelUnavailableError(f"config key {key}: directory {path} does not exist")
    if gguf_file is not None:
        if not (path / gguf_file).is_file():
            raise ModelUnavailableError(f"config key {key}: GGUF file {path / gguf_file} does not exist")
        check_gguf_loadable(path / gguf_file, key)
        return
    if not (path / "config.json").is_file():
        raise ModelUnavailableError(f"config key {key}: {path} has no config.json (not a save_pretrained layout)")
    if not any(path.glob("*.safetensors")):
        found = sorted(p.name for p in path.glob("*.bin")) or sorted(p.name for p in path.iterdir())[:5]
        raise ModelUnavailableError(
            f"config key {key}: {path} holds no *.safetensors weights (found {found}); only safetensors or GGUF "
            "are loaded, never pickled weights: convert once with "
            "AutoModelForCausalLM.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)")
    check_known_architecture(path, key)


def device_problem(device: str) -> str | None:
    """Why the ``device`` key cannot be honoured where this process runs, or ``None``."""
    if device != "cuda":
        return None
    import torch  # only for device: cuda, where the answer needs it

    if torch.cuda.is_available():
        return None
    build = "a CPU-only build of torch" if torch.version.cuda is None else f"torch built for CUDA {torch.version.cuda}"
    return (f"config key device: 'cuda', but {build} sees no CUDA device on this machine; use device: auto "
            "(a GPU where there is one) or cpu")


def hf_snapshot_problem(hf_id: str, revision: str, *, key: str) -> str | None:
    """Why ``hf_id@revision`` cannot be had (not on disk, hub unreachable), or ``None``; downloads nothing."""
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(hf_id, revision=revision, local_files_only=True, allow_patterns=HUB_FILE_PATTERNS)
        return None
    except Exception:  # LocalEntryNotFoundError and friends
        pass
    return None if hub_reachable() else not_on_disk_offline(hf_id, revision, key=key)  # else the model rule fetches it


def not_on_disk_offline(hf_id: str, revision: str, *, key: str) -> str:
    return (f"config key {key}: {hf_id}@{revision} is not on disk and the model hub cannot be reached "
            f"(offline or HF_HUB_OFFLINE=1). {provide_hint(key, hf_id, revision)}")


def model_problems(spec: dict, *, key: str) -> list[str]:
    """What stops the configured model ``spec`` (at config key ``key``) from loading, checked on this machine
    without reading weights. A hub model that is not on disk is not among them (see :func:`hf_snapshot_problem`:
    where the jobs run, the hub may answer)."""
    if "micro" in spec or "hf_id" in spec:
        return []
    try:
        check_local_model(Path(os.path.expanduser(spec["path"])).resolve(), key=key, gguf_file=spec.get("gguf_file"))
    except ModelUnavailableError as error:
        return [str(error)]
    return []


def built_from(spec: dict, model_dir: str | os.PathLike[str]) -> bool:
    """Whether ``model_dir``'s record was built from this configured ``spec`` (then its record and seal stand for
    the weights, and the preflight reads none of them)."""
    record_path = Path(model_dir) / "model.json"
    if not record_path.is_file():
        return False
    record = json.loads(record_path.read_text(encoding="utf-8"))
    if "micro" in spec:
        return record.get("kind") == "micro"
    if "hf_id" in spec:
        return (record.get("hf_id"), record.get("revision")) == (spec["hf_id"], spec.get("revision", "main"))
    return (record.get("path"), record.get("gguf_file")) == (
        str(Path(os.path.expanduser(spec["path"])).resolve()), spec.get("gguf_file"))
