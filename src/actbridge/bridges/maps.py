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
epochs and hold one layer pair's training rows in memory.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import numpy as np
from safetensors.numpy import load_file, save_file

from actbridge.io import atomic_path, write_json
from actbridge.config import schema_default

if TYPE_CHECKING:  # torch is imported where sgd and mlp train: the closed-form methods never wait for it
    import torch

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


# ---------------------------------------------------------------------------- closed form


def ridge_path(moments: Moments, penalties: Iterable[float]) -> Iterator[tuple[float, np.ndarray, np.ndarray]]:
    """(penalty, W, b) = argmin_W,b sum ||x W + b - y||^2 + penalty * n * ||W||^2 (bias unpenalized), for
    each penalty, from one eigendecomposition of the centred input Gram matrix.

    ``penalty`` is per row: on unit-variance normalized inputs it is comparable
    to the eigenvalues of the input covariance, whatever the number of rows.
    With ``Cxx = V diag(e) V^T``, ``W = V diag(1 / (e + penalty n)) V^T Cxy``;
    at penalty 0, directions with ``e`` at rounding level are dropped (the
    minimum-norm least-squares solution, as ``numpy.linalg.lstsq`` cuts them).
    """
    cxx, cxy, _ = moments.centered()
    eigenvalues, vectors = np.linalg.eigh(cxx)
    projected = vectors.T @ cxy  # [d_s, d_r]
    cutoff = np.finfo(np.float64).eps * len(cxx) * max(float(np.abs(eigenvalues).max(initial=0.0)), 1e-300)
    for penalty in penalties:
        shrunk = eigenvalues + penalty * moments.n
        with np.errstate(divide="ignore"):
            inverse = np.where(shrunk > cutoff, 1.0 / shrunk, 0.0) if penalty == 0 else 1.0 / shrunk
        weight = vectors @ (inverse[:, None] * projected)
        yield penalty, weight, moments.mean_y - moments.mean_x @ weight


def ridge_weights(moments: Moments, penalty: float) -> tuple[np.ndarray, np.ndarray]:
    """(W, b) of ``ridge_path`` at one penalty."""
    _, weight, bias = next(ridge_path(moments, (penalty,)))
    return weight, bias


def moment_mse(moments: Moments, weight: np.ndarray, bias: np.ndarray) -> float:
    """Mean squared error per row of x W + b against y, from moments alone."""
    fitted = (np.sum((moments.xx @ weight) * weight) + 2 * bias @ (weight.T @ moments.x)  # tr(W^T XX W) + ...
              + moments.n * bias @ bias)
    cross = np.sum(weight * moments.xy) + bias @ moments.y
    return float((fitted - 2 * cross + moments.yy_trace) / moments.n)


def fit_ridge(train: Moments, val: Moments, penalties: Iterable[float]) -> tuple[np.ndarray, np.ndarray, dict]:
    """Ridge with the penalty picked by validation MSE (all in normalized space)."""
    scores = {}
    best = None
    for penalty, weight, bias in ridge_path(train, penalties):
        scores[penalty] = moment_mse(val, weight, bias)
        if best is None or scores[penalty] < scores[best[0]]:
            best = (penalty, weight, bias)
    penalty, weight, bias = best
    return weight, bias, {"penalty": penalty, "val_mse_by_penalty": {str(k): v for k, v in scores.items()}}


def fit_procrustes(train: Moments) -> tuple[np.ndarray, np.ndarray, dict]:
    """Scaled orthogonal map: W = s U V^T from the SVD of the cross-covariance.

    With d_s != d_r, U V^T is semi-orthogonal (orthonormal rows or columns):
    it rotates the sender space into a min(d_s, d_r)-dimensional subspace of
    the receiver's. ``s`` is the least-squares scale.
    """
    cxx, cxy, _ = train.centered()
    left, singular, right_t = np.linalg.svd(cxy, full_matrices=False)
    rotation = left @ right_t
    spread = float(np.trace(cxx))
    scale = float(singular.sum() / spread) if spread > 0 else 0.0  # constant inputs: the mean map
    weight = scale * rotation
    return weight, train.mean_y - train.mean_x @ weight, {"scale": scale}


def fit_lowrank(train: Moments, val: Moments, penalties: Iterable[float], rank: int
                ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Reduced-rank ridge: the ridge map projected on the top-``rank`` directions of its fitted values."""
    weight, _, info = fit_ridge(train, val, penalties)
    cxx, _, _ = train.centered()
    fitted_cov = weight.T @ cxx @ weight  # [d_r, d_r]
    _, vectors = np.linalg.eigh(fitted_cov)
    top = vectors[:, -min(rank, len(vectors)):]
    weight = weight @ top @ top.T
    return weight, train.mean_y - train.mean_x @ weight, {**info, "rank": int(top.shape[1])}


# ---------------------------------------------------------------------------- iterative


@dataclass(frozen=True)
class IterativeSettings:
    """Adam on normalized pairs, for ``sgd`` (linear) and ``mlp``."""

    loss: str = schema_default("bridge.sgd.loss")  # mse | cosine
    epochs: int = schema_default("bridge.sgd.epochs")
    batch_size: int = schema_default("bridge.sgd.batch_size")
    learning_rate: float = schema_default("bridge.sgd.learning_rate")
    weight_decay: float = schema_default("bridge.sgd.weight_decay")
    patience: int = schema_default("bridge.sgd.patience")  # epochs without a better validation loss before stopping
    hidden: int = schema_default("bridge.sgd.hidden")  # mlp hidden width; 0 = 2 * d_r


def _loss(predicted: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    import torch

    if kind == "mse":
        return ((predicted - target) ** 2).sum(dim=-1).mean()
    if kind == "cosine":
        return 1.0 - torch.nn.functional.cosine_similarity(predicted, target, dim=-1).mean()
    raise ValueError(f"unknown loss {kind!r}; allowed: mse, cosine")


class Adam:
    """``torch.optim.Adam``'s update (its single-tensor path: L2 weight decay, no amsgrad), step for step and
    bit for bit (tested against it). Constructing ``torch.optim.Adam`` imports ``torch._dynamo``, a large
    share of a short ``sgd`` or ``mlp`` bridge job's time (docs/measurements.md)."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float, weight_decay: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        import torch

        self.params = list(params)
        self.lr, self.weight_decay, self.betas, self.eps = lr, weight_decay, betas, eps
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.steps = 0

    def zero_grad(self) -> None:
        for param in self.params:
            param.grad = None

    def step(self) -> None:
        import torch

        self.steps += 1
        beta1, beta2 = self.betas
        step = float(self.steps)
        bias_correction1, bias_correction2 = 1 - beta1 ** step, 1 - beta2 ** step
        with torch.no_grad():
            for param, exp_avg, exp_avg_sq in zip(self.params, self.exp_avg, self.exp_avg_sq):
                grad = param.grad
                if grad is None:
                    continue
                if self.weight_decay != 0:
                    grad = grad.add(param, alpha=self.weight_decay)
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = (exp_avg_sq.sqrt() / bias_correction2 ** 0.5).add_(self.eps)
                param.addcdiv_(exp_avg, denom, value=-(self.lr / bias_correction1))


def fit_iterative(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                  settings: IterativeSettings, seed: int, mlp: bool) -> tuple[dict[str, np.ndarray], dict]:
    """Adam with early stopping on the validation loss; normalized inputs and targets."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    d_s, d_r = x_train.shape[1], y_train.shape[1]
    if mlp:
        hidden = settings.hidden or 2 * d_r
        module = torch.nn.Sequential(torch.nn.Linear(d_s, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, d_r))
    else:
        module = torch.nn.Linear(d_s, d_r)
    module = module.double()
    optimizer = Adam(module.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    xv, yv = torch.from_numpy(x_val), torch.from_numpy(y_val)
    best_loss, best_state, best_epoch, stale = math.inf, None, 0, 0
    history = []
    for epoch in range(settings.epochs):
        order = torch.randperm(len(xt), generator=generator)
        for begin in range(0, len(order), settings.batch_size):
            batch = order[begin: begin + settings.batch_size]
            loss = _loss(module(xt[batch]), yt[batch], settings.loss)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            val_loss = float(_loss(module(xv), yv, settings.loss))
        history.append(val_loss)
        if val_loss < best_loss - 1e-9:
            best_loss, best_epoch, stale = val_loss, epoch + 1, 0
            best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        else:
            stale += 1
            if stale >= settings.patience:
                break
    module.load_state_dict(best_state)
    state = {k: v.numpy() for k, v in module.state_dict().items()}
    if mlp:
        tensors = {"hidden_weight": state["0.weight"].T, "hidden_bias": state["0.bias"],
                   "weight": state["2.weight"].T, "bias": state["2.bias"]}
    else:
        tensors = {"weight": state["weight"].T, "bias": state["bias"]}
    info = {"loss": settings.loss, "best_epoch": best_epoch, "epochs_run": len(history),
            "best_val_loss": best_loss}
    return tensors, info


# ---------------------------------------------------------------------------- one entry point


@dataclass(frozen=True)
class BridgeSettings:
    """``bridge.*`` in the config (the parts a fit needs)."""

    penalties: tuple[float, ...] = tuple(schema_default("bridge.ridge_penalties"))
    rank: int = schema_default("bridge.rank")
    subsample: float = schema_default("bridge.subsample")
    sgd: IterativeSettings = IterativeSettings()
    mlp: IterativeSettings = IterativeSettings()

    @classmethod
    def from_config(cls, bridge: dict) -> "BridgeSettings":
        """From ``bridge.*`` (or the subset one method needs; absent keys keep their defaults)."""
        defaults = cls()
        return cls(penalties=tuple(float(p) for p in bridge.get("ridge_penalties", defaults.penalties)),
                   rank=int(bridge.get("rank", defaults.rank)),
                   subsample=float(bridge.get("subsample", defaults.subsample)),
                   sgd=IterativeSettings(**bridge.get("sgd", {})), mlp=IterativeSettings(**bridge.get("mlp", {})))


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


def fit_bridge(method: str, train: PairStream, val: PairStream, sender: Normalizer, receiver: Normalizer, *,
               settings: BridgeSettings, seed: int) -> Bridge:
    """Fit ``method`` (a name in :data:`actbridge.bridges.methods.BRIDGE_METHODS`) on a ``seed``-subsample of
    ``train`` (raw pairs), selecting on ``val``.

    ``sender``/``receiver`` are the normalizers fitted on all of bridge_train.
    """
    from actbridge.bridges.methods import BRIDGE_METHODS  # the methods import this module

    fitted = BRIDGE_METHODS[method]().fit(normalized(subsampled(train, settings.subsample, seed), sender, receiver),
                                          normalized(val, sender, receiver), settings, seed)
    fitted.info["seed"] = seed
    return Bridge(method, sender, receiver, fitted.weight, fitted.bias, fitted.hidden_weight, fitted.hidden_bias,
                  fitted.info)
