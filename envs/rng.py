"""Counter-based random numbers: a pure function of (seed, counter, stream).

A match's randomness (start positions, a bot's hesitation) must not depend on which other
matches share its batch, or a single env and a vector env could never agree bit for bit.
SplitMix64 hashing of (seed, counter, stream) gives every match its own stream with no
per-match generator objects and no Python loop over matches.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_STREAM = np.uint64(0xD6E8FEB86659FD93)


def _splitmix64(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def uniform(seeds: np.ndarray, counters: np.ndarray | int, streams: np.ndarray | int) -> np.ndarray:
    """Uniform floats in [0, 1) of the broadcast shape of ``seeds``, ``counters``, ``streams``.

    All inputs are non-negative integers; equal inputs always give equal outputs.
    """
    seeds = np.asarray(seeds, dtype=np.uint64)
    counters = np.asarray(counters, dtype=np.uint64)
    streams = np.asarray(streams, dtype=np.uint64)
    key = _splitmix64(seeds * _GOLDEN + _STREAM)
    z = _splitmix64(key ^ (counters * _GOLDEN) ^ (streams * _STREAM))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def derive_seeds(seeds: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Well-mixed 63-bit match seeds (uint64) for episode ``indices`` of envs seeded with ``seeds``."""
    seeds = np.asarray(seeds).astype(np.uint64)
    indices = np.asarray(indices).astype(np.uint64)
    return _splitmix64(seeds * _GOLDEN + indices * _MIX1 + _STREAM) >> np.uint64(1)


def derive_seed(seed: int, index: int) -> int:
    """Scalar :func:`derive_seeds`."""
    return int(derive_seeds(np.array([seed]), np.array([index]))[0])
