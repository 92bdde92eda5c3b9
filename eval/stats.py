"""Small statistics used to report match results honestly."""

from __future__ import annotations

import math

from scipy.stats import norm


def wilson_interval(successes: float, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion, as (low, high) within [0, 1].

    Unlike the normal approximation it stays inside [0, 1] and is sensible at 0% and 100%,
    which is exactly where the naive clone (0 wins) and the pro (~100%) sit.
    """
    if trials <= 0:
        raise ValueError(f"wilson_interval needs trials > 0, got {trials}")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be within [0, trials={trials}], got {successes}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be within (0, 1), got {confidence}")
    z = norm.ppf(0.5 + confidence / 2)
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)
