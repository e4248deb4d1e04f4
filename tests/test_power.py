"""Planted power: simulated paired outcomes with a known effect, run through the pipeline's own statistics.

The detectable effect a verdict row reports must (1) match an independent analytic power calculation
(Connor's for McNemar's test) and (2) be found in about 80% of simulated experiments whose true effect is
that large, by the verdict's own test (the crossed bootstrap's p-value at the row's level).
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from scipy import optimize, special

from actbridge.stats.paired import StatsSettings, condition_statistics
from actbridge.stats.power import detectable_effect, effective_pairs, holm_level
from actbridge.stats.verdict import VerdictSettings, significant, site_power

SETTINGS = StatsSettings(resamples=100, hierarchical_resamples=1000, confidence=0.95, seed=0)
VERDICT = VerdictSettings(confidence=0.95, power=0.8)


def outcomes(rng: np.random.Generator, n: int, *, base: float, gained: float, lost: float, seeds: int,
             seeds_move_together: bool) -> dict[int, pa.Table]:
    """Per seed, injection rows of ``none`` and ``add`` on n examples: ``add`` turns a wrong answer right with
    probability ``gained`` and a right one wrong with ``lost`` (shares of all pairs), once for every seed where
    the seeds move together, independently per seed otherwise."""
    reference = rng.random(n) < base
    by_seed = {}
    draw = rng.random(n)
    for seed in range(seeds):
        if not seeds_move_together:
            draw = rng.random(n)
        # a wrong answer turns right with probability gained / (1 - base), a right one wrong with lost / base
        condition = np.where(reference, draw >= lost / base, draw < gained / (1 - base))
        ids = [f"eval-{i:06d}" for i in range(n)]
        by_seed[seed] = pa.table({
            "example_id": ids * 2, "mode": ["shared"] * 2 * n, "role": ["last"] * 2 * n,
            "condition": ["none"] * n + ["add"] * n, "alpha": pa.array([None] * n + [1.0] * n, pa.float64()),
            "exact_match": np.concatenate([reference, condition]), "gold_logprob": np.zeros(2 * n),
            "first_token_top": np.concatenate([reference, condition])})
    return by_seed


def across_row(by_seed: dict[int, pa.Table]) -> dict:
    _, across = condition_statistics(by_seed, "s1-r2", "ridge", settings=SETTINGS, twins={})
    return next(r for r in across.to_pylist() if r["metric"] == "accuracy")


def connor_detectable(n: int, discordance: float, level: float, power: float) -> float:
    """Connor (1987): McNemar's sample size n = (z_a √ψ + z_b √(ψ − δ²))² / δ², solved for δ."""
    z_a, z_b = special.ndtri(1 - level / 2), special.ndtri(power)
    return optimize.brentq(lambda d: (z_a * math.sqrt(discordance) + z_b * math.sqrt(discordance - d * d)) ** 2
                           / d ** 2 - n, 1e-4, math.sqrt(discordance) - 1e-9)


def test_the_level_is_the_one_holm_tests_the_row_at():
    assert holm_level(0.05, rank=1, family_size=10) == pytest.approx(0.005)
    assert holm_level(0.05, rank=10, family_size=10) == pytest.approx(0.05)


def test_with_no_changed_outcome_the_examples_alone_set_the_effect():
    """Nothing changed: no variance to read, so seeds count as one and an effect must flip about c answers."""
    assert effective_pairs(standard_error=0.0, discordance=0.0, delta=0.0, examples=500, seeds=5) == 500
    c = (special.ndtri(0.975) + special.ndtri(0.8)) ** 2
    assert detectable_effect(effective=500, discordance=0.0, level=0.05, power=0.8) == pytest.approx(1 / (500 / c + 1))


@pytest.mark.parametrize("seeds, together", [(1, True), (3, True), (3, False)])
def test_the_detectable_effect_matches_connor_and_is_found_four_times_in_five(seeds, together):
    rng = np.random.default_rng(7)
    n, discordance = 400, 0.2
    # the effect each of 15 null experiments reports; one alone carries the noise of its own standard error
    # (with 3 independent seeds, about 10%), so the simulations use their median
    reported = [site_power(across_row(outcomes(rng, n, base=0.5, gained=discordance / 2, lost=discordance / 2,
                                               seeds=seeds, seeds_move_together=together)), VERDICT)
                for _ in range(15)]
    level, detectable = reported[0][0], float(np.median([effect for _, effect in reported]))
    assert level == pytest.approx(0.05)
    if together:  # seeds that move together are as many pairs as one seed: McNemar's test on n pairs
        assert detectable == pytest.approx(connor_detectable(n, discordance, 0.05, 0.8), rel=0.10)
    else:  # independent seeds add pairs, but the crossed bootstrap also resamples the seeds, so fewer than n x seeds
        assert connor_detectable(seeds * n, discordance, 0.05, 0.8) < detectable < connor_detectable(
            n, discordance, 0.05, 0.8)
    found = 0
    simulations = 300
    for _ in range(simulations):
        row = across_row(outcomes(rng, n, base=0.5, gained=(discordance + detectable) / 2,
                                  lost=(discordance - detectable) / 2, seeds=seeds, seeds_move_together=together))
        found += significant({**row, "p_holm": row["p_value"]}, level) > 0
    assert 0.72 <= found / simulations <= 0.88


def test_a_test_that_saw_no_change_still_finds_its_detectable_effect():
    """ψ = 0: the reported effect is conservative (an effect that size flips answers in one direction only)."""
    rng = np.random.default_rng(3)
    observed = across_row(outcomes(rng, 300, base=0.3, gained=0.0, lost=0.0, seeds=2, seeds_move_together=True))
    assert observed["discordance"] == 0.0
    level, detectable = site_power(observed, VERDICT)
    found = sum(significant({**row, "p_holm": row["p_value"]}, level) > 0 for row in (
        across_row(outcomes(rng, 300, base=0.3, gained=detectable, lost=0.0, seeds=2, seeds_move_together=True))
        for _ in range(100)))
    assert found >= 80


def test_tied_p_values_share_the_first_rank_of_their_tie():
    import polars as pl

    from actbridge.stats.paired import with_holm

    frame = pl.DataFrame({"family": ["a"] * 5 + ["b"], "p_value": [0.01, 1.0, 0.2, 1.0, 1.0, 0.5]})
    ranked = with_holm(frame, ["family"], ranks=True)
    assert ranked["holm_rank"].to_list() == [1, 3, 2, 3, 3, 1]
    assert ranked["family_size"].to_list() == [5, 5, 5, 5, 5, 1]


def test_the_metrics_a_verdict_may_rest_on_are_the_schemas_and_a_typo_is_a_config_error():
    import yaml

    from actbridge.catalog import load_schema, validate_config
    from actbridge.config import ConfigError
    from actbridge.stats.paired import BINARY_METRICS, METRICS

    assert load_schema()["properties"]["stats"]["properties"]["metric"]["enum"] == list(BINARY_METRICS)
    assert set(BINARY_METRICS) <= set(METRICS)
    config = yaml.safe_load(open("config/config.yaml", encoding="utf-8"))
    config["stats"] = {"metric": "logprob"}
    with pytest.raises(ConfigError, match="stats.metric"):
        validate_config(config)


def test_a_heavy_tailed_bootstrap_widens_the_bound_and_a_normal_one_does_not():
    from actbridge.stats.power import tail_factor

    z = special.ndtri(0.975)
    assert tail_factor(low=-z * 0.01, high=z * 0.01, standard_error=0.01, confidence=0.95) == pytest.approx(1.0)
    assert tail_factor(low=-0.03, high=0.03, standard_error=0.01, confidence=0.95) == pytest.approx(0.06 / (2 * z * 0.01))
    assert tail_factor(low=0.0, high=0.0, standard_error=0.0, confidence=0.95) == 1.0  # nothing to read
    wide = detectable_effect(effective=400, discordance=0.2, level=0.05, power=0.8, tails=1.5)
    assert wide > detectable_effect(effective=400, discordance=0.2, level=0.05, power=0.8)
