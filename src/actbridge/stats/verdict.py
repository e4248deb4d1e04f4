"""The verdict table: per bridge method x context mode x condition, does injection help, harm, or do nothing?

One row per (method, mode, role, condition). Among the condition's layer pairs and α values,
the verdict is

* ``helps`` where some Δaccuracy against ``none`` is positive and significant (Holm-adjusted
  p across seeds below 1 − confidence, and the crossed-bootstrap interval above 0): the row
  reports the largest such Δ, and in ``asymmetric`` and ``relay`` mode (the receiver's prompt lacks
  facts, so self-patching from the full prompt has something to restore) its *channel efficiency*, the fraction
  of the self-patch gain at the same site (layer pair, role, bridge seed set) that it recovers;
* ``harmful`` where none helps and some Δ is negative and significant (the most negative);
* otherwise, split by the test's power (:mod:`actbridge.stats.power`): ``no effect`` where an effect of
  ``stats.detectable_effect`` points (or ``stats.detectable_share`` of the upper bound, where the mode has one)
  would have been found with probability ``stats.power``, and ``inconclusive`` where only a larger one would.
  The row with the largest Δ is reported, with its interval and the smallest effect the test could detect.

The verdict rests on one right/wrong metric, ``stats.metric``: exact match (``accuracy``, as the reference
study) or whether the gold answer's first token is the most likely of the candidates' first tokens
(``first_token``), which sees a channel that delivers only the start of a multi-token name.

Beside it: the sender-side effect at the translated layer (mean ablation of the sender's state
there: does the sender's own answer use what the bridge translates?) and whether the receiver
reads from the injection site (counterfactual patching moves its answer). A bridge can only
carry what the sender uses, into a site the receiver reads.

Torch-free: the rule runs in the statistics environment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import polars as pl
import pyarrow as pa

from actbridge.config import default_of
from actbridge.data.worlds import PARTIAL_MODES
from actbridge.activations.layers import parse_pair
from actbridge.kv import kv_pair
from actbridge.markdown import points, table_lines
from actbridge.stats.power import detectable_effect, effective_pairs, holm_level, tail_factor
from actbridge.stats.summaries import pooled


@dataclass(frozen=True)
class VerdictSettings:
    """The ``stats.*`` keys the verdict reads (and no statistics job: changing them reruns the verdict alone)."""

    confidence: float = field(default_factory=default_of("stats.confidence"))
    metric: str = field(default_factory=default_of("stats.metric"))
    power: float = field(default_factory=default_of("stats.power"))
    detectable_effect: float = field(default_factory=default_of("stats.detectable_effect"))  # points
    detectable_share: float = field(default_factory=default_of("stats.detectable_share"))  # of the upper bound

    @classmethod
    def from_config(cls, stats: dict) -> "VerdictSettings":
        return cls(float(stats["confidence"]), str(stats["metric"]), float(stats["power"]),
                   float(stats["detectable_effect"]), float(stats["detectable_share"]))

    def threshold(self, upper_bound: float) -> float:
        """The effect (a share) a `no effect` row must have been able to detect: a share of the upper bound
        where there is one, else ``detectable_effect`` points."""
        if math.isfinite(upper_bound) and upper_bound > 0:
            return self.detectable_share * upper_bound
        return self.detectable_effect / 100


VERDICT_SCHEMA = pa.schema([
    ("method", pa.string()), ("mode", pa.string()), ("role", pa.string()), ("condition", pa.string()),
    ("verdict", pa.string()), ("pair", pa.string()), ("alpha", pa.float64()), ("n_sites", pa.int32()),
    ("delta", pa.float64()), ("ci_low", pa.float64()), ("ci_high", pa.float64()), ("p_holm", pa.float64()),
    ("upper_bound", pa.float64()), ("channel_efficiency", pa.float64()),
    ("sender_ablation", pa.float64()), ("sender_ablation_low", pa.float64()), ("sender_ablation_high", pa.float64()),
    ("receiver_moved", pa.float64()), ("receiver_moved_low", pa.float64()), ("receiver_moved_high", pa.float64()),
    # power of the test at the row's site: the level Holm tests it at, the smallest effect found with
    # probability stats.power there, and the effect a `no effect` row must be able to detect
    ("metric", pa.string()), ("level", pa.float64()), ("detectable", pa.float64()), ("threshold", pa.float64()),
])
NAN = float("nan")
KV_PAIR_PREFIX = kv_pair("")


def significant(row: dict, level: float) -> int:
    """+1 / -1 where the Holm-adjusted p is below ``level`` and the interval excludes 0 on that side, else 0."""
    p_holm = row["p_holm"]
    if p_holm is None or not math.isfinite(p_holm) or p_holm >= level:
        return 0
    if row["boot_low"] > 0:
        return 1
    return -1 if row["boot_high"] < 0 else 0


def choose(rows: Sequence[dict], level: float) -> tuple[str, dict]:
    """(verdict, the row it rests on) among one condition's sites (pairs x α)."""
    helps = [r for r in rows if significant(r, level) > 0]
    if helps:
        return "helps", max(helps, key=lambda r: r["delta"])
    harms = [r for r in rows if significant(r, level) < 0]
    if harms:
        return "harmful", min(harms, key=lambda r: r["delta"])
    return "no effect", max(rows, key=lambda r: r["delta"] if math.isfinite(r["delta"]) else -math.inf)


def channel_efficiency(delta: float, upper_bound: float) -> float:
    """Fraction of the self-patch gain a bridged condition recovers; undefined without a positive gain."""
    return delta / upper_bound if math.isfinite(upper_bound) and upper_bound > 0 else NAN


def site_power(row: dict, settings: VerdictSettings) -> tuple[float, float]:
    """(the level Holm tests the across-seeds ``row`` at, the smallest effect its test detects with probability
    ``settings.power``)."""
    level = holm_level(1.0 - settings.confidence, rank=row["holm_rank"], family_size=row["family_size"])
    effective = effective_pairs(standard_error=row["boot_se"], discordance=row["discordance"], delta=row["delta"],
                                examples=row["n"], seeds=row["n_seeds"])
    tails = tail_factor(low=row["boot_low"], high=row["boot_high"], standard_error=row["boot_se"],
                        confidence=settings.confidence)
    return level, detectable_effect(effective=effective, discordance=row["discordance"], level=level,
                                    power=settings.power, tails=tails)


def powered(verdict: str, detectable: float, threshold: float) -> str:
    """A `no effect` verdict split by what its test could detect."""
    if verdict != "no effect":
        return verdict
    if detectable <= threshold:
        return f"no effect (would detect ≥ {100 * detectable:.1f} points)"
    return f"inconclusive (could detect only ≥ {100 * detectable:.1f} points)"


def verdict_table(across_seeds: pa.Table, sender_effects: pa.Table, receiver_effects: pa.Table, *,
                  settings: VerdictSettings, upper_bounds: frozenset[str] = frozenset({"self_patch"})) -> pa.Table:
    """One verdict row per (method, mode, role, condition) of the across-seeds statistics (``settings.metric``
    against none). ``upper_bounds``: each channel's upper-bound condition (``self_patch`` for the residual
    channel, ``kv_own`` for the KV channel); a row's bound is the one of its own site, method and role."""
    level = 1.0 - settings.confidence
    rows = pl.from_arrow(across_seeds).filter(metric=settings.metric, reference="none")
    sender, receiver = pl.from_arrow(sender_effects), pl.from_arrow(receiver_effects)
    self_patch = {(r["pair"], r["method"], r["role"], r["mode"]): r
                  for r in rows.filter(pl.col("condition").is_in(list(upper_bounds))).iter_rows(named=True)}
    out = []
    sites_by_key = rows.partition_by("method", "mode", "role", "condition", as_dict=True)
    for (method, mode, role, condition), sites in sorted(sites_by_key.items()):
        verdict, chosen = choose(sites.to_dicts(), level)
        bound_row = self_patch.get((chosen["pair"], method, role, mode))
        upper_bound = bound_row["delta"] if bound_row is not None and significant(bound_row, level) > 0 else NAN
        bounded = mode in PARTIAL_MODES
        efficiency = channel_efficiency(chosen["delta"], upper_bound) if bounded else NAN
        site_level, detectable = site_power(chosen, settings)
        threshold = settings.threshold(upper_bound if bounded else NAN)
        verdict = powered(verdict, detectable, threshold)
        if verdict == "helps" and condition not in upper_bounds:
            verdict = (f"helps: {efficiency:.0%} of upper bound" if math.isfinite(efficiency)
                       else f"helps: {100 * chosen['delta']:+.1f} points")
        elif verdict == "helps":
            verdict = "upper bound"
        ablation = moved = None
        if not chosen["pair"].startswith(KV_PAIR_PREFIX):  # the KV channel sends every position, at no one layer
            sender_layer, receiver_layer = parse_pair(chosen["pair"])
            # relay rows are 1-hop questions the sender reads in full: its 1-hop shared-prompt profile is theirs
            ablation = pooled(sender, role, sender_layer, "mean", settings.metric,
                              hops="1" if mode == "relay" else None)
            moved = pooled(receiver, role, receiver_layer, "patch", "moved")
        out.append({
            "method": method, "mode": mode, "role": role, "condition": condition, "verdict": verdict,
            "pair": chosen["pair"], "alpha": chosen["alpha"], "n_sites": sites.height, "delta": chosen["delta"],
            "ci_low": chosen["boot_low"], "ci_high": chosen["boot_high"], "p_holm": chosen["p_holm"],
            "upper_bound": upper_bound if bounded else NAN, "channel_efficiency": efficiency,
            **_effect("sender_ablation", ablation), **_effect("receiver_moved", moved),
            "metric": settings.metric, "level": site_level, "detectable": detectable, "threshold": threshold,
        })
    return pa.Table.from_pylist(out, schema=VERDICT_SCHEMA)


def _effect(prefix: str, row: dict | None) -> dict:
    if row is None:
        return {prefix: NAN, f"{prefix}_low": NAN, f"{prefix}_high": NAN}
    return {prefix: row["delta"], f"{prefix}_low": row["ci_low"], f"{prefix}_high": row["ci_high"]}


def detectable_cell(row: dict) -> str:
    """What the test could detect, against its threshold, where that decides the verdict (no significant Δ)."""
    if not row["verdict"].startswith(("no effect", "inconclusive")):
        return ""
    return f"≥ {100 * row['detectable']:.1f} (of {100 * row['threshold']:.1f})"


METRIC_WORDS = {"accuracy": "exact-match accuracy",
                "first_token": "first-answer-token accuracy (the gold's first token tops the candidates' first tokens)"}


def verdict_markdown(table: pa.Table, settings: VerdictSettings) -> str:
    frame = pl.from_arrow(table)
    confidence = settings.confidence
    lines = [
        "# Verdict", "",
        f"Does injecting the bridged sender state change the receiver's {METRIC_WORDS[settings.metric]} "
        "(`stats.metric`)? One row per bridge method, context mode, role and condition; among that condition's "
        "layer pairs and α values the verdict is `helps` / `harmful` where some Δ against `none` is significant "
        f"(Holm-adjusted p < {1 - confidence:.2g} across seeds and the {confidence:.0%} crossed seed × example "
        "bootstrap interval excludes 0); the row shows the site it rests on (the best Δ, or the worst for "
        "`harmful`). Otherwise the row says what its test could have found: **could detect** is the smallest "
        f"true Δ its test finds with {settings.power:.0%} power at the level Holm tests that site at, from the "
        "variance and the share of changed outcomes it observed (docs/findings.md, *Power*). It is `no effect` "
        f"where that is at most {settings.detectable_effect:g} points, or {settings.detectable_share:.0%} of the "
        "upper bound where the mode has one, and `inconclusive` where it is more. "
        "**Channel efficiency** (asymmetric and relay modes): Δ over the self-patch gain at the same site, the upper "
        "bound of any bridge; for the KV channel (methods `kv_*`, role `context`, sites `kv-<blocks sent>`), over "
        "the gain of the receiver's own cache of the sender's context (`kv_own`: the full-context prompt). **Sender uses it**: Δ of the sender's own score when its state at the translated layer "
        "is mean-ablated. **Receiver reads it**: Δ in how often counterfactual patching at the injection layer moves "
        "the receiver's answer. Points throughout.", "",
    ]
    header = ["method", "role", "condition", "verdict", "site (pair, α)", "Δ [CI]", "p (Holm)", "could detect",
              "upper bound", "channel efficiency", "sender uses it", "receiver reads it"]
    for mode in sorted(frame["mode"].unique().to_list()):
        cells = []
        for r in frame.filter(mode=mode).iter_rows(named=True):
            alpha = "" if r["alpha"] is None else f", α {r['alpha']:g}"
            efficiency = f"{r['channel_efficiency']:.0%}" if math.isfinite(r["channel_efficiency"]) else "n/a"
            cells.append([
                r["method"], r["role"], r["condition"], f"**{r['verdict']}**", f"{r['pair']}{alpha} (of {r['n_sites']})",
                points(r["delta"], r["ci_low"], r["ci_high"]), f"{r['p_holm']:.2g}",
                detectable_cell(r), points(r["upper_bound"]),
                efficiency, points(r["sender_ablation"], r["sender_ablation_low"], r["sender_ablation_high"]),
                points(r["receiver_moved"], r["receiver_moved_low"], r["receiver_moved_high"])])
        lines += [f"## mode `{mode}`", "", *table_lines(header, cells), ""]
    return "\n".join(lines)
