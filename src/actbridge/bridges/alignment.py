"""How well a predictor of receiver states matches the real ones, on held-out pairs.

Metrics, all streamed over shards (memory O(d^2)):

* ``cos_normalized``: mean over examples of cos(predicted, actual) in
  normalized (centred) space: the reference study's alignment figure;
* ``cos_raw``: the same in raw space, where the mean state alone already
  scores high (residual streams are anisotropic): the reason to read the
  normalized figure beside its baselines;
* ``r2``: fraction of the variance of the actual normalized states explained;
* ``mse``: mean squared error per coordinate in normalized space (the mean
  predictor scores about 1);
* ``cka``: linear CKA between the predicted and actual (centred) matrices.

A zero prediction (the receiver-mean baseline in normalized space) has no
direction: its normalized cosine and CKA are NaN, not 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from actbridge.bridges.maps import Moments, Normalizer, PairStream

Predictor = Callable[[np.ndarray], np.ndarray]  # normalized sender [n, d_s] -> normalized receiver [n, d_r]
METRICS: tuple[str, ...] = ("cos_normalized", "cos_raw", "r2", "mse", "cka")


def rowwise_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """cos of each row pair; NaN where either row is zero."""
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norms > 0, (a * b).sum(axis=1) / np.where(norms > 0, norms, 1.0), np.nan)


def linear_cka(moments: Moments) -> float:
    """Linear CKA of the centred (predicted, actual) matrices from their moments."""
    cpp, cpy, cyy = moments.centered()
    denominator = np.linalg.norm(cpp) * np.linalg.norm(cyy)
    if denominator <= 1e-12 * max(np.trace(cyy), 1e-300) ** 2:
        return float("nan")
    return float(np.linalg.norm(cpy) ** 2 / denominator)


@dataclass
class _Tally:
    """Running sums of one predictor's metrics."""

    count: int = 0
    cos_normalized: float = 0.0
    cos_raw: float = 0.0
    squared_error: float = 0.0
    moments: Moments | None = None  # of (predicted, actual), for R^2 and CKA

    def add(self, predicted_n: np.ndarray, y_n: np.ndarray, predicted_raw: np.ndarray, y_raw: np.ndarray) -> None:
        self.cos_normalized += float(np.sum(rowwise_cosine(predicted_n, y_n)))
        self.cos_raw += float(np.sum(rowwise_cosine(predicted_raw, y_raw)))
        self.squared_error += float(((predicted_n - y_n) ** 2).sum())
        if self.moments is None:
            self.moments = Moments.zeros(predicted_n.shape[1], y_n.shape[1])
        self.moments.update(predicted_n, y_n)
        self.count += len(y_n)

    def metrics(self) -> dict[str, float]:
        if self.count == 0:
            return {"n": 0, **{metric: float("nan") for metric in METRICS}}
        moments = self.moments
        total_variance = float(moments.yy_trace - moments.y @ moments.y / self.count)
        return {
            "n": self.count,
            "cos_normalized": self.cos_normalized / self.count,
            "cos_raw": self.cos_raw / self.count,
            # a target that never varies (a fixed token's embedding) has no variance to explain
            "r2": 1.0 - self.squared_error / total_variance if total_variance > 0 else float("nan"),
            "mse": self.squared_error / (self.count * moments.y.shape[0]),
            "cka": linear_cka(moments),
        }


def alignment_metrics_by_predictor(predictors: Mapping[str, Predictor], pairs: PairStream, sender: Normalizer,
                                   receiver: Normalizer) -> dict[str, dict[str, float]]:
    """Metrics of every predictor over raw (sender, receiver) pairs, in one pass over the pairs; empty where
    the pairs hold no rows (a role a context mode lacks, such as the bridge mention in a relay prompt)."""
    tallies = {name: _Tally() for name in predictors}
    scored = 0
    for x_raw, y_raw in pairs():
        scored += len(x_raw)
        y_raw = y_raw.astype(np.float64)
        x_n = sender.normalize(x_raw.astype(np.float64))
        y_n = receiver.normalize(y_raw)
        for name, predict in predictors.items():
            predicted_n = predict(x_n)
            tallies[name].add(predicted_n, y_n, receiver.denormalize(predicted_n), y_raw)
    return {name: tally.metrics() for name, tally in tallies.items()} if scored else {}


def alignment_metrics(predict: Predictor, pairs: PairStream, sender: Normalizer, receiver: Normalizer
                      ) -> dict[str, float]:
    """Metrics of one predictor; ``n`` = rows scored."""
    return alignment_metrics_by_predictor({"predictor": predict}, pairs, sender, receiver)["predictor"]


def mean_predictor(d_receiver: int) -> Predictor:
    """The receiver's bridge_train mean: zero in normalized space."""
    return lambda x_n: np.zeros((len(x_n), d_receiver))


def identity_predictor(x_n: np.ndarray) -> np.ndarray:
    return x_n
