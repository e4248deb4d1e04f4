"""Bridges: maps from a sender layer's states to a receiver layer's states.

Every map is fitted between *normalized* states and applied to raw ones:

    x_n = (x - mean_s) / scale_s        (sender, fitted on bridge_train)
    y_n = f(x_n)                        (the bridge, in normalized space)
    y   = y_n * scale_r + mean_r        (back to the receiver's raw space, for injection)

``mean`` is the per-dimension mean and ``scale`` one scalar per model, layer
and role: the root-mean-square of the centred coordinates. A scalar keeps the
geometry of the residual stream (a per-dimension z-score would inflate the
few low-variance directions and shrink the outlier dimensions that large
models carry) while putting every layer on unit average variance, so the
ridge penalty and learning rates mean the same thing at every depth.

The closed-form methods (``ridge``, ``procrustes``, ``lowrank``) read the
shards once into second-moment sufficient statistics (``Moments``), so their
memory is O(d^2) whatever the number of rows; ``sgd`` and ``mlp`` iterate over
epochs and hold one layer pair's training rows in memory. The solvers are in
:mod:`actbridge.bridges.solvers`, the methods that call them in
:mod:`actbridge.bridges.methods`.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
from safetensors.numpy import load_file, save_file

from actbridge.io import atomic_path, write_json

log = logging.getLogger(__name__)

# A spread below this fraction of the states' own magnitude is rounding, not information.
CONSTANT_SCALE = 1e-6

PairStream = Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]  # fresh iterator of (x [n, d_s], y [n, d_r])


@dataclass
class Moments:
    """Streaming first and second moments of paired rows (float64).

    ``xx`` = sum x x^T [d_s, d_s], ``xy`` = sum x y^T [d_s, d_r], ``yy_trace`` = sum ||y||^2, and
    ``yy`` = sum y y^T [d_r, d_r] where asked for (``outer_y``): fitting a map needs only its trace,
    CKA the whole matrix, which costs as much as ``xy`` again.
    """

    n: int
    x: np.ndarray
    y: np.ndarray
    xx: np.ndarray
    xy: np.ndarray
    yy_trace: float
    yy: np.ndarray | None

    @classmethod
    def zeros(cls, d_sender: int, d_receiver: int, outer_y: bool = True) -> "Moments":
        return cls(0, np.zeros(d_sender), np.zeros(d_receiver), np.zeros((d_sender, d_sender)),
                   np.zeros((d_sender, d_receiver)), 0.0, np.zeros((d_receiver, d_receiver)) if outer_y else None)

    def update(self, x: np.ndarray, y: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        self.n += len(x)
        self.x += x.sum(axis=0)
        self.y += y.sum(axis=0)
        self.xx += x.T @ x
        self.xy += x.T @ y
        self.yy_trace += float(np.einsum("ij,ij->", y, y))
        if self.yy is not None:
            self.yy += y.T @ y

    @classmethod
    def of(cls, pairs: Iterable[tuple[np.ndarray, np.ndarray]], outer_y: bool = True) -> "Moments":
        moments = None
        for x, y in pairs:
            if moments is None:
                moments = cls.zeros(x.shape[1], y.shape[1], outer_y)
            moments.update(x, y)
        if moments is None:
            raise ValueError("no rows to fit: the shards hold no rows for this role and mode")
        return moments

    @property
    def mean_x(self) -> np.ndarray:
        return self.x / self.n

    @property
    def mean_y(self) -> np.ndarray:
        return self.y / self.n

    def centered(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(Cxx, Cxy, Cyy): sums of centred cross-products (Cyy None without ``outer_y``)."""
        mx, my = self.mean_x, self.mean_y
        return (self.xx - self.n * np.outer(mx, mx), self.xy - self.n * np.outer(mx, my),
                None if self.yy is None else self.yy - self.n * np.outer(my, my))


@dataclass(frozen=True)
class Normalizer:
    """Per-dimension mean and one scalar scale, fitted on bridge_train."""

    mean: np.ndarray  # [d]
    scale: float

    @classmethod
    def fit(cls, count: int, total: np.ndarray, squared_norms: float) -> "Normalizer":
        """From the row count, the sum of the raw states [d] and the sum of their squared norms.

        States that are the same for every example (the embedding of a prompt's fixed last token,
        for one) carry nothing example-specific: their scale is set to 1, so they normalize to 0
        and every bridge from them reduces to the receiver's mean, the honest answer.
        """
        mean = total / count
        centered = squared_norms - count * float(mean @ mean)
        scale = math.sqrt(max(centered, 0.0) / (count * len(mean)))
        if not scale > CONSTANT_SCALE * (math.sqrt(float(mean @ mean) / len(mean)) + 1e-30):
            log.warning("states are the same for every example (scale %.3g): nothing example-specific to "
                        "bridge; they normalize to 0", scale)
            scale = 1.0
        return cls(mean, scale)

    def normalize(self, raw: np.ndarray) -> np.ndarray:
        return (raw - self.mean) / self.scale

    def denormalize(self, normalized: np.ndarray) -> np.ndarray:
        return normalized * self.scale + self.mean


def fit_normalizers(pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> tuple[Normalizer, Normalizer]:
    """Sender and receiver normalizers in one pass: counts, sums and squared norms (O(d) memory and work)."""
    count, sums, squared = 0, [0.0, 0.0], [0.0, 0.0]
    for x, y in pairs:
        count += len(x)
        for side, states in enumerate((np.asarray(x, np.float64), np.asarray(y, np.float64))):
            sums[side] = sums[side] + states.sum(axis=0)
            squared[side] += float(np.einsum("ij,ij->", states, states))
    if count == 0:
        raise ValueError("no rows to fit: the shards hold no rows for this role and mode")
    return Normalizer.fit(count, sums[0], squared[0]), Normalizer.fit(count, sums[1], squared[1])


@dataclass
class Bridge:
    """A fitted map, normalized sender state -> normalized receiver state.

    Linear methods: ``y_n = x_n @ weight + bias``. ``mlp``: ``y_n = gelu(x_n @ w1 + b1) @ weight + bias``.
    """

    method: str
    sender: Normalizer
    receiver: Normalizer
    weight: np.ndarray  # [d_s, d_r] (mlp: [hidden, d_r])
    bias: np.ndarray  # [d_r]
    hidden_weight: np.ndarray | None = None  # mlp only: [d_s, hidden]
    hidden_bias: np.ndarray | None = None
    info: dict = field(default_factory=dict)

    def map_normalized(self, sender_normalized: np.ndarray) -> np.ndarray:
        features = sender_normalized
        if self.hidden_weight is not None:
            features = gelu(features @ self.hidden_weight + self.hidden_bias)
        return features @ self.weight + self.bias

    def apply(self, sender_raw: np.ndarray) -> np.ndarray:
        """Raw sender states [n, d_s] -> raw receiver-space vectors [n, d_r], ready to inject."""
        normalized = self.map_normalized(self.sender.normalize(np.asarray(sender_raw, dtype=np.float64)))
        return self.receiver.denormalize(normalized)

    def tensors(self) -> dict[str, np.ndarray]:
        out = {"weight": self.weight, "bias": self.bias,
               "sender_mean": self.sender.mean, "sender_scale": np.asarray([self.sender.scale]),
               "receiver_mean": self.receiver.mean, "receiver_scale": np.asarray([self.receiver.scale])}
        if self.hidden_weight is not None:
            out.update(hidden_weight=self.hidden_weight, hidden_bias=self.hidden_bias)
        return {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in out.items()}

    def save(self, directory: str | Path, provenance: dict) -> None:
        """``bridge.safetensors`` (float32) and ``bridge.json`` (method, fit info, what produced it)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / "bridge.safetensors") as tmp:
            save_file(self.tensors(), str(tmp))
        write_json({"method": self.method, "info": self.info, **provenance}, directory / "bridge.json")

    @classmethod
    def load(cls, directory: str | Path) -> "Bridge":
        directory = Path(directory)
        tensors = {k: v.astype(np.float64) for k, v in load_file(str(directory / "bridge.safetensors")).items()}
        meta = json.loads((directory / "bridge.json").read_text())
        return cls(meta["method"], Normalizer(tensors["sender_mean"], float(tensors["sender_scale"][0])),
                   Normalizer(tensors["receiver_mean"], float(tensors["receiver_scale"][0])),
                   tensors["weight"], tensors["bias"], tensors.get("hidden_weight"), tensors.get("hidden_bias"),
                   meta.get("info", {}))


def gelu(values: np.ndarray) -> np.ndarray:
    """The erf GELU of ``torch.nn.GELU``, which the ``mlp`` bridge was trained with."""
    import torch

    return torch.nn.functional.gelu(torch.from_numpy(np.asarray(values, dtype=np.float64))).numpy()


# ---------------------------------------------------------------------------- row streams


def subsampled(stream: PairStream, fraction: float, seed: int) -> PairStream:
    """The rows a seed fits on: each row kept with probability ``fraction``.

    The keep-mask is drawn row by row from one generator, so it depends on the
    row order only, not on how rows are cut into shards.
    """
    def iterate() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        rng = np.random.Generator(np.random.PCG64(seed))
        for x, y in stream():
            keep = rng.random(len(x)) < fraction
            if keep.any():
                yield x[keep], y[keep]
    return iterate


def shuffled_pairs(stream: PairStream, seed: int) -> PairStream:
    """Each sender row paired with another example's receiver row (a random cyclic shift per chunk)."""
    def iterate() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        rng = np.random.Generator(np.random.PCG64(seed + 7919))
        for x, y in stream():
            if len(x) < 2:
                continue
            yield x, np.roll(y, int(rng.integers(1, len(x))), axis=0)
    return iterate


def normalized(stream: PairStream, sender: Normalizer, receiver: Normalizer) -> PairStream:
    def iterate() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for x, y in stream():
            yield sender.normalize(x.astype(np.float64)), receiver.normalize(y.astype(np.float64))
    return iterate


def materialize(stream: PairStream) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*stream())
    return np.concatenate(xs), np.concatenate(ys)
