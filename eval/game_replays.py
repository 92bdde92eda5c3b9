"""Replays of any registered game but Duel: one match per agent on the same seed, filmed side by side.

Frames are the game's screens for people (``Game.screen``; without one, the 84x84 gray view the
agent sees, scaled up), one per decision, captioned with the agent's running count of skill
actions (Boxing: punches). Matches are played by the one loop, one at a time.
"""

from __future__ import annotations

import os
from typing import Any

import cv2
import numpy as np

from bcarena.envs.games import Game, MatchOptions, closing, get_game
from bcarena.envs.play import Hook, Policy, Step, play
from bcarena.eval.matches import BuiltInOpponent, fits_game, game_player
from bcarena.eval.replays import _header, _hold, write_frames


class _Film(Hook):
    """The screen of row 0 after the reset and after every decision, with a caption strip."""

    def __init__(self, game: Game, label: str) -> None:
        self.game, self.label = game, label
        self.frames: list[np.ndarray] = []
        self.skills = 0

    def _draw(self, match: Any) -> None:
        if self.game.screen is not None:
            rgb = self.game.screen(match, 0)
        else:
            gray = match.observe(0, "pixels")[0, ..., 0]
            rgb = cv2.resize(np.repeat(gray[..., None], 3, axis=2), (336, 336), interpolation=cv2.INTER_NEAREST)
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        self.frames.append(np.concatenate([_header(bgr.shape[1], f"{self.label} | skills: {self.skills}"), bgr]))

    def on_reset(self, match: Any) -> None:
        self._draw(match)

    def on_step(self, step: Step) -> None:
        self.skills += int(step.live[0] and step.actions[0, 0] in self.game.skill_actions)
        self._draw(step.match)


def _film(game: Game, agent: Policy, opponent: Policy | BuiltInOpponent, seed: int, config: Any, label: str):
    policies = [agent] if isinstance(opponent, BuiltInOpponent) else [agent, opponent]
    options = MatchOptions(frozenset({"pixels", *(p.obs_type for p in policies)}), video=game.screen is not None)
    film = _Film(game, label)
    with closing(game.match(1, config, options)) as match:
        play(match, policies, [int(seed)], hooks=[film])
        outcome = game.result(match)
    result = {"winner": int(outcome.winner[0]), "score": outcome.score[0].tolist(), "skill_actions": film.skills}
    return film.frames, result


def record_game_side_by_side(
    game: Game | str,
    left: Policy | str,
    right: Policy | str,
    opponent: Policy | str,
    seed: int,
    path: str | os.PathLike,
    captions: tuple[str, str] | None = None,
    config: Any = None,
    hold_end_seconds: float = 1.5,
) -> dict[str, Any]:
    """``left`` and ``right``, each against ``opponent`` on seed ``seed``, side by side in one video or GIF."""
    game = get_game(game) if isinstance(game, str) else game
    config = game.make_config({}) if config is None else config
    agents = [game_player(p, game, config, seed) for p in (left, right)]
    for agent in agents:
        fits_game(agent, game)
    labels = captions or (agents[0].name, agents[1].name)
    films = [
        _film(game, a, game_player(opponent, game, config, seed + 1), seed, config, label)
        for a, label in zip(agents, labels)
    ]
    fps = game.timing(config)[0]
    frames = []
    for i in range(max(len(panels) for panels, _ in films)):
        left_panel, right_panel = (panels[min(i, len(panels) - 1)] for panels, _ in films)  # the shorter one holds
        gap = np.full((left_panel.shape[0], 8, 3), 255, dtype=np.uint8)
        row = np.concatenate([left_panel, gap, right_panel], axis=1)
        frames.append(np.concatenate([_header(row.shape[1], f"{game.name}: same opponent, seed {seed}"), row]))
    write_frames(path, _hold(frames, hold_end_seconds, fps), fps, gif_width=480)
    return {"path": str(path), "seed": int(seed), "captions": list(labels), "left": films[0][1], "right": films[1][1]}
