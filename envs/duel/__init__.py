"""Duel: the house 1v1 fighting game (batched numpy core, gymnasium views, bots).

``DuelParallelEnv`` (the PettingZoo view, ``bcarena.envs.duel.parallel``) is resolved on first use, so
importing Duel never needs the optional ``multiagent`` extra.
"""

from typing import Any

from bcarena.envs.duel.bots import BOTS, Bot, make_bot, register_bot
from bcarena.envs.duel.config import (
    ACTION_NAMES,
    NUM_ACTIONS,
    SKILL_ACTIONS,
    Action,
    DuelConfig,
    DuelConfigError,
    SkillSpec,
)
from bcarena.envs.duel.core import DuelCore, DuelError, StepEvents
from bcarena.envs.duel.env import DuelEnv, DuelMatch, DuelVectorEnv, bot_noise
from bcarena.envs.duel.observation import STATE_DIM, STATE_FEATURES

__all__ = [
    "ACTION_NAMES",
    "BOTS",
    "NUM_ACTIONS",
    "SKILL_ACTIONS",
    "STATE_DIM",
    "STATE_FEATURES",
    "Action",
    "Bot",
    "DuelConfig",
    "DuelConfigError",
    "DuelCore",
    "DuelEnv",
    "DuelError",
    "DuelMatch",
    "DuelVectorEnv",
    "SkillSpec",
    "StepEvents",
    "bot_noise",
    "make_bot",
    "register_bot",
]


def __getattr__(name: str) -> Any:
    if name == "DuelParallelEnv":
        from bcarena.envs.duel.parallel import DuelParallelEnv

        return DuelParallelEnv
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
