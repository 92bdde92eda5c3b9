"""Who plays in a recording: any Policy, a bot or an SB3 model, resolved to one :class:`Source`.

A *source* is

* any :class:`~bcarena.envs.play.Policy` — bcarena Agents, or any object with
  ``act(obs_batch) -> actions`` (``name``, ``obs_type`` ("state" or "pixels", default "state") and
  ``reset(batch_size)`` are optional);
* a bot name (``"pro"``), a :class:`bcarena.envs.duel.Bot` or any
  :class:`~bcarena.envs.play.NoisyPolicy` (a ``BotAgent``) — the match loop feeds it the match's own
  noise streams, so a recorded match is the very match ``play_matches`` would play;
* a loaded Stable-Baselines3 model (anything with ``predict``, ``observation_space`` and ``policy``),
  played deterministically.

Agent folders, servers and perturbed bots are loaded by the caller (the experiments layer uses
``bcarena.eval.matches.load_player``) and passed as Agents: this layer sits below agents and loads none.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bcarena.envs.duel import Bot, DuelConfig, make_bot
from bcarena.envs.errors import BcarenaError
from bcarena.envs.play import BotPolicy, NoisyPolicy, Policy

OBS_TYPES = ("state", "pixels")


class SourceError(BcarenaError, TypeError):
    """Something was given as a player that cannot choose actions."""


@dataclass(frozen=True)
class Source:
    """A resolved recording source: the policy that plays, and its ``kind`` as meta.json records it."""

    policy: Policy | NoisyPolicy
    kind: str  # "bot" | "policy" | "sb3"

    @property
    def name(self) -> str:
        return self.policy.name

    @property
    def obs_type(self) -> str:
        return self.policy.obs_type

    def describe(self) -> dict[str, str]:
        return {"name": self.name, "kind": self.kind, "obs_type": self.obs_type}


class _ActOnly:
    """An object with only ``act(obs)``, completed into a Policy (a name, an observation kind, a reset)."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.name = str(getattr(policy, "name", type(policy).__name__))
        self.obs_type = getattr(policy, "obs_type", "state")
        self._reset = getattr(policy, "reset", None)

    def reset(self, batch_size: int) -> None:
        if callable(self._reset):
            self._reset(batch_size)

    def act(self, obs: np.ndarray) -> np.ndarray:
        return self.policy.act(obs)


class _SB3Model:
    """A loaded Stable-Baselines3 model as a Policy, acting deterministically."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.name = f"sb3-{type(model).__name__.lower()}"
        self.obs_type = "pixels" if len(tuple(model.observation_space.shape or ())) == 3 else "state"

    def reset(self, batch_size: int) -> None:
        """SB3 feed-forward policies keep no memory."""

    def act(self, obs: np.ndarray) -> np.ndarray:
        return self.model.predict(obs, deterministic=True)[0]


def is_sb3_model(source: Any) -> bool:
    return (
        callable(getattr(source, "predict", None))
        and hasattr(source, "observation_space")
        and hasattr(source, "policy")
    )


def _resolve(source: Any, config: DuelConfig) -> Source:
    if isinstance(source, Source):
        return source
    if isinstance(source, str):
        if Path(source).exists():
            raise SourceError(
                f"{source!r} is a path, not a bot name: load agent folders first "
                "(bcarena.eval.matches.load_player) and record the Agent"
            )
        return Source(BotPolicy(make_bot(source, config)), "bot")
    if isinstance(source, Bot):
        return Source(BotPolicy(source), "bot")
    if isinstance(source, NoisyPolicy):
        return Source(source, "bot")
    if is_sb3_model(source):
        return Source(_SB3Model(source), "sb3")
    if isinstance(source, Policy):
        return Source(source, "policy")
    if callable(getattr(source, "act", None)):
        return Source(_ActOnly(source), "policy")
    raise SourceError(
        f"cannot record {type(source).__name__!r} as a player: give a bot name, a Bot, "
        f"an SB3 model, or an object with act(obs_batch) -> actions"
    )


def resolve_source(source: Any, config: DuelConfig | None = None) -> Source:
    """A :class:`Source` for a bot name, a Bot, an SB3 model or any Policy (see the module docstring)."""
    resolved = _resolve(source, config or DuelConfig())
    if resolved.obs_type not in OBS_TYPES:
        raise SourceError(f"{resolved.name}: obs_type must be one of {list(OBS_TYPES)}, got {resolved.obs_type!r}")
    return resolved
