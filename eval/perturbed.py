"""Perturbed experts: graded stand-ins for trained clones, written as ``bot[skill_drop=P,random=Q]``.

``pro[skill_drop=0.9]`` is the pro with 90% of its skill presses replaced by idle -- the naive
clone of the story: nearly the same frame accuracy as the pro, far fewer wins. ``pro[random=0.3]``
replaces 30% of its actions with uniformly random ones -- lower accuracy, but it still presses
skills. A set of these spans the offline-online gap without any training.
"""

from __future__ import annotations

import re
from typing import ClassVar

import numpy as np

from bcarena.agents.base import BotAgent
from bcarena.envs.duel import BOTS, NUM_ACTIONS, SKILL_ACTIONS, Action, Bot, DuelConfig, make_bot
from bcarena.eval.errors import EvalError


class PerturbedBot(Bot):
    """A bot whose actions are perturbed: skill presses dropped to idle, actions replaced at random.

    The perturbation draws from extra noise dimensions after the base bot's, so in matches it is a
    function of the match seed like any bot's randomness, and zero perturbation is the base bot.
    """

    extra_dims: ClassVar[int] = 3

    def __init__(self, base: Bot, skill_drop: float = 0.0, random: float = 0.0) -> None:
        super().__init__(base.config)
        for key, value in (("skill_drop", skill_drop), ("random", random)):
            if not 0.0 <= value <= 1.0:
                raise EvalError(f"perturbation {key} must be within [0, 1], got {value}")
        self.base, self.skill_drop, self.random = base, float(skill_drop), float(random)
        self.noise_dims = base.noise_dims + self.extra_dims
        self.name = perturbed_name(base.name, skill_drop, random)
        self.description = f"{base.name} with {skill_drop:.0%} of skill presses dropped, {random:.0%} random actions"

    def act(self, obs: np.ndarray, noise: np.ndarray) -> np.ndarray:
        k = self.base.noise_dims
        actions = self.base.act(obs, noise[:, :k])
        drop = np.isin(actions, SKILL_ACTIONS) & (noise[:, k] < self.skill_drop)
        actions = np.where(drop, Action.IDLE, actions)
        randomized = np.minimum((noise[:, k + 2] * NUM_ACTIONS).astype(np.int64), NUM_ACTIONS - 1)
        return np.where(noise[:, k + 1] < self.random, randomized, actions).astype(np.int64)


def perturbed_name(base: str, skill_drop: float, random: float) -> str:
    parts = [f"skill_drop={skill_drop:g}"] * bool(skill_drop) + [f"random={random:g}"] * bool(random)
    return f"{base}[{','.join(parts)}]" if parts else base


_PERTURBED = re.compile(r"^(?P<bot>[a-z_]+)\[(?P<args>[^\]]*)\]$")


def parse_perturbed(spec: str, config: DuelConfig | None = None, seed: int = 0) -> BotAgent | None:
    """``bot[skill_drop=0.9,random=0.1]`` -> a BotAgent of a :class:`PerturbedBot`; None if not that syntax."""
    found = _PERTURBED.match(spec.strip())
    if not found:
        return None
    if found["bot"] not in BOTS:
        raise EvalError(f"{spec!r}: unknown bot {found['bot']!r}; registered bots: {sorted(BOTS)}")
    kwargs: dict[str, float] = {}
    for item in filter(None, (a.strip() for a in found["args"].split(","))):
        key, _, value = item.partition("=")
        if key not in ("skill_drop", "random"):
            raise EvalError(f"{spec!r}: unknown perturbation {key!r}; use skill_drop=P and/or random=P")
        try:
            kwargs[key] = float(value)
        except ValueError:
            raise EvalError(f"{spec!r}: {key} needs a number in [0, 1], got {value!r}") from None
    return BotAgent(PerturbedBot(make_bot(found["bot"], config), **kwargs), seed=seed)
