"""Prompts encoded as each model expects: its tokenizer's leading special tokens, then the text.

Gemma and Llama tokenizers put ``<bos>`` before every text and their models are trained with
it; GPT-NeoX ones (Pythia, our micro models) add nothing. Every stage that runs a model
encodes a prompt through :func:`prompt_token_ids`, and a role's token index counts the same
leading tokens (:func:`actbridge.activations.roles.resolve_role_positions`), so extraction, scoring,
injection, the causal jobs and the trained bridge all read the same tokens at the same
positions. A tokenizer's *trailing* special tokens (an ``</s>`` some add after a text) are
never used: a prompt is continued by its answer, not ended.

Answers are encoded apart from the prompt and without special tokens
(:func:`continuation_ids`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Hashable, Sequence

import numpy as np

if TYPE_CHECKING:  # hints only
    from transformers import PreTrainedTokenizerBase

PROBE_TEXT = "a b"


def special_prefix(tokenizer: "PreTrainedTokenizerBase") -> list[int]:
    """The token ids the tokenizer puts before any text (``[bos]`` for Gemma, ``[]`` for GPT-NeoX).

    Read off the tokenizer itself (encode a probe with and without special tokens, keep what comes
    before the plain ids), so it follows whatever post-processor the checkpoint ships.
    """
    plain = tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"]
    with_special = tokenizer(PROBE_TEXT, add_special_tokens=True)["input_ids"]
    for start in range(len(with_special) - len(plain) + 1):
        if with_special[start:start + len(plain)] == plain:
            return list(with_special[:start])
    raise ValueError(f"tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} changes a text's own tokens when it "
                     "adds its special tokens; cannot tell which tokens it puts before a prompt")


def prompt_token_ids(tokenizer: "PreTrainedTokenizerBase", prompts: Sequence[str], *,
                     prefix: Sequence[int] | None = None) -> list[list[int]]:
    """Each prompt's ids: the tokenizer's leading special tokens (``prefix``, where already known: a
    :class:`actbridge.models.handle.ModelHandle` holds it), then the text's own tokens."""
    prefix = list(special_prefix(tokenizer) if prefix is None else prefix)
    if not prompts:
        return []
    return [prefix + ids for ids in tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]


def with_gold(candidates: Sequence[str], answer: str) -> tuple[list[str], int]:
    """The candidate names, the gold answer appended if it is missing, and the gold answer's index."""
    names = list(candidates) if answer in candidates else [*candidates, answer]
    return names, names.index(answer)


def continuation_ids(tokenizer: "PreTrainedTokenizerBase", continuations: Sequence[str]) -> list[list[int]]:
    """Token ids of ``" " + c`` for each continuation, encoded apart from any prompt, no special tokens."""
    return [tokenizer(" " + continuation, add_special_tokens=False)["input_ids"] for continuation in continuations]


def encode_continuations(tokenizer: "PreTrainedTokenizerBase", prompt: str,
                         continuations: Sequence[str], *, prefix: Sequence[int] | None = None
                         ) -> list[tuple[list[int], int]]:
    """Token ids of ``prompt + " " + c`` and the index where the continuation starts.

    The prompt is encoded alone (with its leading special tokens) and the continuation appended, so
    every candidate shares the prompt's tokens exactly (no merge across the boundary).
    """
    prompt_ids = prompt_token_ids(tokenizer, [prompt], prefix=prefix)[0]
    return [(prompt_ids + ids, len(prompt_ids)) for ids in continuation_ids(tokenizer, continuations)]


def distinct_rows(keys: Sequence[Hashable]) -> tuple[np.ndarray, np.ndarray]:
    """(the row of each distinct key's first occurrence, in order; for every row, its key's index among them).

    A model job runs each distinct input once and fans the result out (``result[inverse]``): the ``shared``
    1-hop and ``relay`` rows of a world give the sender the same prompt, and a prompt's states and scores
    depend on nothing else.
    """
    first: dict[Hashable, int] = {}
    inverse = np.fromiter((first.setdefault(key, len(first)) for key in keys), dtype=np.int64, count=len(keys))
    rows = np.zeros(len(first), dtype=np.int64)
    rows[inverse[::-1]] = np.arange(len(keys))[::-1]  # the first row of each key: later writes win, reversed
    return rows, inverse
