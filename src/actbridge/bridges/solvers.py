"""The solvers the bridge methods call, all in normalized space: ridge (a whole penalty path from one
eigendecomposition), scaled Procrustes, reduced-rank ridge, and Adam with early stopping for the
iterative maps (``sgd``, ``mlp``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np

from actbridge.bridges.maps import Moments

if TYPE_CHECKING:  # torch is imported where sgd and mlp train: the closed-form methods never wait for it
    import torch


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
    """Adam on normalized pairs, for ``sgd`` (linear) and ``mlp``: ``bridge.sgd`` or ``bridge.mlp``, validated
    (the schema's ``$defs/iterative`` declares the keys and their defaults once)."""

    loss: str  # mse | cosine
    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    patience: int  # epochs without a better validation loss before stopping
    hidden: int  # mlp hidden width; 0 = 2 * d_r


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
