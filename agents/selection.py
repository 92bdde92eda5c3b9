"""Action selection: how an agent turns action scores (B, A) into actions (B,).

Modes (``MODES``): ``argmax``; ``sample`` from softmax(scores); ``temperature`` sampling from
softmax(scores / T); ``thresholds`` = argmax after per-class offsets (log-thresholds) tuned on
validation data by :func:`tune_class_offsets` — the offsets live in the score module so its
exported argmax is the agent's action; ``calibrated`` sampling from softmax(scores + boosts),
per-class log boosts fitted on validation by :func:`calibrate_boosts` so that the expected action
rates match the expert's (stored in the selection itself: ``boosts``).

Stochastic modes draw by inverse CDF from one uniform number per row (:func:`select`). In a match
that number is the match's own noise (a function of match seed, decision and player) hashed with
the agent's seed (:func:`agent_uniforms`), so an action depends only on (agent seed, match seed,
decision, player), never on the batch it was computed in.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import Field, model_validator

from bcarena.agents.specs import FiniteFloat, Seed, Strict, one_of
from bcarena.envs import rng
from bcarena.envs.errors import BcarenaError

MODES: tuple[str, ...] = ("argmax", "sample", "temperature", "thresholds", "calibrated")
GREEDY_MODES: tuple[str, ...] = ("argmax", "thresholds")
_AGENT_STREAM = 0xA6E7  # the stream an agent's seed hashes match noise on (any constant other streams do not use)
MAX_BOOST = 20.0  # |log boost| bound of calibrated mode: a class the expert never uses ends far below, not at -inf


class SelectionSpec(Strict):
    """A ``Selection`` as ``agent.json`` stores it (``boosts``: calibrated mode's per-class log boosts)."""

    mode: Annotated[str, one_of(MODES)] = "argmax"
    temperature: Annotated[FiniteFloat, Field(gt=0)] = 1.0
    seed: Seed = 0
    boosts: list[Annotated[FiniteFloat, Field(ge=-MAX_BOOST, le=MAX_BOOST)]] | None = None

    @model_validator(mode="after")
    def _boosts_with_calibrated(self) -> SelectionSpec:
        if (self.mode == "calibrated") != (self.boosts is not None):
            raise ValueError("selection mode 'calibrated' needs 'boosts' (one per action), and only it takes them")
        return self


class SelectionError(BcarenaError, ValueError):
    """An invalid selection mode or parameter."""


@dataclass
class Selection:
    """How actions are picked from scores. ``seed`` seeds sampling (reset on ``Agent.reset``).

    ``temperature`` (> 0) is used by mode ``temperature`` only; ``boosts`` (A,) log-offsets by mode
    ``calibrated`` only (and it needs them).
    """

    mode: str = "argmax"
    temperature: float = 1.0
    seed: int = 0
    boosts: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise SelectionError(f"selection mode must be one of {list(MODES)}, got {self.mode!r}")
        if not (
            isinstance(self.temperature, (int, float)) and self.temperature > 0 and math.isfinite(self.temperature)
        ):
            raise SelectionError(f"selection temperature must be a finite number > 0, got {self.temperature!r}")
        if self.boosts is not None:
            self.boosts = tuple(float(b) for b in self.boosts)
            if not all(math.isfinite(b) and abs(b) <= MAX_BOOST for b in self.boosts):
                raise SelectionError(f"selection boosts must be finite log-offsets within +-{MAX_BOOST:g}")
        if (self.mode == "calibrated") != (self.boosts is not None):
            raise SelectionError(
                "selection mode 'calibrated' needs per-class boosts fitted on validation data "
                "(bcarena.agents.decoding.decode_agent), and only it takes boosts"
            )

    @property
    def greedy(self) -> bool:
        """Whether the action is the best-scoring one (no randomness is drawn)."""
        return self.mode in GREEDY_MODES

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.boosts is None:  # agent.json of the other modes stays as it was
            del data["boosts"]
        else:
            data["boosts"] = list(self.boosts)
        return data


def log_policy(scores: torch.Tensor, sel: Selection) -> torch.Tensor:
    """Log-probabilities (B, A) float64 of the distribution a stochastic mode samples from.

    For the greedy modes it is log softmax(scores): the soft policy whose argmax they play (what
    the likelihood of the expert's actions is measured with).
    """
    scaled = scores.double()
    if sel.mode == "temperature":
        scaled = scaled / sel.temperature
    elif sel.mode == "calibrated":
        scaled = scaled + torch.tensor(sel.boosts, dtype=torch.float64)
    return torch.log_softmax(scaled, dim=-1)


def action_probabilities(scores: torch.Tensor, sel: Selection) -> torch.Tensor:
    """(B, A) float64: the probability that ``select`` picks each action (one-hot for the greedy modes)."""
    if sel.greedy:
        return torch.nn.functional.one_hot(scores.argmax(dim=-1), scores.shape[-1]).double()
    return log_policy(scores, sel).exp()


def inverse_cdf(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Actions (B,) int64: row i's first action whose cumulative probability exceeds ``uniforms[i]`` in [0, 1)."""
    cdf = probs.double().cumsum(dim=-1)
    target = (uniforms.double() * cdf[:, -1])[:, None]
    return torch.searchsorted(cdf, target, right=True)[:, 0].clamp(max=probs.shape[-1] - 1)


def select(scores: torch.Tensor, sel: Selection, uniforms: torch.Tensor | None = None) -> torch.Tensor:
    """Actions (B,) int64 from scores (B, A); stochastic modes need ``uniforms`` (B,) in [0, 1)."""
    if sel.greedy:
        return scores.argmax(dim=-1)
    if uniforms is None:
        raise SelectionError(f"selection mode {sel.mode!r} samples: it needs one uniform number per row")
    return inverse_cdf(log_policy(scores, sel).exp(), uniforms)


def agent_uniforms(noise: np.ndarray, seed: int) -> np.ndarray:
    """(B,) float64 in [0, 1): match noise (B,) in [0, 1) hashed with an agent's ``seed``.

    A counter-based hash of the pair (``bcarena.envs.rng``), so two agents on the same match draw
    independent numbers, and one agent draws the same number for the same match, decision and
    player whatever batch it is in.
    """
    bits = (np.asarray(noise, dtype=np.float64) * 2.0**53).astype(np.uint64)
    return rng.uniform(np.full(bits.shape, seed, dtype=np.uint64), bits, _AGENT_STREAM)


# ---------------------------------------------------------------------------- fitted on validation
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


@dataclass
class Calibration:
    """Calibrated mode's fit: boosts (A,) and how close the expected rates came to the expert's."""

    boosts: np.ndarray  # (A,) log boosts, mean 0
    target_rates: np.ndarray  # (A,) expert class frequencies (add-half smoothed)
    rates: np.ndarray  # (A,) the policy's expected action rates with the boosts
    iterations: int

    @property
    def max_rate_error(self) -> float:
        return float(np.abs(self.rates - self.target_rates).max())


def calibrate_boosts(
    log_probs: np.ndarray, labels: np.ndarray, num_actions: int, iterations: int = 100, tol: float = 1e-5
) -> Calibration:
    """Per-class log boosts b so that mean_i softmax(log_probs_i + b) matches the frequencies of ``labels``.

    ``log_probs`` (N, A) are the agent's scores on validation frames, ``labels`` (N,) the expert's
    actions. Fixed-point iteration on the log-offsets (the prior-shift update of Saerens et al.,
    2002): ``b <- b + log(target / expected_rate)``, until every rate is within ``tol`` or after
    ``iterations`` rounds. Frequencies are smoothed by half a frame per class, so a class the
    expert never used gets a large negative boost (bounded by ``MAX_BOOST``) instead of -inf.
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_actions).astype(np.float64)
    target = (counts + 0.5) / (counts.sum() + 0.5 * num_actions)
    scores = np.asarray(log_probs, dtype=np.float64)
    boosts = np.zeros(num_actions)
    rates = _mean_softmax(scores, boosts)
    done = 0
    while done < iterations and np.abs(rates - target).max() > tol:
        boosts = np.clip(boosts + np.log(target / np.maximum(rates, 1e-300)), -MAX_BOOST, MAX_BOOST)
        boosts = np.clip(boosts - boosts.mean(), -MAX_BOOST, MAX_BOOST)  # softmax ignores a shift: keep them centred
        rates = _mean_softmax(scores, boosts)
        done += 1
    return Calibration(boosts, target, rates, done)


def _mean_softmax(scores: np.ndarray, boosts: np.ndarray) -> np.ndarray:
    z = scores + boosts
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return (z / z.sum(axis=1, keepdims=True)).mean(axis=0)
