"""Replays: a match rendered to video, frame by frame, as people watch it.

* :func:`record_replay` — one match between two agents as .mp4 (.mkv lossless) or .gif;
* :func:`record_side_by_side` — two agents against the same opponent on the same seed, next to
  each other with captions (the naive clone standing idle beside the fixed clone fighting).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from bcarena.agents.base import Agent
from bcarena.envs.duel import SKILL_ACTIONS, DuelConfig, DuelMatch
from bcarena.envs.duel.render import rgb_frame
from bcarena.envs.video import CODECS, VideoError, VideoWriter
from bcarena.eval.files import partial_path
from bcarena.eval.matches import check_agent, load_player, policy_actions

GIF = ".gif"
REPLAY_SUFFIXES = tuple(sorted(CODECS)) + (GIF,)


class ReplayMatch:
    """One match stepped by hand so it can be drawn after every decision."""

    def __init__(self, agent0: Agent, agent1: Agent, seed: int, config: DuelConfig | None = None) -> None:
        self.agents = (agent0, agent1)
        self.seed = int(seed)
        self.match = DuelMatch(1, config, obs_type="state")
        self.obs = self.match.reset([self.seed])
        self.skills = np.zeros(2, dtype=np.int64)  # skill actions chosen so far, per player
        for agent in self.agents:
            agent.reset(1)

    @property
    def done(self) -> bool:
        return self.match.all_done

    def step(self) -> None:
        """One decision of both players; a finished match stays as it ended."""
        if self.done:
            return
        actions = np.empty((1, 2), dtype=np.int64)
        for player, agent in enumerate(self.agents):
            agent_obs = self.obs if agent.obs_type == "state" else self.match.observe(agent.obs_type)
            actions[:, player] = policy_actions(agent, self.match, agent_obs, player)
        self.skills += np.isin(actions[0], SKILL_ACTIONS)
        self.obs, _ = self.match.step(actions)

    def frame(self, caption: str | None = None) -> np.ndarray:
        """BGR (360, 640, 3) uint8 frame of the match as it stands."""
        return rgb_frame(self.match.core, 0, (self.agents[0].name, self.agents[1].name), caption=caption)

    def result(self) -> dict:
        core = self.match.core
        return {"seed": self.seed, "players": [a.name for a in self.agents], "winner": int(core.winner[0]),
                "ko": bool(core.ko[0]), "hp": core.hp[0].tolist(), "decisions": int(core.decision[0]),
                "skill_actions": self.skills.tolist()}


def write_frames(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float, gif_width: int = 320) -> Path:
    """Write BGR frames as a video (.mp4/.mkv/.avi via OpenCV) or an animated GIF (Pillow), atomically.

    GIFs are scaled to ``gif_width`` pixels wide (they hold 256 colours per frame and no inter-frame
    compression, so full size gets large quickly).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in REPLAY_SUFFIXES:
        raise VideoError(f"{path}: unsupported replay format {suffix!r}; use one of {list(REPLAY_SUFFIXES)}")
    if suffix != GIF:
        with VideoWriter(path, fps) as video:
            for frame in frames:
                video.write(frame)
        return path
    from PIL import Image

    images = []
    for frame in frames:
        height = round(frame.shape[0] * gif_width / frame.shape[1])
        small = cv2.resize(frame, (gif_width, height), interpolation=cv2.INTER_AREA)
        images.append(Image.fromarray(np.ascontiguousarray(small[..., ::-1])))
    if not images:
        raise VideoError(f"{path}: no frames to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(path)
    try:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps),
                       loop=0, optimize=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _hold(frames: list[np.ndarray], seconds: float, fps: float) -> list[np.ndarray]:
    return frames + [frames[-1]] * int(seconds * fps)


def record_replay(agent0: Agent | str, agent1: Agent | str, seed: int, path: str | os.PathLike,
                  config: DuelConfig | None = None, hold_end_seconds: float = 1.0, caption: str | None = None) -> dict:
    """Play one match and write it to ``path`` (.mp4 / .mkv / .gif) at the decision rate. Returns the result.

    Players are Agents, bot names or agent folders.
    """
    agents = [load_player(a, config, seed=seed + i) for i, a in enumerate((agent0, agent1))]
    for agent in agents:
        check_agent(agent, config)
    replay = ReplayMatch(agents[0], agents[1], seed, config)
    fps = replay.match.config.decision_hz
    frames = [replay.frame(caption)]
    while not replay.done:
        replay.step()
        frames.append(replay.frame(caption))
    write_frames(path, _hold(frames, hold_end_seconds, fps), fps)
    return {**replay.result(), "path": str(path)}


def _header(width: int, text: str, height: int = 36) -> np.ndarray:
    strip = np.full((height, width, 3), 16, dtype=np.uint8)
    cv2.putText(strip, text, (10, height - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (240, 240, 240), 1, cv2.LINE_AA)
    return strip


def record_side_by_side(left: Agent | str, right: Agent | str, opponent: Agent | str, seed: int,
                        path: str | os.PathLike, captions: tuple[str, str] | None = None,
                        config: DuelConfig | None = None, hold_end_seconds: float = 1.5) -> dict:
    """Two agents, each against its own copy of ``opponent`` on the same seed, side by side.

    Both matches start from the same positions and the opponent draws the same per-match noise,
    so any difference on screen comes from the two agents. Each panel is captioned with its
    label and the agent's running count of skill presses; a finished match holds its last frame
    until the other ends.
    """
    players = [load_player(p, config) for p in (left, right)]
    opponents = [load_player(opponent, config, seed=seed + 1) for _ in range(2)]
    for agent in players + opponents[:1]:
        check_agent(agent, config)
    labels = captions or (players[0].name, players[1].name)
    replays = [ReplayMatch(p, o, seed, config) for p, o in zip(players, opponents)]
    fps = replays[0].match.config.decision_hz
    title = f"same opponent ({opponents[0].name}), same seed ({seed})"

    def frame() -> np.ndarray:
        panels = [r.frame(f"{label} | skill presses: {r.skills[0]}") for r, label in zip(replays, labels)]
        gap = np.full((panels[0].shape[0], 8, 3), 255, dtype=np.uint8)
        row = np.concatenate([panels[0], gap, panels[1]], axis=1)
        return np.concatenate([_header(row.shape[1], title), row], axis=0)

    frames = [frame()]
    while not all(r.done for r in replays):
        for r in replays:
            r.step()
        frames.append(frame())
    write_frames(path, _hold(frames, hold_end_seconds, fps), fps, gif_width=480)
    return {"path": str(path), "seed": int(seed), "opponent": opponents[0].name, "captions": list(labels),
            "left": replays[0].result(), "right": replays[1].result()}
