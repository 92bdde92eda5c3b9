"""A person plays Duel against a bot in an OpenCV window at 10 FPS, and the episode is recorded.

The keyboard is polled once per game tick (60 Hz), so the input log has tick resolution, and
the game reads the action of each frame from the logged events with ``window-priority``
alignment: what you pressed is exactly what the recording's dataset labels say.

**Key releases.** OpenCV's ``waitKey`` reports key *presses* (repeated by the OS while a key
is held, after its auto-repeat delay) and never releases. So:

* a movement key (hold button) goes *down* at its first report and is held until another
  movement key is pressed, the idle key (space) is pressed, or no report of it arrived for
  ``release_after_s`` (0.55 s: longer than the usual 0.5 s auto-repeat delay, so a held key
  is not split in two); its *up* is logged at that moment;
* a skill key (tap button) goes down at its report and up ``TAP_UP_TICKS`` ticks later.

A short tap on a movement key therefore walks for about half a second: that is the price of
OpenCV's keyboard API, documented here rather than hidden.

The person is a policy (:class:`KeyboardPlayer`) that the one match loop drives like any other;
the window and the pacing are its own. Tests drive :func:`play_duel` with a fake :class:`Screen`
(scripted keys, no window).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import pandas as pd

from bcarena.envs.duel import DuelConfig
from bcarena.envs.duel.render import bgr_frame
from bcarena.envs.files import package_version
from bcarena.envs.play import DuelBatch, Hook, Step, play
from bcarena.recordings.actions import DUEL_ACTION_MAP, ActionMap
from bcarena.recordings.episode import EpisodeWriter, RecordingError
from bcarena.recordings.games import EVENT_FIELDS, flatten_columns
from bcarena.recordings.inputlog import KeyEvents, align
from bcarena.recordings.sources import resolve_source

# Key code (as cv2.waitKey returns it, lowercased) -> button of the Duel action map.
DUEL_KEYS: dict[int, str] = {
    ord("a"): "left",
    ord("d"): "right",
    ord("w"): "up",
    ord("s"): "down",
    ord("j"): "light",
    ord("k"): "heavy",
    ord("l"): "special",
}
IDLE_KEY = ord(" ")
QUIT_KEYS = (27, ord("q"))  # Esc, q
TAP_UP_TICKS = 3
HELP = "A/D move  W jump  S guard  SPACE stop  J light  K heavy  L special  Q quit"


class Screen(Protocol):
    """Where frames go and key presses come from (an OpenCV window, or a fake in tests)."""

    def show(self, image: np.ndarray) -> None: ...

    def poll(self, wait_ms: int) -> int:
        """Wait up to ``wait_ms`` for a key press; its code, or -1."""

    def close(self) -> None: ...


class OpenCVScreen:
    """A real window. Refuses to open without a display (cv2.imshow would abort the process)."""

    def __init__(self, title: str = "bcarena Duel") -> None:
        require_display()
        self.title = title
        cv2.namedWindow(title, cv2.WINDOW_AUTOSIZE)

    def show(self, image: np.ndarray) -> None:
        cv2.imshow(self.title, image)

    def poll(self, wait_ms: int) -> int:
        return cv2.waitKey(max(1, wait_ms))

    def close(self) -> None:
        cv2.destroyWindow(self.title)


def require_display() -> None:
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise RecordingError(
            "bcarena play needs a display: no $DISPLAY or $WAYLAND_DISPLAY is set (ssh -X, a "
            "desktop session, or xvfb-run for a virtual one)"
        )


class KeyboardLog:
    """Turns key reports (presses only) into the down/up events of the input log; see the module docstring."""

    def __init__(
        self, action_map: ActionMap, keys: dict[int, str], tick_rate: float, release_after_s: float = 0.55
    ) -> None:
        self.map = action_map
        self.keys = keys
        self.release_after = max(1, int(round(release_after_s * tick_rate)))
        self._index = {name: i for i, name in enumerate(action_map.buttons)}
        self._held: dict[int, int] = {}  # hold button -> tick of its last report
        self._tap_up: dict[int, int] = {}  # tap button -> tick it comes up
        self.ticks: list[int] = []
        self.buttons: list[int] = []
        self.downs: list[bool] = []

    def _log(self, tick: int, button: int, down: bool) -> None:
        self.ticks.append(tick)
        self.buttons.append(button)
        self.downs.append(down)

    def advance(self, tick: int) -> None:
        """Release what is due at ``tick`` (timed-out holds, finished taps)."""
        for button, last in sorted(self._held.items()):
            if tick - last >= self.release_after:
                self._log(last + self.release_after, button, False)
                del self._held[button]
        for button, up in sorted(self._tap_up.items()):
            if tick >= up:
                self._log(up, button, False)
                del self._tap_up[button]

    def press(self, key: int, tick: int) -> None:
        """A key report at ``tick``; unmapped keys are ignored."""
        self.advance(tick)
        key = key & 0xFF if key >= 0 else key
        if 0 <= key < 256 and chr(key).isupper():
            key = ord(chr(key).lower())
        if key == IDLE_KEY:
            for button in sorted(self._held):
                self._log(tick, button, False)
            self._held.clear()
            return
        name = self.keys.get(key)
        if name is None:
            return
        button = self._index[name]
        if name in self.map.hold_buttons:
            if button not in self._held:
                for other in sorted(self._held):  # a new direction replaces the held one
                    self._log(tick, other, False)
                self._held.clear()
                self._log(tick, button, True)
            self._held[button] = tick
        elif button not in self._tap_up:  # a repeat during a tap is the same press
            self._log(tick, button, True)
            self._tap_up[button] = tick + TAP_UP_TICKS

    def events(self) -> KeyEvents:
        return KeyEvents.concat(
            [np.array(self.ticks, np.int64)], [np.array(self.buttons, np.int64)], [np.array(self.downs, bool)]
        )

    def close(self, tick: int) -> KeyEvents:
        """Release everything still down at ``tick`` (the end of the recording) and return all events."""
        self.advance(tick)
        for button in sorted(self._held):
            self._log(tick, button, False)
        self._held.clear()
        for button, up in sorted(self._tap_up.items()):
            self._log(up, button, False)
        self._tap_up.clear()
        return self.events()


def _next_index(out_dir: Path) -> int:
    taken = [int(p.name.split("_")[-1]) for p in out_dir.glob("episode_*") if p.name.split("_")[-1].isdigit()]
    return max(taken, default=-1) + 1


class _QuitPressed(Exception):
    """The person pressed a quit key: the match stops and nothing is recorded."""


class KeyboardPlayer:
    """The person at the keyboard as the Policy of player 0, one match at a time.

    Each decision it shows the match (BGR, with the key help), polls the keyboard once per game
    tick (paced to real time with ``realtime``), and returns the action the key log gives for this
    frame by window-priority alignment: exactly what the recording's labels will say. Its
    observation is the 84x84 view the recording stores as the player's.
    """

    obs_type = "pixels"

    def __init__(
        self, name: str, screen: Screen, match: DuelBatch, names: tuple[str, str], realtime: bool = True
    ) -> None:
        self.name, self.screen, self.match, self.names, self.realtime = name, screen, match, names, realtime
        self.keyboard = KeyboardLog(DUEL_ACTION_MAP, DUEL_KEYS, match.config.tick_rate_hz)

    def reset(self, batch_size: int) -> None:
        if batch_size != 1:
            raise RecordingError(f"a person plays one match at a time, not {batch_size}")
        self.frame = 0
        self.start = time.perf_counter()

    def act(self, obs: np.ndarray) -> np.ndarray:
        config = self.match.config
        tpf, hz = config.action_repeat, config.tick_rate_hz
        self.view = obs[0, ..., 0].copy()  # what the recording stores for this frame
        self.image = bgr_frame(self.match.core, 0, self.names, caption=HELP)
        self.screen.show(self.image)
        for tick in range(self.frame * tpf, (self.frame + 1) * tpf):
            wait = int((self.start + (tick + 1) / hz - time.perf_counter()) * 1000) if self.realtime else 1
            key = self.screen.poll(max(1, wait))
            if key in QUIT_KEYS:
                raise _QuitPressed
            self.keyboard.advance(tick)
            if key >= 0:
                self.keyboard.press(key, tick)
        action = align(self.keyboard.events(), DUEL_ACTION_MAP, self.frame + 1, tpf)[self.frame]
        self.frame += 1
        return np.array([action], dtype=np.int64)


class _HumanEpisode(Hook):
    """Writes the person's frames and the per-frame state log (state before each decision, what happened)."""

    def __init__(self, writer: EpisodeWriter, human: KeyboardPlayer) -> None:
        self.writer, self.human = writer, human
        self.snapshots: list[dict[str, Any]] = []

    def on_reset(self, match: DuelBatch) -> None:
        self.state_before = flatten_columns(match.core.get_state())

    def on_step(self, step: Step) -> None:
        self.writer.add_frame(self.human.view, self.human.image)
        snapshot = self.state_before
        snapshot.update(flatten_columns({name: getattr(step.events, name) for name in EVENT_FIELDS}))
        snapshot.update(ended=step.events.ended.copy(), opponent_action=step.actions[:, 1].copy())
        self.snapshots.append({k: v[0] for k, v in snapshot.items()})
        self.state_before = flatten_columns(step.match.core.get_state())


def play_duel(
    opponent: Any = "pro",
    out_dir: str | os.PathLike = "runs/recordings/human",
    seed: int = 0,
    config: DuelConfig | None = None,
    screen: Screen | None = None,
    player_name: str = "human",
    video: bool = True,
    realtime: bool = True,
    max_frames: int | None = None,
) -> Path | None:
    """Play one match as player 0 against ``opponent`` (a recording source: a bot name, an Agent, ...) and
    record it; returns the episode folder.

    Quitting before the end records nothing (an incomplete match is not an episode) and returns None.
    """
    config = config or DuelConfig()
    out_dir = Path(out_dir)
    screen = screen or OpenCVScreen()
    rival = resolve_source(opponent, config)
    match = DuelBatch(1, config)
    human = KeyboardPlayer(player_name, screen, match, (player_name, rival.name), realtime)
    tpf = config.action_repeat
    index = _next_index(out_dir) if out_dir.exists() else 0
    try:
        with EpisodeWriter(out_dir, index, config.decision_hz, video) as writer:
            episode = _HumanEpisode(writer, human)
            try:
                play(
                    match, (human, rival.policy), [seed], hooks=[episode], max_steps=max_frames or config.max_decisions
                )
            except _QuitPressed:
                return None
            core = match.core
            screen.show(bgr_frame(core, 0, human.names, caption="match over - press any key"))
            log = pd.DataFrame(episode.snapshots)
            log.insert(0, "frame", np.arange(len(log), dtype=np.int32))
            truncated = not bool(core.done[0])
            winner = None if truncated else int(core.winner[0])
            meta = {
                "game": "duel",
                "game_version": f"bcarena-duel {package_version('bcarena')}",
                "game_config": config.to_dict(),
                "fps": config.decision_hz,
                "tick_rate": config.tick_rate_hz,
                "ticks_per_frame": tpf,
                "player": 0,
                "players": [{"name": player_name, "kind": "human", "obs_type": "screen"}, rival.describe()],
                "seeds": {"recording": int(seed), "match": int(seed), "input": -1},
                "result": {
                    "winner": winner,
                    "won": None if truncated else winner == 0,
                    "ko": bool(core.ko[0]),
                    "truncated": truncated,
                    "hp": core.hp[0].tolist(),
                    "frames": len(log),
                },
            }
            return writer.finish(human.keyboard.close(len(log) * tpf), DUEL_ACTION_MAP, log, meta)
    finally:
        screen.close()
