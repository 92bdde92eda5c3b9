"""Recording episodes: bots and agents play, the recorder writes what a capture tool would.

Duel episodes are played many at once on the batched core (``DuelMatch``): one ``act`` call per
player per frame for the whole batch, one episode folder per match. The recorded player's
decisions become human-like key events (``inputlog.key_events``), so the recording holds key
events, not labels, and turning it back into labels (alignment) is a real step.

Seeding: episode ``i`` of a recording seeded ``s`` plays match seed ``derive_seed(s, i)``
whatever batch it runs in, and its key timing is drawn from ``derive_seed(match_seed, 1)``.
So a killed run resumed with ``resume=True`` records exactly the episodes it would have.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from bcarena.envs import rng
from bcarena.envs.duel import DuelConfig, DuelMatch
from bcarena.envs.duel.render import gray_frames, rgb_frame
from bcarena.recordings.actions import DUEL_ACTION_MAP, boxing_action_map
from bcarena.recordings.episode import EpisodeWriter, RecordingError, episode_name
from bcarena.recordings.games import EVENT_FIELDS, bcarena_version, flatten_columns
from bcarena.recordings.inputlog import TAP_TICKS, key_events
from bcarena.recordings.sources import Player, resolve_source

DEFAULT_OPPONENTS: tuple[str, ...] = ("brawler", "turtle", "random", "pro")


@dataclass
class RecordOptions:
    """How episodes are captured (shared by all games)."""

    video: bool = True  # write video.mp4 for people (the converter never needs it; it costs ~1.5 ms/frame)
    max_frames: int | None = None  # stop (truncate) episodes after this many frames
    tap_ticks: tuple[int, int] = TAP_TICKS  # skill-tap duration range in ticks
    batch_size: int = 32  # Duel matches played at once (each holds two open video writers)
    resume: bool = False  # skip episodes already complete in out_dir instead of refusing
    progress: bool = True


def input_seed(match_seed: int) -> int:
    """Seed of an episode's key-timing RNG, derived from its match seed."""
    return rng.derive_seed(int(match_seed), 1)


def _pending(out_dir: Path, episodes: int, options: RecordOptions) -> list[int]:
    done = [i for i in range(episodes) if (out_dir / episode_name(i)).exists()]
    if done and not options.resume:
        raise RecordingError(f"{out_dir / episode_name(done[0])}: already exists; record into a new folder "
                             f"or pass resume=True to complete a killed run")
    return [i for i in range(episodes) if i not in set(done)]


def record_duel(source: Any, opponents: Sequence[Any] = DEFAULT_OPPONENTS, episodes: int = 10,
                out_dir: str | os.PathLike = "runs/recordings", seed: int = 0, config: DuelConfig | None = None,
                player: int = 0, options: RecordOptions | None = None) -> list[Path]:
    """Record ``episodes`` Duel matches of ``source`` (as ``player``) against ``opponents`` (cycled).

    Returns the episode folders (sorted). See :mod:`bcarena.recordings.sources` for what a source can be.
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
    me = resolve_source(source, config)
    rivals = [resolve_source(o, config) for o in opponents]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = _pending(out_dir, episodes, options)
    bar = tqdm(total=len(todo), desc=f"recording {me.name}", unit="episode", disable=not options.progress)
    for start in range(0, len(todo), options.batch_size):
        _record_duel_batch(np.array(todo[start:start + options.batch_size]), me, rivals, out_dir, seed, config,
                           player, options, bar.update)
    bar.close()
    return [out_dir / episode_name(i) for i in range(episodes)]


def _record_duel_batch(indices: np.ndarray, me: Player, rivals: list[Player], out_dir: Path, seed: int,
                       config: DuelConfig, player: int, options: RecordOptions,
                       on_done: Callable[[int], Any]) -> None:
    n = indices.size
    seeds = rng.derive_seeds(np.full(n, seed), indices)
    match = DuelMatch(n, config)
    core = match.core
    match.reset(seeds)
    rival_of = indices % len(rivals)
    for p in [me, *rivals]:
        p.reset(n)
    opponent = 1 - player
    names_of = [(me.name, r.name) if player == 0 else (r.name, me.name) for r in rivals]
    writers: dict[int, EpisodeWriter] = {}
    snapshots: list[dict[str, np.ndarray]] = []
    recording = np.ones(n, dtype=bool)
    limit = options.max_frames or config.max_decisions
    try:
        for row, index in enumerate(indices):
            writers[row] = EpisodeWriter(out_dir, int(index), config.decision_hz, options.video)
        while recording.any():
            state_obs = match.observe("state")
            views = {player: gray_frames(core, player)}

            def obs_for(p: Player, side: int) -> np.ndarray:
                if p.obs_type == "state":
                    return state_obs[:, side]
                if side not in views:
                    views[side] = gray_frames(core, side)
                return views[side][..., None]

            for row in np.flatnonzero(recording):
                rgb = rgb_frame(core, row, names_of[rival_of[row]]) if options.video else None
                writers[row].add_frame(views[player][row], rgb)
            snapshot = flatten_columns(core.get_state())
            actions = np.zeros((n, 2), dtype=np.int64)
            actions[:, player] = me.actions(obs_for(me, player), core, player)
            for k, rival in enumerate(rivals):
                rows = rival_of == k
                if rows.any():
                    actions[rows, opponent] = rival.actions(obs_for(rival, opponent), core, opponent)[rows]
            _, events = match.step(actions)
            snapshot.update(flatten_columns({name: getattr(events, name) for name in EVENT_FIELDS}))
            snapshot.update(ended=events.ended.copy(), opponent_action=actions[:, opponent].copy(),
                            my_action=actions[:, player].copy())
            snapshots.append(snapshot)
            finished = recording & (core.done | (len(snapshots) >= limit))
            for row in np.flatnonzero(finished):
                recording[row] = False
                _finish_duel_episode(writers.pop(row), snapshots, row, core, config, player, me,
                                     rivals[rival_of[row]], seed, int(seeds[row]), options)
                on_done(1)
    finally:
        for writer in writers.values():
            writer.abort()


def _finish_duel_episode(writer: EpisodeWriter, snapshots: list[dict[str, np.ndarray]], row: int, core,
                         config: DuelConfig, player: int, me: Player, rival: Player, seed: int, match_seed: int,
                         options: RecordOptions) -> None:
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
        "game_version": f"bcarena-duel {bcarena_version()}",
        "game_config": config.to_dict(),
        "fps": config.decision_hz,
        "tick_rate": config.tick_rate_hz,
        "ticks_per_frame": config.action_repeat,
        "player": player,
        "players": players,
        "seeds": {"recording": int(seed), "match": match_seed, "input": input_seed(match_seed)},
        "result": {"winner": winner, "won": None if truncated else winner == player, "ko": bool(core.ko[row]),
                   "truncated": truncated, "hp": core.hp[row].tolist(), "frames": frames},
    }
    writer.finish(events, DUEL_ACTION_MAP, log, meta)


def record_boxing(source: Any = "expert", episodes: int = 10, out_dir: str | os.PathLike = "runs/recordings/boxing",
                  seed: int = 0, options: RecordOptions | None = None, config: Any = None) -> list[Path]:
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
    todo = _pending(out_dir, episodes, options)
    env = boxing.make_env(config)
    try:
        for index in tqdm(todo, desc="recording boxing", unit="episode", disable=not options.progress):
            match_seed = rng.derive_seed(seed, index)
            player = resolve_source(boxing.BoxingExpert(seed=match_seed) if source == "expert" else source)
            _record_boxing_episode(env, player, out_dir, index, seed, match_seed, config, options)
    finally:
        env.close()
    return [out_dir / episode_name(i) for i in range(episodes)]


def _record_boxing_episode(env, player: Player, out_dir: Path, index: int, seed: int, match_seed: int, config,
                           options: RecordOptions) -> None:
    from bcarena.envs import boxing

    action_map = boxing_action_map()
    ale = env.unwrapped.ale
    screen = boxing.reset_with_noops(env, match_seed, config)
    player.reset(1)
    rows: list[np.ndarray] = []
    actions: list[int] = []
    done = False
    with EpisodeWriter(out_dir, index, config.fps, options.video) as writer:
        while not done and writer.frames < (options.max_frames or 10**9):
            ram = ale.getRAM().copy()
            view = boxing.agent_view(screen)
            rgb = cv2.resize(screen[..., ::-1], (screen.shape[1] * 3, screen.shape[0] * 2),
                             interpolation=cv2.INTER_NEAREST) if options.video else None
            writer.add_frame(view, rgb)
            obs = boxing.ram_features(ram) if player.obs_type == "state" else view[None, :, :, None]
            action = int(player.actions(obs)[0])
            screen, _, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
            rows.append(np.r_[ram, int(done)])
            actions.append(action)
        final = boxing.ram_info(ale.getRAM())
        ram_log = np.array(rows)
        log = pd.DataFrame(ram_log[:, :128].astype(np.uint8), columns=[f"ram_{i}" for i in range(128)])
        scores = boxing.ram_info(np.vstack([ram_log[:, :128], ale.getRAM()[None]]))
        log.insert(0, "frame", np.arange(len(rows), dtype=np.int32))
        log["player_points"] = np.diff(scores["player_score"]).astype(np.int16)
        log["enemy_points"] = np.diff(scores["enemy_score"]).astype(np.int16)
        log["ended"] = ram_log[:, 128].astype(bool)
        result = boxing.BoxingResult(int(final["player_score"][0]), int(final["enemy_score"][0]), len(rows),
                                     sum(action_map.taps[a] is not None for a in actions))
        truncated = not done
        events = key_events(np.array(actions), action_map, np.random.default_rng(input_seed(match_seed)),
                            config.frameskip, options.tap_ticks)
        meta = {
            "game": "boxing",
            "game_version": f"ale-py {ale_version()} Boxing-v5",
            "game_config": {"frameskip": config.frameskip, "repeat_action_probability": config.repeat_action_probability,
                            "noop_max": config.noop_max},
            "fps": config.fps,
            "tick_rate": config.tick_rate,
            "ticks_per_frame": config.frameskip,
            "player": 0,
            "players": [player.describe(), {"name": "atari-cpu", "kind": "built-in", "obs_type": "console"}],
            "seeds": {"recording": int(seed), "match": match_seed, "input": input_seed(match_seed)},
            "result": {"winner": None if truncated else result.winner, "won": None if truncated else result.winner == 0,
                       "ko": result.ko, "truncated": truncated, "score": [result.player_score, result.enemy_score],
                       "frames": result.frames},
        }
        writer.finish(events, action_map, log, meta)


def ale_version() -> str:
    try:
        return metadata.version("ale-py")
    except metadata.PackageNotFoundError:
        return "unknown"


# Game name -> recorder(source, opponents, episodes, out_dir, seed, options, **game_kwargs).
RECORDERS: dict[str, Callable[..., list[Path]]] = {}


def _record_duel_entry(source: Any, opponents: Sequence[Any], episodes: int, out_dir: str | os.PathLike, seed: int,
                       options: RecordOptions, config: DuelConfig | None = None, player: int = 0) -> list[Path]:
    return record_duel(source, opponents, episodes, out_dir, seed, config, player, options)


RECORDERS["duel"] = _record_duel_entry
RECORDERS["boxing"] = lambda source, opponents, episodes, out_dir, seed, options, **kw: record_boxing(
    source, episodes, out_dir, seed, options, **kw)


def record_episodes(source: Any, opponents: Sequence[Any] = DEFAULT_OPPONENTS, episodes: int = 10,
                    out_dir: str | os.PathLike = "runs/recordings", seed: int = 0, game: str = "duel",
                    options: RecordOptions | None = None, **game_kwargs: Any) -> list[Path]:
    """Record ``episodes`` episodes of ``source`` into ``out_dir`` (one folder each); see ``RECORDERS``.

    Duel: ``opponents`` are cycled over episodes; ``config`` and ``player`` may be given.
    Boxing: the opponent is the console's built-in CPU (``opponents`` is ignored).
    """
    if game not in RECORDERS:
        raise RecordingError(f"unknown game {game!r}; recordable games are {sorted(RECORDERS)}")
    return RECORDERS[game](source, opponents, episodes, out_dir, seed, options or RecordOptions(), **game_kwargs)
