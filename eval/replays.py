"""Replays: a match rendered to video, frame by frame, as people watch it.

* :func:`record_replay` — one match between two agents as .mp4 (.mkv lossless) or .gif;
* :func:`record_side_by_side` — two agents against the same opponent on the same seed, next to
  each other with captions (the naive clone standing idle beside the fixed clone fighting).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

import cv2
import numpy as np

from bcarena.agents.base import Agent
from bcarena.envs.duel import SKILL_ACTIONS, DuelConfig
from bcarena.envs.duel.render import bgr_frame
from bcarena.envs.files import atomic_file
from bcarena.envs.play import DuelBatch, Hook, Step, play
from bcarena.envs.video import CODECS, VideoError, VideoWriter
from bcarena.eval.matches import check_agent, load_player

GIF = ".gif"
REPLAY_SUFFIXES = tuple(sorted(CODECS)) + (GIF,)


class _Film(Hook):
    """Draws a match after the reset and after every decision (BGR frames as people watch it).

    Also counts each player's skill actions chosen so far, which captions may show.
    """

    def __init__(self, names: tuple[str, str], caption: Callable[[np.ndarray], str | None]) -> None:
        self.names, self.caption = names, caption
        self.frames: list[np.ndarray] = []
        self.skills = np.zeros(2, dtype=np.int64)

    def _draw(self, match: DuelBatch) -> None:
        self.frames.append(bgr_frame(match.core, 0, self.names, caption=self.caption(self.skills)))

    def on_reset(self, match: DuelBatch) -> None:
        self._draw(match)

    def on_step(self, step: Step) -> None:
        self.skills += np.isin(step.actions[0], SKILL_ACTIONS)
        self._draw(step.match)


def _film(
    agent0: Agent,
    agent1: Agent,
    seed: int,
    config: DuelConfig | None,
    caption: Callable[[np.ndarray], str | None] = lambda skills: None,
) -> tuple[list[np.ndarray], dict]:
    """Play one match and draw it: the frames (decisions + 1) and the result."""
    match = DuelBatch(1, config)
    film = _Film((agent0.name, agent1.name), caption)
    play(match, (agent0, agent1), [int(seed)], hooks=[film])
    core = match.core
    return film.frames, {
        "seed": int(seed),
        "players": [agent0.name, agent1.name],
        "winner": int(core.winner[0]),
        "ko": bool(core.ko[0]),
        "hp": core.hp[0].tolist(),
        "decisions": int(core.decision[0]),
        "skill_actions": film.skills.tolist(),
    }


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
    with atomic_file(path) as tmp:
        images[0].save(
            tmp,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=round(1000 / fps),
            loop=0,
            optimize=False,
        )
    return path


def _hold(frames: list[np.ndarray], seconds: float, fps: float) -> list[np.ndarray]:
    return frames + [frames[-1]] * int(seconds * fps)


def record_replay(
    agent0: Agent | str,
    agent1: Agent | str,
    seed: int,
    path: str | os.PathLike,
    config: DuelConfig | None = None,
    hold_end_seconds: float = 1.0,
    caption: str | None = None,
) -> dict:
    """Play one match and write it to ``path`` (.mp4 / .mkv / .gif) at the decision rate. Returns the result.

    Players are Agents, bot names or agent folders.
    """
    agents = [load_player(a, config, seed=seed + i) for i, a in enumerate((agent0, agent1))]
    for agent in agents:
        check_agent(agent, config)
    frames, result = _film(agents[0], agents[1], seed, config, lambda skills: caption)
    fps = (config or DuelConfig()).decision_hz
    write_frames(path, _hold(frames, hold_end_seconds, fps), fps)
    return {**result, "path": str(path)}


def _header(width: int, text: str, height: int = 36) -> np.ndarray:
    strip = np.full((height, width, 3), 16, dtype=np.uint8)
    cv2.putText(strip, text, (10, height - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (240, 240, 240), 1, cv2.LINE_AA)
    return strip


def _skill_caption(label: str) -> Callable[[np.ndarray], str]:
    """Caption of a side-by-side panel: its label and the agent's skill presses so far."""
    return lambda skills: f"{label} | skill presses: {skills[0]}"


def record_side_by_side(
    left: Agent | str,
    right: Agent | str,
    opponent: Agent | str,
    seed: int,
    path: str | os.PathLike,
    captions: tuple[str, str] | None = None,
    config: DuelConfig | None = None,
    hold_end_seconds: float = 1.5,
) -> dict:
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
    films = [_film(p, o, seed, config, _skill_caption(label)) for p, o, label in zip(players, opponents, labels)]
    fps = (config or DuelConfig()).decision_hz
    title = f"same opponent ({opponents[0].name}), same seed ({seed})"
    frames = []
    for i in range(max(len(panels) for panels, _ in films)):
        left_panel, right_panel = (panels[min(i, len(panels) - 1)] for panels, _ in films)  # the shorter one holds
        gap = np.full((left_panel.shape[0], 8, 3), 255, dtype=np.uint8)
        row = np.concatenate([left_panel, gap, right_panel], axis=1)
        frames.append(np.concatenate([_header(row.shape[1], title), row], axis=0))
    write_frames(path, _hold(frames, hold_end_seconds, fps), fps, gif_width=480)
    return {
        "path": str(path),
        "seed": int(seed),
        "opponent": opponents[0].name,
        "captions": list(labels),
        "left": films[0][1],
        "right": films[1][1],
    }
