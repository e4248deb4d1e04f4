"""Token positions named by role and resolved per tokenizer.

Sender and receiver need not share a tokenizer, so the dataset stores
character spans and each model finds its own token index for a role:

* ``last``: the prompt's last token (where the answer is predicted);
* ``bridge``: the token that ends the first mention of the bridge entity;
* ``subject``: the token that ends the subject's mention in the question;
* ``relation``: the token that ends the question's first relation, where a
  model reading the question in chain order can first hold the bridge entity.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:  # hints only: importing transformers costs seconds in jobs that never build a model
    from actbridge.models.handle import ModelHandle

ROLES: tuple[str, ...] = ("last", "bridge", "subject", "relation")
SPAN_COLUMN = {"bridge": "{side}_bridge_span", "subject": "{side}_subject_span",
               "relation": "{side}_relation_span"}


def token_index_of_char(offsets: np.ndarray, char_index: int) -> int:
    """Index of the token whose character span holds ``char_index`` ([n_tokens, 2] offsets).

    Byte-level tokens may carry a leading space in their span; a token covers
    ``char_index`` when ``start <= char_index < end``.
    """
    hits = np.nonzero((offsets[:, 0] <= char_index) & (char_index < offsets[:, 1]))[0]
    if len(hits) == 0:
        raise ValueError(f"no token covers character {char_index}")
    return int(hits[-1])


def resolve_role_positions(handle: "ModelHandle", prompts: Sequence[str],
                           spans: dict[str, Sequence[Sequence[int] | None]], *,
                           roles: Sequence[str] = ROLES) -> dict[str, np.ndarray]:
    """Token index of each role in ``roles`` (every role unless asked) in each prompt; -1 where the role is
    absent (no bridge in 1-hop).

    ``spans[role][i]`` is the ``[start, end)`` character span for ``prompts[i]``. Indices count the
    tokenizer's leading special tokens (a BOS), as :meth:`ModelHandle.prompt_ids` encodes.
    """
    tokenizer, lead = handle.tokenizer, len(handle.prefix)
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}; allowed: {list(ROLES)}")
    positions = {role: np.full(len(prompts), -1, dtype=np.int64) for role in roles}
    if tokenizer.is_fast:
        encoded = tokenizer(list(prompts), add_special_tokens=False, return_offsets_mapping=True)
        all_offsets = [np.asarray(offsets) for offsets in encoded["offset_mapping"]]
    for i, prompt in enumerate(prompts):
        n_tokens = len(all_offsets[i]) if tokenizer.is_fast else len(
            tokenizer(prompt, add_special_tokens=False)["input_ids"])
        for role in roles:
            if role == "last":
                positions[role][i] = lead + n_tokens - 1
                continue
            span = spans[role][i]
            if span is None:
                continue
            end_char = int(span[1]) - 1
            if tokenizer.is_fast:
                positions[role][i] = lead + token_index_of_char(all_offsets[i], end_char)
            else:  # no offsets: the mention ends at the last token of the prefix that ends with it
                prefix = tokenizer(prompt[: end_char + 1], add_special_tokens=False)["input_ids"]
                positions[role][i] = lead + len(prefix) - 1
    return positions


def role_positions_for_table(handle: "ModelHandle", examples: pa.Table, side: str,
                             roles: Sequence[str] = ROLES) -> dict[str, np.ndarray]:
    """Role positions for the ``side`` prompts (sender, receiver or full) of a dataset table."""
    prompts = examples.column(f"{side}_prompt").to_pylist()
    spans = {role: examples.column(SPAN_COLUMN[role].format(side=side)).to_pylist()
             for role in roles if role in SPAN_COLUMN}
    return resolve_role_positions(handle, prompts, spans, roles=roles)
