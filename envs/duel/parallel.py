"""A PettingZoo ``ParallelEnv`` view of Duel: both fighters are agents, one match, no bot inside.

Agents ``player_0`` and ``player_1`` act at once every decision (10 FPS). Each observes the game from
its own point of view, as ``DuelMatch`` gives it: the 37-float state vector (``obs_type="state"``) or its
84x84x1 gray frame (``"pixels"``). Actions are ``Discrete(8)`` (idle, left, right, jump, guard, light,
heavy, special).

Rewards are zero-sum and those of ``DuelEnv``, from each fighter's side: per step (HP damage dealt - HP
damage taken) / max_hp, plus +1 / -1 / 0 on the step the match ends in a win / loss / draw. A knock-out
ends the match with ``terminations`` True for both agents; the time-out (30 s by default) with
``truncations`` True (PettingZoo's convention for a time limit; the gymnasium ``DuelEnv`` reports it as
``terminated`` because time left is observed). Both agents leave ``agents`` on that step.

Seeding as ``DuelEnv``: ``reset(seed=s)`` plays episode k after it with match seed ``derive_seed(s, k)``,
so the same seed and actions give the same match, bit for bit, as ``DuelMatch`` with that match seed.

PettingZoo is the optional ``multiagent`` extra; this module is imported only when it is used
(``bcarena.envs.duel.DuelParallelEnv`` resolves it lazily).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from bcarena.envs import rng
from bcarena.envs.duel.config import NUM_ACTIONS, DuelConfig
from bcarena.envs.duel.core import DuelCore, DuelError, StepEvents
from bcarena.envs.duel.env import ObsType, observation_space, require_display
from bcarena.envs.duel.observation import state_observations
from bcarena.envs.duel.render import bgr_frame, gray_frames
from bcarena.envs.errors import BcarenaError


class MultiagentExtraMissing(BcarenaError, ImportError):
    """PettingZoo, the optional ``multiagent`` extra, is not installed."""


try:
    from pettingzoo import ParallelEnv  # type: ignore[import-untyped]  # pettingzoo ships no type information
except ImportError as exc:  # the optional extra: say which one instead of a bare ModuleNotFoundError
    raise MultiagentExtraMissing(
        f"the PettingZoo view of Duel needs pettingzoo ({exc.msg}); "
        "install the extra: pip install 'bcarena[multiagent]'"
    ) from None

AGENTS = ("player_0", "player_1")


class DuelParallelEnv(ParallelEnv):
    """One Duel match between two agents as a PettingZoo ``ParallelEnv`` (see the module docstring).

    ``info[agent]`` holds ``damage_dealt`` / ``damage_taken`` (HP this step) and, on the last step,
    ``winner`` (the winning agent's name, or None for a draw) and ``ko``. ``state()`` is player 0's
    state vector (it holds both fighters' features, the distance and the time left), shape (37,).
    """

    metadata: dict[str, Any] = {
        "render_modes": ["rgb_array", "human"],
        "name": "duel_v0",
        "render_fps": 10,
        "is_parallelizable": True,
    }

    def __init__(
        self,
        obs_type: ObsType = "state",
        config: DuelConfig | dict | None = None,
        render_mode: str | None = None,
    ) -> None:
        cfg = DuelConfig.from_dict(config) if isinstance(config, dict) else (config or DuelConfig())
        if not isinstance(cfg, DuelConfig):
            raise DuelError(f"config must be a DuelConfig or a dict of its fields, got {type(cfg).__name__}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise DuelError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        if render_mode == "human":
            require_display()
        self.config = cfg
        self.obs_type = obs_type
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": cfg.decision_hz}
        self.possible_agents = list(AGENTS)
        self.agents: list[str] = []
        self._observation_space = observation_space(obs_type)  # validates obs_type
        self._action_space = spaces.Discrete(NUM_ACTIONS)
        self.state_space = observation_space("state")
        self.core = DuelCore(1, cfg)
        self._env_seed: int | None = None
        self._episode = 0

    # PettingZoo requires the same space object on every call for an agent: both share one.
    def observation_space(self, agent: str) -> spaces.Box:
        self._check_agent(agent)
        return self._observation_space

    def action_space(self, agent: str) -> spaces.Discrete:
        self._check_agent(agent)
        return self._action_space

    def _check_agent(self, agent: str) -> None:
        if agent not in AGENTS:
            raise DuelError(f"unknown agent {agent!r}; Duel's agents are {list(AGENTS)}")

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        if seed is not None:
            if int(seed) < 0:
                raise DuelError(f"seed must be a non-negative integer, got {seed}")
            self._env_seed, self._episode = int(seed), 0
        elif self._env_seed is None:
            self._env_seed, self._episode = int(np.random.default_rng().integers(0, 2**62)), 0  # fresh OS entropy
        match_seed = rng.derive_seed(self._env_seed, self._episode)
        self._episode += 1
        self.core.reset([match_seed])
        self.agents = list(AGENTS)
        if self.render_mode == "human":
            self.render()
        return self._observe(), {agent: {"match_seed": match_seed} for agent in AGENTS}

    def _observe(self) -> dict[str, np.ndarray]:
        if self.obs_type == "state":
            obs = state_observations(self.core)[0]
            return {agent: obs[p] for p, agent in enumerate(AGENTS)}
        return {agent: gray_frames(self.core, p)[0, :, :, None] for p, agent in enumerate(AGENTS)}

    def _actions(self, actions: dict[str, Any]) -> np.ndarray:
        if not self.agents:
            raise DuelError("the match is finished: call reset() before step()")
        if not isinstance(actions, dict) or set(actions) != set(AGENTS):
            given = sorted(actions) if isinstance(actions, dict) else type(actions).__name__
            raise DuelError(f"step() needs a dict with an action for each of {list(AGENTS)}, got {given}")
        for agent, action in actions.items():
            if not self._action_space.contains(action):
                raise DuelError(f"action of {agent} must be an integer in [0, {NUM_ACTIONS}), got {action!r}")
        return np.array([[int(actions[agent]) for agent in AGENTS]])

    def step(
        self, actions: dict[str, Any]
    ) -> tuple[dict[str, np.ndarray], dict[str, float], dict[str, bool], dict[str, bool], dict[str, dict[str, Any]]]:
        events = self.core.step(self._actions(actions))
        ended, ko = bool(events.ended[0]), bool(self.core.ko[0])
        rewards = _rewards(self.core, events)
        infos: dict[str, dict[str, Any]] = {
            agent: {"damage_dealt": float(events.damage_dealt[0, p]), "damage_taken": float(events.damage_taken[0, p])}
            for p, agent in enumerate(AGENTS)
        }
        if ended:
            winner = int(self.core.winner[0])
            for info in infos.values():
                info.update(winner=AGENTS[winner] if winner >= 0 else None, ko=ko)
        obs = self._observe()
        terminations = dict.fromkeys(AGENTS, ended and ko)
        truncations = dict.fromkeys(AGENTS, ended and not ko)
        if ended:
            self.agents = []
        if self.render_mode == "human":
            self.render()
        return obs, {agent: float(rewards[p]) for p, agent in enumerate(AGENTS)}, terminations, truncations, infos

    def state(self) -> np.ndarray:
        return state_observations(self.core)[0, 0]

    def render(self) -> np.ndarray | None:
        """``rgb_array``: the 640x360 RGB frame people see (HP bars, cooldowns, timer); ``human``: a window."""
        if self.render_mode is None:
            return None
        frame = bgr_frame(self.core, 0, ("player_0", "player_1"))
        if self.render_mode == "human":
            import cv2

            cv2.imshow("bcarena Duel", frame)
            cv2.waitKey(max(1, int(1000 / self.config.decision_hz)))
            return None
        return frame[..., ::-1].copy()

    def close(self) -> None:
        if self.render_mode == "human":
            import cv2

            cv2.destroyWindow("bcarena Duel")


def _rewards(core: DuelCore, events: StepEvents) -> np.ndarray:
    """(2,) zero-sum rewards of match 0: HP swing / max_hp, plus +1 / -1 at the end for the winner / loser."""
    shaped = (events.damage_dealt[0] - events.damage_taken[0]) / core.config.max_hp
    winner = int(core.winner[0])
    outcome = np.zeros(2) if not events.ended[0] or winner < 0 else np.where(np.arange(2) == winner, 1.0, -1.0)
    return shaped + outcome


def parallel_env(**kwargs: Any) -> DuelParallelEnv:
    """PettingZoo's constructor convention: ``parallel_env(obs_type=..., config=..., render_mode=...)``."""
    return DuelParallelEnv(**kwargs)
