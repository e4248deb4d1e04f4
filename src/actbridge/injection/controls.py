"""The random draws behind the controls: random directions and derangements (each example paired with another).
No registry and no model: the causal profiles draw from here too."""

from __future__ import annotations

from typing import Sequence

import numpy as np


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


def within_mode_derangement(modes: Sequence[str], seed: int) -> np.ndarray:
    """Index map i -> j != i onto another example of the same context mode (any mode for a mode's only example).

    Within a mode of two or more examples it is a permutation, so every bridged state is used once.
    """
    permutation = derangement(len(modes), seed)
    for number, mode in enumerate(sorted(set(modes))):
        members = np.flatnonzero(np.asarray(modes) == mode)
        if len(members) >= 2:
            permutation[members] = members[derangement(len(members), seed + 1 + number)]
    return permutation
