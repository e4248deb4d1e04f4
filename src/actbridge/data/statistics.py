"""Dataset statistics the reviewer asked for: counts, hop mix, prompt lengths, answers, chance.

One tidy long table (``statistic, split, mode, hops, model, item, value``)
plus a Markdown rendering of it.
"""

from __future__ import annotations

from collections import Counter
from typing import Mapping

import numpy as np
import pyarrow as pa
from transformers import PreTrainedTokenizerBase

STATS_SCHEMA = pa.schema([
    ("statistic", pa.string()),
    ("split", pa.string()),
    ("mode", pa.string()),
    ("hops", pa.int8()),
    ("model", pa.string()),
    ("item", pa.string()),
    ("value", pa.float64()),
])
PROMPT_SIDE = {"sender": "sender_prompt", "receiver": "receiver_prompt"}


def _groups(table: pa.Table) -> list[tuple[str, int, np.ndarray]]:
    modes = np.asarray(table.column("mode").to_pylist())
    hops = np.asarray(table.column("hops").to_pylist())
    return [(m, int(h), (modes == m) & (hops == h))
            for m in sorted(set(modes)) for h in sorted(set(hops)) if ((modes == m) & (hops == h)).any()]


def token_lengths(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> np.ndarray:
    return np.asarray([len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]])


def relative_answer_position(prompt: str, answer: str) -> float:
    """Where the fact naming the answer sits among the facts: 0 first, 1 last (a recency-bias check)."""
    facts = prompt[: prompt.rindex(" Q:")].split(". ")
    index = next(i for i, fact in enumerate(facts) if fact.rstrip(".").endswith(f" {answer}"))
    return index / max(len(facts) - 1, 1)


def split_statistics(split: str, table: pa.Table,
                     tokenizers: Mapping[str, PreTrainedTokenizerBase]) -> list[dict]:
    rows: list[dict] = []

    def add(statistic: str, mode: str | None, hops: int | None, model: str | None, item: str | None,
            value: float) -> None:
        rows.append({"statistic": statistic, "split": split, "mode": mode, "hops": hops,
                     "model": model, "item": item, "value": float(value)})

    add("examples", None, None, None, None, len(set(table.column("example_id").to_pylist())))
    lengths = {name: token_lengths(tok, table.column(PROMPT_SIDE[name]).to_pylist())
               for name, tok in tokenizers.items()}
    n_candidates = np.asarray([len(c) for c in table.column("candidates").to_pylist()])
    n_facts = np.asarray(table.column("n_facts").to_pylist())
    answers = np.asarray(table.column("answer").to_pylist())
    answer_positions = np.asarray([relative_answer_position(p, a) for p, a in
                                   zip(table.column("full_prompt").to_pylist(), answers)])
    for mode, hops, sel in _groups(table):
        add("rows", mode, hops, None, None, sel.sum())
        add("facts_per_world", mode, hops, None, "mean", n_facts[sel].mean())
        add("chance_level", mode, hops, None, "1/|candidates|", (1.0 / n_candidates[sel]).mean())
        for name, lens in lengths.items():
            for item, value in (("mean", lens[sel].mean()), ("min", lens[sel].min()),
                                ("median", np.median(lens[sel])), ("max", lens[sel].max())):
                add("prompt_tokens", mode, hops, name, item, value)
        counts = Counter(answers[sel].tolist())
        add("distinct_answers", mode, hops, None, None, len(counts))
        add("max_answer_share", mode, hops, None, None, max(counts.values()) / sel.sum())
        add("answer_fact_position", mode, hops, None, "mean relative", answer_positions[sel].mean())
    return rows


def dataset_statistics(splits: Mapping[str, pa.Table],
                       tokenizers: Mapping[str, PreTrainedTokenizerBase]) -> pa.Table:
    rows = [row for split, table in splits.items() for row in split_statistics(split, table, tokenizers)]
    return pa.Table.from_pylist(rows, schema=STATS_SCHEMA)


def _value(stats: list[dict], **match) -> float | None:
    for row in stats:
        if all(row[k] == v for k, v in match.items()):
            return row["value"]
    return None


def statistics_markdown(stats: pa.Table) -> str:
    """Readable summary: one table of counts/lengths/chance per split, mode and hop count."""
    rows = stats.to_pylist()
    models = sorted({r["model"] for r in rows if r["model"]})
    lines = ["# Dataset statistics", "",
             "Rows are (world, context mode) pairs; `asymmetric` exists for k >= 2 only, `relay` (the receiver reads no facts) for k = 1 only. "
             "Prompt lengths are in each model's own tokens. Chance is the mean of 1/|candidates|, "
             "the candidates being the ends of the world's chains (the answer and one per distractor chain). "
             "Answer position: where the answer's fact sits among the facts, 0 = first, 1 = last; "
             "about 0.5 means no recency cue.", ""]
    header = ["split", "worlds", "mode", "hops", "rows", "facts", *[f"{m} tokens (mean / max)" for m in models],
              "chance", "distinct answers", "top answer share", "answer position"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    keys = sorted({(r["split"], r["mode"], r["hops"]) for r in rows if r["statistic"] == "rows"},
                  key=lambda k: (k[0], k[1], k[2]))
    for split, mode, hops in keys:
        cells = [split, f"{_value(rows, statistic='examples', split=split):.0f}", mode, str(hops),
                 f"{_value(rows, statistic='rows', split=split, mode=mode, hops=hops):.0f}",
                 f"{_value(rows, statistic='facts_per_world', split=split, mode=mode, hops=hops):.1f}"]
        for model in models:
            mean = _value(rows, statistic="prompt_tokens", split=split, mode=mode, hops=hops, model=model, item="mean")
            top = _value(rows, statistic="prompt_tokens", split=split, mode=mode, hops=hops, model=model, item="max")
            cells.append(f"{mean:.1f} / {top:.0f}")
        cells.append(f"{_value(rows, statistic='chance_level', split=split, mode=mode, hops=hops):.3f}")
        cells.append(f"{_value(rows, statistic='distinct_answers', split=split, mode=mode, hops=hops):.0f}")
        cells.append(f"{_value(rows, statistic='max_answer_share', split=split, mode=mode, hops=hops):.3f}")
        cells.append(f"{_value(rows, statistic='answer_fact_position', split=split, mode=mode, hops=hops):.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
