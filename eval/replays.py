"""Replays of any registered game: a match rendered to video, frame by frame, as people watch it.

* :func:`record_replay` — one match between two players as .mp4 (.mkv lossless) or .gif;
* :func:`record_side_by_side` — two agents against the same opponent on the same seed, next to
  each other with captions (the naive clone standing idle beside the fixed clone fighting).

The game is the players' (their agents' declared game, or ``game``; Duel when none declares one).
Each frame is the game's screen for people (``Game.screen``: Duel's 640x360 arena with its HUD,
Boxing's console screen; without one, the 84x84 gray view the agents see, scaled up) under a
36-pixel caption strip with the players' running count of skill actions. Matches are played by the
one loop, one at a time; one frame after the reset and one per decision. Frames are kept compressed
until written (zlib, fast level): a two-minute Boxing side-by-side held raw took 3.4 GB.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bcarena.envs.files import atomic_file
from bcarena.envs.games import Game, MatchOptions, closing
from bcarena.envs.play import Hook, Policy, Step, play
from bcarena.envs.video import CODECS, VideoError, VideoWriter
from bcarena.eval.errors import EvalError
from bcarena.eval.matches import BuiltInOpponent, game_of_players, player_for_game

GIF = ".gif"
REPLAY_SUFFIXES = tuple(sorted(CODECS)) + (GIF,)
HEADER_HEIGHT = 36  # pixels of each caption strip
GRAY_SCALE = 4  # a game without screens is shown as its 84x84 agent view, 4x (336x336)


@dataclass(frozen=True)
class _Frame:
    """A BGR frame, zlib-compressed (level 1: ~3 ms and ~18x smaller for a 456x480 Boxing panel; PNG took 9 ms)."""

    shape: tuple[int, ...]
    data: bytes

    @classmethod
    def of(cls, image: np.ndarray) -> _Frame:
        return cls(image.shape, zlib.compress(np.ascontiguousarray(image, dtype=np.uint8).tobytes(), 1))

    def image(self) -> np.ndarray:
        return np.frombuffer(zlib.decompress(self.data), np.uint8).reshape(self.shape)


class _Film(Hook):
    """Row 0's screen after the reset and after every decision, under a caption strip (BGR frames, compressed).

    Also counts each acting side's skill actions chosen so far (``skills``, (2,)), which captions show.
    """

    def __init__(self, game: Game, caption: Callable[[np.ndarray], str]) -> None:
        self.game, self.caption = game, caption
        self.frames: list[_Frame] = []
        self.skills = np.zeros(2, dtype=np.int64)
        self.decisions = 0

    def _draw(self, match: Any) -> None:
        if self.game.screen is not None:
            rgb = self.game.screen(match, 0)
        else:
            gray = np.asarray(match.observe(0, "pixels"))[0, ..., 0]
            size = (gray.shape[1] * GRAY_SCALE, gray.shape[0] * GRAY_SCALE)
            rgb = cv2.resize(np.repeat(gray[..., None], 3, axis=2), size, interpolation=cv2.INTER_NEAREST)
        bgr = np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8)[..., ::-1])
        self.frames.append(_Frame.of(np.concatenate([_header(bgr.shape[1], self.caption(self.skills)), bgr])))

    def on_reset(self, match: Any) -> None:
        self._draw(match)

    def on_step(self, step: Step) -> None:
        if step.live[0]:
            sides = step.actions.shape[1]
            self.skills[:sides] += np.isin(step.actions[0], self.game.skill_actions)
            self.decisions += 1
        self._draw(step.match)


def _film(
    game: Game,
    players: Sequence[Policy | BuiltInOpponent],
    seed: int,
    config: Any,
    caption: Callable[[np.ndarray], str],
) -> tuple[list[_Frame], dict[str, Any]]:
    """Play one match of ``players`` (side 0, side 1) and draw it: the frames (decisions + 1) and the result."""
    policies = [p for p in players if not isinstance(p, BuiltInOpponent)]
    if isinstance(players[0], BuiltInOpponent) or len(policies) != game.num_players:
        raise EvalError(
            f"game {game.name!r} is played by {game.num_players} polic{'y' if game.num_players == 1 else 'ies'} "
            f"per match (the agent first); got {[p.name for p in players]} (its players are {game.players})"
        )
    kinds = {p.obs_type for p in policies} | ({"pixels"} if game.screen is None else set())
    film = _Film(game, caption)
    with closing(game.match(1, config, MatchOptions(frozenset(kinds), video=game.screen is not None))) as match:
        play(match, policies, [int(seed)], hooks=[film])
        outcome = game.result(match)
    return film.frames, {
        "seed": int(seed),
        "players": [p.name for p in players],
        "winner": int(outcome.winner[0]),
        "ko": bool(outcome.ko[0]),
        "score": np.asarray(outcome.score[0], dtype=float).tolist(),  # Duel: HP left; Boxing: points
        "decisions": film.decisions,
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


def _decoded(frames: Iterable[_Frame]) -> Iterator[np.ndarray]:
    for frame in frames:
        yield frame.image()


def _hold(frames: Iterable[np.ndarray], seconds: float, fps: float) -> Iterator[np.ndarray]:
    """The frames, then the last one again for ``seconds``."""
    frame = None
    for frame in frames:
        yield frame
    if frame is not None:
        yield from [frame] * int(seconds * fps)


def _header(width: int, text: str, height: int = HEADER_HEIGHT) -> np.ndarray:
    strip = np.full((height, width, 3), 16, dtype=np.uint8)
    cv2.putText(strip, text, (10, height - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (240, 240, 240), 1, cv2.LINE_AA)
    return strip


def _setup(specs: Sequence[Any], game: Game | str | None, config: Any) -> tuple[Game, Any]:
    """The players' one game (``game``, else the agents' own) and its config (default: the game's defaults)."""
    played = game if isinstance(game, Game) else game_of_players(specs, game)
    return played, played.make_config({}) if config is None else config


def record_replay(
    agent0: Policy | str,
    agent1: Policy | str,
    seed: int,
    path: str | os.PathLike,
    config: Any = None,
    hold_end_seconds: float = 1.0,
    caption: str | None = None,
    game: Game | str | None = None,
) -> dict[str, Any]:
    """Play one match and write it to ``path`` (.mp4 / .mkv / .gif) at the decision rate. Returns the result.

    Players are Agents, agent folders or the game's built-in players by name (Duel: bots and perturbed
    bots); ``agent1`` may be an opponent the match plays itself (Boxing's ``cpu``). ``config`` is the
    game's config; the result's ``score`` is Duel's HP left or another game's score, per side.
    """
    played, config = _setup([agent0, agent1], game, config)
    players = [player_for_game(a, played, config, seed=seed + i) for i, a in enumerate((agent0, agent1))]
    names = " vs ".join(p.name for p in players)
    suffix = f" | {caption}" if caption else ""
    frames, result = _film(played, players, seed, config, lambda k: f"{names} | skills: {k[0]} / {k[1]}{suffix}")
    fps = played.timing(config)[0]
    write_frames(path, _hold(_decoded(frames), hold_end_seconds, fps), fps)
    return {**result, "game": played.name, "path": str(path)}


def record_side_by_side(
    left: Policy | str,
    right: Policy | str,
    opponent: Policy | str,
    seed: int,
    path: str | os.PathLike,
    captions: tuple[str | None, str | None] | None = None,
    config: Any = None,
    hold_end_seconds: float = 1.5,
    game: Game | str | None = None,
) -> dict[str, Any]:
    """Two agents, each against its own copy of ``opponent`` on the same seed, side by side.

    Both matches start from the same positions and the opponent draws the same per-match noise,
    so any difference on screen comes from the two agents. Each panel is captioned with its
    label (``captions``; a missing one: the agent's name) and the agent's running count of skill
    actions; a finished match holds its last frame until the other ends.
    """
    played, config = _setup([left, right, opponent], game, config)
    players = [player_for_game(p, played, config, seed) for p in (left, right)]
    rivals = [player_for_game(opponent, played, config, seed + 1) for _ in players]
    labels = [caption or p.name for caption, p in zip(captions or (None, None), players)]
    films = [_film(played, (p, o), seed, config, _skill_caption(label)) for p, o, label in zip(players, rivals, labels)]
    fps = played.timing(config)[0]
    title = f"{played.name}: same opponent ({rivals[0].name}), same seed ({seed})"

    def rows() -> Iterator[np.ndarray]:
        for i in range(max(len(panels) for panels, _ in films)):
            pair = (panels[min(i, len(panels) - 1)] for panels, _ in films)  # the shorter one holds its last frame
            left_panel, right_panel = _decoded(pair)
            gap = np.full((left_panel.shape[0], 8, 3), 255, dtype=np.uint8)
            row = np.concatenate([left_panel, gap, right_panel], axis=1)
            yield np.concatenate([_header(row.shape[1], title), row], axis=0)

    write_frames(path, _hold(rows(), hold_end_seconds, fps), fps, gif_width=480)
    return {
        "path": str(path),
        "game": played.name,
        "seed": int(seed),
        "opponent": rivals[0].name,
        "captions": list(labels),
        "left": films[0][1],
        "right": films[1][1],
    }


def _skill_caption(label: str) -> Callable[[np.ndarray], str]:
    """Caption of a side-by-side panel: its label and the agent's skill actions so far."""
    return lambda skills: f"{label} | skill presses: {skills[0]}"
