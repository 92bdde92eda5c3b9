"""Scripted Duel players of graded strength, vectorized over a batch of observations.

A bot maps state observations (N, STATE_DIM) plus uniform noise (N, noise_dims) in [0, 1) to
action ids (N,). Randomness comes in as an argument rather than from a generator inside, so the
env can feed each match its own counter-based stream (see ``bcarena.envs.rng``) and a match
plays out the same whichever batch it runs in.

The **pro** is the player whose recordings carry the project's story: it spaces, guards on time
and presses a skill only at good moments, and even then with a small per-frame chance (it
waits, hesitates). Skill presses are a few percent of its frames, so a frame-by-frame copy is
~all movement and learns "never use a skill".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from bcarena.envs.duel.config import Action, DuelConfig
from bcarena.envs.duel.observation import FEATURE_INDEX as F
from bcarena.envs.errors import BcarenaError


class UnknownBotError(BcarenaError, KeyError):
    """No bot is registered under the name asked for (a KeyError, as a registry lookup)."""


@dataclass
class _View:
    """Observation fields in game units, as a bot reasons about them."""

    distance: np.ndarray  # m
    toward: np.ndarray  # action id moving toward the opponent
    away: np.ndarray  # action id moving away from the opponent
    cornered: np.ndarray  # bool, a wall is right behind
    busy: np.ndarray  # bool, in a move or in hitstun: inputs are ignored
    ready: np.ndarray  # (N, 3) bool, own light/heavy/special can be pressed
    opp_move: np.ndarray  # 0 none, 1..3 the opponent's current move
    opp_threat_phase: np.ndarray  # bool, opponent's move is in startup or active
    opp_recovery: np.ndarray  # bool
    opp_hitstun: np.ndarray  # bool
    opp_guarding: np.ndarray  # bool
    opp_airborne: np.ndarray  # bool


class Bot:
    """Base class. Subclasses set ``name`` and ``noise_dims`` and implement ``act``."""

    name: ClassVar[str] = ""
    noise_dims: ClassVar[int] = 1
    description: ClassVar[str] = ""

    def __init__(self, config: DuelConfig | None = None) -> None:
        self.config = config if config is not None else DuelConfig()
        self._reach = np.array([0.0] + [s.reach for s in self.config.skills])

    def act(self, obs: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """Actions (N,) int64 for observations (N, STATE_DIM) and noise (N, noise_dims)."""
        raise NotImplementedError

    def _view(self, obs: np.ndarray) -> _View:
        cfg = self.config
        dx = obs[:, F["dx"]]
        toward = np.where(dx >= 0, Action.RIGHT, Action.LEFT)
        away = np.where(dx >= 0, Action.LEFT, Action.RIGHT)
        own_x = obs[:, F["own_x"]]
        wall_margin = 2 * cfg.body_width / cfg.arena_width * 2
        cornered = np.where(dx >= 0, own_x < -1 + wall_margin, own_x > 1 - wall_margin)
        in_move = obs[:, F["own_in_light"] : F["own_in_special"] + 1].any(axis=1)
        opp_onehot = obs[:, F["opp_in_light"] : F["opp_in_special"] + 1]
        opp_move = np.where(opp_onehot.any(axis=1), opp_onehot.argmax(axis=1) + 1, 0)
        return _View(
            distance=obs[:, F["distance"]].astype(np.float64) * cfg.arena_width,
            toward=toward,
            away=away,
            cornered=cornered,
            busy=in_move | (obs[:, F["own_hitstun"]] > 0),
            ready=obs[:, F["own_cd_light"] : F["own_cd_special"] + 1] == 0,
            opp_move=opp_move,
            opp_threat_phase=(obs[:, F["opp_startup"]] + obs[:, F["opp_active"]]) > 0,
            opp_recovery=obs[:, F["opp_recovery"]] > 0,
            opp_hitstun=obs[:, F["opp_hitstun"]] > 0,
            opp_guarding=obs[:, F["opp_guarding"]] > 0,
            opp_airborne=obs[:, F["opp_y"]] > 0,
        )

    def _threatened(self, v: _View, margin: float) -> np.ndarray:
        return v.opp_threat_phase & (v.distance <= self._reach[v.opp_move] + margin)


class IdleBot(Bot):
    name = "idle"
    description = "never presses anything: a training dummy"

    def act(self, obs: np.ndarray, noise: np.ndarray) -> np.ndarray:
        return np.zeros(obs.shape[0], dtype=np.int64)


class RandomBot(Bot):
    name = "random"
    description = "uniformly random action every frame"

    def act(self, obs: np.ndarray, noise: np.ndarray) -> np.ndarray:
        return np.minimum((noise[:, 0] * len(Action)).astype(np.int64), len(Action) - 1)


class MoverBot(Bot):
    name = "mover"
    description = "random movement and guarding, never a skill: cannot deal damage, so never wins"
    _choices = np.array([Action.IDLE, Action.LEFT, Action.RIGHT, Action.JUMP, Action.GUARD])

    def act(self, obs: np.ndarray, noise: np.ndarray) -> np.ndarray:
        return self._choices[np.minimum((noise[:, 0] * 5).astype(np.int64), 4)].astype(np.int64)


class BrawlerBot(Bot):
    name = "brawler"
    description = "walks in and mashes light/heavy attacks; never guards"
    noise_dims = 2

    def act(self, obs: np.ndarray, noise: np.ndarray) -> np.ndarray:
        v = self._view(obs)
        close = v.distance <= 0.9 * self._reach[1]
        attack = np.where(
            v.ready[:, 1] & (noise[:, 1] < 0.35), Action.HEAVY, np.where(v.ready[:, 0], Action.LIGHT, Action.IDLE)
        )
        act = np.where(close & (noise[:, 0] < 0.7), attack, np.where(close, Action.IDLE, v.toward))
        return np.where(v.busy, Action.IDLE, act).astype(np.int64)


class TurtleBot(Bot):
    name = "turtle"
    description = "guards almost always, backs off, counters with a light attack after a whiff"
    noise_dims = 2

    def act(self, obs: np.ndarray, noise: np.ndarray) -> np.ndarray:
        v = self._view(obs)
        counter = (v.opp_recovery | v.opp_hitstun) & (v.distance <= self._reach[1]) & v.ready[:, 0]
        act = np.where(
            self._threatened(v, 0.5),
            Action.GUARD,
            np.where(
                counter & (noise[:, 0] < 0.5),
                Action.LIGHT,
                np.where(
                    (v.distance < 1.0) & ~v.cornered & (noise[:, 1] < 0.3),
                    v.away,
                    np.where(noise[:, 1] < 0.8, Action.GUARD, Action.IDLE),
                ),
            ),
        )
        return np.where(v.busy, Action.IDLE, act).astype(np.int64)


class ProBot(Bot):
    """Spacing, on-time guarding and rare, well-timed skills with human-like hesitation.

    In an *opportune* state (a ready skill reaches an opponent that is open: recovering from a
    whiff, in hitstun, or not guarding) the pro presses with a per-frame probability of only
    ``punish_chance`` / ``poke_chance``; otherwise it holds its spacing band.
    """

    name = "pro"
    description = "spaces, guards on time, uses skills rarely and at the right moment"
    noise_dims = 1
    punish_chance: ClassVar[float] = 0.18  # per frame, opponent recovering or stunned
    poke_chance: ClassVar[float] = 0.03  # per frame, opponent merely open (or guarding vs. special)
    band: ClassVar[tuple[float, float]] = (1.3, 1.55)  # m, preferred distance: outside light, inside heavy reach

    def opportune(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(opportune, punish, skill action) per observation: the pro's reading of the moment."""
        return self._read_moment(self._view(obs))

    def _read_moment(self, v: _View) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        reach_ok = v.ready & (v.distance[:, None] <= self._reach[1:][None, :] - 0.05)
        reach_ok[:, :2] &= ~v.opp_airborne[:, None]
        punish = (v.opp_recovery | v.opp_hitstun) & reach_ok.any(axis=1)
        open_ = ~v.opp_guarding & ~v.opp_threat_phase & reach_ok[:, :2].any(axis=1)
        chip = v.opp_guarding & reach_ok[:, 2]
        skill = np.where(
            reach_ok[:, 2] & (punish | chip), Action.SPECIAL, np.where(reach_ok[:, 1], Action.HEAVY, Action.LIGHT)
        )
        opportune = (punish | open_ | chip) & ~v.busy & ~self._threatened(v, 0.3)
        return opportune, punish, skill

    def act(self, obs: np.ndarray, noise: np.ndarray) -> np.ndarray:
        v = self._view(obs)
        opportune, punish, skill = self._read_moment(v)
        press = opportune & (noise[:, 0] < np.where(punish, self.punish_chance, self.poke_chance))
        return self._decide(v, skill, press)

    def action_probabilities(self, obs: np.ndarray) -> np.ndarray:
        """The pro's action distribution (N, NUM_ACTIONS) float64 for observations (N, STATE_DIM).

        Its one random choice is the press: in an opportune state it presses with probability
        ``punish_chance`` / ``poke_chance``, else it plays as when not pressing. ``act`` with noise
        uniform in [0, 1) draws from exactly this distribution (what DAgger's soft labels use).
        """
        v = self._view(obs)
        opportune, punish, skill = self._read_moment(v)
        chance = np.where(opportune, np.where(punish, self.punish_chance, self.poke_chance), 0.0)
        rows = np.arange(obs.shape[0])
        probs = np.zeros((obs.shape[0], len(Action)))
        np.add.at(probs, (rows, self._decide(v, skill, np.zeros(rows.size, dtype=bool))), 1.0 - chance)
        np.add.at(probs, (rows, self._decide(v, skill, np.ones(rows.size, dtype=bool))), chance)
        return probs

    def _decide(self, v: _View, skill: np.ndarray, press: np.ndarray) -> np.ndarray:
        """Actions (N,) int64 once the press (N,) bool is decided."""
        # Light attacks start faster than one 10 FPS frame, so they cannot be seen coming: up close,
        # against an opponent free to attack, the guard goes up before.
        in_jab_range = (v.distance <= self._reach[1] + 0.15) & ~(v.opp_recovery | v.opp_hitstun)
        # Defence is reliable (a pro's guard is a reflex); the hesitation is all in when to attack.
        guard = self._threatened(v, 0.3) | (in_jab_range & ~press)
        lo, hi = self.band
        spacing = np.where(v.distance > hi, v.toward, np.where((v.distance < lo) & ~v.cornered, v.away, Action.IDLE))
        act = np.where(guard, Action.GUARD, np.where(press, skill, spacing))
        return np.where(v.busy, Action.IDLE, act).astype(np.int64)


BOTS: dict[str, type[Bot]] = {cls.name: cls for cls in (IdleBot, RandomBot, MoverBot, BrawlerBot, TurtleBot, ProBot)}


def make_bot(name: str, config: DuelConfig | None = None) -> Bot:
    """Instantiate a registered bot by name."""
    try:
        cls = BOTS[name]
    except KeyError:
        raise UnknownBotError(f"unknown bot {name!r}; registered bots: {sorted(BOTS)}") from None
    return cls(config)


def register_bot(cls: type[Bot]) -> type[Bot]:
    """Class decorator adding a Bot subclass to the registry under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a non-empty 'name' to be registered")
    BOTS[cls.name] = cls
    return cls
