"""Markdown summaries of the result tables (torch-free: the summary rules run in the light envs)."""

from __future__ import annotations

from typing import Mapping, Sequence

import polars as pl
import pyarrow as pa

from actbridge.data.worlds import PARTIAL_MODES
from actbridge.kv import site_order
from actbridge.markdown import ci_cell, ci_side, number, table_lines  # noqa: F401 - ci_side: re-exported

# (title, scale, decimals)
METRIC_TITLES = {"accuracy": ("Δ exact-match accuracy, points", 100.0, 2),
                 "first_token": ("Δ first-answer-token accuracy, points", 100.0, 2),
                 "logprob": ("Δ gold log-probability, nats", 1.0, 3)}


def _labelled(rows: pl.DataFrame, scale: float, decimals: int) -> pl.DataFrame:
    """``rows`` with their row label (the contrast, its α) and their interval cell."""
    records = rows.iter_rows(named=True)
    cells = [("" if r["alpha"] is None else f"{r['alpha']:g}", ci_cell(r, scale, decimals)) for r in records]
    return rows.with_columns(
        pl.when(pl.col("reference") == "none").then(pl.col("condition"))
        .otherwise(pl.format("{} − {}", "condition", "reference")).alias("_label"),
        pl.Series("_alpha", [alpha for alpha, _ in cells], dtype=pl.String),
        pl.Series("_cell", [cell for _, cell in cells], dtype=pl.String))


def stats_markdown(across_seeds: pa.Table, confidence: float, *, formulas: Mapping[str, str]) -> str:
    """Per method, role and mode: every contrast by layer pair, with its interval and which side of 0 it lies;
    ``formulas``: each condition's h′ in words (the registry's, passed in by the rule's script)."""
    frame = pl.from_arrow(across_seeds)
    level = f"{confidence:.0%}"
    lines = [
        "# Injection statistics", "",
        f"Differences are condition − reference on the same eval examples, averaged over bridge seeds, with a {level} "
        "interval from the crossed (seed × example) bootstrap; `> 0` / `< 0`: the interval excludes zero, "
        "`crosses 0`: it does not. Per-seed BCa intervals, exact McNemar and paired t-tests, Holm-adjusted "
        "p-values (families: the conditions of one pair, method, seed, role, mode and metric), effect sizes "
        "and the t-interval over seeds are in `per_seed.parquet` and `across_seeds.parquet`.", "",
        "Conditions (h′ of the receiver's state h, with b the bridged state): " + "; ".join(
            f"`{name}` {formulas[name]}" for name in frame["condition"].unique(maintain_order=True)) + ".",
        "",
    ]
    for (method, role, mode), group in sorted(frame.partition_by("method", "role", "mode", as_dict=True).items()):
        pairs = sorted(group["pair"].unique().to_list(), key=site_order)
        lines += [f"## {method} · role `{role}` · mode `{mode}` ({group['n'].max()} examples, "
                  f"{group['n_seeds'].max()} seeds)", ""]
        for family, title in (("vs_baseline", "against the baseline (`none`)"),
                              ("rescaled_vs_unscaled", "rescaled against unscaled, same α")):
            for metric, (metric_title, scale, decimals) in METRIC_TITLES.items():
                selected = group.filter((pl.col("family") == family) & (pl.col("metric") == metric))
                if selected.is_empty():
                    continue
                # one line per contrast and α (in order of appearance), one column per layer pair
                grid = (_labelled(selected, scale, decimals)
                        .pivot(on="pair", index=["_label", "_alpha"], values="_cell", aggregate_function="last"))
                grid = grid.select("_label", "_alpha", *(pl.col(pair) if pair in grid.columns else pl.lit(None)
                                                         .cast(pl.String).alias(pair) for pair in pairs)).fill_null("")
                lines += [f"### {metric_title}, {title}", "", *table_lines(["condition", "α", *pairs], grid.iter_rows()),
                          ""]
    return "\n".join(lines)


def pooled(rows: Sequence[dict] | pl.DataFrame, role: str, layer: int, condition: str, metric: str, *,
           mode: str = "shared", hops: str | None = None) -> dict | None:
    """The effect in ``mode`` over every hop count present: the ``all`` row, or the only hop subset there is;
    with ``hops``, that subset's row where it was measured. ``rows``: effect rows, as dicts or a frame."""
    key = {"mode": mode, "role": role, "layer": layer, "condition": condition, "metric": metric}
    if isinstance(rows, pl.DataFrame):
        matching = rows.filter(**key).to_dicts()
    else:
        matching = [r for r in rows if all(r[name] == value for name, value in key.items())]
    subset = [r for r in matching if r["hops"] == hops]
    if subset:
        return subset[0]
    if len(matching) == 1:
        return matching[0]
    return next((r for r in matching if r["hops"] == "all"), None)


# Targets from the foundation issue: chaining, not shortcuts.
TARGETS = {("shared", "full", 1): (">=", 0.90), ("shared", "full", 2): (">=", 0.80)}
ASYMMETRIC_MARGIN = 0.10


def target_verdict(row: dict) -> str:
    """'met' / 'MISSED' against the issue's targets, or '' where none applies."""
    key = (row["mode"], row["prompt"], row["hops"])
    if key in TARGETS:
        _, bound = TARGETS[key]
        return f"{'met' if row['exact_match'] >= bound else 'MISSED'} (>= {bound:.2f})"
    if row["mode"] in PARTIAL_MODES and row["prompt"] == "receiver":
        bound = row["chance"] + ASYMMETRIC_MARGIN
        return f"{'met' if row['top1_among_candidates'] <= bound else 'MISSED'} (top-1 <= {bound:.2f})"
    return ""


def accuracy_markdown(table: pa.Table) -> str:
    lines = ["# Model accuracy on eval", "",
             "Exact match of the greedy answer; top-1 among the world's candidate values; first token: the gold "
             "answer's first token tops the candidates' first tokens; chance = mean 1/|candidates|. The one-cue "
             "ceilings are what a reader of the question's subject alone, or of its relations alone, scores on "
             "these worlds (data/stats.md): an accuracy at a ceiling needs no composition. "
             "`asymmetric/receiver` lacks the first-hop fact and `relay/receiver` every fact: scoring above chance "
             "there would mean a shortcut.", ""]
    columns = ("exact_match", "top1_among_candidates", "first_token_top", "chance", "subject_ceiling",
               "relations_ceiling", "gold_logprob")
    cells = [[row["model"], row["mode"], row["prompt"], str(row["hops"]), str(row["n"]),
              *(number(row.get(column), decimals=3, signed=False, missing="n/a") for column in columns),
              target_verdict(row)] for row in pl.from_arrow(table).iter_rows(named=True)]
    lines += table_lines(["model", "mode", "prompt", "hops", "n", "exact match", "top-1", "first token", "chance",
                          "subject ceiling", "relations ceiling", "gold log-prob", "target"], cells)
    return "\n".join(lines) + "\n"
