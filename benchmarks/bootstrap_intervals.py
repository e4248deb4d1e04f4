"""Per-seed BCa intervals: one shared resample matrix for every contrast vs one scipy.stats.bootstrap call each.

    python benchmarks/statistics.py [--examples 1500] [--contrasts 68] [--resamples 10000]

A default injection job yields, per role and mode, about 34 contrasts x 2
metrics on the same examples. The naive way calls
``scipy.stats.bootstrap(method="BCa")`` once per contrast; actbridge draws one
matrix of resample counts and gets every bootstrap distribution from one
matrix product (:func:`actbridge.stats.paired.bca_intervals`). The script times
both on the same planted differences and prints the ratio and the largest
gap between the two sets of interval endpoints, relative to the interval's
width (Monte Carlo noise of two independent resamplings).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402
from scipy import stats as scipy_stats  # noqa: E402

from actbridge.stats.paired import bca_intervals, bootstrap_means  # noqa: E402


def planted(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """[n, k]: half accuracy differences in {-1, 0, 1}, half log-prob differences."""
    accuracy = rng.choice([-1.0, 0.0, 1.0], size=(n, k // 2), p=[0.15, 0.7, 0.15])
    logprob = rng.normal(-0.3, 1.0, size=(n, k - k // 2)) * rng.exponential(1.0, size=(n, 1))
    return np.concatenate([accuracy, logprob], axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=1500)
    parser.add_argument("--contrasts", type=int, default=68)
    parser.add_argument("--resamples", type=int, default=10_000)
    args = parser.parse_args()
    differences = planted(args.examples, args.contrasts, np.random.default_rng(0))

    started = time.perf_counter()
    boot = bootstrap_means(differences, args.resamples, np.random.default_rng(1))
    low, high, _ = bca_intervals(differences, boot, 0.95)
    ours = time.perf_counter() - started

    started = time.perf_counter()
    reference = [scipy_stats.bootstrap((differences[:, j],), np.mean, n_resamples=args.resamples, method="BCa",
                                       random_state=np.random.default_rng(2)).confidence_interval
                 for j in range(args.contrasts)]
    naive = time.perf_counter() - started
    width = np.array([r.high - r.low for r in reference])
    gap = np.maximum(np.abs(low - [r.low for r in reference]), np.abs(high - [r.high for r in reference])) / width
    print(f"{args.contrasts} contrasts x {args.examples} examples, {args.resamples} resamples: "
          f"scipy per contrast {naive:.2f} s, shared resamples {ours:.2f} s, ratio {naive / ours:.1f}x; "
          f"largest endpoint gap {gap.max():.1%} of the interval width (median {np.median(gap):.1%})")


if __name__ == "__main__":
    main()
