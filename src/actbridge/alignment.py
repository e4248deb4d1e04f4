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

from typing import Callable

import numpy as np

from actbridge.bridges import Moments, Normalizer, PairStream

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


def alignment_metrics(predict: Predictor, pairs: PairStream, sender: Normalizer, receiver: Normalizer
                      ) -> dict[str, float]:
    """Metrics of ``predict`` over raw (sender, receiver) pairs; ``n`` = rows scored."""
    count, cos_n, cos_raw, squared_error = 0, 0.0, 0.0, 0.0
    moments = None
    for x_raw, y_raw in pairs():
        x_n = sender.normalize(x_raw.astype(np.float64))
        y_n = receiver.normalize(y_raw.astype(np.float64))
        predicted_n = predict(x_n)
        predicted_raw = receiver.denormalize(predicted_n)
        cos_n += float(np.sum(rowwise_cosine(predicted_n, y_n)))
        cos_raw += float(np.sum(rowwise_cosine(predicted_raw, y_raw.astype(np.float64))))
        squared_error += float(((predicted_n - y_n) ** 2).sum())
        if moments is None:
            moments = Moments.zeros(predicted_n.shape[1], y_n.shape[1])
        moments.update(predicted_n, y_n)
        count += len(x_n)
    if count == 0:
        return {"n": 0, **{metric: float("nan") for metric in METRICS}}
    total_variance = float(np.trace(moments.yy) - moments.y @ moments.y / count)
    d_receiver = moments.y.shape[0]
    return {
        "n": count,
        "cos_normalized": cos_n / count,
        "cos_raw": cos_raw / count,
        "r2": 1.0 - squared_error / total_variance,
        "mse": squared_error / (count * d_receiver),
        "cka": linear_cka(moments),
    }


def mean_predictor(d_receiver: int) -> Predictor:
    """The receiver's bridge_train mean: zero in normalized space."""
    return lambda x_n: np.zeros((len(x_n), d_receiver))


def identity_predictor(x_n: np.ndarray) -> np.ndarray:
    return x_n
