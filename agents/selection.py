"""Action selection: how an agent turns action scores (B, A) into actions (B,).

Modes (``SELECTORS``): ``argmax``; ``sample`` from softmax(scores); ``temperature`` sampling
from softmax(scores / T); ``thresholds`` = argmax after per-class offsets (log-thresholds)
tuned on validation data by ``tune_class_offsets`` — the offsets live in the score module so
its exported argmax is the agent's action.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import Field

from bcarena.agents.specs import FiniteFloat, Seed, Strict, one_of
from bcarena.envs.errors import BcarenaError

MODES: tuple[str, ...] = ("argmax", "sample", "temperature", "thresholds")


class SelectionSpec(Strict):
    """A ``Selection`` as ``agent.json`` stores it."""

    mode: Annotated[str, one_of(MODES)] = "argmax"
    temperature: Annotated[FiniteFloat, Field(gt=0)] = 1.0
    seed: Seed = 0


class SelectionError(BcarenaError, ValueError):
    """An invalid selection mode or parameter."""


@dataclass
class Selection:
    """How actions are picked from scores. ``seed`` seeds sampling (reset on ``Agent.reset``)."""

    mode: str = "argmax"
    temperature: float = 1.0  # > 0, only for mode "temperature"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise SelectionError(f"selection mode must be one of {list(MODES)}, got {self.mode!r}")
        if not (isinstance(self.temperature, (int, float)) and self.temperature > 0):
            raise SelectionError(f"selection temperature must be a number > 0, got {self.temperature!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _argmax(scores: torch.Tensor, sel: Selection, gen: torch.Generator) -> torch.Tensor:
    return scores.argmax(dim=-1)


def _sample(scores: torch.Tensor, sel: Selection, gen: torch.Generator) -> torch.Tensor:
    return torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=gen)[:, 0]


def _temperature(scores: torch.Tensor, sel: Selection, gen: torch.Generator) -> torch.Tensor:
    return torch.multinomial(torch.softmax(scores / sel.temperature, dim=-1), 1, generator=gen)[:, 0]


SELECTORS: dict[str, Callable[[torch.Tensor, Selection, torch.Generator], torch.Tensor]] = {
    "argmax": _argmax,
    "sample": _sample,
    "temperature": _temperature,
    "thresholds": _argmax,
}


def select(scores: torch.Tensor, sel: Selection, gen: torch.Generator) -> torch.Tensor:
    """Actions (B,) int64 from scores (B, A)."""
    return SELECTORS[sel.mode](scores, sel, gen)


def tune_class_offsets(
    log_probs: np.ndarray,
    labels: np.ndarray,
    metric: Callable[[np.ndarray, np.ndarray], float],
    grid: np.ndarray | None = None,
    sweeps: int = 2,
) -> tuple[np.ndarray, float]:
    """Per-class additive offsets on log-probabilities (N, A) maximizing ``metric(labels, preds)``.

    Coordinate ascent: each class's offset in turn takes the best value on ``grid`` (log units)
    with the others fixed; ``sweeps`` passes. Classes absent from ``labels`` keep offset 0.
    Returns (offsets (A,), best metric).
    """
    grid = np.linspace(-4.0, 4.0, 33) if grid is None else np.asarray(grid, dtype=np.float64)
    num_actions = log_probs.shape[1]
    offsets = np.zeros(num_actions)
    best = metric(labels, (log_probs + offsets).argmax(axis=1))
    present = np.unique(labels)
    for _ in range(sweeps):
        for c in present:
            for value in grid:
                trial = offsets.copy()
                trial[c] = value
                score = metric(labels, (log_probs + trial).argmax(axis=1))
                if score > best + 1e-12:
                    best, offsets = score, trial
    return offsets.astype(np.float32), float(best)
