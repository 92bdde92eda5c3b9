"""ALE Boxing (Atari 2600), a real game nobody here wrote, at 10 FPS, with a RAM-reading expert.

ale-py ships the ROM. ``frameskip=6`` turns the console's 60 Hz into 10 decisions per second,
as in Duel. ``repeat_action_probability=0.0`` (no sticky actions): the emulator is then
deterministic, so a recorded match replays exactly from its actions; matches differ through
a seeded number of NOOP frames before the recording starts (``noop_max``, the usual Atari
evaluation protocol) and the expert's seeded timing.

RAM map (found by experiment: step one action, diff the 128 bytes; checked in
``tests/test_boxing.py``)::

    32  player x   (white boxer, px; RIGHT increases it, range ~30..109)
    33  enemy x    (built-in CPU, black boxer)
    34  player y   (px, DOWN increases it, range ~1..89)
    35  enemy y
    18  player score, BCD (0x09 -> 0x10); a clean punch scores 1, a long one 2; 100 = KO
    19  enemy score, BCD
    16  clock minutes in the high nibble (0x1B = 1 minute left, 0x0B = 0)
    17  clock seconds, BCD (0x59 = 59 s)

A match lasts 2 minutes of game time (~1190 decisions at 10 FPS) or ends early by KO.
:class:`BoxingBatch` plays N bouts at once for the one match loop (``bcarena.envs.play.play``).

**The expert** (:class:`BoxingExpert`) reads those bytes (through the normalized state
features). Hits land when the fists reach the face: horizontally 12-28 px apart and
vertically 5-15 px off-centre; the CPU's punches land the same way, and almost never on a
boxer that is vertically level with it. So the expert stays level and at a safe distance
(defence), and every ~2 seconds steps off-centre into range and throws one punch. It presses
FIRE on ~5% of its frames and out-scores the CPU in most matches.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import ale_py
import cv2
import gymnasium as gym
import numpy as np

from bcarena.envs import rng
from bcarena.envs.errors import BcarenaError

gym.register_envs(ale_py)

BOXING_ID = "ALE/Boxing-v5"
ACTION_NAMES: tuple[str, ...] = (
    "NOOP",
    "FIRE",
    "UP",
    "RIGHT",
    "LEFT",
    "DOWN",
    "UPRIGHT",
    "UPLEFT",
    "DOWNRIGHT",
    "DOWNLEFT",
    "UPFIRE",
    "RIGHTFIRE",
    "LEFTFIRE",
    "DOWNFIRE",
    "UPRIGHTFIRE",
    "UPLEFTFIRE",
    "DOWNRIGHTFIRE",
    "DOWNLEFTFIRE",
)
ACTION_INDEX = {name: i for i, name in enumerate(ACTION_NAMES)}
SKILL_ACTIONS: tuple[int, ...] = tuple(i for i, name in enumerate(ACTION_NAMES) if "FIRE" in name)
_FIRE = np.array(["FIRE" in name for name in ACTION_NAMES])
_NOISE_STREAM = 0x100  # as Duel's: player p's policy draws from streams (p + 1) * _NOISE_STREAM + k
RAM = {
    "player_x": 32,
    "enemy_x": 33,
    "player_y": 34,
    "enemy_y": 35,
    "player_score": 18,
    "enemy_score": 19,
    "clock_minutes": 16,
    "clock_seconds": 17,
}
KO_SCORE = 100
ROUND_SECONDS = 120
GRAY_SIZE = 84
_X_SCALE, _Y_SCALE = 80.0, 90.0  # px: normalisation of positions and gaps (x spans ~30..109, y ~1..89)

STATE_FEATURES: tuple[str, ...] = (
    "player_x",
    "player_y",
    "enemy_x",
    "enemy_y",
    "dx",
    "dy",
    "player_score",
    "enemy_score",
    "time_left",
)


def bcd(values: np.ndarray) -> np.ndarray:
    """Decode binary-coded decimal bytes."""
    values = np.asarray(values).astype(np.int64)
    return (values >> 4) * 10 + (values & 15)


def ram_info(ram: np.ndarray) -> dict[str, np.ndarray]:
    """Game quantities from RAM (N, 128) uint8: positions (px), scores, seconds left; each (N,)."""
    ram = np.asarray(ram).reshape(-1, 128).astype(np.int64)
    return {
        "player_x": ram[:, RAM["player_x"]],
        "player_y": ram[:, RAM["player_y"]],
        "enemy_x": ram[:, RAM["enemy_x"]],
        "enemy_y": ram[:, RAM["enemy_y"]],
        "player_score": bcd(ram[:, RAM["player_score"]]),
        "enemy_score": bcd(ram[:, RAM["enemy_score"]]),
        "seconds_left": (ram[:, RAM["clock_minutes"]] >> 4) * 60 + bcd(ram[:, RAM["clock_seconds"]]),
    }


def ram_features(ram: np.ndarray) -> np.ndarray:
    """Normalized state features (N, len(STATE_FEATURES)) float32, roughly within [-1, 1]."""
    info = ram_info(ram)
    dx = info["enemy_x"] - info["player_x"]
    dy = info["enemy_y"] - info["player_y"]
    return np.stack(
        [
            info["player_x"] / _X_SCALE * 2 - 1,
            info["player_y"] / _Y_SCALE * 2 - 1,
            info["enemy_x"] / _X_SCALE * 2 - 1,
            info["enemy_y"] / _Y_SCALE * 2 - 1,
            dx / _X_SCALE,
            dy / _Y_SCALE,
            info["player_score"] / KO_SCORE,
            info["enemy_score"] / KO_SCORE,
            info["seconds_left"] / ROUND_SECONDS,
        ],
        axis=1,
    ).astype(np.float32)


def agent_view(screen: np.ndarray) -> np.ndarray:
    """84x84 gray uint8 of an RGB screen (210, 160, 3), as Atari agents see it (area resampling)."""
    gray = cv2.cvtColor(np.asarray(screen, dtype=np.uint8), cv2.COLOR_RGB2GRAY)
    return cv2.resize(gray, (GRAY_SIZE, GRAY_SIZE), interpolation=cv2.INTER_AREA)


class BoxingError(BcarenaError, ValueError):
    """Invalid use of Boxing bouts: a bad seed list, an observation kind the emulators do not render."""


@dataclass(frozen=True)
class BoxingConfig:
    """How Boxing is played here. ``frameskip`` console frames (60 Hz) per decision."""

    frameskip: int = 6  # 60 Hz / 6 = 10 decisions per second
    repeat_action_probability: float = 0.0  # no sticky actions: recorded matches replay exactly
    noop_max: int = 30  # a seeded 0..noop_max NOOP decisions before the episode starts (not recorded)

    @property
    def tick_rate(self) -> int:
        return 60

    @property
    def fps(self) -> float:
        return self.tick_rate / self.frameskip


def make_env(config: BoxingConfig | None = None, render_mode: str | None = None) -> gym.Env:
    """The ALE Boxing gymnasium env with this config (full 18-action space, RGB observations)."""
    config = config or BoxingConfig()
    return gym.make(
        BOXING_ID,
        frameskip=config.frameskip,
        repeat_action_probability=config.repeat_action_probability,
        full_action_space=False,
        render_mode=render_mode,
    )


def reset_with_noops(env: gym.Env, seed: int, config: BoxingConfig | None = None) -> np.ndarray:
    """Reset with ``seed`` and play the seeded number of NOOP decisions; returns the screen (210, 160, 3)."""
    config = config or BoxingConfig()
    screen, _ = env.reset(seed=int(seed))
    for _ in range(int(np.random.default_rng(int(seed)).integers(0, config.noop_max + 1))):
        screen, *_ = env.step(ACTION_INDEX["NOOP"])
    return screen


class BoxingExpert:
    """Scripted boxer over ``STATE_FEATURES`` observations (B, 9): see the module docstring.

    Stateful per batch row (frames since its last punch); ``reset(batch_size)`` before new
    matches. Its hesitation (the pause between punches) is its only randomness: in matches it is a
    :class:`~bcarena.envs.play.NoisyPolicy` fed the match's own noise (so a bout plays the same in
    any batch); standalone ``act`` draws it from a generator seeded with ``seed``.
    """

    name = "boxing-expert"
    obs_type = "state"
    noise_dims = 1
    strike_gap = 20  # px, horizontal distance when stepping in to punch
    strike_offset = 12  # px, vertical offset from the enemy when punching
    safe_gap = 32  # px, horizontal distance while waiting (level with the enemy)
    punch_dx = (12, 28)  # px, |dx| range in which a punch can land
    punch_dy = (5, 15)  # px, |dy| range in which a punch can land
    pause = (18, 22)  # decisions between punches, drawn uniformly per punch
    tolerance = 2  # px, dead band of the position controller

    def __init__(self, seed: int = 0) -> None:
        self._rng = np.random.default_rng(seed)
        self.reset(1)

    def reset(self, batch_size: int) -> None:
        self._since = np.full(batch_size, 10**6, dtype=np.int64)
        self._wait = np.full(batch_size, self.pause[0], dtype=np.int64)

    def act(self, obs: np.ndarray) -> np.ndarray:
        return self.act_with_noise(obs, self._rng.random((np.asarray(obs).shape[0], 1)))

    def act_with_noise(self, obs: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """Actions (B,) for observations (B, 9) and noise (B, 1) in [0, 1) (the next pause, if it punches)."""
        obs = np.asarray(obs, dtype=np.float64).reshape(-1, len(STATE_FEATURES))
        if obs.shape[0] != self._since.shape[0]:
            self.reset(obs.shape[0])
        dx = np.rint(obs[:, STATE_FEATURES.index("dx")] * _X_SCALE)
        dy = np.rint(obs[:, STATE_FEATURES.index("dy")] * _Y_SCALE)
        ready = self._since >= self._wait
        gap = np.where(ready, self.strike_gap, self.safe_gap)
        offset = np.where(ready, self.strike_offset, 0)
        side = np.where(dx >= 0, 1, -1)
        error_y = dy - np.where(dy >= 0, offset, -offset)  # > 0: move down
        vertical = np.where(error_y > self.tolerance, "DOWN", np.where(error_y < -self.tolerance, "UP", ""))
        toward = np.where(side > 0, "RIGHT", "LEFT")
        away = np.where(side > 0, "LEFT", "RIGHT")
        horizontal = np.where(
            np.abs(dx) > gap + self.tolerance, toward, np.where(np.abs(dx) < gap - self.tolerance, away, "")
        )
        punch = (
            ready
            & (np.abs(dx) >= self.punch_dx[0])
            & (np.abs(dx) <= self.punch_dx[1])
            & (np.abs(dy) >= self.punch_dy[0])
            & (np.abs(dy) <= self.punch_dy[1])
        )
        names = np.char.add(np.char.add(vertical, horizontal), np.where(punch, "FIRE", ""))
        actions = np.array([ACTION_INDEX[str(n) or "NOOP"] for n in names], dtype=np.int64)
        pauses = self.pause[0] + np.floor(np.asarray(noise)[:, 0] * (self.pause[1] - self.pause[0] + 1))
        self._since = np.where(punch, 0, self._since + 1)
        self._wait = np.where(punch, pauses.astype(np.int64), self._wait)
        return actions


@dataclass
class BoxingResult:
    player_score: int
    enemy_score: int
    frames: int  # decisions played
    punches: int  # decisions with a FIRE action

    @property
    def winner(self) -> int:
        """0 the player, 1 the CPU, -1 a draw."""
        return 0 if self.player_score > self.enemy_score else (1 if self.enemy_score > self.player_score else -1)

    @property
    def ko(self) -> bool:
        return max(self.player_score, self.enemy_score) >= KO_SCORE


class BoxingView(gym.Wrapper):
    """One Boxing bout as an agent sees it: 84x84 gray frames (``pixels``) or the RAM features.

    ``info`` holds both scores (``score``, (2,) points) and the RAM (``ram``, (128,) uint8) after
    every reset and step, and with ``screens`` the RGB screen (``screen``, (210, 160, 3)).
    ``reset(seed=s)`` plays the seeded NOOPs of :func:`reset_with_noops`.
    """

    def __init__(self, pixels: bool = True, config: BoxingConfig | None = None, screens: bool = False) -> None:
        super().__init__(make_env(config))
        self.config = config or BoxingConfig()
        self.pixels, self.screens = pixels, screens
        self.observation_space = (
            gym.spaces.Box(0, 255, (GRAY_SIZE, GRAY_SIZE, 1), np.uint8)
            if pixels
            else gym.spaces.Box(-np.inf, np.inf, (len(STATE_FEATURES),), np.float32)
        )
        self._seed = -1

    def _view(self, screen: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        atari = self.env.unwrapped
        assert isinstance(atari, ale_py.AtariEnv)  # what make_env builds
        ram = atari.ale.getRAM().copy()
        scores = ram_info(ram)
        info: dict[str, Any] = {"score": np.array([scores["player_score"][0], scores["enemy_score"][0]]), "ram": ram}
        if self.screens:
            info["screen"] = screen
        return (agent_view(screen)[..., None] if self.pixels else ram_features(ram)[0]), info

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        # Without a seed (a vector env's autoreset, whose bout is not counted) the next seed is played.
        self._seed = seed if seed is not None else self._seed + 1
        return self._view(reset_with_noops(self.env, self._seed, self.config))

    def step(self, action):
        screen, reward, terminated, truncated, info = self.env.step(action)
        obs, view_info = self._view(screen)
        return obs, reward, terminated, truncated, {**info, **view_info}


class BoxingBatch:
    """Boxing bouts against the console's CPU as a :class:`~bcarena.envs.play.Match` (one player: the agent).

    One emulator per row, in a gymnasium vector env (``workers`` > 1: in worker processes, which is
    how ALE uses several cores). The emulators render one observation kind (``pixels`` or the RAM
    features); the RAM features are always available, since every step reports the RAM. A pool of
    emulators may be reset with fewer seeds than rows: the spare rows are over from the start.
    Close it (or use it as a context manager) to stop worker processes.

    After each step: ``score`` (N, 2) points of the agent and the CPU, ``decisions`` (N,) played,
    ``ram`` (N, 128) uint8 and, with ``screens``, ``screens`` (N, 210, 160, 3) RGB.
    """

    num_players = 1
    num_actions = len(ACTION_NAMES)

    def __init__(
        self,
        num_matches: int,
        pixels: bool = True,
        config: BoxingConfig | None = None,
        workers: int = 1,
        screens: bool = False,
    ) -> None:
        factory = [partial(BoxingView, pixels, config, screens)] * num_matches  # picklable for worker processes
        mode = gym.vector.AutoresetMode.NEXT_STEP
        self.vector = (
            gym.vector.AsyncVectorEnv(factory, autoreset_mode=mode)
            if workers > 1
            else gym.vector.SyncVectorEnv(factory, autoreset_mode=mode)
        )
        self.num_matches, self.pixels = num_matches, pixels
        self.done = np.ones(num_matches, dtype=bool)
        self.score = np.zeros((num_matches, 2), dtype=np.int64)
        self.decisions = np.zeros(num_matches, dtype=np.int64)
        self.seeds = np.zeros(num_matches, dtype=np.int64)  # bout seeds of the current batch (and spares)

    def reset(self, seeds: np.ndarray) -> None:
        seeds = np.asarray(seeds, dtype=np.int64).reshape(-1)
        if not 1 <= seeds.size <= self.num_matches:
            raise BoxingError(f"reset needs 1 to {self.num_matches} seeds (one per bout), got {seeds.size}")
        spare = seeds[-1] + 1 + np.arange(self.num_matches - seeds.size)
        self.seeds = np.r_[seeds, spare]
        every: list[int | None] = [int(s) for s in self.seeds]
        self._obs, info = self.vector.reset(seed=every)
        self._keep(info)
        self.done[:] = False
        self.done[seeds.size :] = True
        self.score[:] = 0
        self.decisions[:] = 0

    def _keep(self, info: dict[str, Any]) -> None:
        self.ram = info["ram"]
        if "screen" in info:
            self.screens = info["screen"]

    def observe(self, player: int, obs_type: str) -> np.ndarray:
        if obs_type == "state":
            return self._obs if not self.pixels else ram_features(self.ram)
        if obs_type == "pixels" and self.pixels:
            return self._obs
        raise BoxingError(
            f"these Boxing emulators render {'pixels' if self.pixels else 'state'} observations, not {obs_type!r}"
        )

    def noise(self, player: int, dims: int) -> np.ndarray:
        """Uniform noise (N, dims) for ``player``: a function of bout seed, decision and player (sampling agents)."""
        streams = (player + 1) * _NOISE_STREAM + np.arange(dims)
        return rng.uniform(self.seeds[:, None], self.decisions[:, None], streams[None, :])

    def step(self, actions: np.ndarray) -> dict[str, np.ndarray]:
        """One decision of the agent; returns the step's events (see ``bcarena.envs.games.Game``).

        A FIRE action is the skill used (the console does not tell whether a punch started); a hit
        landed is a point scored. The CPU's inputs are not observable: its ``skill_used`` is False.
        """
        live = ~self.done
        chosen = np.asarray(actions)[:, 0]
        self._obs, _, terminated, truncated, info = self.vector.step(chosen)
        self._keep(info)
        before = self.score.copy()
        self.score[live] = info["score"][live]
        self.decisions += live
        self.done |= terminated | truncated
        skill = np.zeros((self.num_matches, 2), dtype=bool)
        skill[:, 0] = live & _FIRE[chosen]
        return {
            "skill_used": skill,
            "hit_landed": self.score > before,
            "ko": live & self.done & (self.score.max(axis=1) >= KO_SCORE),
        }

    def close(self) -> None:
        self.vector.close()

    def __enter__(self) -> BoxingBatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------------------ the Game
def _config(options: Any) -> BoxingConfig:
    unknown = sorted(set(options) - set(BoxingConfig.__dataclass_fields__))
    if unknown:
        raise BoxingError(
            f"game 'boxing': unknown option(s) {unknown}; Boxing takes {sorted(BoxingConfig.__dataclass_fields__)}"
        )
    config = BoxingConfig(**options)
    if config.frameskip < 1 or config.noop_max < 0 or not 0 <= config.repeat_action_probability <= 1:
        raise BoxingError(
            f"game 'boxing': frameskip >= 1, noop_max >= 0, repeat_action_probability in [0, 1]; got {config}"
        )
    return config


def _screen(match: BoxingBatch, row: int) -> np.ndarray:
    """The RGB screen of ``row`` as people see it: 480x420 (each console pixel 3 wide, 2 high)."""
    screen = match.screens[row]
    return cv2.resize(screen, (screen.shape[1] * 3, screen.shape[0] * 2), interpolation=cv2.INTER_NEAREST)


def _outcome(match: BoxingBatch) -> Any:
    from bcarena.envs.games import Outcome

    score = match.score
    winner = np.where(score[:, 0] > score[:, 1], 0, np.where(score[:, 1] > score[:, 0], 1, -1)).astype(np.int8)
    return Outcome(winner, score.astype(np.float64), score.max(axis=1) >= KO_SCORE)


def boxing_game() -> Any:
    """ALE Boxing as a :class:`~bcarena.envs.games.Game`: one agent against the console's CPU (``cpu``).

    The RAM expert is ``expert``. Observations: ``state`` = :func:`ram_features`, ``pixels`` =
    :func:`agent_view`. Buttons are the joystick's directions (held) and FIRE (tapped, combined).
    """
    from bcarena.envs.files import package_version
    from bcarena.envs.games import PIXELS_SPACE, Game, InputMap

    directions = ("UP", "DOWN", "LEFT", "RIGHT")
    return Game(
        name="boxing",
        version=f"ale-py {package_version('ale-py')} Boxing-v5",
        action_names=ACTION_NAMES,
        skill_actions=SKILL_ACTIONS,
        state_features=STATE_FEATURES,
        observation_spaces={
            "state": gym.spaces.Box(-np.inf, np.inf, (len(STATE_FEATURES),), np.float32),
            "pixels": PIXELS_SPACE,
        },
        num_players=1,
        opponents={"cpu": lambda config, seed: None},
        experts={"expert": lambda config, seed: BoxingExpert(seed=seed)},
        input_map=InputMap(
            tuple(d.lower() for d in directions),
            ("fire",),
            tuple(frozenset(d.lower() for d in directions if d in name) for name in ACTION_NAMES),
            tuple("fire" if "FIRE" in name else None for name in ACTION_NAMES),
            tap_overrides=False,
        ),
        new_match=lambda n, config, options: BoxingBatch(
            n, "pixels" in options.obs_types, config, options.workers, options.video
        ),
        result=_outcome,
        make_config=_config,
        config_dict=lambda config: {
            "frameskip": config.frameskip,
            "noop_max": config.noop_max,
            "repeat_action_probability": config.repeat_action_probability,
        },
        timing=lambda config: (config.fps, config.frameskip, config.tick_rate),
        screen=_screen,
        description="Atari 2600 Boxing (ale-py) against the console's CPU boxer",
    )
