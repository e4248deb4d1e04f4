"""The verdict table: per bridge method x context mode x condition, does injection help, harm, or do nothing?

One row per (metric, method, mode, role, condition). Among the condition's layer pairs and α values,
the verdict is

* ``helps`` where some Δaccuracy against ``none`` is positive and significant (Holm-adjusted
  p across seeds below 1 − confidence, and the crossed-bootstrap interval above 0): the row
  reports the largest such Δ, and in ``asymmetric`` and ``relay`` mode (the receiver's prompt lacks
  facts, so self-patching from the full prompt has something to restore) its *channel efficiency*, the fraction
  of the self-patch gain at the same site (layer pair, role, bridge seed set) that it recovers;
* ``harmful`` where none helps and some Δ is negative and significant (the most negative);
* otherwise, split by the test's power (:mod:`actbridge.stats.power`) at **every** site the claim covers:
  ``no effect`` where, at each of them, an effect of its threshold would have been found with probability
  ``stats.power``, and ``inconclusive`` where at one of them only a larger one would. The row names the site
  that limits the claim (the largest detectable effect relative to its threshold).
  In ``asymmetric`` and ``relay`` mode the sites are those with an upper bound (a significant self-patch gain),
  each with its own threshold, ``stats.detectable_share`` of its bound: a site where the receiver's own state
  restores nothing can carry nothing, so a flat Δ there says nothing about the channel. Where no site has a
  bound the row is ``inconclusive (no site has an upper bound)``. Elsewhere (``shared`` mode, and the upper
  bounds' own rows) every site counts, against ``stats.detectable_effect`` points.

Every row is computed for both right/wrong metrics (:data:`BINARY_METRICS`): exact match (``accuracy``, as the
reference study) and whether the gold answer's first token is the most likely of the candidates' first tokens
(``first_token``), which sees a channel that delivers only the start of a multi-token name. ``stats.metric``
picks the headline one (``headline``): the one the figures draw and the Markdown shows first.

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
from actbridge.stats.paired import BINARY_METRICS
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
    ("headline", pa.bool_()),  # the metric is stats.metric's: the row the figures and the headline read
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


def choose(rows: Sequence[dict], level: float) -> tuple[str, dict | None]:
    """(verdict, the row it rests on) among one condition's sites (pairs x α) where some Δ is significant:
    ``helps`` on the largest positive one, ``harmful`` on the most negative; ``("no effect", None)`` where none is,
    and power decides (:func:`limiting_site`)."""
    helps = [r for r in rows if significant(r, level) > 0]
    if helps:
        return "helps", max(helps, key=lambda r: r["delta"])
    harms = [r for r in rows if significant(r, level) < 0]
    if harms:
        return "harmful", min(harms, key=lambda r: r["delta"])
    return "no effect", None


def limiting_site(rows: Sequence[dict], thresholds: Sequence[float], settings: "VerdictSettings"
                  ) -> tuple[dict, float, float, float]:
    """Among sites with no significant Δ, the one whose test comes closest to missing its threshold (the largest
    detectable effect over threshold): (that row, its Holm level, its detectable effect, its threshold). A
    `no effect` claim holds at every site exactly when it holds at this one."""
    powers = [site_power(row, settings) for row in rows]
    ratios = [detectable / threshold if threshold > 0 else math.inf
              for (_, detectable), threshold in zip(powers, thresholds)]
    index = max(range(len(rows)), key=lambda i: (ratios[i], powers[i][1]))
    row, (level, detectable), threshold = rows[index], powers[index], thresholds[index]
    return row, level, detectable, threshold


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
    """One verdict row per metric of :data:`BINARY_METRICS` the across-seeds statistics hold (each against
    none) and (method, mode, role, condition), the headline metric (``settings.metric``) first.
    ``upper_bounds``: each channel's upper-bound condition (``self_patch`` for the residual channel, ``kv_own``
    for the KV channel); a row's bound is the one of its own site, method and role."""
    frame = pl.from_arrow(across_seeds).filter(reference="none")
    present = set(frame["metric"].unique().to_list())
    metrics = [settings.metric] + [m for m in BINARY_METRICS if m != settings.metric and m in present]
    sender, receiver = pl.from_arrow(sender_effects), pl.from_arrow(receiver_effects)
    out = []
    for metric in metrics:
        out += _metric_rows(frame.filter(metric=metric), sender, receiver, metric=metric, settings=settings,
                            upper_bounds=upper_bounds)
    return pa.Table.from_pylist(out, schema=VERDICT_SCHEMA)


def _metric_rows(rows: pl.DataFrame, sender: pl.DataFrame, receiver: pl.DataFrame, *, metric: str,
                 settings: VerdictSettings, upper_bounds: frozenset[str]) -> list[dict]:
    level = 1.0 - settings.confidence
    self_patch = {(r["pair"], r["method"], r["role"], r["mode"]): r
                  for r in rows.filter(pl.col("condition").is_in(list(upper_bounds))).iter_rows(named=True)}

    def bound_at(row: dict, method: str, role: str, mode: str) -> float:
        bound_row = self_patch.get((row["pair"], method, role, mode))
        return bound_row["delta"] if bound_row is not None and significant(bound_row, level) > 0 else NAN

    out = []
    sites_by_key = rows.partition_by("method", "mode", "role", "condition", as_dict=True)
    for (method, mode, role, condition), sites in sorted(sites_by_key.items()):
        site_rows = sites.to_dicts()
        verdict, chosen = choose(site_rows, level)
        bounded = mode in PARTIAL_MODES
        if chosen is not None:
            upper_bound = bound_at(chosen, method, role, mode) if bounded else NAN
            site_level, detectable = site_power(chosen, settings)
            threshold = settings.threshold(upper_bound)
        else:
            verdict, chosen, upper_bound, site_level, detectable, threshold = _powered_claim(
                site_rows, lambda row: bound_at(row, method, role, mode),
                bounded=bounded and condition not in upper_bounds, settings=settings)
        efficiency = channel_efficiency(chosen["delta"], upper_bound) if bounded else NAN
        if verdict == "helps" and condition not in upper_bounds:
            verdict = (f"helps: {efficiency:.0%} of upper bound" if math.isfinite(efficiency)
                       else f"helps: {100 * chosen['delta']:+.1f} points")
        elif verdict == "helps":
            verdict = "upper bound"
        ablation = moved = None
        if not chosen["pair"].startswith(KV_PAIR_PREFIX):  # the KV channel sends every position, at no one layer
            sender_layer, receiver_layer = parse_pair(chosen["pair"])
            # relay rows are 1-hop questions the sender reads in full: its 1-hop shared-prompt profile is theirs
            ablation = pooled(sender, role, sender_layer, "mean", metric, hops="1" if mode == "relay" else None)
            moved = pooled(receiver, role, receiver_layer, "patch", "moved")
        out.append({
            "method": method, "mode": mode, "role": role, "condition": condition, "verdict": verdict,
            "pair": chosen["pair"], "alpha": chosen["alpha"], "n_sites": sites.height, "delta": chosen["delta"],
            "ci_low": chosen["boot_low"], "ci_high": chosen["boot_high"], "p_holm": chosen["p_holm"],
            "upper_bound": upper_bound if bounded else NAN, "channel_efficiency": efficiency,
            **_effect("sender_ablation", ablation), **_effect("receiver_moved", moved),
            "metric": metric, "level": site_level, "detectable": detectable, "threshold": threshold,
            "headline": metric == settings.metric,
        })
    return out


NO_BOUND = "inconclusive (no site has an upper bound)"


def _powered_claim(rows: list[dict], bound_of, *, bounded: bool, settings: VerdictSettings
                   ) -> tuple[str, dict, float, float, float, float]:
    """The verdict of a condition with no significant Δ, from the power at every site its claim covers:
    (words, the limiting site's row, its upper bound, Holm level, detectable effect, threshold)."""
    if bounded:  # the sites with a bound, each against a share of its own
        covered = [(row, bound) for row, bound in ((row, bound_of(row)) for row in rows) if math.isfinite(bound)]
        if not covered:  # nothing to restore anywhere: report the largest Δ and what its test could see
            row = max(rows, key=lambda r: r["delta"] if math.isfinite(r["delta"]) else -math.inf)
            level, detectable = site_power(row, settings)
            return NO_BOUND, row, NAN, level, detectable, NAN
    else:  # every site, against stats.detectable_effect points
        covered = [(row, NAN) for row in rows]
    row, level, detectable, threshold = limiting_site([row for row, _ in covered],
                                                      [settings.threshold(bound) for _, bound in covered], settings)
    bound = next(bound for site, bound in covered if site is row)
    return powered("no effect", detectable, threshold), row, bound, level, detectable, threshold


def _effect(prefix: str, row: dict | None) -> dict:
    if row is None:
        return {prefix: NAN, f"{prefix}_low": NAN, f"{prefix}_high": NAN}
    return {prefix: row["delta"], f"{prefix}_low": row["ci_low"], f"{prefix}_high": row["ci_high"]}


def detectable_cell(row: dict) -> str:
    """What the test could detect, against its threshold, where that decides the verdict (no significant Δ)."""
    if not row["verdict"].startswith(("no effect", "inconclusive")):
        return ""
    if not math.isfinite(row["threshold"]):
        return f"≥ {100 * row['detectable']:.1f} (no bound)"
    return f"≥ {100 * row['detectable']:.1f} (of {100 * row['threshold']:.1f})"


METRIC_WORDS = {"accuracy": "exact-match accuracy",
                "first_token": "first-answer-token accuracy (the gold's first token tops the candidates' first tokens)"}
METRIC_TITLES = {"accuracy": "exact match", "first_token": "first answer token"}


def verdict_markdown(table: pa.Table, settings: VerdictSettings) -> str:
    frame = pl.from_arrow(table)
    confidence = settings.confidence
    others = [METRIC_TITLES[m] for m in dict.fromkeys(frame["metric"].to_list()) if m != settings.metric]
    lines = [
        "# Verdict", "",
        f"Does injecting the bridged sender state change the receiver's {METRIC_WORDS[settings.metric]} "
        "(`stats.metric`, the headline"
        + (f"; each mode's second table is the same verdict on {', '.join(others)}" if others else "")
        + ")? One row per bridge method, context mode, role and condition; among that condition's "
        "layer pairs and α values the verdict is `helps` / `harmful` where some Δ against `none` is significant "
        f"(Holm-adjusted p < {1 - confidence:.2g} across seeds and the {confidence:.0%} crossed seed × example "
        "bootstrap interval excludes 0); the row shows the site it rests on (the best Δ, or the worst for "
        "`harmful`). Otherwise the row says what its test could have found at **every** site: **could detect** "
        f"is the smallest true Δ its test finds with {settings.power:.0%} power at the level Holm tests that site "
        "at, from the variance and the share of changed outcomes it observed (docs/findings.md, *Power*). It is "
        f"`no effect` where that is at most {settings.detectable_effect:g} points at every site, or, in the modes "
        f"with an upper bound, at most {settings.detectable_share:.0%} of the bound at every site that has one "
        "(a site where self-patching restores nothing can carry nothing; with no such site the row says so), and "
        "`inconclusive` where it is more at one of them; the row shows the site that limits the claim. "
        "**Channel efficiency** (asymmetric and relay modes): Δ over the self-patch gain at the same site, the upper "
        "bound of any bridge; for the KV channel (methods `kv_*`, role `context`, sites `kv-<blocks sent>`), over "
        "the gain of the receiver's own cache of the sender's context (`kv_own`: the full-context prompt). "
        "**Sender uses it**: Δ of the sender's own score when its state at the translated layer "
        "is mean-ablated. **Receiver reads it**: Δ in how often counterfactual patching at the injection layer moves "
        "the receiver's answer. Points throughout.", "",
    ]
    header = ["method", "role", "condition", "verdict", "site (pair, α)", "Δ [CI]", "p (Holm)", "could detect",
              "upper bound", "channel efficiency", "sender uses it", "receiver reads it"]
    metrics = list(dict.fromkeys(frame["metric"].to_list()))
    for mode in sorted(frame["mode"].unique().to_list()):
        lines += [f"## mode `{mode}`", ""]
        for metric in metrics:
            cells = []
            for r in frame.filter(mode=mode, metric=metric).iter_rows(named=True):
                alpha = "" if r["alpha"] is None else f", α {r['alpha']:g}"
                efficiency = f"{r['channel_efficiency']:.0%}" if math.isfinite(r["channel_efficiency"]) else "n/a"
                cells.append([
                    r["method"], r["role"], r["condition"], f"**{r['verdict']}**",
                    f"{r['pair']}{alpha} (of {r['n_sites']})", points(r["delta"], r["ci_low"], r["ci_high"]),
                    f"{r['p_holm']:.2g}", detectable_cell(r), points(r["upper_bound"]),
                    efficiency, points(r["sender_ablation"], r["sender_ablation_low"], r["sender_ablation_high"]),
                    points(r["receiver_moved"], r["receiver_moved_low"], r["receiver_moved_high"])])
            if len(metrics) > 1:
                lines += [f"### {METRIC_TITLES[metric]}" + (" (headline)" if metric == settings.metric else ""), ""]
            lines += [*table_lines(header, cells), ""]
    return "\n".join(lines)
