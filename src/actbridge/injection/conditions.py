"""Injection conditions as edits of the receiver's state (see :mod:`actbridge.injection.engine`).

Every condition is ``h' = keep * h + (||h|| if norm_scaled else 1) * vector``:

=================  ==========================  =====================================================
condition          h'                          why
=================  ==========================  =====================================================
none               h                           the baseline every other condition is paired with
add                h + α b                     the reference study's additive injection
add_rescaled       h + α (‖h‖/‖b‖) b           α as a fraction of the receiver's own norm
replace            b                           the bridged state instead of the receiver's
replace_rescaled   (‖h‖/‖b‖) b                 the same at the receiver's norm
interpolate        (1 − α) h + α b             a path from the receiver's state to the bridged one
random             h + α r, ‖r‖ = ‖b‖          add's control: same norm, random direction
shuffled           h + α b', b' of another     add's control: a real bridged state, wrong example
                   example
mean               μ (bridge_train mean)       replace's control: the receiver's average state
self_patch         h_full                      the receiver's own state on the full-context prompt:
                                               the upper bound any bridge could deliver
=================  ==========================  =====================================================

``b`` is the bridge's output for this example, in the receiver's raw space.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from actbridge.injection.engine import Edits

CONDITIONS: tuple[str, ...] = ("none", "add", "add_rescaled", "replace", "replace_rescaled", "interpolate",
                               "random", "shuffled", "mean", "self_patch")
SCALED_BY_ALPHA = frozenset({"add", "add_rescaled", "interpolate", "random", "shuffled"})


@dataclass(frozen=True)
class ConditionInputs:
    """Vectors for one example, each [d] in the receiver's raw space."""

    bridged: np.ndarray  # b
    shuffled: np.ndarray  # b of another example
    random_direction: np.ndarray  # unit vector
    mean: np.ndarray  # receiver's bridge_train mean at this layer and role
    full_context: np.ndarray | None  # receiver's own state on the full prompt (self_patch)


def condition_labels(conditions: Sequence[str], alphas: Sequence[float]) -> list[tuple[str, float | None]]:
    """(condition, α) for every edit: α-free conditions once, the others once per α."""
    unknown = set(conditions) - set(CONDITIONS)
    if unknown:
        raise ValueError(f"unknown conditions {sorted(unknown)}; allowed: {list(CONDITIONS)}")
    labels: list[tuple[str, float | None]] = []
    for condition in conditions:
        if condition in SCALED_BY_ALPHA:
            labels.extend((condition, float(alpha)) for alpha in alphas)
        else:
            labels.append((condition, None))
    return labels


def edit_for(condition: str, alpha: float | None, inputs: ConditionInputs) -> tuple[float, np.ndarray, bool]:
    """(keep, vector, norm_scaled) of one condition."""
    b = inputs.bridged
    b_norm = float(np.linalg.norm(b))
    unit_b = b / b_norm if b_norm > 0 else np.zeros_like(b)
    if condition == "none":
        return 1.0, np.zeros_like(b), False
    if condition == "add":
        return 1.0, alpha * b, False
    if condition == "add_rescaled":
        return 1.0, alpha * unit_b, True
    if condition == "replace":
        return 0.0, b, False
    if condition == "replace_rescaled":
        return 0.0, unit_b, True
    if condition == "interpolate":
        return 1.0 - alpha, alpha * b, False
    if condition == "random":
        return 1.0, alpha * b_norm * inputs.random_direction, False
    if condition == "shuffled":
        return 1.0, alpha * inputs.shuffled, False
    if condition == "mean":
        return 0.0, inputs.mean, False
    if condition == "self_patch":
        if inputs.full_context is None:
            raise ValueError("self_patch needs the receiver's full-context state")
        return 0.0, inputs.full_context, False
    raise ValueError(f"unknown condition {condition!r}; allowed: {list(CONDITIONS)}")


def build_edits(labels: Sequence[tuple[str, float | None]], inputs: ConditionInputs) -> Edits:
    parts = [edit_for(condition, alpha, inputs) for condition, alpha in labels]
    return Edits(torch.tensor([p[0] for p in parts], dtype=torch.float32),
                 torch.from_numpy(np.stack([p[1] for p in parts]).astype(np.float32)),
                 torch.tensor([p[2] for p in parts], dtype=torch.bool))


def random_directions(n: int, d: int, seed: int) -> np.ndarray:
    """[n, d] unit vectors, uniform on the sphere."""
    rng = np.random.Generator(np.random.PCG64(seed))
    draws = rng.normal(size=(n, d))
    return draws / np.linalg.norm(draws, axis=1, keepdims=True)


def derangement(n: int, seed: int) -> np.ndarray:
    """A permutation with no fixed point (each example gets another's bridged state); n >= 2."""
    if n < 2:
        raise ValueError("shuffled needs at least two examples")
    rng = np.random.Generator(np.random.PCG64(seed))
    while True:
        permutation = rng.permutation(n)
        if not np.any(permutation == np.arange(n)):
            return permutation
