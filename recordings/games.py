"""What the converter needs to know about each recordable game (:func:`game_spec`).

A :class:`GameSpec` gives the action map, the state features of the dataset, and how to read a
recording's state log: per-frame state features and per-frame events (skill used, hit landed,
hit taken, KO). Duel's state log is the core state, so features are recomputed with the very
function the env uses. Every other registered game (Boxing, plugins) logs the recorded player's
state features and each side's step events (:func:`generic_log_columns`), so it needs no code here.

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
from bcarena.envs.errors import BcarenaError
from bcarena.envs.games import Game, UnknownGameError, get_game
from bcarena.recordings.actions import DUEL_ACTION_MAP, ActionMap, action_map_of
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


# ------------------------------------------------------------------------- every other game's log
def generic_log_columns(game: Game) -> list[str]:
    """The state log of a game other than Duel, one row per decision: the recorded player's state
    features before it (``s_<feature>``), then each side's step events, the KO flag, whether the
    match ended, and the other player's action (-1 where the match plays it itself)."""
    sides = [f"{event}_{side}" for event in ("skill_used", "hit_landed") for side in (0, 1)]
    return ["frame", *(f"s_{name}" for name in game.state_features), *sides, "ko", "ended", "opponent_action"]


def _generic_features(game: Game) -> Callable[[pd.DataFrame, Meta, str], np.ndarray]:
    columns = [f"s_{name}" for name in game.state_features]
    return lambda states, meta, where: states[columns].to_numpy(dtype=np.float32)


def _generic_events(states: pd.DataFrame, meta: Meta, labels: np.ndarray) -> dict[str, np.ndarray]:
    p = meta.player
    return {
        "skill_used": states[f"skill_used_{p}"].to_numpy(dtype=bool),
        "hit_landed": states[f"hit_landed_{p}"].to_numpy(dtype=bool),
        "hit_taken": states[f"hit_landed_{1 - p}"].to_numpy(dtype=bool),
        "ko": states["ko"].to_numpy(dtype=bool) & states["ended"].to_numpy(dtype=bool),
    }


def _generic_check(game: Game) -> Callable[[Meta, str], Any]:
    def check(meta: Meta, where: str) -> Any:
        try:
            config = game.check_config(meta.game_config)
        except BcarenaError as exc:
            raise RecordingError(f"{where}: game_config: {exc}") from None
        fps, ticks_per_frame, tick_rate = game.timing(config)
        if (meta.fps, meta.ticks_per_frame, meta.tick_rate) != (fps, ticks_per_frame, tick_rate):
            raise RecordingError(
                f"{where}: fps {meta.fps}, ticks_per_frame {meta.ticks_per_frame}, tick_rate {meta.tick_rate} "
                f"disagree with the {game.name} config ({fps} decisions/s, {ticks_per_frame} ticks each, "
                f"{tick_rate} Hz)"
            )
        return config

    return check


def generic_spec(game: Game) -> GameSpec:
    """The converter's view of any registered game but Duel: everything it needs is in the state log."""
    return GameSpec(
        game.name,
        lambda: action_map_of(game),
        lambda: game.state_features,
        lambda: generic_log_columns(game),
        _generic_features(game),
        _generic_events,
        _generic_check(game),
    )


DUEL_SPEC = GameSpec(
    "duel",
    lambda: DUEL_ACTION_MAP,
    lambda: STATE_FEATURES,
    duel_log_columns,
    _duel_features,
    _duel_events,
    _duel_config,
    _duel_input_agreement,
)


def game_spec(name: str, where: str = "meta.json") -> GameSpec:
    """The converter's view of game ``name`` (any registered game; an unknown one is a RecordingError)."""
    if name == "duel":
        return DUEL_SPEC
    try:
        return generic_spec(get_game(name, where))
    except UnknownGameError as exc:
        raise RecordingError(str(exc)) from None
