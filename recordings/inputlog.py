"""The input log: key events at the game's tick rate, as a key logger sees them, and how to align them.

File format (``inputs.csv``, UTF-8 CSV, one event per line, in time order)::

    tick,time_s,button,event
    3,0.050000,right,down
    40,0.666667,light,down
    43,0.716667,light,up

``tick`` counts the game's internal clock (60 Hz in Duel and Boxing) from the start of the
recording; ``button`` is one of the action map's buttons; ``event`` is ``down`` or ``up``.
A button goes down and up alternately; one still down at the end was held to the end.

**Frames and windows.** Frame ``f`` (recorded at 10 FPS, ``tpf`` = ticks per frame = 6) owns
the tick window ``[f*tpf, (f+1)*tpf)``. The game latches its input for decision ``f`` at the
window's last tick, ``(f+1)*tpf - 1``: that is the frame's *sample instant*.

**Alignment rules** (``ALIGNMENTS``) turn events into one label per frame:

* ``sample`` — the buttons held at the sample instant, as a screen-capture tool that polls the
  keyboard once per frame would see them. A tap that starts and ends inside one window is lost.
* ``window-priority`` — any tap pressed inside the frame's window wins (the first, if several),
  combined with the hold buttons held at the sample instant. Nothing a game would act on is lost.

Held buttons that no action combines (LEFT and RIGHT together) resolve to the one pressed
last, as most games do.

**Human-like timing** (``key_events``): a recorder that knows the decisions (a bot's actions)
writes the events a person would have produced: hold buttons change at a random tick within the
frame's window; a tap goes down at a random tick of the window and up 2-5 ticks later (33-83 ms
at 60 Hz), so it often ends before the sample instant.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bcarena.recordings.actions import ActionMap
from bcarena.recordings.errors import RecordingError

INPUT_LOG_FILE = "inputs.csv"
HEADER = ("tick", "time_s", "button", "event")
TAP_TICKS = (2, 5)  # inclusive range of a tap's duration in ticks


class InputLogError(RecordingError):
    """An input log is missing, malformed, or does not fit its recording."""


@dataclass(frozen=True)
class KeyEvents:
    """Key events in time order: tick (E,) int64, button (E,) int64 index into ``ActionMap.buttons``,
    down (E,) bool. Within a tick, releases come before presses."""

    tick: np.ndarray
    button: np.ndarray
    down: np.ndarray

    def __len__(self) -> int:
        return int(self.tick.shape[0])

    @classmethod
    def empty(cls) -> KeyEvents:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, bool))

    @classmethod
    def concat(cls, ticks: list[np.ndarray], buttons: list[np.ndarray], downs: list[np.ndarray]) -> KeyEvents:
        if not ticks:
            return cls.empty()
        tick, button, down = np.concatenate(ticks), np.concatenate(buttons), np.concatenate(downs)
        order = np.lexsort((down, tick))  # by tick, releases (False) before presses at equal ticks
        return cls(tick[order].astype(np.int64), button[order].astype(np.int64), down[order].astype(bool))


# ---------------------------------------------------------------------------------------- writing
def key_events(
    actions: np.ndarray,
    action_map: ActionMap,
    rng: np.random.Generator,
    ticks_per_frame: int = 6,
    tap_ticks: tuple[int, int] = TAP_TICKS,
) -> KeyEvents:
    """Human-like key events for a sequence of per-frame decisions ``actions`` (T,) int.

    ``window-priority`` alignment of the result gives back ``actions`` exactly.
    """
    actions = np.asarray(actions, dtype=np.int64)
    T, tpf = actions.shape[0], ticks_per_frame
    if tap_ticks[0] < 1 or tap_ticks[1] < tap_ticks[0]:
        raise InputLogError(f"tap_ticks must be 1 <= lo <= hi, got {tap_ticks}")
    n_hold = len(action_map.hold_buttons)
    # Held hold-buttons per frame; actions that leave them alone (None) carry the previous frame's.
    spec = np.zeros((action_map.num_actions, n_hold), dtype=bool)
    keeps = np.array([h is None for h in action_map.holds])
    for a, held in enumerate(action_map.holds):
        for b in held or ():
            spec[a, action_map.hold_buttons.index(b)] = True
    source = np.where(keeps[actions], -1, np.arange(T))
    np.maximum.accumulate(source, out=source)
    held = np.where((source >= 0)[:, None], spec[actions[np.maximum(source, 0)]], False)
    previous = np.vstack([np.zeros((1, n_hold), dtype=bool), held[:-1]])
    ticks, buttons, downs = [], [], []
    for down_flag, changes in ((True, held & ~previous), (False, ~held & previous)):
        frames, cols = np.nonzero(changes)
        ticks.append(frames * tpf + rng.integers(0, tpf, size=frames.size))
        buttons.append(cols)
        downs.append(np.full(frames.size, down_flag))
    tap_index = np.array([-1 if t is None else action_map.tap_buttons.index(t) for t in action_map.taps])[actions]
    for index in range(len(action_map.tap_buttons)):
        frames = np.flatnonzero(tap_index == index)
        press = frames * tpf + rng.integers(0, tpf, size=frames.size)
        length = rng.integers(tap_ticks[0], tap_ticks[1] + 1, size=frames.size)
        for k in range(1, frames.size):  # a key cannot go down again before it came up
            press[k] = max(press[k], press[k - 1] + length[k - 1] + 1)
        button = np.full(frames.size, n_hold + index)
        ticks += [press, press + length]
        buttons += [button, button]
        downs += [np.ones(frames.size, dtype=bool), np.zeros(frames.size, dtype=bool)]
    return KeyEvents.concat(ticks, buttons, downs)


def write_input_log(path: str | os.PathLike, events: KeyEvents, action_map: ActionMap, tick_rate: float) -> None:
    """Write ``events`` as the CSV described in the module docstring (not atomic: used inside a temp folder)."""
    names = action_map.buttons
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(HEADER)
        writer.writerows(
            (int(t), f"{t / tick_rate:.6f}", names[b], "down" if d else "up")
            for t, b, d in zip(events.tick.tolist(), events.button.tolist(), events.down.tolist())
        )


# ---------------------------------------------------------------------------------------- reading
def parse_input_log(data: bytes, action_map: ActionMap, where: str = INPUT_LOG_FILE) -> KeyEvents:
    """Parse and validate the bytes of an input log. Anything malformed raises InputLogError naming ``where``."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputLogError(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if "\x00" in text:
        raise InputLogError(f"{where}: contains NUL bytes (not a text CSV)")
    rows = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(rows, None)
    except csv.Error as exc:
        raise InputLogError(f"{where}: line 1: {exc}") from None
    if header is None or tuple(h.strip() for h in header) != HEADER:
        raise InputLogError(f"{where}: line 1 must be the header {','.join(HEADER)!r}, got {header!r}")
    index = {name: i for i, name in enumerate(action_map.buttons)}
    ticks, buttons, downs = [], [], []
    is_down = [False] * len(index)
    last_tick, last_time = -1, -math.inf
    line = 1
    try:
        for line, row in enumerate(rows, start=2):
            if not row:
                continue
            if len(row) != 4:
                raise InputLogError(f"{where}: line {line}: expected 4 fields {HEADER}, got {len(row)}")
            tick_s, time_s, button, event = (field.strip() for field in row)
            try:
                tick = int(tick_s)
                seconds = float(time_s)
            except ValueError:
                raise InputLogError(
                    f"{where}: line {line}: tick must be an integer and time_s a number, got {tick_s!r}, {time_s!r}"
                ) from None
            if tick < 0 or tick < last_tick or tick > 2**53:
                raise InputLogError(
                    f"{where}: line {line}: tick {tick} is negative, too large, or goes back in time "
                    f"(previous {last_tick})"
                )
            if not math.isfinite(seconds) or seconds < 0 or seconds < last_time:
                raise InputLogError(
                    f"{where}: line {line}: time_s {time_s!r} is not a finite, non-negative, "
                    f"non-decreasing number of seconds"
                )
            if button not in index:
                raise InputLogError(
                    f"{where}: line {line}: unknown button {button!r}; this game's buttons are "
                    f"{list(action_map.buttons)}"
                )
            if event not in ("down", "up"):
                raise InputLogError(f"{where}: line {line}: event must be 'down' or 'up', got {event!r}")
            b, down = index[button], event == "down"
            if is_down[b] == down:
                raise InputLogError(
                    f"{where}: line {line}: {button!r} goes {event} but it is already {'down' if down else 'up'}"
                )
            is_down[b] = down
            last_tick, last_time = tick, seconds
            ticks.append(tick)
            buttons.append(b)
            downs.append(down)
    except csv.Error as exc:
        raise InputLogError(f"{where}: line {line}: {exc}") from None
    return KeyEvents.concat(
        [np.array(ticks, dtype=np.int64)], [np.array(buttons, dtype=np.int64)], [np.array(downs, dtype=bool)]
    )


def read_input_log(path: str | os.PathLike, action_map: ActionMap) -> KeyEvents:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputLogError(f"{path}: input log missing") from None
    except OSError as exc:
        raise InputLogError(f"{path}: unreadable ({exc.strerror})") from None
    return parse_input_log(data, action_map, str(path))


# -------------------------------------------------------------------------------------- alignment
def _held_at(events: KeyEvents, num_buttons: int, at: np.ndarray) -> np.ndarray:
    """Tick each button last went down if it is held at ticks ``at`` (F,), else -1: (F, num_buttons)."""
    out = np.full((at.shape[0], num_buttons), -1, dtype=np.int64)
    for b in range(num_buttons):
        mine = events.button == b
        ticks, downs = events.tick[mine], events.down[mine]
        if ticks.size == 0:
            continue
        last = np.searchsorted(ticks, at, side="right") - 1  # last event at or before the instant
        held = (last >= 0) & downs[np.maximum(last, 0)]
        out[:, b] = np.where(held, ticks[np.maximum(last, 0)], -1)
    return out


def _held_mask(action_map: ActionMap, down_tick: np.ndarray) -> np.ndarray:
    """Bitmask (F,) of held hold-buttons; combinations no action defines keep the most recent presses."""
    held = down_tick >= 0
    mask = (held * (1 << np.arange(held.shape[1]))).sum(axis=1)
    for f in np.flatnonzero(~action_map.defined(mask)):
        order = np.argsort(-down_tick[f], kind="stable")  # most recent first
        keep = 0
        for b in order[: int(held[f].sum())]:
            if action_map.defined(keep | (1 << int(b))):
                keep |= 1 << int(b)
        mask[f] = keep
    return mask


def _taps_sample(events: KeyEvents, action_map: ActionMap, num_frames: int, tpf: int) -> np.ndarray:
    n_hold = len(action_map.hold_buttons)
    at = np.arange(num_frames) * tpf + tpf - 1
    down_tick = _held_at(events, len(action_map.buttons), at)[:, n_hold:]
    latest = np.argmax(down_tick, axis=1)
    return np.where(down_tick.max(axis=1, initial=-1) >= 0, latest, -1)


def _taps_window(events: KeyEvents, action_map: ActionMap, num_frames: int, tpf: int) -> np.ndarray:
    n_hold = len(action_map.hold_buttons)
    presses = events.down & (events.button >= n_hold)
    frames = events.tick[presses] // tpf
    buttons = events.button[presses] - n_hold
    out = np.full(num_frames, -1, dtype=np.int64)
    keep = frames < num_frames
    first_frames, first = np.unique(frames[keep], return_index=True)  # events are in time order: first press wins
    out[first_frames] = buttons[keep][first]
    return out


ALIGNMENTS: dict[str, Callable[[KeyEvents, ActionMap, int, int], np.ndarray]] = {
    "sample": _taps_sample,
    "window-priority": _taps_window,
}
# The rule the games themselves apply to key events (recorders and human play): its labels are the
# decisions the game acted on, whatever rule a dataset is built with.
DECISION_RULE = "window-priority"


def align(
    events: KeyEvents, action_map: ActionMap, num_frames: int, ticks_per_frame: int, rule: str = "window-priority"
) -> np.ndarray:
    """One action label (num_frames,) int64 per frame under alignment ``rule`` (see ``ALIGNMENTS``)."""
    if rule not in ALIGNMENTS:
        raise InputLogError(f"unknown alignment {rule!r}; choose one of {sorted(ALIGNMENTS)}")
    at = np.arange(num_frames) * ticks_per_frame + ticks_per_frame - 1
    n_hold = len(action_map.hold_buttons)
    hold_mask = _held_mask(action_map, _held_at(events, len(action_map.buttons), at)[:, :n_hold])
    taps = ALIGNMENTS[rule](events, action_map, num_frames, ticks_per_frame)
    labels = action_map.compose(hold_mask, taps)
    # A tap the map cannot combine with the held buttons falls back to the tap alone, then to the held buttons.
    missing = labels < 0
    if missing.any():
        labels[missing] = action_map.compose(np.zeros(int(missing.sum()), np.int64), taps[missing])
        missing = labels < 0
        labels[missing] = action_map.compose(hold_mask[missing], np.full(int(missing.sum()), -1))
    return labels


def lost_presses(events: KeyEvents, action_map: ActionMap, labels: np.ndarray, ticks_per_frame: int) -> dict[str, int]:
    """Tap presses (skill presses) whose frame label does not carry them: {"presses", "lost", "lost_<button>"...}."""
    n_hold = len(action_map.hold_buttons)
    presses = events.down & (events.button >= n_hold)
    frames = events.tick[presses] // ticks_per_frame
    buttons = events.button[presses]
    inside = frames < labels.shape[0]
    label_tap = np.array([-1 if t is None else n_hold + action_map.tap_buttons.index(t) for t in action_map.taps])
    kept = np.zeros(frames.shape[0], dtype=bool)
    kept[inside] = label_tap[labels[frames[inside]]] == buttons[inside]
    out = {"presses": int(presses.sum()), "lost": int((~kept).sum())}
    for i, name in enumerate(action_map.tap_buttons):
        out[f"lost_{name}"] = int((~kept & (buttons == n_hold + i)).sum())
    return out
