"""cca: a planted linear relation between two random spaces is recovered."""

from __future__ import annotations

import numpy as np

from actbridge.bridges.maps import Moments
from actbridge.bridges.methods import BRIDGE_METHODS
from actbridge.bridges.methods.cca import cca_weights
from tests.test_bridges import fit


def planted(rank, n=3000, d_s=12, d_r=10, noise=0.05, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d_s)) * rng.uniform(0.5, 2.0, size=d_s)
    relation = rng.normal(size=(d_s, rank)) @ rng.normal(size=(rank, d_r))
    return x, x @ relation + noise * rng.normal(size=(n, d_r)), relation


def test_a_planted_low_rank_relation_is_recovered():
    x, y, relation = planted(rank=3)
    bridge = fit("cca", x, y, dict(subsample=1.0, rank=3))
    assert bridge.info["rank"] == 3
    correlations = bridge.info["canonical_correlations"]
    assert min(correlations) > 0.99  # three shared directions, almost noiseless
    # in raw space the fitted map predicts held-out rows as the planted relation does
    rng = np.random.default_rng(5)
    fresh = rng.normal(size=(200, x.shape[1])) * x.std(axis=0)
    predicted = bridge.apply(fresh)
    planted_y = fresh @ relation
    residual = np.linalg.norm(predicted - planted_y) / np.linalg.norm(planted_y - planted_y.mean(axis=0))
    assert residual < 0.05


def test_full_rank_cca_is_least_squares_and_rank_cuts_it():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(500, 6))
    y = x @ rng.normal(size=(6, 5)) + rng.normal(size=(500, 5))
    moments = Moments.of([(x, y)])
    cxx, cxy, cyy = moments.centered()
    full, correlations = cca_weights(cxx, cxy, cyy, rank=5, shift=0.0)
    np.testing.assert_allclose(full, np.linalg.solve(cxx, cxy), atol=1e-9)
    low, _ = cca_weights(cxx, cxy, cyy, rank=2, shift=0.0)
    assert np.linalg.matrix_rank(low, tol=1e-8) == 2
    assert np.all(np.diff(correlations) <= 1e-12)  # canonical correlations, largest first


def test_it_reads_only_its_keys_and_is_off_by_default():
    method = BRIDGE_METHODS["cca"]
    assert set(method.keys) == {"ridge_penalties", "rank"} and not method.in_default and not method.uses_torch
