"""The one Agent interface every player implements: batched numpy observations in, actions out."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from bcarena.envs.duel.bots import Bot, make_bot
from bcarena.envs.duel.config import DuelConfig


class Agent(ABC):
    """A batched policy.

    ``act(obs)`` takes observations of shape (B, *obs_shape) — (B, STATE_DIM) float32 for
    ``obs_type == "state"``, (B, 84, 84, 1) uint8 for ``"pixels"`` — and returns (B,) int64
    action ids. ``reset(B)`` is called before a new batch of matches so agents with memory
    (frame stacks) start clean.
    """

    name: str = "agent"
    obs_type: str = "state"

    @abstractmethod
    def act(self, obs: np.ndarray) -> np.ndarray:
        """Actions (B,) int64 for a batch of observations."""

    def reset(self, batch_size: int) -> None:
        """Forget per-match memory before ``batch_size`` new matches. Stateless agents ignore it."""


class BotAgent(Agent):
    """A scripted bot as an Agent.

    Standalone it draws its randomness from its own seeded generator. Match runners that own a
    Duel core feed ``bot`` the per-match noise streams instead (``bcarena.envs.duel.bot_noise``),
    which makes a match independent of the batch it runs in.
    """

    obs_type = "state"

    def __init__(self, bot: Bot | str, seed: int = 0, config: DuelConfig | None = None) -> None:
        self.bot = make_bot(bot, config) if isinstance(bot, str) else bot
        self.name = self.bot.name
        self._rng = np.random.default_rng(seed)

    def act(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float32)
        return self.bot.act(obs, self._rng.random((obs.shape[0], self.bot.noise_dims)))
