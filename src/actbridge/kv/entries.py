"""A model's keys and values over token sequences (one trunk pass each,
:func:`actbridge.models.edited_scoring.trunk_cache`), keys taken back to before their rotary embedding.

Entries are [batch, kv_heads, seq, head_dim] per block, as HF caches hold them. The sequences are right
padded, so a token's position is its index.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Collection

import torch

from actbridge.kv.layout import CacheLayout, rotary_tables, unrotate

if TYPE_CHECKING:  # hints only
    from transformers import DynamicCache, PreTrainedModel


def positions_like(keys: torch.Tensor, start: int = 0) -> torch.Tensor:
    """[batch, seq] positions start.. of ``keys`` [batch, heads, seq, head_dim]."""
    return (torch.arange(keys.shape[2], device=keys.device) + start).expand(keys.shape[0], -1)


@torch.inference_mode()
def unrotated_entries(model: "PreTrainedModel", layout: CacheLayout, cache: "DynamicCache",
                      blocks: Collection[int] | None = None) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Block -> (keys before rotation, values) [batch, kv_heads, seq, head_dim] in float32 of a cache whose rows
    start at position 0, for ``blocks`` (every block where None): a block nobody reads is not unrotated."""
    out = {}
    for block, kind in enumerate(layout.layer_types):
        if blocks is not None and block not in blocks:
            continue
        keys, values = cache.layers[block].keys, cache.layers[block].values
        cos, sin = rotary_tables(model, positions_like(keys), kind)
        out[block] = (unrotate(keys, cos, sin), values.float())
    return out
