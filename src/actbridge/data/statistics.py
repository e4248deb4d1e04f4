"""Dataset statistics the reviewer asked for: counts, hop mix, prompt lengths, answers, chance.

One tidy long table (``statistic, split, mode, hops, model, item, value``)
plus a Markdown rendering of it.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import polars as pl
import pyarrow as pa
from transformers import PreTrainedTokenizerBase

from actbridge.data.worlds import cue_counts
from actbridge.markdown import number, table_lines, to_arrow

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


def token_lengths(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> np.ndarray:
    return np.asarray([len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]])


def relative_answer_position(prompt: str, answer: str) -> float:
    """Where the fact naming the answer sits among the facts: 0 first, 1 last (a recency-bias check)."""
    facts = prompt[: prompt.rindex(" Q:")].split(". ")
    index = next(i for i, fact in enumerate(facts) if fact.rstrip(".").endswith(f" {answer}"))
    return index / max(len(facts) - 1, 1)


def cue_columns(table: pa.Table) -> dict[str, pl.Series]:
    """Per row, how many of its world's chains a reader of each single cue must choose among (the subject alone,
    the relations alone): :func:`actbridge.data.worlds.cue_counts` on the full prompt without demonstrations."""
    counts = [cue_counts(prompt, subject, relations) for prompt, subject, relations
              in zip(*(table.column(c).to_pylist() for c in ("full_prompt", "subject", "relations")))]
    return {"_subject_chains": pl.Series([c[1] for c in counts], dtype=pl.Int64),
            "_relation_chains": pl.Series([c[2] for c in counts], dtype=pl.Int64)}


def first_token_columns(table: pa.Table, name: str, tokenizer: PreTrainedTokenizerBase) -> dict[str, pl.Series]:
    """Per row, in ``tokenizer``'s tokens: how many distinct first tokens its candidates' answers start with, and
    whether another candidate starts with the gold answer's first token (answers encoded as scoring encodes
    them: `` " " + name``, no special tokens)."""
    distinct, shared = [], []
    for answer, candidates in zip(table.column("answer").to_pylist(), table.column("candidates").to_pylist()):
        names = list(dict.fromkeys([*candidates, answer]))
        first = {candidate: ids[0] for candidate, ids in
                 zip(names, tokenizer([" " + c for c in names], add_special_tokens=False)["input_ids"])}
        distinct.append(len(set(first.values())))
        shared.append(any(first[c] == first[answer] for c in names if c != answer))
    return {f"_first_distinct_{name}": pl.Series(distinct, dtype=pl.Int64),
            f"_first_shared_{name}": pl.Series(shared, dtype=pl.Boolean)}


def split_statistics(split: str, table: pa.Table, tokenizers: Mapping[str, PreTrainedTokenizerBase]) -> pl.DataFrame:
    """The long statistics rows of one split: its world count, then per mode and hop count (sorted) each
    statistic in turn."""
    frame = pl.from_arrow(table.select(["example_id", "mode", "hops", "n_facts", "answer", "candidates",
                                        "full_prompt"])).with_columns(
        n_candidates=pl.col("candidates").list.len(),
        **cue_columns(table),
        **{key: column for name, tok in tokenizers.items() for key, column in first_token_columns(table, name, tok).items()},
        answer_position=pl.Series([relative_answer_position(p, a) for p, a in zip(
            table.column("full_prompt").to_pylist(), table.column("answer").to_pylist())], dtype=pl.Float64),
        **{f"_tokens_{name}": pl.Series(token_lengths(tok, table.column(PROMPT_SIDE[name]).to_pylist()),
                                        dtype=pl.Int64) for name, tok in tokenizers.items()})
    # (statistic, model, item, expression): the rows of one (mode, hops) group, in this order
    cells = [("rows", None, None, pl.len()), ("facts_per_world", None, "mean", pl.col("n_facts").mean()),
             ("chance_level", None, "1/|candidates|", (1.0 / pl.col("n_candidates")).mean()),
             # a reader of one cue picks among the chains that cue leaves: its expected accuracy, and how often
             # that cue alone leaves a single chain (answers the question)
             ("subject_ceiling", None, "1/|chains from the subject|", (1.0 / pl.col("_subject_chains")).mean()),
             ("relations_ceiling", None, "1/|chains along the relations|", (1.0 / pl.col("_relation_chains")).mean()),
             ("subject_decides", None, "share", (pl.col("_subject_chains") == 1).mean()),
             ("relations_decides", None, "share", (pl.col("_relation_chains") == 1).mean())]
    for name in tokenizers:
        cells += [("first_token_chance", name, "mean",
                   (1.0 / pl.col(f"_first_distinct_{name}")).mean()),
                  ("first_token_shared", name, "share", pl.col(f"_first_shared_{name}").mean())]
    for name in tokenizers:
        tokens = pl.col(f"_tokens_{name}")
        cells += [("prompt_tokens", name, item, expression) for item, expression in
                  (("mean", tokens.mean()), ("min", tokens.min()), ("median", tokens.median()), ("max", tokens.max()))]
    cells += [("distinct_answers", None, None, pl.col("answer").n_unique()),
              ("max_answer_share", None, None, pl.col("answer").unique_counts().max() / pl.len()),
              ("answer_fact_position", None, "mean relative", pl.col("answer_position").mean())]
    groups = frame.group_by("mode", "hops").agg(expression.cast(pl.Float64).alias(str(i))
                                                for i, (*_, expression) in enumerate(cells)).sort("mode", "hops")
    long = groups.unpivot(index=["mode", "hops"], variable_name="cell").with_columns(
        pl.col("cell").cast(pl.Int64)).sort("mode", "hops", "cell", maintain_order=True)
    keys = pl.DataFrame({"cell": range(len(cells)), "statistic": [c[0] for c in cells],
                         "model": pl.Series([c[1] for c in cells], dtype=pl.String),
                         "item": pl.Series([c[2] for c in cells], dtype=pl.String)})
    worlds = pl.DataFrame({"statistic": ["examples"], "mode": pl.Series([None], dtype=pl.String),
                           "hops": pl.Series([None], dtype=pl.Int8), "model": pl.Series([None], dtype=pl.String),
                           "item": pl.Series([None], dtype=pl.String),
                           "value": [float(frame["example_id"].n_unique())]})
    rows = long.join(keys, on="cell", maintain_order="left").select(worlds.columns).with_columns(
        pl.col("hops").cast(pl.Int8))
    return pl.concat([worlds, rows]).with_columns(split=pl.lit(split))


def dataset_statistics(splits: Mapping[str, pa.Table],
                       tokenizers: Mapping[str, PreTrainedTokenizerBase]) -> pa.Table:
    """One tidy long table (:data:`STATS_SCHEMA`) over every split."""
    frames = [split_statistics(split, table, tokenizers) for split, table in splits.items()]
    return to_arrow(pl.concat(frames), STATS_SCHEMA) if frames else STATS_SCHEMA.empty_table()


def statistics_markdown(stats: pa.Table) -> str:
    """Readable summary: one table of counts/lengths/chance per split, mode and hop count."""
    frame = pl.from_arrow(stats)
    models = sorted(m for m in frame["model"].unique().to_list() if m)
    lines = ["# Dataset statistics", "",
             "Rows are (world, context mode) pairs; `asymmetric` exists for k >= 2 only, `relay` (the receiver reads no facts) for k = 1 only. "
             "Prompt lengths are in each model's own tokens. Chance is the mean of 1/|candidates|, "
             "the candidates being the ends of the world's chains (the answer and one per distractor chain). "
             "Answer position: where the answer's fact sits among the facts, 0 = first, 1 = last; "
             "about 0.5 means no recency cue. **One-cue ceilings**: the accuracy of a reader that follows only the "
             "question's subject (picks among the chains from it) or only its relations (among the chains along "
             "them), from each world's facts; `decides` is the share of questions that cue alone answers. A model "
             "above chance but at a ceiling need not compose anything (`data.distractor_form: balanced` makes "
             "both ceilings 1/2 with 3 distractors). **First token**: chance for the first-answer-token metric "
             "(1/|distinct first tokens of the candidates|) and the share of questions whose gold answer shares "
             "its first token with another candidate, which that metric cannot tell apart, per model.", ""]
    header = ["split", "worlds", "mode", "hops", "rows", "facts", *[f"{m} tokens (mean / max)" for m in models],
              "chance", "subject ceiling (decides)", "relations ceiling (decides)",
              *[f"{m} first token: chance / shared" for m in models],
              "distinct answers", "top answer share", "answer position"]
    # one column per statistic (and model and item, for the token lengths), one row per split, mode and hops
    name = (pl.when(pl.col("model").is_null()).then(pl.col("statistic"))
            .otherwise(pl.format("{}/{}/{}", "statistic", "model", "item")))
    wide = (frame.filter(pl.col("mode").is_not_null()).with_columns(name=name)
            .pivot(on="name", index=["split", "mode", "hops"], values="value", aggregate_function="first")
            .filter(pl.col("rows").is_not_null()).sort("split", "mode", "hops")
            .join(frame.filter(statistic="examples").unique("split", keep="first", maintain_order=True)
                  .select("split", worlds="value"), on="split", how="left", maintain_order="left"))

    def fixed(value: float, decimals: int) -> str:
        return number(value, decimals=decimals, signed=False, missing=None)

    cells = [[r["split"], fixed(r["worlds"], 0), r["mode"], str(r["hops"]), fixed(r["rows"], 0),
              fixed(r["facts_per_world"], 1),
              *(f"{fixed(r[f'prompt_tokens/{m}/mean'], 1)} / {fixed(r[f'prompt_tokens/{m}/max'], 0)}" for m in models),
              fixed(r["chance_level"], 3),
              f"{fixed(r['subject_ceiling'], 3)} ({fixed(r['subject_decides'], 2)})",
              f"{fixed(r['relations_ceiling'], 3)} ({fixed(r['relations_decides'], 2)})",
              *(f"{fixed(r[f'first_token_chance/{m}/mean'], 3)} / "
                f"{fixed(r[f'first_token_shared/{m}/share'], 2)}" for m in models),
              fixed(r["distinct_answers"], 0), fixed(r["max_answer_share"], 3),
              fixed(r["answer_fact_position"], 2)] for r in wide.iter_rows(named=True)]
    lines += table_lines(header, cells)
    return "\n".join(lines) + "\n"
