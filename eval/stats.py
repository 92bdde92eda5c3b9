"""Small statistics used to report match results honestly."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.spatial.distance import jensenshannon
from scipy.stats import norm, rankdata, spearmanr


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
    # At 0 or all successes the bound is exactly 0 or 1; rounding would leave e.g. 3e-18.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return float(low), float(high)


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence (base 2, within [0, 1]) between two count or probability vectors.

    0 means identical action distributions, 1 means disjoint supports. Symmetric and finite even
    where one side never uses an action, unlike KL divergence.
    """
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    if p.shape != q.shape or p.ndim != 1:
        raise ValueError(f"js_divergence needs two 1-D vectors of one shape, got {p.shape} and {q.shape}")
    if (p < 0).any() or (q < 0).any() or p.sum() <= 0 or q.sum() <= 0:
        raise ValueError("js_divergence needs non-negative vectors with a positive sum")
    return float(jensenshannon(p, q, base=2) ** 2)


@dataclass
class RankCorrelation:
    """Spearman's rho between two per-agent series, with a bootstrap interval over agents."""

    rho: float | None  # None where undefined (fewer than 3 agents, or a constant series)
    ci95: tuple[float, float] | None
    p_value: float | None
    n: int  # agents with both values defined
    bootstrap_valid: int  # resamples with a defined rho (constant resamples are skipped)
    note: str | None = None  # why rho or its interval is undefined

    def to_dict(self) -> dict:
        data = asdict(self)
        data["ci95"] = list(self.ci95) if self.ci95 is not None else None
        return data


def spearman_bootstrap(
    x: np.ndarray, y: np.ndarray, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95
) -> RankCorrelation:
    """Spearman rank correlation of ``x`` and ``y`` (one value per agent) with a percentile bootstrap CI.

    Agents are resampled with replacement; a resample whose ranks are constant in x or y has no
    defined rho and is skipped (``bootstrap_valid`` counts the rest). Undefined values (None/NaN)
    in either series drop that agent.
    """
    x = np.asarray([np.nan if v is None else v for v in x], dtype=np.float64)
    y = np.asarray([np.nan if v is None else v for v in y], dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"x and y need one value per agent each, got {x.shape} and {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = int(x.size)
    if n == 0:
        return RankCorrelation(None, None, None, 0, 0, "undefined for every agent (e.g. a class nobody uses)")
    if n < 3:
        return RankCorrelation(None, None, None, n, 0, f"needs >= 3 agents with both values, got {n}")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return RankCorrelation(None, None, None, n, 0, "one series is constant across agents: no ranking")
    rho, p_value = spearmanr(x, y)
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    xs, ys = x[idx], y[idx]
    valid = (np.ptp(xs, axis=1) > 0) & (np.ptp(ys, axis=1) > 0)
    # Spearman = Pearson on ranks, computed for all resamples at once.
    rx, ry = rankdata(xs[valid], axis=1), rankdata(ys[valid], axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    rhos = (rx * ry).sum(axis=1) / np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
    if rhos.size == 0:
        return RankCorrelation(float(rho), None, float(p_value), n, 0, "no bootstrap resample had varying ranks")
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(rhos, [alpha, 1 - alpha])
    return RankCorrelation(float(rho), (float(lo), float(hi)), float(p_value), n, int(rhos.size))
