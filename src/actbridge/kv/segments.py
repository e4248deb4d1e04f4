"""Each prompt cut where the KV channel splits it: the *head* every prompt of an example shares (the
demonstrations and the last ``Facts:`` mark), the sender's *context* (its facts) and the receiver's *tail*
(its own facts, if any, and the question).

The receiver reads head, then what the channel puts in place of the context, then its tail. With the
sender's own context there (``kv_own``: the receiver reading it itself) that is the whole story again: in
``relay`` mode exactly the full-context prompt, in ``asymmetric`` mode every fact, the first-hop ones first.

Each piece is encoded apart (no merge across a cut, so every condition shares the head's and the tail's
tokens exactly), with the tokenizer's leading special tokens before the head only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from actbridge.data.worlds import FACTS_MARK, QUESTION_MARK

if TYPE_CHECKING:  # hints only
    from actbridge.models.handle import ModelHandle


@dataclass(frozen=True)
class Segments:
    """The three pieces of one example's prompts (text)."""

    head: str
    context: str  # the sender's facts, between the head and its question
    tail: str  # the receiver's prompt after the head


def segments_of(sender_prompt: str, receiver_prompt: str) -> Segments:
    """The pieces of one example: both prompts share the head up to the last ``Facts:`` mark."""
    cut = sender_prompt.rindex(FACTS_MARK) + len(FACTS_MARK)
    head = sender_prompt[:cut]
    if not receiver_prompt.startswith(head):
        raise ValueError(f"the receiver's prompt does not start with the sender's head {head[-40:]!r}")
    question = sender_prompt.rindex(f" {QUESTION_MARK}")
    return Segments(head, sender_prompt[cut:question], receiver_prompt[cut:])


@dataclass(frozen=True)
class SegmentIds:
    """One model's token ids of each piece; ``head`` starts with the tokenizer's leading special tokens."""

    head: list[int]
    context: list[int]
    tail: list[int]


def segment_ids(handle: "ModelHandle", segments: Sequence[Segments]) -> list[SegmentIds]:
    """Each example's pieces as ``handle``'s model reads them (one tokenizer call per piece kind)."""
    if not segments:
        return []

    def encoded(texts: list[str]) -> list[list[int]]:
        return handle.tokenizer(texts, add_special_tokens=False)["input_ids"]

    heads = encoded([s.head for s in segments])
    contexts = encoded([s.context for s in segments])
    tails = encoded([s.tail for s in segments])
    return [SegmentIds(list(handle.prefix) + h, c, t) for h, c, t in zip(heads, contexts, tails)]


WORD = re.compile(r"\s*\S+")


def word_aligned_ids(handle: "ModelHandle", texts: Sequence[str]) -> tuple[list[list[int]], list[list[int]]]:
    """Each text's ids encoded word by word (a word with the spaces before it), and the index of each word's
    last token: positions that end at the same character in any two tokenizations, where the ridge map's
    pairs of entries are taken (two models' tokens of one word need not match, their ends do)."""
    ids, ends = [], []
    for text in texts:
        words = WORD.findall(text)
        pieces = handle.tokenizer(words, add_special_tokens=False)["input_ids"] if words else []
        row, row_ends = list(handle.prefix), []
        for piece in pieces:
            row.extend(piece)
            if piece:
                row_ends.append(len(row) - 1)
        ids.append(row)
        ends.append(row_ends)
    return ids, ends
