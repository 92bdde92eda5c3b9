"""ALE Boxing: matches of an Agent against the console's built-in CPU, reported like Duel matches.

Atari Boxing (ale-py ships the ROM): 2 minutes per bout, or a knock-out at 100 points; a punch
that lands scores 1 or 2 points. The winner has more points at the end. Decisions at 10 FPS:
frameskip 6 of the 60 Hz console, no sticky actions, so a seed and the agent's actions decide
a bout completely.

Bouts run ``num_envs`` at a time in a gymnasium vector env (``workers`` > 1: one process per
worker, which is how ALE uses several cores); the agent acts once per step for the whole wave.
The report is a :class:`~bcarena.eval.matches.MatchReport` in which, as Boxing has no hit
points, the HP columns hold **points** (``hp_diff`` = own minus CPU points; ``damage_dealt`` =
points scored, ``damage_taken`` = points conceded) and "skills" are punches (actions with FIRE).

Observations: ``pixels`` agents get the 84x84 gray screen, (B, 84, 84, 1) uint8 (area
downsampling of ALE's grayscale screen, as the Boxing recordings store it). State agents need
the RAM feature function of ``bcarena.envs.boxing`` (``features_from_ram``).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import cv2
import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

from bcarena.agents.base import Agent
from bcarena.eval.errors import EvalError
from bcarena.eval.matches import MatchReport, MatchResults, match_seeds, summarize

GAME_ID = "ALE/Boxing-v5"
FRAMESKIP = 6  # 60 Hz console / 6 = 10 decisions per second
DECISION_HZ = 60 / FRAMESKIP
KO_POINTS = 100
FRAME_SIZE = 84
_SCORE_RAM = (18, 19)  # BCD-encoded points of the player and of the CPU


def _bcd(value: int) -> int:
    return (value >> 4) * 10 + (value & 15)


class BoxingView(gym.Wrapper):
    """One Boxing bout as the agent sees it, with both scores in ``info["score"]`` after every step."""

    def __init__(self, obs_type: str = "pixels") -> None:
        import ale_py

        gym.register_envs(ale_py)
        env = gym.make(GAME_ID, frameskip=FRAMESKIP, repeat_action_probability=0.0,
                       obs_type="grayscale" if obs_type == "pixels" else "ram")
        super().__init__(env)
        self.obs_type = obs_type
        if obs_type == "pixels":
            self.observation_space = gym.spaces.Box(0, 255, (FRAME_SIZE, FRAME_SIZE, 1), np.uint8)
        else:
            self._features = _ram_features()
            probe = self._features(np.zeros((1, 128), dtype=np.uint8))
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, probe.shape[1:], np.float32)

    def _observe(self, obs: np.ndarray) -> np.ndarray:
        if self.obs_type == "pixels":
            return cv2.resize(obs, (FRAME_SIZE, FRAME_SIZE), interpolation=cv2.INTER_AREA)[..., None]
        return self._features(obs[None])[0].astype(np.float32)

    def _info(self, info: dict[str, Any]) -> dict[str, Any]:
        ram = self.env.unwrapped.ale.getRAM()
        return {**info, "score": np.array([_bcd(int(ram[i])) for i in _SCORE_RAM])}

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return self._observe(obs), self._info(info)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._observe(obs), reward, terminated, truncated, self._info(info)


def _ram_features():
    try:
        from bcarena.envs.boxing import features_from_ram
    except ImportError:
        raise EvalError("state agents for Boxing need bcarena.envs.boxing.features_from_ram, which this "
                        "installation lacks; evaluate a pixels agent instead") from None
    return features_from_ram


def action_names() -> list[str]:
    """Boxing's 18 actions, in ALE's order."""
    import ale_py

    gym.register_envs(ale_py)
    env = gym.make(GAME_ID)
    try:
        return list(env.unwrapped.get_action_meanings())
    finally:
        env.close()


def _check_boxing_agent(agent: Agent, names: list[str]) -> None:
    if agent.obs_type not in ("pixels", "state"):
        raise EvalError(f"agent {agent.name!r} observes {agent.obs_type!r}; Boxing offers 'pixels' or 'state'")
    known = getattr(agent, "action_names", None)
    if known is not None and list(known) != names:
        raise EvalError(f"agent {agent.name!r} was trained on actions {list(known)[:8]}...; "
                        f"Boxing's {len(names)} actions are {names[:8]}...")


def evaluate_boxing(agent: Agent, num_matches: int, seed: int = 0, num_envs: int = 8, workers: int = 1,
                    progress: bool = False) -> MatchReport:
    """``num_matches`` bouts of ``agent`` against the built-in CPU on seeds ``seed, seed + 1, ...``."""
    seeds = match_seeds(seed, num_matches)
    if num_envs < 1 or workers < 1:
        raise EvalError(f"num_envs and workers must be >= 1, got {num_envs} and {workers}")
    names = action_names()
    _check_boxing_agent(agent, names)
    size = min(num_envs, seeds.size)
    factory = [partial(BoxingView, agent.obs_type)] * size  # picklable for worker processes
    vector = (gym.vector.AsyncVectorEnv(factory, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP) if workers > 1
              else gym.vector.SyncVectorEnv(factory, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP))
    fire = np.array(["FIRE" in name for name in names])
    parts = []
    try:
        with tqdm(total=seeds.size, desc=f"{agent.name} vs Boxing CPU", unit="bout", disable=not progress) as bar:
            for start in range(0, seeds.size, size):
                wave = seeds[start:start + size]
                parts.append(_play_wave(agent, vector, wave, fire, len(names)))
                bar.update(wave.size)
    finally:
        vector.close()
    results = MatchResults.concat(parts)
    return summarize(results, agent.name, "boxing-cpu", seed, sides=[0], action_names=names,
                     skill_actions=np.flatnonzero(fire).tolist(), decision_hz=DECISION_HZ)


def _play_wave(agent: Agent, vector: gym.vector.VectorEnv, seeds: np.ndarray, fire: np.ndarray,
               num_actions: int) -> MatchResults:
    """One bout per seed (the wave may be smaller than the vector env: the spare envs are ignored)."""
    n_env, n = vector.num_envs, seeds.size
    all_seeds = np.r_[seeds, seeds[-1] + 1 + np.arange(n_env - n)].astype(int).tolist()
    obs, info = vector.reset(seed=all_seeds)
    agent.reset(n_env)
    score = np.zeros((n_env, 2), dtype=np.int64)
    length = np.zeros(n_env, dtype=np.int64)
    counts = np.zeros((n_env, num_actions), dtype=np.int64)
    done = np.zeros(n_env, dtype=bool)
    done[n:] = True
    while not done.all():
        actions = np.asarray(agent.act(obs))
        if actions.shape != (n_env,) or actions.min() < 0 or actions.max() >= num_actions:
            raise EvalError(f"agent {agent.name!r}: act() must return ({n_env},) actions in [0, {num_actions}), "
                            f"got {actions.dtype} {actions.shape}")
        live = ~done
        np.add.at(counts, (np.flatnonzero(live), actions[live]), 1)
        obs, _, terminated, truncated, info = vector.step(actions)
        score[live] = info["score"][live]
        length += live
        done |= terminated | truncated
    score, length, counts = score[:n], length[:n], counts[:n]
    winner = np.where(score[:, 0] > score[:, 1], 0, np.where(score[:, 1] > score[:, 0], 1, -1))
    action_counts = np.zeros((n, 2, num_actions), dtype=np.int64)  # the CPU's inputs are not observable
    action_counts[:, 0] = counts
    return MatchResults(seeds=seeds, winner=winner.astype(np.int8), ko=(score >= KO_POINTS).any(axis=1),
                        hp=score.astype(np.float64), length=length, damage_dealt=score.astype(np.float64),
                        skills_used=np.stack([(counts * fire).sum(axis=1), np.zeros(n, dtype=np.int64)], axis=1),
                        action_counts=action_counts)
