"""Paired statistics of injection results: every condition against its reference, per seed and across seeds.

A *contrast* compares a condition with a reference condition on the same
examples: each condition against ``none`` (the baseline), and each
norm-rescaled condition against its unscaled twin at the same α
(``add_rescaled`` − ``add``, ``replace_rescaled`` − ``replace``: the
comparison the reviewer asked for). Two metrics: exact-match accuracy and
the gold answer's log-probability.

Per seed (one bridge fit): the mean paired difference with a BCa bootstrap
interval; an exact McNemar test for accuracy and a paired t-test for
log-probability; Holm's correction across the contrasts of one family (one
pair, method, seed, role, mode, metric and reference kind); the effect size
d_z = mean / sd of the differences.

Across seeds: the mean of the per-seed differences with a t-interval over
seeds (variation between bridge fits only), and a crossed (seed × example)
bootstrap. Every seed is evaluated on the *same* eval examples, so one
resample draws seeds and examples independently and applies the same
example draw to each drawn seed: the example effect is shared between seeds,
and resampling examples separately per seed would treat it as independent
and understate it.

Speed: within a (role, mode) every seed and contrast pairs the same examples,
so one matrix of resample counts serves them all and every bootstrap
distribution is one matrix product, ``counts @ differences``. BCa needs the
jackknife, which for a mean is closed form. :func:`bca_intervals` reproduces
``scipy.stats.bootstrap(method="BCa")`` (tested) at a small fraction of its
cost for hundreds of contrasts (``benchmarks/bootstrap_intervals.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

# scipy is imported inside the functions that run it: importing scipy.stats costs 2 s, and the workflow imports
# this module for StatsSettings alone each time it builds its DAG (once per job on a cluster).

from actbridge.schemas import BASELINE
from actbridge.config import default_of
from actbridge.markdown import to_arrow

@dataclass(frozen=True)
class StatsSettings:
    """``stats.*`` of the config."""

    resamples: int = field(default_factory=default_of("stats.resamples"))
    hierarchical_resamples: int = field(default_factory=default_of("stats.hierarchical_resamples"))
    confidence: float = field(default_factory=default_of("stats.confidence"))
    seed: int = field(default_factory=default_of("stats.seed"))

    @classmethod
    def from_config(cls, stats: dict) -> "StatsSettings":
        return cls(int(stats["resamples"]), int(stats["hierarchical_resamples"]), float(stats["confidence"]),
                   int(stats["seed"]))

    @staticmethod
    def keys_of(stats: dict) -> dict:
        """The ``stats.*`` keys these settings read: the params of the jobs that compute statistics, so that
        a key only the verdict reads (``stats.metric``, the power keys) reruns the verdict alone."""
        return {key: stats[key] for key in ("resamples", "hierarchical_resamples", "confidence", "seed")}



# metric -> its per-example column; every binary metric gets exact McNemar, `logprob` a paired t-test
METRICS = {"accuracy": "exact_match", "logprob": "gold_logprob", "first_token": "first_token_top"}
# the right/wrong metrics, in points: the ones a verdict may rest on (`stats.metric`)
BINARY_METRICS: tuple[str, ...] = ("accuracy", "first_token")


@dataclass(frozen=True)
class Contrast:
    """``condition`` at ``alpha`` minus ``reference`` at ``reference_alpha``, paired by example."""

    condition: str
    alpha: float | None
    reference: str
    reference_alpha: float | None

    @property
    def family(self) -> str:
        """Holm families: contrasts against the baseline, and rescaled-vs-unscaled contrasts."""
        return "vs_baseline" if self.reference == BASELINE else "rescaled_vs_unscaled"


# ---------------------------------------------------------------------------- resampling


RESAMPLE_CHUNK = 1000  # resamples drawn at once: bounds the [chunk, n] count matrix whatever B is


def resample_counts(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """[resamples, n] float64: how often each of n items is drawn in each bootstrap resample."""
    draws = rng.integers(0, n, size=(resamples, n))
    flat = (draws + n * np.arange(resamples)[:, None]).ravel()
    return np.bincount(flat, minlength=resamples * n).reshape(resamples, n).astype(np.float64)


def bootstrap_means(differences: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """[resamples, k] bootstrap distribution of the column means of ``differences`` [n, k].

    Every column is resampled with the same draws of rows (the rows are the
    same examples), so all k distributions cost one matrix product per chunk.
    """
    n = differences.shape[0]
    out = np.empty((resamples, differences.shape[1]))
    for begin in range(0, resamples, RESAMPLE_CHUNK):
        size = min(RESAMPLE_CHUNK, resamples - begin)
        out[begin:begin + size] = resample_counts(n, size, rng) @ differences / n
    return out


def bca_intervals(differences: np.ndarray, boot: np.ndarray, confidence: float
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BCa intervals of the mean of each column of ``differences`` [n, k], from its bootstrap means ``boot`` [B, k].

    Returns (low [k], high [k], method [k] of str): ``BCa``; ``degenerate``
    where every difference is the same (the interval is that value); or
    ``percentile`` where BCa is undefined (every resample on one side of the
    estimate).
    """
    from scipy import special

    estimate = differences.mean(axis=0)  # [k]
    # bias correction, as scipy: the mean of the strict and the weak percentile of the estimate
    below = (np.sum(boot < estimate, axis=0) + np.sum(boot <= estimate, axis=0)) / (2 * len(boot))
    z0 = special.ndtri(below)
    # acceleration from the jackknife; for the mean, theta_(i) - mean(theta_(.)) = -(x_i - mean) / (n - 1)
    centred = differences - estimate
    squares = np.sum(centred ** 2, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        acceleration = np.sum(centred ** 3, axis=0) / (6 * squares ** 1.5)
    tail = (1 - confidence) / 2
    z = special.ndtri(np.array([tail, 1 - tail]))[:, None]  # [2, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        levels = special.ndtr(z0 + (z0 + z) / (1 - acceleration * (z0 + z)))  # [2, k]
    method = np.where(np.isfinite(levels).all(axis=0), "BCa", "percentile")
    levels = np.where(np.isfinite(levels), levels, np.array([[tail], [1 - tail]]))
    low = np.array([np.percentile(boot[:, j], 100 * levels[0, j]) for j in range(boot.shape[1])])
    high = np.array([np.percentile(boot[:, j], 100 * levels[1, j]) for j in range(boot.shape[1])])
    flat = squares == 0
    low[flat], high[flat] = estimate[flat], estimate[flat]
    method = np.where(flat, "degenerate", method)
    return low, high, method


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control), in the input's order.

    The i-th smallest p becomes max over j <= i of (m - j) p_(j), capped at 1.
    """
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(np.maximum.accumulate((m - np.arange(m)) * p[order]), 1.0)
    return adjusted


def mcnemar_exact(reference_correct: np.ndarray, condition_correct: np.ndarray) -> float:
    """Two-sided exact McNemar p-value: a binomial test on the discordant pairs."""
    from scipy import stats as scipy_stats

    gained = int(np.sum(~reference_correct & condition_correct))
    lost = int(np.sum(reference_correct & ~condition_correct))
    if gained + lost == 0:
        return 1.0
    return float(scipy_stats.binomtest(gained, gained + lost, 0.5).pvalue)


def paired_t(differences: np.ndarray) -> float:
    """Two-sided p-value of a one-sample t-test of the differences against 0 (1 when they are all equal)."""
    from scipy import stats as scipy_stats

    if np.ptp(differences) == 0:
        return 1.0 if differences[0] == 0 else 0.0
    return float(scipy_stats.ttest_1samp(differences, 0.0).pvalue)


def paired_test(metric: str, reference: np.ndarray, condition: np.ndarray) -> tuple[str, float]:
    """(test name, two-sided p) of condition against reference on the same examples: exact McNemar for a
    right/wrong outcome, a paired t-test of the differences for a log-probability."""
    if metric == "logprob":
        return "paired_t", paired_t(np.asarray(condition, np.float64) - np.asarray(reference, np.float64))
    return "mcnemar_exact", mcnemar_exact(np.asarray(reference).astype(bool), np.asarray(condition).astype(bool))


def effect_size(differences: np.ndarray) -> float:
    """d_z: mean over standard deviation of the paired differences (NaN when they do not vary)."""
    sd = differences.std(ddof=1) if len(differences) > 1 else 0.0
    return float(differences.mean() / sd) if sd > 0 else float("nan")


PAIRED_COLUMNS = {"n": pl.Int64, "reference_value": pl.Float64, "value": pl.Float64, "delta": pl.Float64,
                  "ci_low": pl.Float64, "ci_high": pl.Float64, "ci_method": pl.String, "test": pl.String,
                  "p_value": pl.Float64, "effect_size": pl.Float64}


def paired_statistics(pairs: Sequence[tuple[np.ndarray, np.ndarray]], metrics: Sequence[str], *, resamples: int,
                      confidence: float, rng: np.random.Generator) -> tuple[pl.DataFrame, np.ndarray]:
    """Every paired contrast of one set of examples, with one bootstrap shared by all of them.

    ``pairs[j]`` is (reference [n], condition [n]) of contrast j, in metric ``metrics[j]`` (``logprob``: a
    paired t-test; any other, a right/wrong outcome: exact McNemar). Returns one row per contrast
    (:data:`PAIRED_COLUMNS`: the mean of each side, Δ with its BCa interval from ``resamples`` draws of
    ``rng``, the test and its p-value, d_z), and the differences [n, k]. The per-seed statistics and the
    causal profiles both go through here, so they draw from ``rng`` alike.
    """
    reference = [np.asarray(r, dtype=np.float64) for r, _ in pairs]
    condition = [np.asarray(c, dtype=np.float64) for _, c in pairs]
    differences = np.stack([c - r for r, c in zip(reference, condition)], axis=1)  # [n, k]
    boot = bootstrap_means(differences, resamples, rng)
    low, high, method = bca_intervals(differences, boot, confidence)
    tests = [paired_test(metric, r, c) for metric, r, c in zip(metrics, reference, condition)]
    columns = range(differences.shape[1])
    frame = pl.DataFrame({
        "n": [len(differences)] * len(columns), "reference_value": [float(r.mean()) for r in reference],
        "value": [float(c.mean()) for c in condition], "delta": [float(differences[:, j].mean()) for j in columns],
        "ci_low": low.astype(np.float64), "ci_high": high.astype(np.float64), "ci_method": method.astype(str),
        "test": [test for test, _ in tests], "p_value": [p_value for _, p_value in tests],
        "effect_size": [effect_size(differences[:, j]) for j in columns]}, schema=PAIRED_COLUMNS)
    return frame, differences


# ---------------------------------------------------------------------------- from injection rows


def contrasts_for(labels: Sequence[tuple[str, float | None]], twins: Mapping[str, str]) -> list[Contrast]:
    """Every label against the baseline, and rescaled conditions against their unscaled twins (``twins``:
    rescaled condition -> unscaled, :func:`actbridge.injection.conditions.rescaled_twins`)."""
    present = set(labels)
    out = [Contrast(c, a, BASELINE, None) for c, a in labels if c != BASELINE]
    for condition, alpha in labels:
        twin = twins.get(condition)
        if twin is not None and (twin, alpha) in present:
            out.append(Contrast(condition, alpha, twin, alpha))
    return out


@dataclass
class PairedOutcomes:
    """Outcomes of every label for one seed, role and mode, on a common, ordered set of examples."""

    example_ids: list[str]
    outcomes: dict[tuple[str, float | None], dict[str, np.ndarray]]  # label -> metric -> [n]

    def difference(self, contrast: Contrast, metric: str) -> np.ndarray:
        column = METRICS[metric]
        condition = self.outcomes[(contrast.condition, contrast.alpha)][column]
        reference = self.outcomes[(contrast.reference, contrast.reference_alpha)][column]
        return condition.astype(np.float64) - reference.astype(np.float64)


def paired_outcomes(results: pa.Table, role: str, mode: str, example_ids: Sequence[str] | None = None
                    ) -> PairedOutcomes:
    """Pivot injection rows of one role and mode to label -> metric -> [examples].

    ``example_ids`` fixes the order (and every label must cover it); by
    default the examples of the baseline rows, sorted.
    """
    subset = results.filter(pc.and_(pc.equal(results.column("role"), role), pc.equal(results.column("mode"), mode)))
    ids = np.asarray(subset.column("example_id").to_pylist(), dtype=object)
    conditions = np.asarray(subset.column("condition").to_pylist(), dtype=object)
    alphas = subset.column("alpha").to_numpy(zero_copy_only=False).astype(np.float64)  # null -> NaN
    values = {column: subset.column(column).to_numpy(zero_copy_only=False) for column in METRICS.values()}
    # in order of first appearance: the order of the configured conditions and alphas
    labels = list(dict.fromkeys((c, None if np.isnan(a) else float(a)) for c, a in zip(conditions, alphas)))
    if (BASELINE, None) not in labels:
        raise ValueError(f"no baseline ('{BASELINE}') rows for role {role!r}, mode {mode!r}")
    if example_ids is None:
        example_ids = sorted(ids[conditions == BASELINE])
    position = {example_id: i for i, example_id in enumerate(example_ids)}
    outcomes = {}
    for condition, alpha in labels:
        rows = np.flatnonzero((conditions == condition) & (np.isnan(alphas) if alpha is None else alphas == alpha))
        where = np.asarray([position.get(example_id, -1) for example_id in ids[rows]], dtype=np.int64)
        if len(set(where[where >= 0].tolist())) != len(position):
            raise ValueError(f"condition {condition!r} (alpha {alpha}) does not cover the baseline's "
                             f"{len(position)} examples (role {role!r}, mode {mode!r}): the results are incomplete")
        outcomes[(condition, alpha)] = {}
        for column, array in values.items():
            ordered = np.empty(len(position), dtype=array.dtype)
            ordered[where[where >= 0]] = array[rows][where >= 0]
            outcomes[(condition, alpha)][column] = ordered
    return PairedOutcomes(list(example_ids), outcomes)


def injection_rows_problem(rows: pa.Table, examples: pa.Table, *, roles: Sequence[str],
                           labels: Sequence[tuple[str, float | None]]) -> str | None:
    """What one injection job's rows lack against the eval ``examples`` and the configured ``roles`` and
    (condition, alpha) ``labels``; ``None`` when they cover all of it.

    Every eval row (example, mode) has baseline rows, no row is of an example outside eval, every role and
    label occurs, and within each role and mode every label covers exactly the baseline's examples (the pairing
    the statistics rely on).
    """
    expected = set(zip(examples.column("example_id").to_pylist(), examples.column("mode").to_pylist()))
    conditions = rows.column("condition").to_pylist()
    keys = list(zip(rows.column("example_id").to_pylist(), rows.column("mode").to_pylist()))
    baseline = {key for key, condition in zip(keys, conditions) if condition == BASELINE}
    if missing := sorted(expected - baseline):
        return (f"lacks the baseline rows of {len(missing)} of the {len(expected)} eval (example, mode) rows "
                f"(first: {missing[:3]})")
    if foreign := sorted(set(keys) - expected):
        return f"holds rows of {len(foreign)} (example, mode) pairs that are not in eval (first: {foreign[:3]})"
    if absent := sorted(set(roles) - set(rows.column("role").to_pylist())):
        return f"has no rows of the roles {absent}"
    alphas = [None if alpha is None else float(alpha) for alpha in rows.column("alpha").to_pylist()]
    present = set(zip(conditions, alphas))
    if absent := [label for label in labels if label not in present]:
        return f"has no rows of the (condition, alpha) labels {absent}"
    for role, mode in _groups(rows):
        try:
            paired_outcomes(rows, role, mode)
        except ValueError as error:
            return str(error)
    return None


def _groups(results: pa.Table) -> list[tuple[str, str]]:
    pairs = zip(results.column("role").to_pylist(), results.column("mode").to_pylist())
    return sorted(set(pairs))


PER_SEED_SCHEMA = pa.schema([
    ("pair", pa.string()), ("method", pa.string()), ("seed", pa.int32()), ("role", pa.string()),
    ("mode", pa.string()), ("family", pa.string()), ("condition", pa.string()), ("alpha", pa.float64()),
    ("reference", pa.string()), ("metric", pa.string()), ("n", pa.int64()), ("reference_value", pa.float64()),
    ("value", pa.float64()), ("delta", pa.float64()), ("ci_low", pa.float64()), ("ci_high", pa.float64()),
    ("ci_method", pa.string()), ("test", pa.string()), ("p_value", pa.float64()), ("p_holm", pa.float64()),
    ("effect_size", pa.float64()),
])

ACROSS_SEEDS_SCHEMA = pa.schema([
    ("pair", pa.string()), ("method", pa.string()), ("role", pa.string()), ("mode", pa.string()),
    ("family", pa.string()), ("condition", pa.string()), ("alpha", pa.float64()), ("reference", pa.string()),
    ("metric", pa.string()), ("n_seeds", pa.int32()), ("n", pa.int64()), ("delta", pa.float64()),
    ("seed_sd", pa.float64()), ("t_low", pa.float64()), ("t_high", pa.float64()), ("boot_low", pa.float64()),
    ("boot_high", pa.float64()), ("p_value", pa.float64()), ("p_holm", pa.float64()),
    # what the power of the verdict's test is computed from (actbridge.stats.power): the standard deviation of
    # the crossed bootstrap, the share of (example, seed) cells whose outcome the condition changed (binary
    # metrics; NaN for logprob), and the row's place in its Holm family (1 = smallest p) and that family's size
    ("boot_se", pa.float64()), ("discordance", pa.float64()), ("holm_rank", pa.int32()),
    ("family_size", pa.int32()),
])


def with_holm(frame: pl.DataFrame, keys: Sequence[str], *, ranks: bool = False) -> pl.DataFrame:
    """``frame`` with ``p_holm`` filled within each family (rows sharing ``keys``), in the rows' order; with
    ``ranks``, also each row's ``holm_rank`` and its ``family_size``: Holm tests the r-th smallest of m p-values
    at level α / (m − r + 1). Tied p-values share the first rank of their tie (1 + how many p-values of the
    family are smaller): Holm's order among ties is arbitrary, and a row whose true effect were larger would
    move ahead of them, not behind."""
    families = frame.with_row_index("_row").group_by(keys, maintain_order=True).agg("_row", "p_value")
    adjusted = np.full(frame.height, np.nan)
    rank = np.zeros(frame.height, dtype=np.int32)
    size = np.zeros(frame.height, dtype=np.int32)
    for rows, p_values in families.select("_row", "p_value").iter_rows():
        adjusted[rows] = holm(p_values)
        family = np.nan_to_num(np.asarray(p_values, dtype=float), nan=np.inf)
        rank[rows] = 1 + np.searchsorted(np.sort(family), family, side="left")
        size[rows] = len(rows)
    frame = frame.with_columns(p_holm=pl.Series(adjusted, dtype=pl.Float64))
    if ranks:
        frame = frame.with_columns(holm_rank=pl.Series(rank, dtype=pl.Int32),
                                   family_size=pl.Series(size, dtype=pl.Int32))
    return frame


def condition_statistics(results_by_seed: dict[int, pa.Table], pair: str, method: str, *,
                         settings: StatsSettings, twins: Mapping[str, str]) -> tuple[pa.Table, pa.Table]:
    """(per-seed table, across-seeds table) for one layer pair and bridge method.

    ``results_by_seed[seed]`` holds that seed's injection rows (see
    :mod:`actbridge.injection.jobs`). Seeds must cover the same examples per role and mode. ``twins``: each
    norm-rescaled condition's unscaled twin (the registry's declarations, passed in: statistics import no
    registry, so a newly configured condition reruns no causal job).
    """
    seeds = sorted(results_by_seed)
    per_seed: list[pl.DataFrame] = []
    across: list[pl.DataFrame] = []
    rng = np.random.Generator(np.random.PCG64(settings.seed))
    groups = sorted(set().union(*(_groups(table) for table in results_by_seed.values())))
    for role, mode in groups:
        first = paired_outcomes(results_by_seed[seeds[0]], role, mode)
        outcomes = {seed: first if seed == seeds[0] else
                    paired_outcomes(results_by_seed[seed], role, mode, first.example_ids) for seed in seeds}
        contrasts = contrasts_for(list(first.outcomes), twins)
        if not contrasts:
            continue
        n = len(first.example_ids)
        # differences [n, seeds x contrasts x metrics], column order (seed, contrast, metric)
        columns = [(seed, contrast, metric) for seed in seeds for contrast in contrasts for metric in METRICS]
        sides = [(outcomes[s].outcomes[(c.reference, c.reference_alpha)][METRICS[m]],
                  outcomes[s].outcomes[(c.condition, c.alpha)][METRICS[m]]) for s, c, m in columns]
        statistics, differences = paired_statistics(sides, [m for _, _, m in columns], resamples=settings.resamples,
                                                    confidence=settings.confidence, rng=rng)
        per_seed.append(pl.DataFrame({
            "pair": pair, "method": method, "seed": [s for s, _, _ in columns], "role": role, "mode": mode,
            "family": [c.family for _, c, _ in columns], "condition": [c.condition for _, c, _ in columns],
            "alpha": pl.Series([c.alpha for _, c, _ in columns], dtype=pl.Float64),
            "reference": [c.reference for _, c, _ in columns], "metric": [m for _, _, m in columns],
        }).hstack(statistics))
        across.append(_across_seed_rows(differences.reshape(n, len(seeds), len(contrasts) * len(METRICS)),
                                        [(c, m) for c in contrasts for m in METRICS], pair, method, role, mode,
                                        settings=settings, rng=rng))
    if not per_seed:
        return PER_SEED_SCHEMA.empty_table(), ACROSS_SEEDS_SCHEMA.empty_table()
    per_seed_frame = with_holm(pl.concat(per_seed), ["pair", "method", "seed", "role", "mode", "metric", "family"])
    across_frame = with_holm(pl.concat(across), ["pair", "method", "role", "mode", "metric", "family"], ranks=True)
    return to_arrow(per_seed_frame, PER_SEED_SCHEMA), to_arrow(across_frame, ACROSS_SEEDS_SCHEMA)


def crossed_bootstrap(differences: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap distribution [B, k] of the grand mean of ``differences`` [n examples, S seeds, k].

    Each resample draws S seeds and n examples with replacement, independently,
    and averages the drawn examples over the drawn seeds.
    """
    n, n_seeds, k = differences.shape
    flat = differences.reshape(n, n_seeds * k)
    out = np.empty((resamples, k))
    for begin in range(0, resamples, RESAMPLE_CHUNK):
        size = min(RESAMPLE_CHUNK, resamples - begin)
        per_seed_means = (resample_counts(n, size, rng) @ flat / n).reshape(size, n_seeds, k)
        seed_weights = resample_counts(n_seeds, size, rng) / n_seeds  # [size, S]
        out[begin:begin + size] = np.einsum("bs,bsk->bk", seed_weights, per_seed_means)
    return out


def _across_seed_rows(differences: np.ndarray, columns: list[tuple[Contrast, str]], pair: str, method: str,
                      role: str, mode: str, *, settings: StatsSettings, rng: np.random.Generator) -> pl.DataFrame:
    """``differences`` [n, S, k]: per-seed means with a t-interval, and the crossed bootstrap."""
    from scipy import stats as scipy_stats

    n, n_seeds, _ = differences.shape
    seed_means = differences.mean(axis=0)  # [S, k]
    grand = seed_means.mean(axis=0)
    sd = seed_means.std(axis=0, ddof=1) if n_seeds > 1 else np.full(len(grand), np.nan)
    if n_seeds > 1:
        half = scipy_stats.t.ppf(0.5 + settings.confidence / 2, n_seeds - 1) * sd / np.sqrt(n_seeds)
    else:
        half = np.full(len(grand), np.nan)
    boot = crossed_bootstrap(differences, settings.hierarchical_resamples, rng)
    tail = (1 - settings.confidence) / 2
    boot_low, boot_high = np.quantile(boot, [tail, 1 - tail], axis=0)
    b = len(boot)
    p_boot = np.minimum(1.0, 2 * np.minimum((1 + np.sum(boot <= 0, axis=0)) / (b + 1),
                                            (1 + np.sum(boot >= 0, axis=0)) / (b + 1)))
    flat = np.all(differences == differences[:1, :1, :], axis=(0, 1))
    p_boot = np.where(flat & (grand == 0), 1.0, p_boot)
    binary = np.asarray([metric in BINARY_METRICS for _, metric in columns])
    discordance = np.where(binary, np.abs(differences).mean(axis=(0, 1)), np.nan)
    return pl.DataFrame({
        "pair": pair, "method": method, "role": role, "mode": mode,
        "family": [contrast.family for contrast, _ in columns],
        "condition": [contrast.condition for contrast, _ in columns],
        "alpha": pl.Series([contrast.alpha for contrast, _ in columns], dtype=pl.Float64),
        "reference": [contrast.reference for contrast, _ in columns], "metric": [metric for _, metric in columns],
        "n_seeds": n_seeds, "n": n, "delta": grand, "seed_sd": sd, "t_low": grand - half, "t_high": grand + half,
        "boot_low": boot_low, "boot_high": boot_high, "p_value": p_boot.astype(np.float64), "p_holm": np.nan,
        "boot_se": boot.std(axis=0, ddof=1) if b > 1 else np.full(len(grand), np.nan),
        "discordance": discordance,
    }).with_columns(pl.col("n_seeds").cast(pl.Int32), pl.col("n").cast(pl.Int64))
