"""Dataset statistics agree with the data they describe."""

from __future__ import annotations

import numpy as np

from actbridge.data.statistics import dataset_statistics, relative_answer_position, statistics_markdown


def test_statistics_match_a_direct_count(eval_table, tokenizer, big_tokenizer):
    stats = dataset_statistics({"eval": eval_table}, {"sender": tokenizer, "receiver": big_tokenizer}).to_pylist()
    rows = eval_table.to_pylist()
    n_worlds = len({r["example_id"] for r in rows})
    assert [s["value"] for s in stats if s["statistic"] == "examples"] == [n_worlds]
    shared_2 = [r for r in rows if r["mode"] == "shared" and r["hops"] == 2]
    count = next(s["value"] for s in stats if s["statistic"] == "rows" and s["mode"] == "shared" and s["hops"] == 2)
    assert count == len(shared_2)
    chance = next(s["value"] for s in stats if s["statistic"] == "chance_level" and s["hops"] == 2
                  and s["mode"] == "shared")
    assert np.isclose(chance, np.mean([1 / len(r["candidates"]) for r in shared_2]))
    mean_tokens = next(s["value"] for s in stats if s["statistic"] == "prompt_tokens" and s["model"] == "sender"
                       and s["item"] == "mean" and s["mode"] == "shared" and s["hops"] == 2)
    assert np.isclose(mean_tokens, np.mean([len(tokenizer(r["sender_prompt"])["input_ids"]) for r in shared_2]))
    # the two tokenizers differ, so the two models' lengths differ
    lengths = {s["model"]: s["value"] for s in stats if s["statistic"] == "prompt_tokens" and s["item"] == "mean"
               and s["mode"] == "shared" and s["hops"] == 2}
    assert lengths["sender"] > lengths["receiver"]
    markdown = statistics_markdown(dataset_statistics({"eval": eval_table}, {"sender": tokenizer}))
    assert markdown.count("| eval |") == len({(r["mode"], r["hops"]) for r in rows})


def test_answer_position_of_first_and_last_fact():
    prompt = "Facts: A's mentor is B. C's mentor is D. Q: A's mentor is"
    assert relative_answer_position(prompt, "B") == 0.0
    assert relative_answer_position(prompt, "D") == 1.0
