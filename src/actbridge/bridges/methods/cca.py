"""``cca``: the canonical-correlation map of rank ``bridge.rank``.

With the (ridge-regularized) covariances ``Cxx``, ``Cyy`` and the cross-covariance ``Cxy``, the
whitened cross-covariance ``Cxx^-1/2 Cxy Cyy^-1/2 = U S V^T`` holds the canonical correlations ``S``.
The best linear prediction of the receiver from the first ``r`` canonical variates is

    W = Cxx^-1/2 U_r S_r V_r^T Cyy^1/2

(each sender variate predicts its receiver twin with slope ``s_i``, mapped back to the receiver's
space through ``Cov(y, v_i) = Cyy b_i``). At full rank this is the least-squares map; below it, the
map keeps only the directions where the two spaces correlate most, whatever their variance: where
reduced-rank ridge keeps the receiver's best *predicted* directions, CCA keeps the most *shared*
ones. The penalty (``bridge.ridge_penalties``, per row, added to both covariances) is chosen on
bridge_val, as ridge's.
"""

from __future__ import annotations

import numpy as np

from actbridge.bridges.maps import Moments
from actbridge.bridges.methods import BRIDGE_METHODS, BridgeMethod, FittedMap
from actbridge.bridges.solvers import moment_mse


def _inverse_and_root(covariance: np.ndarray, shift: float) -> tuple[np.ndarray, np.ndarray]:
    """(C^-1/2, C^1/2) of ``covariance + shift I``; directions at rounding level are dropped."""
    eigenvalues, vectors = np.linalg.eigh(covariance + shift * np.eye(len(covariance)))
    cutoff = np.finfo(np.float64).eps * len(covariance) * max(float(np.abs(eigenvalues).max(initial=0.0)), 1e-300)
    kept = eigenvalues > cutoff
    root = np.sqrt(np.where(kept, eigenvalues, 0.0))
    inverse_root = np.where(kept, 1.0 / np.where(kept, root, 1.0), 0.0)
    return (vectors * inverse_root) @ vectors.T, (vectors * root) @ vectors.T


def cca_weights(cxx: np.ndarray, cxy: np.ndarray, cyy: np.ndarray, rank: int, shift: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """(W [d_s, d_r], canonical correlations [min(d_s, d_r)]) of the rank-``rank`` CCA map of centred
    covariances (``shift`` added to the diagonal of both)."""
    x_inverse_root, _ = _inverse_and_root(cxx, shift)
    y_inverse_root, y_root = _inverse_and_root(cyy, shift)
    left, correlations, right_t = np.linalg.svd(x_inverse_root @ cxy @ y_inverse_root, full_matrices=False)
    r = min(rank, len(correlations))
    weight = x_inverse_root @ (left[:, :r] * correlations[:r]) @ right_t[:r] @ y_root
    return weight, correlations


@BRIDGE_METHODS.register
class CanonicalCorrelation(BridgeMethod):
    name = "cca"
    summary = "canonical-correlation map of rank `rank`, penalty chosen on bridge_val"
    keys = ("ridge_penalties", "rank")
    in_default = False
    colour = "tab:pink"

    def fit(self, train, val, settings, seed) -> FittedMap:
        train_moments = Moments.of(train(), outer_y=True)
        val_moments = Moments.of(val(), outer_y=False)
        cxx, cxy, cyy = train_moments.centered()
        scores, best = {}, None
        for penalty in settings["ridge_penalties"]:
            weight, correlations = cca_weights(cxx, cxy, cyy, settings["rank"], penalty * train_moments.n)
            bias = train_moments.mean_y - train_moments.mean_x @ weight
            scores[penalty] = moment_mse(val_moments, weight, bias)
            if best is None or scores[penalty] < scores[best[0]]:
                best = (penalty, weight, bias, correlations)
        penalty, weight, bias, correlations = best
        rank = min(settings["rank"], len(correlations))
        info = {"penalty": penalty, "rank": rank, "val_mse_by_penalty": {str(k): v for k, v in scores.items()},
                "canonical_correlations": [float(c) for c in correlations[:rank]],
                "train_rows": train_moments.n}
        return FittedMap(weight, bias, info)
