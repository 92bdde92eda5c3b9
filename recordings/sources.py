"""Who plays in a recording: bots, agents, SB3 models, all behind one small interface.

A *source* is anything that chooses actions for a batch of observations:

* a bot name (``"pro"``) or a :class:`bcarena.envs.duel.Bot` — fed the match's own noise
  streams (``bot_noise``), so a recorded match is the very match ``play_matches`` would play;
* any object with ``act(obs_batch) -> actions`` (the :class:`Policy` protocol; bcarena Agents
  fit it without this layer importing ``agents/``), optionally with ``obs_type`` ("state" or
  "pixels") and ``reset(batch_size)``;
* a loaded Stable-Baselines3 model (anything with ``predict`` and ``observation_space``), played
  deterministically.

``resolve_source`` turns any of these into a :class:`Player`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np

from bcarena.envs.duel import Bot, DuelConfig, bot_noise, make_bot
from bcarena.envs.duel.core import DuelCore


class SourceError(TypeError):
    """Something was given as a player that cannot choose actions."""


@runtime_checkable
class Policy(Protocol):
    """The duck-typed player: batched observations (B, *obs_shape) in, (B,) int actions out."""

    def act(self, obs: np.ndarray) -> np.ndarray: ...


@dataclass
class Player:
    """A resolved source: ``actions(obs, core, player)`` -> (N,) int64 for observations (N, *obs_shape)."""

    name: str
    kind: str  # "bot" | "policy" | "sb3" | "human"
    obs_type: str  # "state" | "pixels"
    choose: Callable[[np.ndarray, DuelCore | None, int], np.ndarray]
    reset: Callable[[int], None] = lambda batch_size: None

    def actions(self, obs: np.ndarray, core: DuelCore | None = None, player: int = 0) -> np.ndarray:
        return np.asarray(self.choose(obs, core, player)).astype(np.int64).reshape(-1)

    def describe(self) -> dict[str, str]:
        return {"name": self.name, "kind": self.kind, "obs_type": self.obs_type}


def _bot_player(bot: Bot) -> Player:
    def choose(obs: np.ndarray, core: DuelCore | None, player: int) -> np.ndarray:
        if core is None:
            raise SourceError(f"bot {bot.name!r} needs a Duel core for its noise streams")
        return bot.act(obs, bot_noise(core, player, bot.noise_dims))

    return Player(bot.name, "bot", "state", choose)


def _policy_player(policy: Any) -> Player:
    obs_type = getattr(policy, "obs_type", "state")
    if obs_type not in ("state", "pixels"):
        raise SourceError(f"{type(policy).__name__}.obs_type must be 'state' or 'pixels', got {obs_type!r}")
    reset = getattr(policy, "reset", None)
    return Player(str(getattr(policy, "name", type(policy).__name__)), "policy", obs_type,
                  lambda obs, core, player: policy.act(obs),
                  reset if callable(reset) else (lambda batch_size: None))


def _sb3_player(model: Any) -> Player:
    shape = tuple(model.observation_space.shape or ())
    obs_type = "pixels" if len(shape) == 3 else "state"
    return Player(f"sb3-{type(model).__name__.lower()}", "sb3", obs_type,
                  lambda obs, core, player: model.predict(obs, deterministic=True)[0])


def is_sb3_model(source: Any) -> bool:
    return callable(getattr(source, "predict", None)) and hasattr(source, "observation_space") \
        and hasattr(source, "policy")


# Tried in order; the first predicate that accepts the source builds the Player.
RESOLVERS: list[tuple[Callable[[Any], bool], Callable[[Any, DuelConfig], Player]]] = [
    (lambda s: isinstance(s, Player), lambda s, cfg: s),
    (lambda s: isinstance(s, str), lambda s, cfg: _bot_player(make_bot(s, cfg))),
    (lambda s: isinstance(s, Bot), lambda s, cfg: _bot_player(s)),
    (is_sb3_model, lambda s, cfg: _sb3_player(s)),
    (lambda s: isinstance(s, Policy), lambda s, cfg: _policy_player(s)),
]


def resolve_source(source: Any, config: DuelConfig | None = None) -> Player:
    """A :class:`Player` for a bot name, a Bot, an SB3 model or any object with ``act``."""
    for accepts, build in RESOLVERS:
        if accepts(source):
            return build(source, config or DuelConfig())
    raise SourceError(f"cannot record {type(source).__name__!r} as a player: give a bot name, a Bot, "
                      f"an SB3 model, or an object with act(obs_batch) -> actions")
