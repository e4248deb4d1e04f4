"""Batches that fit: an estimate checked before the first batch, and an out-of-memory error that names the key.

A job killed by the kernel for memory leaves its user a bare SIGKILL. So every model-running job
sizes its batches by one config key, estimates the peak of one batch from the model's shape
before running it (:func:`check_batch_fits`), and turns an allocator failure during the run into
:class:`BatchMemoryError` naming that key (:func:`batches_sized_by`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import TYPE_CHECKING, Iterator

from actbridge.models.heads import LOGIT_BUDGET_BYTES

if TYPE_CHECKING:  # hints only
    import torch
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

HEADROOM = 0.8  # of the available memory a batch may plan to use


class BatchMemoryError(MemoryError):
    """A batch does not fit in memory; the message names the config key that sizes it."""


def available_bytes(device: "torch.device | str") -> int | None:
    """Free memory where the batch runs: CUDA's free memory, else the kernel's MemAvailable (None if unknown)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    if hasattr(os, "sysconf") and "SC_AVPHYS_PAGES" in os.sysconf_names:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    return None


def _shape(model: "PreTrainedModel") -> tuple[int, int, int, int, int, int]:
    """layers, width, attention heads, query width, key+value width per token per layer, MLP width."""
    config = model.config.get_text_config()
    hidden = int(config.hidden_size)
    heads = int(config.num_attention_heads)
    head_dim = int(getattr(config, "head_dim", None) or hidden // heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    intermediate = int(getattr(config, "intermediate_size", None) or 4 * hidden)
    return int(config.num_hidden_layers), hidden, heads, heads * head_dim, 2 * kv_heads * head_dim, intermediate


def batch_peak_bytes(model: "PreTrainedModel", *, tokens: int, keys_per_query: int, kept_states: int = 0) -> int:
    """Upper estimate of what one forward over ``tokens`` tokens adds to the weights (float32 compute).

    The key/value cache of every layer, one layer's activations (residual, attention projections, the
    MLP's widest tensors, the attention scores of ``keys_per_query`` keys per query per head), a 4D mask,
    and the logits of at most :data:`LOGIT_BUDGET_BYTES` (three copies: logits, float cast, log-sum-exp);
    plus ``kept_states`` whole residual streams held to the end (extraction returns every layer's).
    """
    layers, hidden, heads, attn, kv, intermediate = _shape(model)
    per_token = 4 * (layers * kv + (8 + kept_states) * hidden + 2 * attn + 3 * intermediate
                     + 2 * heads * keys_per_query + keys_per_query)
    return tokens * per_token + 3 * LOGIT_BUDGET_BYTES


def check_batch_fits(model: "PreTrainedModel", *, tokens: int, keys_per_query: int, key: str, value: int,
                     device: "torch.device | str", kept_states: int = 0) -> None:
    """Fail before the first batch, naming ``key``, when one batch's estimated peak exceeds the free memory."""
    need = batch_peak_bytes(model, tokens=tokens, keys_per_query=keys_per_query, kept_states=kept_states)
    free = available_bytes(device)
    if free is None:
        return
    log.info("one batch of %d tokens: about %.0f MB beside the weights (%.0f MB free)", tokens, need / 2**20,
             free / 2**20)
    if need > HEADROOM * free:
        raise BatchMemoryError(
            f"one batch of {tokens} tokens needs about {need / 2**20:.0f} MB beside the weights and "
            f"{free / 2**20:.0f} MB are free: lower config key {key} (now {value})")


def check_weights_fit(need: int | None, *, dtype: str, device: "torch.device | str", model: str) -> None:
    """Fail before loading, naming the ``dtype`` key, when the weights alone (``need`` bytes in ``dtype``, from
    :func:`actbridge.models.record.recorded_weights_held_bytes`) exceed the free memory. Without this a model larger
    than the free memory is killed by the kernel while it loads, with no message."""
    if need is None:
        return
    free = available_bytes(device)
    if free is not None and need > HEADROOM * free:
        hint = "" if dtype == "bfloat16" else "; config key dtype: bfloat16 halves it"
        raise BatchMemoryError(
            f"the {model} model's weights need about {need / 2**20:.0f} MB in {dtype} and {free / 2**20:.0f} MB are "
            f"free: run where more memory is free, or fewer jobs side by side (snakemake --resources mem_mb=...)"
            f"{hint}")


@contextlib.contextmanager
def batches_sized_by(key: str, value: int) -> Iterator[None]:
    """Turn an out-of-memory failure inside the block into :class:`BatchMemoryError` naming ``key``."""
    import torch

    try:
        yield
    except torch.OutOfMemoryError as error:
        raise BatchMemoryError(f"out of device memory ({error}): lower config key {key} (now {value})") from error
    except MemoryError as error:
        if isinstance(error, BatchMemoryError):
            raise
        raise BatchMemoryError(f"out of memory: lower config key {key} (now {value})") from error
    except RuntimeError as error:
        if "can't allocate memory" not in str(error) and "not enough memory" not in str(error):
            raise
        raise BatchMemoryError(f"out of memory ({error}): lower config key {key} (now {value})") from error
