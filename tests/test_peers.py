"""Equality with a peer library: TransformerLens, running the same edits through its own hooks and its
prefix cache (``benchmarks/peers.py``), scores every candidate as actbridge's engine does, within 1e-4, for
``add``, ``replace`` and ``replace_rescaled`` at two layers of the shipped default receiver. Skipped, with
the reason, where the ``peers`` extra is not installed."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

pytest.importorskip("transformer_lens", reason="the peers extra is not installed (pip install -c requirements/lock.txt -e '.[peers]')")

from peers import MICRO_RECEIVER, ours, sweep_examples, transformer_lens  # noqa: E402

from actbridge.models.edited_scoring import Edits  # noqa: E402


def condition_edits(d: int, generator: torch.Generator) -> Edits:
    """none, add (α 0.5), replace, replace_rescaled, on one random bridged vector."""
    vector = torch.randn(d, generator=generator)
    return Edits(torch.tensor([1.0, 1.0, 0.0, 0.0]),
                 torch.stack([0 * vector, 0.5 * vector, vector, vector / vector.norm()]),
                 torch.tensor([False, False, False, True]))


# TransformerLens 4.3 hands the prefix cache to the HF model under the old keyword itself (a peer's call, not
# ours: the equality is still checked, and our engine's own calls warn nowhere else in the suite)
@pytest.mark.filterwarnings("ignore:`past_key_values` is deprecated:FutureWarning")
def test_transformer_lens_scores_equal_ours():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(MICRO_RECEIVER, dtype=torch.float32).eval()
    examples = sweep_examples(AutoTokenizer.from_pretrained(MICRO_RECEIVER), 3)
    generator = torch.Generator().manual_seed(0)
    edits = [condition_edits(model.config.hidden_size, generator) for _ in examples]
    peer = transformer_lens(MICRO_RECEIVER)
    for layer in (2, 5):
        for theirs, mine in zip(peer(examples, layer, edits), ours(model)(examples, layer, edits)):
            np.testing.assert_allclose(theirs, mine, atol=1e-4, rtol=0)
            assert np.abs(mine[1:] - mine[0]).max() > 0.1  # the edits move the scores: not a vacuous match
