"""What the KV channel needs to know of a model's attention cache: its shape, each block's attention type, and
its rotary position embedding, undone (keys as the block computed them, before rotation) and redone at
the positions the entries take in the receiver.

A cached key is ``rope(k, p)``: the rotation of the block's key ``k`` by its position ``p`` (on the first
``rotary_dim`` dimensions: all of them for Llama, Qwen2 and Gemma-3, a quarter for GPT-NeoX). Entries move
between positions and models only as ``k``: a key rotated for the sender's position is undone there and
rotated again for the position it takes in the receiver, with the receiver's own rotary (Gemma-3's
sliding-window blocks have a rotary of their own).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from actbridge.kv.shapes import cache_problem

if TYPE_CHECKING:  # hints only
    from transformers import PreTrainedModel

FULL, SLIDING = "full_attention", "sliding_attention"


class UnsupportedCache(ValueError):
    """A model whose attention cache layout the KV channel does not support (the message names it)."""


@dataclass(frozen=True)
class CacheLayout:
    """One model's cache: blocks, key/value heads, head width, and each block's attention type."""

    architecture: str
    kv_heads: int
    head_dim: int
    layer_types: tuple[str, ...]  # per block: full_attention or sliding_attention
    sliding_window: int | None

    @property
    def num_layers(self) -> int:
        return len(self.layer_types)

    @property
    def width(self) -> int:
        """Floats of one entry's key (or value) in one block: kv_heads x head_dim."""
        return self.kv_heads * self.head_dim

    @classmethod
    def of(cls, model: "PreTrainedModel", *, role: str = "receiver") -> "CacheLayout":
        config = model.config.get_text_config()
        architecture = str(config.model_type)
        problem = cache_problem(architecture, role)
        if problem:
            raise UnsupportedCache(problem)
        heads = int(config.num_attention_heads)
        head_dim = getattr(config, "head_dim", None) or int(config.hidden_size) // heads
        types = tuple(getattr(config, "layer_types", None) or (FULL,) * int(config.num_hidden_layers))
        return cls(architecture, int(getattr(config, "num_key_value_heads", None) or heads), int(head_dim),
                   types, getattr(config, "sliding_window", None) if SLIDING in types else None)


def rotary_tables(model: "PreTrainedModel", positions: torch.Tensor, layer_type: str
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin) [batch, seq, rotary_dim] in float32 of the model's rotary at ``positions`` [batch, seq], for a
    block of ``layer_type`` (models with one rotary for every block ignore it)."""
    rotary = model.base_model.rotary_emb
    probe = torch.zeros(1, dtype=torch.float32, device=positions.device)
    if "layer_type" in inspect.signature(rotary.forward).parameters:
        cos, sin = rotary(probe, positions, layer_type)
    else:
        cos, sin = rotary(probe, positions)
    return cos.float(), sin.float()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rotate(keys: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``keys`` [batch, heads, seq, head_dim] rotated by (cos, sin) [batch, seq, rotary_dim], float32."""
    cos, sin = cos[:, None], sin[:, None]
    width = cos.shape[-1]
    turned, rest = keys[..., :width].float(), keys[..., width:].float()
    return torch.cat((turned * cos + _rotate_half(turned) * sin, rest), dim=-1)


def unrotate(keys: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`rotate` (a rotation scaled by an attention factor, where the rotary has one)."""
    cos, sin = cos[:, None], sin[:, None]
    width = cos.shape[-1]
    turned, rest = keys[..., :width].float(), keys[..., width:].float()
    return torch.cat(((turned * cos - _rotate_half(turned) * sin) / (cos * cos + sin * sin), rest), dim=-1)
