"""Markdown summaries of the result tables (torch-free: the summary rules run in the light envs)."""

from __future__ import annotations

import math
from typing import Sequence

import pyarrow as pa

from actbridge.data.worlds import PARTIAL_MODES

# (title, scale, decimals)
METRIC_TITLES = {"accuracy": ("Δ exact-match accuracy, points", 100.0, 2),
                 "logprob": ("Δ gold log-probability, nats", 1.0, 3)}


def ci_side(low: float, high: float) -> str:
    """Where an interval lies relative to zero: ``> 0``, ``< 0`` or ``crosses 0``."""
    if low > 0:
        return "> 0"
    if high < 0:
        return "< 0"
    return "crosses 0"


def _number(value: float, scale: float, decimals: int) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value * scale:+.{decimals}f}"


def ci_cell(row: dict, scale: float, decimals: int = 2) -> str:
    """``+1.20 [-0.40, +2.80] crosses 0`` from the crossed-bootstrap interval."""
    numbers = [_number(row[key], scale, decimals) for key in ("delta", "boot_low", "boot_high")]
    return f"{numbers[0]} [{numbers[1]}, {numbers[2]}] {ci_side(row['boot_low'], row['boot_high'])}"


def _label(row: dict) -> tuple[str, str]:
    name = row["condition"] if row["reference"] == "none" else f"{row['condition']} − {row['reference']}"
    return name, "" if row["alpha"] is None else f"{row['alpha']:g}"


def stats_markdown(across_seeds: pa.Table, confidence: float) -> str:
    """Per method, role and mode: every contrast by layer pair, with its interval and which side of 0 it lies."""
    rows = across_seeds.to_pylist()
    level = f"{confidence:.0%}"
    lines = [
        "# Injection statistics", "",
        f"Differences are condition − reference on the same eval examples, averaged over bridge seeds, with a {level} "
        "interval from the crossed (seed × example) bootstrap; `> 0` / `< 0`: the interval excludes zero, "
        "`crosses 0`: it does not. Per-seed BCa intervals, exact McNemar and paired t-tests, Holm-adjusted "
        "p-values (families: the conditions of one pair, method, seed, role, mode and metric), effect sizes "
        "and the t-interval over seeds are in `per_seed.parquet` and `across_seeds.parquet`.", "",
        "Conditions: `add` h + α·b, `add_rescaled` h + α·(‖h‖/‖b‖)·b, `replace` b, `replace_rescaled` "
        "(‖h‖/‖b‖)·b, `interpolate` (1−α)·h + α·b; controls `random` (same norm as b, random direction), "
        "`shuffled` (b of another example), `mean` (the receiver's bridge_train mean), `self_patch` (the "
        "receiver's own state on the full-context prompt: the upper bound of any bridge).", "",
    ]
    groups = sorted({(r["method"], r["role"], r["mode"]) for r in rows})
    pairs = sorted({r["pair"] for r in rows}, key=lambda name: [int(part[1:]) for part in name.split("-")])
    for method, role, mode in groups:
        group = [r for r in rows if (r["method"], r["role"], r["mode"]) == (method, role, mode)]
        n_seeds = max(r["n_seeds"] for r in group)
        n = max(r["n"] for r in group)
        lines += [f"## {method} · role `{role}` · mode `{mode}` ({n} examples, {n_seeds} seeds)", ""]
        for family, title in (("vs_baseline", "against the baseline (`none`)"),
                              ("rescaled_vs_unscaled", "rescaled against unscaled, same α")):
            for metric, (metric_title, scale, decimals) in METRIC_TITLES.items():
                selected = [r for r in group if r["family"] == family and r["metric"] == metric]
                if not selected:
                    continue
                lines += [f"### {metric_title}, {title}", "",
                          "| condition | α | " + " | ".join(pairs) + " |",
                          "|---|---|" + "---|" * len(pairs)]
                cells: dict[tuple[str, str], dict[str, str]] = {}
                for r in selected:
                    cells.setdefault(_label(r), {})[r["pair"]] = ci_cell(r, scale, decimals)
                for label in cells:
                    lines.append(f"| {label[0]} | {label[1]} | "
                                 + " | ".join(cells[label].get(pair, "") for pair in pairs) + " |")
                lines.append("")
    return "\n".join(lines)


def pooled(rows: Sequence[dict], role: str, layer: int, condition: str, metric: str,
           mode: str = "shared", hops: str | None = None) -> dict | None:
    """The effect in ``mode`` over every hop count present: the ``all`` row, or the only hop subset there is;
    with ``hops``, that subset's row where it was measured."""
    matching = [r for r in rows if (r["mode"], r["role"], r["layer"], r["condition"], r["metric"])
                == (mode, role, layer, condition, metric)]
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
             "Exact match of the greedy answer; top-1 among the world's candidate values; chance = "
             "mean 1/|candidates|. `asymmetric/receiver` lacks the first-hop fact and `relay/receiver` every "
             "fact: scoring above chance there would mean a shortcut.", "",
             "| model | mode | prompt | hops | n | exact match | top-1 | chance | gold log-prob | target |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in table.to_pylist():
        lines.append(f"| {row['model']} | {row['mode']} | {row['prompt']} | {row['hops']} | {row['n']} | "
                     f"{row['exact_match']:.3f} | {row['top1_among_candidates']:.3f} | {row['chance']:.3f} | "
                     f"{row['gold_logprob']:.3f} | {target_verdict(row)} |")
    return "\n".join(lines) + "\n"
