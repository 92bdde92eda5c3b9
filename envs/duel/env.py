"""Views of the batched Duel core.

* :class:`DuelMatch` — the two-player API: N matches, both fighters' actions given each step,
  finished matches frozen until every match is over. Matches between two agents use this.
* :class:`DuelEnv` — a ``gymnasium.Env``: one match, player 0 is the learner, the opponent
  (player 1) is a bot inside the env. Registered as ``bcarena/Duel-v0``.
* :class:`DuelVectorEnv` — a native ``gymnasium.vector.VectorEnv``: N such matches stepped by
  one core call, same-step autoreset, no per-env Python loop.

Seeding: an env seeded with ``s`` plays episode k with match seed ``derive_seed(s, k)``; the
vector env's sub-env i is seeded ``s + i`` (gymnasium's convention). So sub-env i of a vector
env seeded ``s`` plays exactly the matches of a single env seeded ``s + i``, bit for bit.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv

from bcarena.envs import rng
from bcarena.envs.duel.bots import Bot, make_bot
from bcarena.envs.duel.config import NUM_ACTIONS, DuelConfig
from bcarena.envs.duel.core import DuelCore, DuelError, StepEvents, validate_actions
from bcarena.envs.duel.observation import STATE_DIM, state_observations
from bcarena.envs.duel.render import GRAY_SIZE, bgr_frame, gray_frames
from bcarena.envs.errors import BcarenaError

ObsType = Literal["state", "pixels"]
OBS_TYPES: tuple[str, ...] = ("state", "pixels")
AGENT, OPPONENT = 0, 1
_NOISE_STREAM = 0x100  # bots of player p draw from streams (p + 1) * _NOISE_STREAM + k


def observation_space(obs_type: str) -> spaces.Box:
    """The single-fighter observation space for ``obs_type``."""
    if obs_type == "state":
        return spaces.Box(-10.0, 10.0, shape=(STATE_DIM,), dtype=np.float32)
    if obs_type == "pixels":
        return spaces.Box(0, 255, shape=(GRAY_SIZE, GRAY_SIZE, 1), dtype=np.uint8)
    raise DuelError(f"obs_type must be one of {OBS_TYPES}, got {obs_type!r}")


def bot_noise(core: DuelCore, player: int, dims: int) -> np.ndarray:
    """Uniform noise (N, dims) for a bot playing ``player``: a function of match seed and decision only."""
    streams = (player + 1) * _NOISE_STREAM + np.arange(dims)
    return rng.uniform(core.seeds[:, None], core.decision[:, None], streams[None, :])


def _resolve_bot(opponent: str | Bot, config: DuelConfig) -> Bot:
    if isinstance(opponent, Bot):
        return opponent
    if isinstance(opponent, str):
        return make_bot(opponent, config)
    raise DuelError(f"opponent must be a bot name or a Bot, got {type(opponent).__name__}")


class DisplayUnavailable(BcarenaError, RuntimeError):
    """A window was asked for where none can open (no X11 or Wayland display)."""


def require_display() -> None:
    """Raise a clear error where an OpenCV window cannot open (it would abort the process)."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise DisplayUnavailable(
            "no display: a window needs $DISPLAY (X11) or $WAYLAND_DISPLAY; "
            "use render_mode='rgb_array' or write a video instead"
        )


class DuelMatch:
    """N two-player matches: ``step`` takes both fighters' actions, shape (N, 2).

    Observations are (N, 2, STATE_DIM) float32 for ``state`` or (N, 2, 84, 84, 1) uint8 for
    ``pixels``; ``obs[:, p]`` is what player p sees, batched like ``DuelEnv``'s observations. A finished
    match stays frozen (its events are zero) until ``reset``; ``all_done`` tells when the batch is over.
    """

    def __init__(self, num_matches: int, config: DuelConfig | None = None, obs_type: ObsType = "state") -> None:
        self.core = DuelCore(num_matches, config)
        self.config = self.core.config
        observation_space(obs_type)  # validates
        self.obs_type = obs_type

    @property
    def num_matches(self) -> int:
        return self.core.num_matches

    @property
    def all_done(self) -> bool:
        return bool(self.core.done.all())

    def reset(self, seeds: np.ndarray | list[int]) -> np.ndarray:
        self.core.reset(seeds)
        return self.observe()

    def observe(self, obs_type: ObsType | None = None) -> np.ndarray:
        kind = obs_type or self.obs_type
        if kind == "state":
            return state_observations(self.core)
        frames = [gray_frames(self.core, p) for p in (0, 1)]
        return np.stack(frames, axis=1)[..., None]

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, StepEvents]:
        events = self.core.step(actions, allow_finished=True)
        return self.observe(), events

    def render(self, index: int = 0, names: tuple[str, str] = ("P1", "P2"), caption: str | None = None) -> np.ndarray:
        """RGB (H, W, 3) uint8 frame of match ``index`` for people."""
        return bgr_frame(self.core, index, names, caption=caption)[..., ::-1].copy()


class DuelEnv(gym.Env):
    """One Duel match against a bot. Observation: state vector or 84x84x1 gray frame of player 0.

    Reward per step: (damage dealt - damage taken) / max_hp, plus +1 / -1 / 0 when the match
    ends in a win / loss / draw. A time-out is a real end of the game (time is observed), so it
    is reported as ``terminated``.
    """

    metadata = {"render_modes": ["rgb_array", "human"], "render_fps": 10}

    def __init__(
        self,
        opponent: str | Bot = "pro",
        obs_type: ObsType = "state",
        config: DuelConfig | dict | None = None,
        render_mode: str | None = None,
    ) -> None:
        super().__init__()
        cfg = DuelConfig.from_dict(config) if isinstance(config, dict) else (config or DuelConfig())
        self.config = cfg
        self.obs_type = obs_type
        self.observation_space = observation_space(obs_type)
        self.action_space = spaces.Discrete(NUM_ACTIONS)
        self.opponent = _resolve_bot(opponent, cfg)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise DuelError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        if render_mode == "human":
            require_display()
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": cfg.decision_hz}
        self.core = DuelCore(1, cfg)
        self._env_seed: int | None = None
        self._episode = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._env_seed, self._episode = int(seed), 0
        elif self._env_seed is None:
            self._env_seed, self._episode = int(self.np_random.integers(0, 2**62)), 0
        match_seed = rng.derive_seed(self._env_seed, self._episode)
        self._episode += 1
        self.core.reset([match_seed])
        return self._observe(state_observations(self.core)), {"match_seed": match_seed}

    def _observe(self, state_obs: np.ndarray) -> np.ndarray:
        if self.obs_type == "state":
            return state_obs[0, AGENT]
        return gray_frames(self.core, AGENT)[0, :, :, None]

    def step(self, action):
        if self.core.done[0]:
            raise DuelError("the match is finished: call reset() before step()")
        if not self.action_space.contains(action):
            raise DuelError(f"action must be an integer in [0, {NUM_ACTIONS}), got {action!r}")
        state = state_observations(self.core)
        opp = self.opponent.act(state[:, OPPONENT], bot_noise(self.core, OPPONENT, self.opponent.noise_dims))
        events = self.core.step(np.array([[int(action), int(opp[0])]]))
        terminated = bool(events.ended[0])
        reward = _rewards(self.core, events, self.config)[0]
        info: dict[str, Any] = {
            "damage_dealt": float(events.damage_dealt[0, AGENT]),
            "damage_taken": float(events.damage_taken[0, AGENT]),
        }
        if terminated:
            info.update(winner=int(self.core.winner[0]), ko=bool(self.core.ko[0]), hp=self.core.hp[0].copy())
        obs = self._observe(state_observations(self.core))
        if self.render_mode == "human":
            self.render()
        return obs, float(reward), terminated, False, info

    def render(self):
        frame = bgr_frame(self.core, 0, ("agent", self.opponent.name))
        if self.render_mode == "human":
            import cv2

            cv2.imshow("bcarena Duel", frame)
            cv2.waitKey(max(1, int(1000 / self.config.decision_hz)))
            return None
        return frame[..., ::-1].copy()


def _rewards(core: DuelCore, events: StepEvents, cfg: DuelConfig) -> np.ndarray:
    shaped = (events.damage_dealt[:, AGENT] - events.damage_taken[:, AGENT]) / cfg.max_hp
    outcome = np.where(core.winner == AGENT, 1.0, np.where(core.winner == OPPONENT, -1.0, 0.0))
    return shaped + events.ended * outcome


class DuelVectorEnv(VectorEnv):
    """N Duel matches against a bot as one gymnasium vector env (same-step autoreset).

    ``infos`` always hold ``winner`` (N,) int (-1 where no match ended or a draw) with mask
    ``_winner``; on autoreset they hold ``final_obs`` (N, *obs) with mask ``_final_obs``.
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": ["rgb_array"]}

    def __init__(
        self,
        num_envs: int,
        opponent: str | Bot = "pro",
        obs_type: ObsType = "state",
        config: DuelConfig | dict | None = None,
        render_mode: str | None = None,
    ) -> None:
        cfg = DuelConfig.from_dict(config) if isinstance(config, dict) else (config or DuelConfig())
        self.config = cfg
        self.num_envs = int(num_envs)
        self.core = DuelCore(self.num_envs, cfg)
        self.obs_type = obs_type
        self.single_observation_space = observation_space(obs_type)
        self.single_action_space = spaces.Discrete(NUM_ACTIONS)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.action_space = spaces.MultiDiscrete(np.full(self.num_envs, NUM_ACTIONS))
        self.opponent = _resolve_bot(opponent, cfg)
        self.render_mode = render_mode
        self._env_seeds = np.zeros(self.num_envs, dtype=np.int64)
        self._episodes = np.zeros(self.num_envs, dtype=np.int64)
        self._actions = np.zeros((self.num_envs, 2), dtype=np.int64)

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        if seed is None:
            seed = int(np.random.default_rng().integers(2**62))  # fresh OS entropy
        seeds = np.asarray([seed + i for i in range(self.num_envs)] if isinstance(seed, (int, np.integer)) else seed)
        if seeds.shape != (self.num_envs,):
            raise DuelError(f"seed must be an int or a list of {self.num_envs} ints, got {len(seeds)} seeds")
        if (seeds < 0).any():
            raise DuelError(f"seeds must be non-negative, got {seeds[seeds < 0][:5].tolist()}")
        self._env_seeds = seeds.astype(np.int64)
        self._episodes[:] = 0
        self._reset_rows(np.arange(self.num_envs))
        self._state = state_observations(self.core)
        return self._observe(self._state), {}

    def _reset_rows(self, rows: np.ndarray) -> None:
        # A sub-env's episode counter moves on at each reset, exactly as a single env's does.
        self.core.reset(rng.derive_seeds(self._env_seeds[rows], self._episodes[rows]), rows)
        self._episodes[rows] += 1

    def _observe(self, state_obs: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        if self.obs_type == "state":
            return state_obs[:, AGENT]
        return gray_frames(self.core, AGENT, rows)[..., None]

    def step(self, actions):
        self._actions[:, AGENT] = validate_actions(actions, (self.num_envs,))
        self._actions[:, OPPONENT] = self.opponent.act(
            self._state[:, OPPONENT], bot_noise(self.core, OPPONENT, self.opponent.noise_dims)
        )
        events = self.core.step(self._actions)
        rewards = _rewards(self.core, events, self.config)
        terminated = events.ended.copy()
        infos: dict[str, Any] = {"winner": np.where(terminated, self.core.winner, -1), "_winner": terminated}
        self._state = state_observations(self.core)
        obs = self._observe(self._state)
        if terminated.any():
            rows = np.flatnonzero(terminated)
            infos["final_obs"] = obs.copy()
            infos["_final_obs"] = terminated
            self._reset_rows(rows)
            self._state[rows] = state_observations(self.core, rows)
            obs[rows] = self._observe(self._state[rows], rows)
        return obs, rewards, terminated, np.zeros(self.num_envs, dtype=bool), infos

    def render(self):
        return bgr_frame(self.core, 0, ("agent", self.opponent.name))[..., ::-1].copy()
