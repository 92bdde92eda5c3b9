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

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from bcarena.envs import rng
from bcarena.envs.duel import NUM_ACTIONS, DuelConfig, DuelCore
from bcarena.envs.duel.render import bgr_frame
from bcarena.envs.files import package_version, remove_partials, write_json
from bcarena.envs.games import Game, MatchOptions, Outcome, check_player_for_game, closing, get_game
from bcarena.envs.limits import MAX_RECORD_BATCH
from bcarena.envs.play import DuelBatch, Hook, MatchwisePolicy, Step, play
from bcarena.recordings.actions import DUEL_ACTION_MAP, action_map_of
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
    _check_request(episodes, options)
    if player not in (0, 1):
        raise RecordingError(f"player must be 0 or 1, got {player}")
    if not opponents:
        raise RecordingError("opponents must name at least one opponent")
    me = resolve_source(source, config)
    rivals = [resolve_source(o, config) for o in opponents]
    for who in [me, *rivals]:
        check_player_for_game(who.policy, "duel")
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


def record_game(
    game: Game | str,
    source: Any,
    opponents: Sequence[Any] = (),
    episodes: int = 10,
    out_dir: str | os.PathLike = "runs/recordings",
    seed: int = 0,
    options: RecordOptions | None = None,
    config: Any = None,
    player: int = 0,
) -> list[Path]:
    """Record ``episodes`` matches of any registered game but Duel (Boxing, plugins) on the one loop.

    ``source`` plays slot ``player``: a built-in player's name (``game.players``, e.g. Boxing's
    ``expert``) or any Policy. ``opponents`` (names or Policies, cycled over episodes; default the
    game's first opponent) take the other slot; where the match plays the opponent itself (Boxing's
    ``cpu``) the recorded player is alone in the match. The state log holds the recorded player's
    state features and each side's events (``bcarena.recordings.games.generic_log_columns``).
    Matches play ``options.batch_size`` at a time; episode i plays match seed ``derive_seed(seed, i)``.
    """
    game = get_game(game) if isinstance(game, str) else game
    options = options or RecordOptions()
    config = game.make_config({}) if config is None else config
    opponents = list(opponents) or list(game.opponents)[:1]
    _check_request(episodes, options)
    if not 0 <= player < game.num_players and not (game.num_players == 1 and player == 0):
        raise RecordingError(f"game {game.name!r}: player must be within [0, {game.num_players}), got {player}")
    me = resolve_source(_game_player(game, source, config, seed, "source"))
    rivals = [_game_rival(game, o, config, seed) for o in opponents]
    for who in [me, *rivals]:
        if isinstance(who, Source):
            check_player_for_game(who.policy, game)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rival_names = [r if isinstance(r, str) else r.name for r in rivals]
    settings = recording_settings(game.name, me, player, rival_names, seed, game.config_dict(config), episodes, options)
    todo = _open_folder(out_dir, settings, episodes, options.resume)
    bar = tqdm(total=len(todo), desc=f"recording {game.name} {me.name}", unit="episode", disable=not options.progress)
    video = options.video and game.screen is not None
    size = min(options.batch_size, max(len(todo), 1))
    with closing(game.match(size, config, MatchOptions(frozenset({"pixels", "state"}), video))) as match:
        for start in range(0, len(todo), size):
            hook = _GameEpisodes(game, np.array(todo[start : start + size]), me, rivals, out_dir, seed, config, player)
            hook.options, hook.video, hook.on_done = options, video, bar.update
            policies: list[Any] = [me.policy]
            if game.num_players == 2:
                rival_policies = [r.policy for r in rivals if isinstance(r, Source)]
                policies.insert(1 - player, MatchwisePolicy(rival_policies, hook.rival_of, game.num_actions))
            try:
                play(match, policies, hook.seeds, hooks=[hook], max_steps=options.max_frames)
            finally:
                hook.abort()
    bar.close()
    return [out_dir / episode_name(i) for i in range(episodes)]


def _check_request(episodes: int, options: RecordOptions) -> None:
    if episodes < 1:
        raise RecordingError(f"episodes must be >= 1, got {episodes}")
    if options.max_frames is not None and options.max_frames < 1:
        raise RecordingError(f"max_frames must be >= 1, got {options.max_frames}")
    if not 1 <= options.batch_size <= MAX_RECORD_BATCH:
        raise RecordingError(f"batch_size must be within [1, {MAX_RECORD_BATCH}], got {options.batch_size}")


def _game_player(game: Game, spec: Any, config: Any, seed: int, role: str) -> Any:
    """A built-in player's name -> its Policy; anything else is a Policy already."""
    if not isinstance(spec, str):
        return spec
    if spec not in game.players:
        raise RecordingError(f"game {game.name!r} has no {role} {spec!r}; its built-in players are {game.players}")
    policy = game.player(spec, config, seed)
    if policy is None:
        raise RecordingError(f"game {game.name!r}: {spec!r} is played by the match itself and cannot be recorded")
    return policy


def _game_rival(game: Game, spec: Any, config: Any, seed: int) -> Source | str:
    """An opponent: a Source, or the name of one the match plays itself (games with one policy per match)."""
    if game.num_players == 1:
        inside = [name for name in game.opponents if game.player(name, config, seed) is None]
        if spec not in inside:
            who = spec if isinstance(spec, str) else resolve_source(spec).name
            raise RecordingError(
                f"game {game.name!r} plays its opponent inside the match: opponents must be among {inside}, got {who!r}"
            )
        return str(spec)
    return resolve_source(_game_player(game, spec, config, seed, "opponent"))


class _GameEpisodes(Hook):
    """Writes one episode folder per match of a batch of a generic game while the loop plays it.

    Before each decision a match's writer gets the frame the recorded player sees (and the screen
    for people); after it the state log gets the state features before the decision and each side's
    events. An episode is written when its match ends or reaches ``options.max_frames`` frames.
    """

    options: RecordOptions
    video: bool
    on_done: Callable[[int], Any]

    def __init__(
        self,
        game: Game,
        indices: np.ndarray,
        me: Source,
        rivals: list[Source | str],
        out_dir: Path,
        seed: int,
        config: Any,
        player: int,
    ) -> None:
        self.game, self.indices, self.me, self.rivals = game, indices, me, rivals
        self.seeds = rng.derive_seeds(np.full(indices.size, seed), indices)  # episode i plays the same in any batch
        self.rival_of = indices % len(rivals)
        self.out_dir, self.seed, self.config, self.player = out_dir, seed, config, player
        self.fps, self.ticks_per_frame, self.tick_rate = game.timing(config)
        self.writers: dict[int, EpisodeWriter] = {}
        self.snapshots: list[dict[str, np.ndarray]] = []

    def on_reset(self, match: Any) -> None:
        for row, index in enumerate(self.indices):
            self.writers[row] = EpisodeWriter(self.out_dir, int(index), self.fps, self.video)
        self._before_decision(match, np.arange(self.indices.size))

    def _before_decision(self, match: Any, rows: np.ndarray) -> None:
        views = match.observe(self.player, "pixels")
        for row in map(int, rows):
            rgb = self.game.screen(match, row) if self.video and self.game.screen else None
            self.writers[row].add_frame(views[row, ..., 0], rgb)
        self.state_before = np.array(match.observe(self.player, "state"), dtype=np.float32)

    def on_step(self, step: Step) -> None:
        events, n = step.events, self.indices.size
        other = step.actions[:, 1 - self.player] if self.game.num_players == 2 else np.full(len(step.live), -1)
        self.snapshots.append(
            {
                "state": self.state_before,
                "skill_used": np.array(events["skill_used"], dtype=bool),
                "hit_landed": np.array(events["hit_landed"], dtype=bool),
                "ko": np.array(events["ko"], dtype=bool),
                "ended": np.array(step.match.done, dtype=bool),
                "opponent_action": np.array(other, dtype=np.int64),
                "my_action": step.actions[:, self.player].copy(),
            }
        )
        limit = self.options.max_frames
        full = limit is not None and len(self.snapshots) >= limit
        finished = step.live[:n] & (np.asarray(step.match.done[:n]) | full)
        if finished.any():
            outcome = self.game.result(step.match)
            for row in map(int, np.flatnonzero(finished)):
                self._finish(row, outcome, bool(step.match.done[row]))
                self.on_done(1)
        recording = step.live[:n] & ~finished
        if recording.any():
            self._before_decision(step.match, np.flatnonzero(recording))

    def _log(self, row: int, frames: int) -> pd.DataFrame:
        shots = self.snapshots[:frames]
        log = pd.DataFrame(
            np.array([s["state"][row] for s in shots], dtype=np.float32),
            columns=[f"s_{name}" for name in self.game.state_features],
        )
        log.insert(0, "frame", np.arange(frames, dtype=np.int32))
        for event in ("skill_used", "hit_landed"):
            for side in (0, 1):
                log[f"{event}_{side}"] = np.array([s[event][row, side] for s in shots])
        for name in ("ko", "ended", "opponent_action", "my_action"):
            log[name] = np.array([s[name][row] for s in shots])
        return log

    def _finish(self, row: int, outcome: Outcome, done: bool) -> None:
        writer = self.writers.pop(row)
        frames = writer.frames
        log = self._log(row, frames)
        actions = log.pop("my_action").to_numpy()
        match_seed = int(self.seeds[row])
        action_map = action_map_of(self.game)
        timing = np.random.default_rng(input_seed(match_seed))
        events = key_events(actions, action_map, timing, self.ticks_per_frame, self.options.tap_ticks)
        rival = self.rivals[self.rival_of[row]]
        rival_info = (
            {"name": rival, "kind": "built-in", "obs_type": "console"} if isinstance(rival, str) else rival.describe()
        )
        players = [self.me.describe(), rival_info] if self.player == 0 else [rival_info, self.me.describe()]
        winner = int(outcome.winner[row]) if done else None
        meta = {
            "game": self.game.name,
            "game_version": self.game.version,
            "game_config": self.game.config_dict(self.config),
            "fps": self.fps,
            "tick_rate": self.tick_rate,
            "ticks_per_frame": self.ticks_per_frame,
            "player": self.player,
            "players": players,
            "seeds": {"recording": int(self.seed), "match": match_seed, "input": input_seed(match_seed)},
            "result": {
                "winner": winner,
                "won": None if winner is None else winner == self.player,
                "ko": bool(outcome.ko[row]),
                "truncated": not done,
                "score": outcome.score[row].tolist(),
                "frames": frames,
            },
        }
        writer.finish(events, action_map, log, meta)

    def abort(self) -> None:
        """Remove the temporary folders of episodes left unfinished (the loop raised)."""
        for writer in self.writers.values():
            writer.abort()


def record_boxing(
    source: Any = "expert",
    episodes: int = 10,
    out_dir: str | os.PathLike = "runs/recordings/boxing",
    seed: int = 0,
    options: RecordOptions | None = None,
    config: Any = None,
) -> list[Path]:
    """Record ALE Boxing bouts of ``source`` (``"expert"``: the RAM expert, or any Policy) against the CPU."""
    return record_game("boxing", source, ["cpu"], episodes, out_dir, seed, options, config)


def record_episodes(
    source: Any,
    opponents: Sequence[Any] | None = None,
    episodes: int = 10,
    out_dir: str | os.PathLike = "runs/recordings",
    seed: int = 0,
    game: str = "duel",
    options: RecordOptions | None = None,
    config: Any = None,
    player: int = 0,
) -> list[Path]:
    """Record ``episodes`` episodes of ``source`` into ``out_dir`` (one folder each), for any registered game.

    Duel: :func:`record_duel` (``opponents`` bots or policies, cycled; default ``DEFAULT_OPPONENTS``).
    Any other game: :func:`record_game` (``opponents`` are that game's, default its first one; Boxing's is
    the console's ``cpu``).
    """
    if game == "duel":
        return record_duel(
            source,
            DEFAULT_OPPONENTS if opponents is None else opponents,
            episodes,
            out_dir,
            seed,
            config,
            player,
            options,
        )
    return record_game(get_game(game), source, opponents or (), episodes, out_dir, seed, options, config, player)
