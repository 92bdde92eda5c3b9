"""Recording episodes: bots and agents play, the recorder writes what a capture tool would.

Episodes are played by the one match loop (:func:`bcarena.envs.play.play`), Duel's many at once
on the batched core: one ``act`` call per player per frame for the whole batch, one episode folder
per match, written by a hook as the loop plays. The recorded player's
decisions become human-like key events (``inputlog.key_events``), so the recording holds key
events, not labels, and turning it back into labels (alignment) is a real step.

Seeding: episode ``i`` of a recording seeded ``s`` plays match seed ``derive_seed(s, i)``
whatever batch it runs in, and its key timing is drawn from ``derive_seed(match_seed, 1)``.
So a killed run resumed with ``resume=True`` records exactly the episodes it would have.

What a kill loses: each episode is written the moment its match ends, but the matches of a batch
play at once, so a killed Duel recorder loses the episodes in progress: up to ``batch_size``
(Boxing: one). The recording folder's ``recording.json``, written before the first episode, holds
the settings that decide its episodes (game, source, player slot, opponents, seed, game config,
frame limit, tap timing); a resume with other settings is refused, so a folder never mixes two
players, and a resume clears the temporaries of the episodes the kill cut short.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from bcarena.envs import rng
from bcarena.envs.duel import NUM_ACTIONS, DuelConfig, DuelCore
from bcarena.envs.duel.render import bgr_frame
from bcarena.envs.files import package_version, remove_partials, write_json
from bcarena.envs.limits import MAX_RECORD_BATCH
from bcarena.envs.play import DuelBatch, Hook, MatchwisePolicy, Step, play
from bcarena.recordings.actions import DUEL_ACTION_MAP, boxing_action_map
from bcarena.recordings.episode import EpisodeWriter, RecordingError, episode_name, find_episodes
from bcarena.recordings.games import EVENT_FIELDS, flatten_columns
from bcarena.recordings.inputlog import TAP_TICKS, key_events
from bcarena.recordings.sources import Source, resolve_source

DEFAULT_OPPONENTS: tuple[str, ...] = ("brawler", "turtle", "random", "pro")


@dataclass
class RecordOptions:
    """How episodes are captured (shared by all games)."""

    video: bool = True  # write video.mp4 for people (the converter never needs it; it costs ~1.5 ms/frame)
    max_frames: int | None = None  # stop (truncate) episodes after this many frames
    tap_ticks: tuple[int, int] = TAP_TICKS  # skill-tap duration range in ticks
    batch_size: int = 32  # Duel matches played at once (each holds two open video writers); a kill loses these
    resume: bool = False  # complete a killed run in out_dir (same settings) instead of refusing the folder
    progress: bool = True


def input_seed(match_seed: int) -> int:
    """Seed of an episode's key-timing RNG, derived from its match seed."""
    return rng.derive_seed(int(match_seed), 1)


# ------------------------------------------------------------------ the recording folder's settings
RECORDING_FILE = "recording.json"
SETTINGS_FORMAT = "bcarena-recording-settings"
# The settings that decide which episodes a folder holds; a resume must repeat them. The episode
# count is not among them: episode i is the same whatever the count, so a resume may record more.
MATCHED_SETTINGS = ("game", "source", "player", "opponents", "seed", "game_config", "max_frames", "tap_ticks")


def recording_settings(
    game: str,
    source: Source,
    player: int,
    opponents: Sequence[str],
    seed: int,
    game_config: dict[str, Any],
    episodes: int,
    options: RecordOptions,
) -> dict[str, Any]:
    """The content of ``recording.json``: the settings a recording folder was started with, as JSON data."""
    settings = {
        "format": SETTINGS_FORMAT,
        "format_version": 1,
        "game": game,
        "source": source.describe(),
        "player": int(player),
        "opponents": list(opponents),
        "seed": int(seed),
        "game_config": game_config,
        "max_frames": options.max_frames,
        "tap_ticks": list(options.tap_ticks),
        "episodes": int(episodes),
        "bcarena": package_version("bcarena"),
    }
    return json.loads(json.dumps(settings))  # as it reads back: tuples become lists, numpy scalars numbers


def _read_settings(path: Path) -> dict[str, Any]:
    try:
        settings = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise RecordingError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(settings, dict) or settings.get("format") != SETTINGS_FORMAT:
        raise RecordingError(f"{path}: not a bcarena recording settings file (format {SETTINGS_FORMAT!r})")
    return settings


def _differences(recorded: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``key: old (recorded) vs new (now)`` for each matched setting that differs (mappings key by key)."""
    found = []
    for key in MATCHED_SETTINGS:
        old, new = recorded.get(key), now[key]
        pairs = (
            [(f"{key}.{k}", old.get(k), new.get(k)) for k in sorted(set(old) | set(new))]
            if isinstance(old, dict) and isinstance(new, dict)
            else [(key, old, new)]
        )
        found += [f"{name}: {a!r} (recorded) vs {b!r} (now)" for name, a, b in pairs if a != b]
    return found


def _open_folder(out_dir: Path, settings: dict[str, Any], episodes: int, resume: bool) -> list[int]:
    """Check ``out_dir`` against ``settings``, write its ``recording.json``; the episode indices still to record.

    A fresh recording refuses a folder that holds one. A resume must have the settings the folder was
    started with (a folder without ``recording.json`` but with episodes cannot be checked and is refused);
    it removes the ``.partial-*`` temporaries of the episodes the kill cut short.
    """
    path = out_dir / RECORDING_FILE
    done = {i for i in range(episodes) if (out_dir / episode_name(i)).exists()}
    if not resume:
        taken = path if path.exists() else (out_dir / episode_name(min(done)) if done else None)
        if taken is not None:
            raise RecordingError(
                f"{taken}: already exists; record into a new folder or pass resume=True (--resume) "
                "to complete a killed run"
            )
    elif path.exists():
        differences = _differences(_read_settings(path), settings)
        if differences:
            raise RecordingError(
                f"{out_dir}: cannot resume with other settings than the recording was started with: "
                f"{'; '.join(differences)}; resume with the recorded ones or record into a new folder"
            )
    elif find_episodes(out_dir):
        raise RecordingError(
            f"{out_dir}: holds episodes but no {RECORDING_FILE} (recorded by an older bcarena), so a resume "
            "cannot check it was started with the same settings; record into a new folder"
        )
    if resume:
        remove_partials(out_dir)
    write_json(path, settings)
    return [i for i in range(episodes) if i not in done]


def record_duel(
    source: Any,
    opponents: Sequence[Any] = DEFAULT_OPPONENTS,
    episodes: int = 10,
    out_dir: str | os.PathLike = "runs/recordings",
    seed: int = 0,
    config: DuelConfig | None = None,
    player: int = 0,
    options: RecordOptions | None = None,
) -> list[Path]:
    """Record ``episodes`` Duel matches of ``source`` (as ``player``) against ``opponents`` (cycled).

    Returns the episode folders (sorted). See :mod:`bcarena.recordings.sources` for what a source can be;
    opponents take turns in one player slot, so they must observe the same kind (state or pixels).
    """
    options = options or RecordOptions()
    config = config or DuelConfig()
    if episodes < 1:
        raise RecordingError(f"episodes must be >= 1, got {episodes}")
    if player not in (0, 1):
        raise RecordingError(f"player must be 0 or 1, got {player}")
    if not opponents:
        raise RecordingError("opponents must name at least one opponent")
    if options.max_frames is not None and options.max_frames < 1:
        raise RecordingError(f"max_frames must be >= 1, got {options.max_frames}")
    if not 1 <= options.batch_size <= MAX_RECORD_BATCH:
        raise RecordingError(f"batch_size must be within [1, {MAX_RECORD_BATCH}], got {options.batch_size}")
    me = resolve_source(source, config)
    rivals = [resolve_source(o, config) for o in opponents]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = recording_settings(
        "duel", me, player, [r.name for r in rivals], seed, config.to_dict(), episodes, options
    )
    todo = _open_folder(out_dir, settings, episodes, options.resume)
    bar = tqdm(total=len(todo), desc=f"recording {me.name}", unit="episode", disable=not options.progress)
    for start in range(0, len(todo), options.batch_size):
        _record_duel_batch(
            np.array(todo[start : start + options.batch_size]),
            me,
            rivals,
            out_dir,
            seed,
            config,
            player,
            options,
            bar.update,
        )
    bar.close()
    return [out_dir / episode_name(i) for i in range(episodes)]


def _record_duel_batch(
    indices: np.ndarray,
    me: Source,
    rivals: list[Source],
    out_dir: Path,
    seed: int,
    config: DuelConfig,
    player: int,
    options: RecordOptions,
    on_done: Callable[[int], Any],
) -> None:
    episodes = _DuelEpisodes(indices, me, rivals, out_dir, seed, config, player, options, on_done)
    opponents = MatchwisePolicy([r.policy for r in rivals], episodes.rival_of, NUM_ACTIONS)
    try:
        play(
            DuelBatch(indices.size, config),
            (me.policy, opponents) if player == 0 else (opponents, me.policy),
            episodes.seeds,
            hooks=[episodes],
            max_steps=episodes.limit,
        )
    finally:
        episodes.abort()


class _DuelEpisodes(Hook):
    """Writes one episode folder per match of a batch while the match loop plays it.

    Before each decision of a match its writer gets the frame the recorded player sees (and, with
    videos, the frame for people); after it the state log gets the state before the decision and
    what happened. An episode is written when its match ends or reaches ``limit`` frames.
    """

    def __init__(
        self,
        indices: np.ndarray,
        me: Source,
        rivals: list[Source],
        out_dir: Path,
        seed: int,
        config: DuelConfig,
        player: int,
        options: RecordOptions,
        on_done: Callable[[int], Any],
    ) -> None:
        self.indices, self.me, self.rivals = indices, me, rivals
        self.seeds = rng.derive_seeds(np.full(indices.size, seed), indices)  # episode i plays the same in any batch
        self.rival_of = indices % len(rivals)  # opponents are cycled by episode index
        self.out_dir, self.seed, self.config, self.player, self.options = out_dir, seed, config, player, options
        self.on_done = on_done
        self.limit = options.max_frames or config.max_decisions
        self.names_of = [(me.name, r.name) if player == 0 else (r.name, me.name) for r in rivals]
        self.writers: dict[int, EpisodeWriter] = {}
        self.snapshots: list[dict[str, np.ndarray]] = []  # per decision: every match's state before it + events

    def on_reset(self, match: DuelBatch) -> None:
        for row, index in enumerate(self.indices):
            self.writers[row] = EpisodeWriter(self.out_dir, int(index), self.config.decision_hz, self.options.video)
        self._before_decision(match, np.arange(self.indices.size))

    def _before_decision(self, match: DuelBatch, rows: np.ndarray) -> None:
        views = match.observe(self.player, "pixels")
        for row in rows:
            rgb = bgr_frame(match.core, row, self.names_of[self.rival_of[row]]) if self.options.video else None
            self.writers[row].add_frame(views[row, ..., 0], rgb)
        self.state_before = flatten_columns(match.core.get_state())

    def on_step(self, step: Step) -> None:
        core, events = step.match.core, step.events
        snapshot = self.state_before
        snapshot.update(flatten_columns({name: getattr(events, name) for name in EVENT_FIELDS}))
        snapshot.update(
            ended=events.ended.copy(),
            opponent_action=step.actions[:, 1 - self.player].copy(),
            my_action=step.actions[:, self.player].copy(),
        )
        self.snapshots.append(snapshot)
        finished = step.live & (core.done | (len(self.snapshots) >= self.limit))
        for row in map(int, np.flatnonzero(finished)):
            _finish_duel_episode(
                self.writers.pop(row),
                self.snapshots,
                row,
                core,
                self.config,
                self.player,
                self.me,
                self.rivals[self.rival_of[row]],
                self.seed,
                int(self.seeds[row]),
                self.options,
            )
            self.on_done(1)
        recording = step.live & ~finished
        if recording.any():
            self._before_decision(step.match, np.flatnonzero(recording))

    def abort(self) -> None:
        """Remove the temporary folders of episodes left unfinished (the loop raised)."""
        for writer in self.writers.values():
            writer.abort()


def _finish_duel_episode(
    writer: EpisodeWriter,
    snapshots: list[dict[str, np.ndarray]],
    row: int,
    core: DuelCore,
    config: DuelConfig,
    player: int,
    me: Source,
    rival: Source,
    seed: int,
    match_seed: int,
    options: RecordOptions,
) -> None:
    frames = writer.frames
    log = pd.DataFrame({name: np.array([s[name][row] for s in snapshots[:frames]]) for name in snapshots[0]})
    actions = log.pop("my_action").to_numpy()
    log.insert(0, "frame", np.arange(frames, dtype=np.int32))
    timing = np.random.default_rng(input_seed(match_seed))
    events = key_events(actions, DUEL_ACTION_MAP, timing, config.action_repeat, options.tap_ticks)
    truncated = not bool(core.done[row])
    winner = None if truncated else int(core.winner[row])
    players = [me.describe(), rival.describe()] if player == 0 else [rival.describe(), me.describe()]
    meta = {
        "game": "duel",
        "game_version": f"bcarena-duel {package_version('bcarena')}",
        "game_config": config.to_dict(),
        "fps": config.decision_hz,
        "tick_rate": config.tick_rate_hz,
        "ticks_per_frame": config.action_repeat,
        "player": player,
        "players": players,
        "seeds": {"recording": int(seed), "match": match_seed, "input": input_seed(match_seed)},
        "result": {
            "winner": winner,
            "won": None if truncated else winner == player,
            "ko": bool(core.ko[row]),
            "truncated": truncated,
            "hp": core.hp[row].tolist(),
            "frames": frames,
        },
    }
    writer.finish(events, DUEL_ACTION_MAP, log, meta)


def record_boxing(
    source: Any = "expert",
    episodes: int = 10,
    out_dir: str | os.PathLike = "runs/recordings/boxing",
    seed: int = 0,
    options: RecordOptions | None = None,
    config: Any = None,
) -> list[Path]:
    """Record ALE Boxing episodes of ``source`` against the console's CPU boxer.

    ``source`` is ``"expert"`` (a fresh :class:`~bcarena.envs.boxing.BoxingExpert` seeded per
    episode) or any policy over Boxing's state features / 84x84 pixels (see ``sources``).
    """
    from bcarena.envs import boxing

    options = options or RecordOptions()
    config = config or boxing.BoxingConfig()
    if episodes < 1:
        raise RecordingError(f"episodes must be >= 1, got {episodes}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    described = resolve_source(boxing.BoxingExpert() if source == "expert" else source)
    settings = recording_settings(
        "boxing", described, 0, [BOXING_OPPONENT["name"]], seed, _boxing_config(config), episodes, options
    )
    todo = _open_folder(out_dir, settings, episodes, options.resume)
    with boxing.BoxingBatch(1, pixels=True, config=config, screens=options.video) as match:
        for index in tqdm(todo, desc="recording boxing", unit="episode", disable=not options.progress):
            match_seed = rng.derive_seed(seed, index)
            player = resolve_source(boxing.BoxingExpert(seed=match_seed) if source == "expert" else source)
            _record_boxing_episode(match, player, out_dir, index, seed, match_seed, config, options)
    return [out_dir / episode_name(i) for i in range(episodes)]


BOXING_OPPONENT = {"name": "atari-cpu", "kind": "built-in", "obs_type": "console"}


def _boxing_config(config: Any) -> dict[str, Any]:
    """The Boxing settings that change its episodes, as meta.json and recording.json record them."""
    return {
        "frameskip": config.frameskip,
        "noop_max": config.noop_max,
        "repeat_action_probability": config.repeat_action_probability,
    }


class _BoxingEpisode(Hook):
    """Writes one Boxing bout (a batch of one) while the match loop plays it: the frame before each
    decision, and the RAM before it with whether the bout ended."""

    def __init__(self, writer: EpisodeWriter, limit: int | None, video: bool) -> None:
        self.writer, self.limit, self.video = writer, limit, video
        self.rows: list[np.ndarray] = []  # (129,): RAM before the decision, ended
        self.actions: list[int] = []

    def on_reset(self, match: Any) -> None:
        self._before_decision(match)

    def _before_decision(self, match: Any) -> None:
        self.ram = match.ram[0].copy()
        rgb = None
        if self.video:
            screen = match.screens[0]
            rgb = cv2.resize(
                screen[..., ::-1], (screen.shape[1] * 3, screen.shape[0] * 2), interpolation=cv2.INTER_NEAREST
            )
        self.writer.add_frame(match.observe(0, "pixels")[0, ..., 0], rgb)

    def on_step(self, step: Step) -> None:
        done = bool(step.match.done[0])
        self.rows.append(np.r_[self.ram, int(done)])
        self.actions.append(int(step.actions[0, 0]))
        if not done and (self.limit is None or len(self.rows) < self.limit):
            self._before_decision(step.match)


def _record_boxing_episode(
    match: Any,
    player: Source,
    out_dir: Path,
    index: int,
    seed: int,
    match_seed: int,
    config: Any,
    options: RecordOptions,
) -> None:
    from bcarena.envs import boxing

    action_map = boxing_action_map()
    with EpisodeWriter(out_dir, index, config.fps, options.video) as writer:
        episode = _BoxingEpisode(writer, options.max_frames, options.video)
        play(match, [player.policy], [match_seed], hooks=[episode], max_steps=options.max_frames)
        rows, actions, done = episode.rows, episode.actions, bool(match.done[0])
        final = boxing.ram_info(match.ram[0])
        ram_log = np.array(rows)
        log = pd.DataFrame(ram_log[:, :128].astype(np.uint8), columns=[f"ram_{i}" for i in range(128)])
        scores = boxing.ram_info(np.vstack([ram_log[:, :128], match.ram[0][None]]))
        log.insert(0, "frame", np.arange(len(rows), dtype=np.int32))
        log["player_points"] = np.diff(scores["player_score"]).astype(np.int16)
        log["enemy_points"] = np.diff(scores["enemy_score"]).astype(np.int16)
        log["ended"] = ram_log[:, 128].astype(bool)
        result = boxing.BoxingResult(
            int(final["player_score"][0]),
            int(final["enemy_score"][0]),
            len(rows),
            sum(action_map.taps[a] is not None for a in actions),
        )
        truncated = not done
        events = key_events(
            np.array(actions),
            action_map,
            np.random.default_rng(input_seed(match_seed)),
            config.frameskip,
            options.tap_ticks,
        )
        meta = {
            "game": "boxing",
            "game_version": f"ale-py {package_version('ale-py')} Boxing-v5",
            "game_config": _boxing_config(config),
            "fps": config.fps,
            "tick_rate": config.tick_rate,
            "ticks_per_frame": config.frameskip,
            "player": 0,
            "players": [player.describe(), dict(BOXING_OPPONENT)],
            "seeds": {"recording": int(seed), "match": match_seed, "input": input_seed(match_seed)},
            "result": {
                "winner": None if truncated else result.winner,
                "won": None if truncated else result.winner == 0,
                "ko": result.ko,
                "truncated": truncated,
                "score": [result.player_score, result.enemy_score],
                "frames": result.frames,
            },
        }
        writer.finish(events, action_map, log, meta)


# Game name -> recorder(source, opponents, episodes, out_dir, seed, options, **game_kwargs).
RECORDERS: dict[str, Callable[..., list[Path]]] = {}


def _record_duel_entry(
    source: Any,
    opponents: Sequence[Any],
    episodes: int,
    out_dir: str | os.PathLike,
    seed: int,
    options: RecordOptions,
    config: DuelConfig | None = None,
    player: int = 0,
) -> list[Path]:
    return record_duel(source, opponents, episodes, out_dir, seed, config, player, options)


RECORDERS["duel"] = _record_duel_entry
RECORDERS["boxing"] = lambda source, opponents, episodes, out_dir, seed, options, **kw: record_boxing(
    source, episodes, out_dir, seed, options, **kw
)


def record_episodes(
    source: Any,
    opponents: Sequence[Any] = DEFAULT_OPPONENTS,
    episodes: int = 10,
    out_dir: str | os.PathLike = "runs/recordings",
    seed: int = 0,
    game: str = "duel",
    options: RecordOptions | None = None,
    **game_kwargs: Any,
) -> list[Path]:
    """Record ``episodes`` episodes of ``source`` into ``out_dir`` (one folder each); see ``RECORDERS``.

    Duel: ``opponents`` are cycled over episodes; ``config`` and ``player`` may be given.
    Boxing: the opponent is the console's built-in CPU (``opponents`` is ignored).
    """
    if game not in RECORDERS:
        raise RecordingError(f"unknown game {game!r}; recordable games are {sorted(RECORDERS)}")
    return RECORDERS[game](source, opponents, episodes, out_dir, seed, options or RecordOptions(), **game_kwargs)
