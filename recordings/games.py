"""What the converter needs to know about each recordable game, in one registry (``GAMES``).

A :class:`GameSpec` gives the action map, the state features of the dataset, and how to read a
recording's state log: per-frame state features and per-frame events (skill used, hit landed,
hit taken, KO). Duel's state log is the core state, so features are recomputed with the very
function the env uses; Boxing's is the console RAM.

Where the state log is the game's full state (Duel), it also tells whether the key log belongs to
it: replaying each frame's decision from the key log on that frame's logged state must give the
next frame's logged state (``GameSpec.input_agreement``). A flipped ``player`` in meta.json, an
empty or truncated key log, or the key log of another episode fails this.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bcarena.envs.duel import SKILL_ACTIONS, STATE_FEATURES, DuelConfig, DuelCore, DuelError
from bcarena.envs.duel.config import DuelConfigError
from bcarena.envs.duel.observation import state_observations
from bcarena.recordings.actions import DUEL_ACTION_MAP, ActionMap, boxing_action_map
from bcarena.recordings.episode import Meta, RecordingError


# ----------------------------------------------------------------------------------- Duel log
def _duel_fields() -> dict[str, tuple[int, ...]]:
    """State field -> trailing shape (per match), from a fresh core."""
    return {name: arr.shape[1:] for name, arr in DuelCore(1).get_state().items()}


DUEL_FIELDS = _duel_fields()
EVENT_FIELDS = ("skill_started", "hits_landed", "hits_taken", "damage_dealt", "damage_taken")


def flatten_columns(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{name: (M, *shape)} -> {column: (M,)}: ``x`` (M, 2) becomes ``x_0``, ``x_1``; (M,) stays ``name``."""
    columns: dict[str, np.ndarray] = {}
    for name, arr in arrays.items():
        if arr.ndim == 1:
            columns[name] = arr
            continue
        for index in np.ndindex(*arr.shape[1:]):
            columns[name + "".join(f"_{i}" for i in index)] = arr[(slice(None),) + index]
    return columns


def duel_core_from_log(states: pd.DataFrame, config: DuelConfig) -> DuelCore:
    """A DuelCore with one match per state-log row, in that row's state (to recompute observations)."""
    core = DuelCore(max(1, len(states)), config)
    for name, shape in DUEL_FIELDS.items():
        if not shape:
            values = states[name].to_numpy()
        else:
            cols = [name + "".join(f"_{i}" for i in index) for index in np.ndindex(*shape)]
            # column by column: a multi-column DataFrame lookup costs ~1 ms each, most of this function's time
            values = np.stack([states[c].to_numpy() for c in cols], axis=1).reshape((len(states),) + shape)
        getattr(core, name)[: len(states)] = values
    return core


def duel_log_columns() -> list[str]:
    state = flatten_columns({n: np.zeros((1,) + s) for n, s in DUEL_FIELDS.items()})
    events = flatten_columns({n: np.zeros((1, 2)) for n in EVENT_FIELDS})
    return ["frame", *state, *events, "ended", "opponent_action"]


def _duel_config(meta: Meta, where: str) -> DuelConfig:
    try:
        config = DuelConfig.from_dict(meta.game_config)
    except (DuelConfigError, TypeError) as exc:
        raise RecordingError(f"{where}: game_config is not a valid Duel config ({exc})") from None
    if config.decision_hz != meta.fps or config.tick_rate_hz != meta.tick_rate:
        raise RecordingError(
            f"{where}: fps {meta.fps} / tick_rate {meta.tick_rate} disagree with the game config "
            f"({config.decision_hz} decisions/s at {config.tick_rate_hz} Hz)"
        )
    return config


def _duel_features(states: pd.DataFrame, meta: Meta, where: str) -> np.ndarray:
    core = duel_core_from_log(states, _duel_config(meta, where))
    return state_observations(core)[: len(states), meta.player]


def _duel_events(states: pd.DataFrame, meta: Meta, labels: np.ndarray) -> dict[str, np.ndarray]:
    p = meta.player
    ended = states["ended"].to_numpy(dtype=bool)
    return {
        "skill_used": states[f"skill_started_{p}"].to_numpy(dtype=bool),
        "hit_landed": states[f"hits_landed_{p}"].to_numpy() > 0,
        "hit_taken": states[f"hits_taken_{p}"].to_numpy() > 0,
        "ko": ended & bool(meta.result.get("ko", False)),
    }


@dataclass(frozen=True)
class InputAgreement:
    """How well one episode's key log explains its state log, as player ``player``.

    A frame agrees when replaying its decision (the key log's label for the recorded player, the
    logged ``opponent_action`` for the other) from its logged state reproduces the logged step
    events and the next frame's logged state. On a correct recording every frame agrees.
    """

    player: int
    frames: int
    agreeing: np.ndarray  # (frames,) bool
    skill_starts: int  # skills the state log shows ``player`` starting
    skill_starts_pressed: int  # of those, on a frame whose key-log label is a skill

    @property
    def frame_agreement(self) -> float:
        return float(self.agreeing.mean()) if self.frames else 1.0

    @property
    def skill_agreement(self) -> float:
        return self.skill_starts_pressed / self.skill_starts if self.skill_starts else 1.0


def _duel_input_agreement(
    states: pd.DataFrame, meta: Meta, decisions: np.ndarray, where: str, player: int | None = None
) -> InputAgreement:
    """Replay ``decisions`` (F,) (the key log's labels) as ``player`` (default ``meta.player``) on the state log."""
    p = meta.player if player is None else player
    frames = len(states)
    core = duel_core_from_log(states, _duel_config(meta, where))
    actions = np.zeros((core.num_matches, 2), dtype=np.int64)
    actions[:frames, p] = decisions
    actions[:frames, 1 - p] = states["opponent_action"].to_numpy()
    try:
        events = core.step(actions, allow_finished=True)
    except DuelError as exc:
        raise RecordingError(f"{where}: the state log cannot be replayed ({exc})") from None
    replayed = flatten_columns({**core.get_state(), **{name: getattr(events, name) for name in EVENT_FIELDS}})
    steps_agree = np.ones(frames, dtype=bool)  # logged step events of frame f
    next_agrees = np.ones(frames, dtype=bool)  # logged state of frame f + 1 (the last frame has none)
    for column, values in replayed.items():
        logged = states[column].to_numpy()
        values = values[:frames]
        if column.startswith(EVENT_FIELDS):
            steps_agree &= _same(values, logged)
        else:
            next_agrees[:-1] &= _same(values[:-1], logged[1:])
    started = states[f"skill_started_{p}"].to_numpy(dtype=bool)
    pressed = np.isin(decisions, SKILL_ACTIONS)
    return InputAgreement(
        player=p,
        frames=frames,
        agreeing=steps_agree & next_agrees,
        skill_starts=int(started.sum()),
        skill_starts_pressed=int((started & pressed).sum()),
    )


def _same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise equality; floats within 1e-9 (a state log written on another CPU may differ in the last bit)."""
    if np.issubdtype(np.asarray(a).dtype, np.floating) or np.issubdtype(np.asarray(b).dtype, np.floating):
        return np.isclose(a.astype(np.float64), b.astype(np.float64), rtol=1e-9, atol=1e-9)
    return a == b


# ------------------------------------------------------------------------------------ registry
@dataclass(frozen=True)
class GameSpec:
    name: str
    action_map: Callable[[], ActionMap]
    state_features: Callable[[], tuple[str, ...]]
    log_columns: Callable[[], list[str]]
    features: Callable[[pd.DataFrame, Meta, str], np.ndarray]  # (F, D) float32 from the state log
    events: Callable[[pd.DataFrame, Meta, np.ndarray], dict[str, np.ndarray]]  # (log, meta, labels) -> STATE_EVENTS
    check: Callable[[Meta, str], Any]
    # (log, meta, decisions (F,), where) -> InputAgreement; None where the state log cannot replay the game
    input_agreement: Callable[[pd.DataFrame, Meta, np.ndarray, str], InputAgreement] | None = None


# --------------------------------------------------------------------------------- Boxing log
BOXING_LOG_COLUMNS = ["frame", *(f"ram_{i}" for i in range(128)), "player_points", "enemy_points", "ended"]


def _boxing_features(states: pd.DataFrame, meta: Meta, where: str) -> np.ndarray:
    from bcarena.envs.boxing import ram_features  # ale-py loads only when Boxing is used

    return ram_features(states[BOXING_LOG_COLUMNS[1:129]].to_numpy(dtype=np.uint8))


def _boxing_events(states: pd.DataFrame, meta: Meta, labels: np.ndarray) -> dict[str, np.ndarray]:
    # The console does not tell whether a punch "started"; a FIRE press is the skill used.
    fire = np.array([tap is not None for tap in boxing_action_map().taps])
    ended = states["ended"].to_numpy(dtype=bool)
    return {
        "skill_used": fire[labels],
        "hit_landed": states["player_points"].to_numpy() > 0,
        "hit_taken": states["enemy_points"].to_numpy() > 0,
        "ko": ended & bool(meta.result.get("ko", False)),
    }


def _boxing_check(meta: Meta, where: str) -> None:
    if meta.tick_rate != 60 or meta.game_config.get("frameskip") != meta.ticks_per_frame:
        raise RecordingError(
            f"{where}: Boxing runs at 60 Hz with frameskip = ticks_per_frame; got tick_rate "
            f"{meta.tick_rate}, frameskip {meta.game_config.get('frameskip')}, "
            f"ticks_per_frame {meta.ticks_per_frame}"
        )


def _boxing_state_features() -> tuple[str, ...]:
    from bcarena.envs.boxing import STATE_FEATURES as BOXING_FEATURES

    return BOXING_FEATURES


GAMES: dict[str, GameSpec] = {
    "duel": GameSpec(
        "duel",
        lambda: DUEL_ACTION_MAP,
        lambda: STATE_FEATURES,
        duel_log_columns,
        _duel_features,
        _duel_events,
        _duel_config,
        _duel_input_agreement,
    ),
    "boxing": GameSpec(
        "boxing",
        boxing_action_map,
        _boxing_state_features,
        lambda: BOXING_LOG_COLUMNS,
        _boxing_features,
        _boxing_events,
        _boxing_check,
    ),
}


def game_spec(name: str, where: str = "meta.json") -> GameSpec:
    try:
        return GAMES[name]
    except KeyError:
        raise RecordingError(f"{where}: unknown game {name!r}; known games are {sorted(GAMES)}") from None
