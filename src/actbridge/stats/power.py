"""The smallest effect a verdict's test could have detected: what a `no effect` row rules out.

The verdict calls a right/wrong contrast significant when its crossed (seed × example) bootstrap
p-value is below the level at which Holm tests it, α / (m − r + 1) for the r-th smallest of the m
p-values of its family. That test is, to a good approximation, a Wald test of the mean paired
difference: it rejects when the estimate is more than z = Φ⁻¹(1 − level / 2) of its bootstrap
standard errors from zero. It finds a true effect δ with probability ``power`` when

    δ = (z + Φ⁻¹(power)) · σ(δ) / √n_eff,

where σ²(δ) = ψ(δ) − δ² is the variance of one paired difference (−1, 0 or +1) and ψ(δ) the share
of pairs whose outcome the condition changes (the discordant rate).

* ψ: the observed discordant rate, raised to δ where δ is larger (an effect of δ changes at least a
  share δ of the outcomes). The standard assumption of McNemar power analysis: the discordant pairs
  stay, their balance tips.
* n_eff: the number of independent pairs that would give the observed bootstrap standard error at
  the observed variance, at most examples × seeds (seeds whose outcomes are independent) and, when
  nothing changed (ψ = 0, no variance to read), the examples alone (seeds that move together).

Where the bootstrap's own interval is wider than a normal one of the same standard error (heavy tails,
e.g. from resampling a few seeds), z is widened by that ratio (:func:`tail_factor`).

With c = (z + Φ⁻¹(power))² this solves in closed form: δ = √(ψ / (n_eff / c + 1)) while that is at
most ψ, else δ = 1 / (n_eff / c + 1). Tested against simulated outcomes run through the pipeline's
own statistics (tests/test_power.py).
"""

from __future__ import annotations

import math

from scipy import special


def holm_level(alpha: float, *, rank: int, family_size: int) -> float:
    """The level at which Holm tests the ``rank``-th smallest of ``family_size`` p-values."""
    return alpha / (family_size - rank + 1)


def effective_pairs(*, standard_error: float, discordance: float, delta: float, examples: int, seeds: int) -> float:
    """Independent pairs behind an observed bootstrap ``standard_error`` of a mean difference ``delta`` whose
    cells change in a share ``discordance``; between ``1`` and ``examples × seeds``, ``examples`` with nothing to
    read it from."""
    variance = discordance - delta ** 2
    if not (math.isfinite(standard_error) and standard_error > 0 and variance > 0):
        return float(examples)
    return min(max(variance / standard_error ** 2, 1.0), float(examples * seeds))


def tail_factor(*, low: float, high: float, standard_error: float, confidence: float) -> float:
    """How much wider the bootstrap's ``confidence`` interval [low, high] is than a normal one of the same
    standard error (1 for a normal bootstrap; more where few seeds are resampled and the tails are heavy)."""
    normal = 2 * special.ndtri(0.5 + confidence / 2) * standard_error
    if not (math.isfinite(normal) and normal > 0 and math.isfinite(high - low)):
        return 1.0
    return max(1.0, (high - low) / normal)


def detectable_effect(*, effective: float, discordance: float, level: float, power: float,
                      tails: float = 1.0) -> float:
    """The smallest true difference (a share, 0..1) found with probability ``power`` by a two-sided test at
    ``level`` on ``effective`` independent pairs whose observed discordant rate is ``discordance``; ``tails``
    widens the rejection bound where the test's null distribution is heavier-tailed than a normal one."""
    c = (tails * special.ndtri(1 - level / 2) + special.ndtri(power)) ** 2
    shrink = effective / c + 1
    within = math.sqrt(max(discordance, 0.0) / shrink)  # 0 where nothing changed: not an effect, the trivial root
    return within if 0 < within <= discordance else 1.0 / shrink
