"""Matches between two Agents on the batched Duel core: every match of a batch steps together."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from bcarena.agents.base import Agent, BotAgent
from bcarena.envs.duel import NUM_ACTIONS, DuelConfig, DuelMatch, bot_noise


@dataclass
class MatchResults:
    """Outcomes of N matches, seen from player 0 unless a field is per player (axis 1)."""

    seeds: np.ndarray  # (N,) match seeds
    winner: np.ndarray  # (N,) 0, 1 or -1 for a draw
    ko: np.ndarray  # (N,) bool, ended by knock-out
    hp: np.ndarray  # (N, 2) HP at the end
    length: np.ndarray  # (N,) decisions (10 FPS frames) played
    damage_dealt: np.ndarray  # (N, 2)
    skills_used: np.ndarray  # (N, 2) skill presses the game accepted
    action_counts: np.ndarray  # (N, 2, NUM_ACTIONS) how often each action was chosen

    @property
    def num_matches(self) -> int:
        return int(self.seeds.shape[0])

    def win_rate(self, player: int = 0) -> float:
        return float(np.mean(self.winner == player))


def policy_actions(agent: Agent, match: DuelMatch, obs: np.ndarray, player: int) -> np.ndarray:
    """Actions (N,) of ``agent`` playing ``player``; bots get the match's own noise streams."""
    if isinstance(agent, BotAgent):
        return agent.bot.act(obs[:, player], bot_noise(match.core, player, agent.bot.noise_dims))
    return np.asarray(agent.act(obs[:, player]))


def play_matches(agent0: Agent, agent1: Agent, seeds: np.ndarray | list[int], config: DuelConfig | None = None,
                 progress: bool = False) -> MatchResults:
    """Play one match per seed between ``agent0`` (player 0) and ``agent1`` (player 1)."""
    seeds = np.asarray(seeds, dtype=np.int64).reshape(-1)
    if seeds.size == 0:
        raise ValueError("play_matches needs at least one seed (one match)")
    obs_types = {agent0.obs_type, agent1.obs_type}
    match = DuelMatch(seeds.size, config, obs_type="pixels" if obs_types == {"pixels"} else "state")
    obs = match.reset(seeds)
    n = seeds.size
    for agent in (agent0, agent1):
        agent.reset(n)
    length = np.zeros(n, dtype=np.int64)
    skills = np.zeros((n, 2), dtype=np.int64)
    dealt = np.zeros((n, 2))
    counts = np.zeros((n, 2, NUM_ACTIONS), dtype=np.int64)
    rows = np.arange(n)
    bar = tqdm(total=match.config.max_decisions, desc="matches", unit="frame", disable=not progress, leave=False)
    while not match.all_done:
        live = ~match.core.done
        actions = np.empty((n, 2), dtype=np.int64)
        for player, agent in enumerate((agent0, agent1)):
            agent_obs = obs if agent.obs_type == match.obs_type else match.observe(agent.obs_type)
            actions[:, player] = policy_actions(agent, match, agent_obs, player)
        counts[rows[live], 0, actions[live, 0]] += 1
        counts[rows[live], 1, actions[live, 1]] += 1
        obs, events = match.step(actions)
        length += live
        skills += events.skill_started
        dealt += events.damage_dealt
        bar.update(1)
    bar.close()
    core = match.core
    return MatchResults(seeds=seeds, winner=core.winner.copy(), ko=core.ko.copy(), hp=core.hp.copy(), length=length,
                        damage_dealt=dealt, skills_used=skills, action_counts=counts)
