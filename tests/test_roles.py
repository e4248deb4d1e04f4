"""Roles resolve to the right token under two different tokenizers."""

from __future__ import annotations

import numpy as np
import pytest

from actbridge.models.handle import ModelHandle
from actbridge.activations.roles import resolve_role_positions, role_positions_for_table


@pytest.mark.parametrize("which", ["tokenizer", "big_tokenizer"])
@pytest.mark.parametrize("side", ["sender", "receiver", "full"])
def test_roles_end_on_the_named_entity(request, eval_table, which, side):
    tok = request.getfixturevalue(which)
    positions = role_positions_for_table(ModelHandle.for_tokenizer(tok), eval_table, side)
    for i, row in enumerate(eval_table.to_pylist()):
        ids = tok(row[f"{side}_prompt"], add_special_tokens=False)["input_ids"]
        assert positions["last"][i] == len(ids) - 1
        prefix = tok.decode(ids[: positions["subject"][i] + 1])
        assert prefix.endswith(row["subject"]) and prefix.count(" Q:") == 1
        prefix = tok.decode(ids[: positions["relation"][i] + 1])
        assert prefix.endswith(row["relations"][0]) and prefix.count(" Q:") == 1
        if row["hops"] >= 2:
            prefix = tok.decode(ids[: positions["bridge"][i] + 1])
            assert prefix.endswith(row["bridge_entity"])
            assert not tok.decode(ids[: positions["bridge"][i]]).endswith(row["bridge_entity"])
        else:
            assert positions["bridge"][i] == -1


def test_two_tokenizers_give_different_indices_for_the_same_role(eval_table, tokenizer, big_tokenizer):
    small = role_positions_for_table(ModelHandle.for_tokenizer(tokenizer), eval_table, "full")
    big = role_positions_for_table(ModelHandle.for_tokenizer(big_tokenizer), eval_table, "full")
    assert (small["last"] > big["last"]).any()  # the same character position, other token indices


def test_unknown_role_is_rejected(tokenizer):
    with pytest.raises(ValueError, match="unknown roles"):
        resolve_role_positions(ModelHandle.for_tokenizer(tokenizer), ["x"], {}, roles=["middle"])


def test_slow_tokenizer_path_matches_fast(eval_table, tokenizer, monkeypatch):
    fast = role_positions_for_table(ModelHandle.for_tokenizer(tokenizer), eval_table, "sender")
    monkeypatch.setattr(type(tokenizer), "is_fast", property(lambda self: False))
    slow = role_positions_for_table(ModelHandle.for_tokenizer(tokenizer), eval_table, "sender")
    for role in fast:
        np.testing.assert_array_equal(fast[role], slow[role])
