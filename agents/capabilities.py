"""What an agent can do beyond ``act``, declared as Protocols instead of probed with ``getattr``.

Built-in agents subclass the protocols they implement (so the claim is written on the class and an
unimplemented member is an abstract-method error); callers ask with ``isinstance(agent, Exportable)``.
Any other class with the same members satisfies them structurally.

* :class:`Exportable` — a ``torch.nn.Module`` that serving can convert (ONNX, TorchScript) or run.
* :class:`FrameStacked` — builds its model inputs from observations (frame stacks), and acts on
  model inputs directly (offline evaluation on dataset rows, export parity recordings).
* :class:`Stochastic` — its actions may be drawn from a seeded random stream.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    import torch


@runtime_checkable
class Exportable(Protocol):
    """An agent whose decisions are the argmax of one module's scores."""

    @property
    @abstractmethod
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one model input sample (frames stacked): (k * STATE_DIM,) or (k, 84, 84)."""

    @abstractmethod
    def export_module(self) -> torch.nn.Module:
        """A copy of the score module in eval mode: float32 (B, *input_shape) -> scores (B, num_actions)."""


@runtime_checkable
class FrameStacked(Protocol):
    """An agent that turns observations into model inputs itself (keeping ``frame_stack`` frames per row)."""

    frame_stack: int

    @abstractmethod
    def stacked(self, obs: np.ndarray) -> np.ndarray:
        """Push observations (B, *obs_shape) onto the per-row stacks; return model inputs (B, *input_shape)."""

    @abstractmethod
    def act_stacked(self, x: np.ndarray) -> np.ndarray:
        """Actions (B,) int64 for model inputs (B, *input_shape), e.g. dataset rows."""

    @abstractmethod
    def scores_stacked(self, x: np.ndarray) -> np.ndarray:
        """Action scores (B, num_actions) float32 for model inputs (B, *input_shape)."""


@runtime_checkable
class Stochastic(Protocol):
    """An agent whose actions may be sampled from a random stream seeded by ``seed``."""

    @property
    @abstractmethod
    def seed(self) -> int:
        """Seed of the agent's own random stream."""

    @property
    @abstractmethod
    def greedy(self) -> bool:
        """Whether, as configured, ``act`` picks the best-scoring action (so serving it greedily changes nothing)."""
