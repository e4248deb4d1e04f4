"""Statistics on planted injection results: known effects, known nulls, and agreement with scipy's BCa."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats as scipy_stats

from actbridge.injection.conditions import CONDITIONS, rescaled_twins
from actbridge.schemas import RESULT_SCHEMA
from actbridge.stats.paired import (StatsSettings, bca_intervals, bootstrap_means, condition_statistics, crossed_bootstrap, holm,
                                  mcnemar_exact, paired_outcomes, resample_counts)
from actbridge.stats.summaries import stats_markdown


@pytest.mark.parametrize("kind", ["binary", "skewed"])
def test_bca_matches_scipy(kind):
    rng = np.random.default_rng(0)
    n = 300
    if kind == "binary":  # paired accuracy differences in {-1, 0, 1}
        differences = rng.choice([-1.0, 0.0, 1.0], size=n, p=[0.1, 0.7, 0.2])
    else:
        differences = rng.exponential(1.0, size=n) - 0.8
    boot = bootstrap_means(differences[:, None], 40_000, np.random.default_rng(1))
    low, high, method = bca_intervals(differences[:, None], boot, 0.95)
    reference = scipy_stats.bootstrap((differences,), np.mean, n_resamples=40_000, method="BCa",
                                      confidence_level=0.95, random_state=np.random.default_rng(2)).confidence_interval
    width = reference.high - reference.low
    assert method[0] == "BCa"
    assert low[0] == pytest.approx(reference.low, abs=0.03 * width)
    assert high[0] == pytest.approx(reference.high, abs=0.03 * width)


def test_bca_of_constant_differences_is_that_constant():
    differences = np.stack([np.zeros(50), np.full(50, 0.5)], axis=1)
    low, high, method = bca_intervals(differences, bootstrap_means(differences, 200, np.random.default_rng(0)), 0.95)
    assert list(low) == [0.0, 0.5] and list(high) == [0.0, 0.5]
    assert list(method) == ["degenerate", "degenerate"]


def test_resample_counts_draw_n_items_per_resample():
    counts = resample_counts(7, 1000, np.random.default_rng(0))
    assert counts.shape == (1000, 7) and np.all(counts.sum(axis=1) == 7)
    assert counts.mean() == pytest.approx(1.0, abs=0.05)


def test_holm_by_hand():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> monotone 0.02, 0.03, 0.06, 0.06
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm([0.5, 0.9]), [1.0, 1.0])  # monotone: never below a smaller p's


def test_exact_mcnemar():
    reference = np.array([True] * 6 + [False] * 4)
    worse = np.array([False] * 6 + [False] * 4)  # six lost, none gained
    assert mcnemar_exact(reference, worse) == pytest.approx(2 * 0.5 ** 6)
    assert mcnemar_exact(reference, reference) == 1.0


def test_crossed_bootstrap_carries_the_seed_variance():
    """Seeds that disagree (+-1) make the across-seed interval wide even when examples agree perfectly."""
    n, seeds = 200, 4
    differences = np.tile(np.array([-1.0, 1.0, -1.0, 1.0])[None, :, None], (n, 1, 1))
    boot = crossed_bootstrap(differences, 4000, np.random.default_rng(0))[:, 0]
    assert boot.std() == pytest.approx(0.5, rel=0.1)  # sd of the mean of 4 draws of +-1
    only_examples = crossed_bootstrap(np.zeros((n, seeds, 1)) + np.random.default_rng(1).normal(size=(n, 1, 1)),
                                      4000, np.random.default_rng(0))[:, 0]
    assert only_examples.std() == pytest.approx(1 / np.sqrt(n), rel=0.15)  # examples shared by every seed


def planted_results(seed: int, n: int = 400, gain: int = 40) -> pa.Table:
    """Baseline right on even examples; ``add`` also gets ``gain`` odd ones right; ``random`` changes nothing;
    ``add_rescaled`` loses 20 of the baseline's right answers."""
    rows = []
    for i in range(n):
        base = i % 2 == 0
        outcomes = {("none", None): base, ("add", 0.5): base or (i % 2 == 1 and i < 2 * gain),
                    ("add_rescaled", 0.5): base and i >= 40, ("random", 0.5): base}
        for (condition, alpha), right in outcomes.items():
            rows.append({"example_id": f"e{i:04d}", "mode": "shared", "hops": 2, "role": "last",
                         "condition": condition, "alpha": alpha, "exact_match": right,
                         "gold_logprob": (-0.5 if right else -2.0) + 0.001 * seed, "gold_rank": 1 if right else 2,
                         "n_candidates": 4, "h_norm": 1.0, "b_norm": 1.0, "cos_hb": 0.0, "perturbation": 0.1})
    return pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)


@pytest.fixture(scope="module")
def planted_stats():
    settings = StatsSettings(resamples=2000, hierarchical_resamples=1000)
    return condition_statistics({0: planted_results(0), 1: planted_results(1)}, "s1-r2", "ridge", settings=settings,
                                twins=rescaled_twins())


def test_a_planted_gain_is_found_and_a_planted_null_is_not(planted_stats):
    per_seed, across = planted_stats
    rows = {(r["seed"], r["condition"], r["reference"], r["metric"]): r for r in per_seed.to_pylist()}
    for seed in (0, 1):
        gain = rows[(seed, "add", "none", "accuracy")]
        assert gain["delta"] == pytest.approx(0.1) and gain["ci_low"] > 0 and gain["p_holm"] < 1e-6
        assert gain["ci_low"] < 0.1 < gain["ci_high"]
        null = rows[(seed, "random", "none", "accuracy")]
        assert null["delta"] == 0 and null["ci_low"] == 0 == null["ci_high"] and null["p_value"] == 1.0
        assert null["ci_method"] == "degenerate"
        loss = rows[(seed, "add_rescaled", "none", "accuracy")]
        assert loss["delta"] == pytest.approx(-20 / 400) and loss["ci_high"] < 0
        rescaling = rows[(seed, "add_rescaled", "add", "accuracy")]  # the reviewer's comparison
        assert rescaling["delta"] == pytest.approx(-0.15) and rescaling["family"] == "rescaled_vs_unscaled"
    summary = {(r["condition"], r["reference"], r["metric"]): r for r in across.to_pylist()}
    gain = summary[("add", "none", "accuracy")]
    assert gain["n_seeds"] == 2 and gain["delta"] == pytest.approx(0.1)
    assert gain["t_low"] == pytest.approx(0.1) == gain["t_high"]  # identical seeds: no seed variance
    assert 0 < gain["boot_low"] < 0.1 < gain["boot_high"] and gain["p_holm"] < 0.05
    assert summary[("random", "none", "accuracy")]["p_value"] == 1.0


def test_holm_families_are_per_seed_metric_and_kind(planted_stats):
    per_seed, _ = planted_stats
    rows = [r for r in per_seed.to_pylist() if r["seed"] == 0 and r["metric"] == "accuracy"
            and r["family"] == "vs_baseline"]
    np.testing.assert_allclose([r["p_holm"] for r in rows], holm([r["p_value"] for r in rows]))


def test_summary_states_which_side_of_zero(planted_stats):
    _, across = planted_stats
    text = stats_markdown(across, 0.95, formulas={c.name: c.formula for c in CONDITIONS.values()})
    assert "| add | 0.5 | +10.00 [" in text and "] > 0 |" in text
    assert "| random | 0.5 | +0.00 [+0.00, +0.00] crosses 0 |" in text
    assert "| add_rescaled − add | 0.5 | -15.00 [" in text


def test_incomplete_results_are_an_error():
    table = planted_results(0)
    keep = [not (r["condition"] == "add" and r["example_id"] == "e0003") for r in table.to_pylist()]
    with pytest.raises(ValueError, match="does not cover"):
        paired_outcomes(table.filter(pa.array(keep)), "last", "shared")
