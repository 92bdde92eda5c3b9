"""The one batched match loop, and the Policy protocol every player satisfies.

(Being built: see the architecture issue. ``validate_actions`` is the one check of what a policy's
``act`` returned; every caller uses it.)
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from bcarena.envs.errors import BcarenaError


class PolicyError(BcarenaError, ValueError):
    """A policy returned something that is not a batch of valid action ids."""


@runtime_checkable
class Policy(Protocol):
    """Anything that plays: ``reset(n)`` before n new matches, ``act(obs (n, *obs_shape)) -> (n,) int actions``."""

    name: str
    obs_type: str

    def reset(self, batch_size: int) -> None: ...

    def act(self, obs: np.ndarray) -> np.ndarray: ...


def validate_actions(actions: object, batch_size: int, num_actions: int, who: str) -> np.ndarray:
    """``actions`` as a (batch_size,) int64 array of ids in [0, num_actions), or a :class:`PolicyError` naming ``who``."""
    arr = np.asarray(actions)
    if arr.shape != (batch_size,) or not np.issubdtype(arr.dtype, np.integer):
        raise PolicyError(f"{who}: act() must return ({batch_size},) integer action ids, got {arr.dtype} {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() >= num_actions):
        raise PolicyError(f"{who}: actions must be in [0, {num_actions}), got {np.unique(arr)[:8].tolist()}")
    return arr.astype(np.int64, copy=False)
