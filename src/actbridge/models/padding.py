"""Right-padded batches of token ids."""

from __future__ import annotations

from typing import Sequence

import torch


def right_padded(sequences: Sequence[Sequence[int]], pad_id: int, *, width: int | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), each [batch, width] (default: the longest), real tokens first and pads after."""
    width = max(max(len(s) for s in sequences), width or 0)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        input_ids[row, : len(sequence)] = torch.as_tensor(sequence, dtype=torch.long)
        attention[row, : len(sequence)] = 1
    return input_ids, attention
