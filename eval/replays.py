"""Replays: a match rendered to video, frame by frame, as people watch it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bcarena.agents.base import Agent
from bcarena.envs.duel import DuelConfig, DuelMatch
from bcarena.envs.duel.render import rgb_frame
from bcarena.envs.video import VideoWriter
from bcarena.eval.matches import policy_actions


def record_replay(agent0: Agent, agent1: Agent, seed: int, path: str | Path, config: DuelConfig | None = None,
                  hold_end_seconds: float = 1.0) -> dict:
    """Play one match and write it to ``path`` (.mp4 / .mkv) at the decision rate. Returns the result."""
    match = DuelMatch(1, config, obs_type="state")
    obs = match.reset([seed])
    for agent in (agent0, agent1):
        agent.reset(1)
    names = (agent0.name, agent1.name)
    fps = match.config.decision_hz
    with VideoWriter(path, fps) as video:
        video.write(rgb_frame(match.core, 0, names))
        while not match.all_done:
            actions = np.empty((1, 2), dtype=np.int64)
            for player, agent in enumerate((agent0, agent1)):
                agent_obs = obs if agent.obs_type == "state" else match.observe(agent.obs_type)
                actions[:, player] = policy_actions(agent, match, agent_obs, player)
            obs, _ = match.step(actions)
            video.write(rgb_frame(match.core, 0, names))
        last = rgb_frame(match.core, 0, names)
        for _ in range(int(hold_end_seconds * fps)):
            video.write(last)
    core = match.core
    return {"seed": int(seed), "winner": int(core.winner[0]), "ko": bool(core.ko[0]),
            "hp": core.hp[0].tolist(), "decisions": int(core.decision[0]), "path": str(path)}
