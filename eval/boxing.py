"""ALE Boxing: matches of an Agent against the console's built-in CPU, reported like Duel matches.

The game and its conventions come from ``bcarena.envs.boxing``: 10 decisions per second
(frameskip 6), no sticky actions, a seeded number of NOOPs before each bout (the usual Atari
evaluation protocol), 2 minutes or a KO at 100 points; the winner has more points. The agent
observes what the recordings store: ``pixels`` = ``agent_view`` of the screen, (B, 84, 84, 1)
uint8; ``state`` = ``ram_features`` (B, len(STATE_FEATURES)) float32.

Bouts run ``num_envs`` at a time in a gymnasium vector env (``workers`` > 1: emulators in
worker processes, which is how ALE uses several cores); the agent acts once per step for the
whole wave. The report is a :class:`~bcarena.eval.matches.MatchReport` in which, as Boxing has
no hit points, the HP columns hold **points** (``hp_diff`` = own minus CPU points;
``damage_dealt`` = points scored, ``damage_taken`` = points conceded) and "skills" are punches
(actions with FIRE).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

from bcarena.agents.base import Agent
from bcarena.envs.boxing import (ACTION_NAMES, GRAY_SIZE, KO_SCORE, STATE_FEATURES, BoxingConfig, agent_view,
                                 make_env, ram_features, ram_info, reset_with_noops)
from bcarena.eval.errors import EvalError
from bcarena.eval.matches import MatchReport, MatchResults, match_seeds, summarize


class BoxingView(gym.Wrapper):
    """One Boxing bout as the agent sees it, with both scores in ``info["score"]`` after every step."""

    def __init__(self, obs_type: str = "pixels", config: BoxingConfig | None = None) -> None:
        super().__init__(make_env(config))
        self.config = config or BoxingConfig()
        self.obs_type = obs_type
        self.observation_space = (gym.spaces.Box(0, 255, (GRAY_SIZE, GRAY_SIZE, 1), np.uint8) if obs_type == "pixels"
                                  else gym.spaces.Box(-np.inf, np.inf, (len(STATE_FEATURES),), np.float32))

    def _ram(self) -> np.ndarray:
        return self.env.unwrapped.ale.getRAM()

    def _observe(self, screen: np.ndarray) -> np.ndarray:
        return agent_view(screen)[..., None] if self.obs_type == "pixels" else ram_features(self._ram())[0]

    def _info(self, info: dict[str, Any]) -> dict[str, Any]:
        scores = ram_info(self._ram())
        return {**info, "score": np.array([scores["player_score"][0], scores["enemy_score"][0]])}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        # Without a seed (a vector env's autoreset, whose bout is not counted) the next seed is played.
        self._seed = seed if seed is not None else getattr(self, "_seed", -1) + 1
        return self._observe(reset_with_noops(self.env, self._seed, self.config)), self._info({})

    def step(self, action):
        screen, reward, terminated, truncated, info = self.env.step(action)
        return self._observe(screen), reward, terminated, truncated, self._info(info)


def _check_boxing_agent(agent: Agent, names: list[str]) -> None:
    if agent.obs_type not in ("pixels", "state"):
        raise EvalError(f"agent {agent.name!r} observes {agent.obs_type!r}; Boxing offers 'pixels' or 'state'")
    known = getattr(agent, "action_names", None)
    if known is not None and list(known) != names:
        raise EvalError(f"agent {agent.name!r} was trained on actions {list(known)[:8]}...; "
                        f"Boxing's {len(names)} actions are {names[:8]}...")


def evaluate_boxing(agent: Agent, num_matches: int, seed: int = 0, num_envs: int = 8, workers: int = 1,
                    config: BoxingConfig | None = None, progress: bool = False) -> MatchReport:
    """``num_matches`` bouts of ``agent`` against the built-in CPU on seeds ``seed, seed + 1, ...``."""
    seeds = match_seeds(seed, num_matches)
    if num_envs < 1 or workers < 1:
        raise EvalError(f"num_envs and workers must be >= 1, got {num_envs} and {workers}")
    names = list(ACTION_NAMES)
    _check_boxing_agent(agent, names)
    size = min(num_envs, seeds.size)
    factory = [partial(BoxingView, agent.obs_type, config)] * size  # picklable for worker processes
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
                     skill_actions=np.flatnonzero(fire).tolist(), decision_hz=(config or BoxingConfig()).fps)


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
    return MatchResults(seeds=seeds, winner=winner.astype(np.int8), ko=(score >= KO_SCORE).any(axis=1),
                        hp=score.astype(np.float64), length=length, damage_dealt=score.astype(np.float64),
                        skills_used=np.stack([(counts * fire).sum(axis=1), np.zeros(n, dtype=np.int64)], axis=1),
                        action_counts=action_counts)
