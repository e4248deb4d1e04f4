"""The random draws behind the controls: random directions and derangements (each example paired with another).
No registry and no model: the causal profiles draw from here too."""

from __future__ import annotations

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
