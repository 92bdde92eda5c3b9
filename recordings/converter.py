"""Recordings -> action dataset (the contract in ``recordings/dataset.py``).

For each episode folder: validate ``meta.json`` and the file hashes, decode the lossless agent
view (``agent_view.mkv``) into uint8 frames, parse the input log and align its key events to
10 FPS frames with the chosen rule, read per-frame events and state features from the state
log, then concatenate episodes, split them (whole episodes) with a seed, and save atomically.

Data that would be silently wrong is refused: where the state log replays the game (Duel), the
key log must explain it (``check_inputs``: a flipped ``player``, an empty or truncated key log
fail), and a recordings folder holding entries that are not complete episodes fails the build
unless ``strict=False``, which warns and names them instead.

Every rule's lost skill presses are counted on every build (``manifest["lost_presses"]``), so
the cost of choosing ``sample`` over ``window-priority`` is always on record.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from bcarena.envs.duel import DuelConfig
from bcarena.envs.files import sha256_file
from bcarena.envs.video import VideoError, read_video
from bcarena.recordings.dataset import (
    EVENT_TYPES,
    SCHEMA_VERSION,
    SPLITS,
    ActionDataset,
    DatasetError,
    frames_to_nearest,
)
from bcarena.recordings.episode import (
    AGENT_VIEW_FILE,
    META_FILE,
    STATES_FILE,
    VIDEO_FILE,
    Meta,
    RecordingError,
    list_episodes,
    parse_meta,
)
from bcarena.recordings.games import GameSpec, InputAgreement, game_spec
from bcarena.recordings.inputlog import (
    ALIGNMENTS,
    DECISION_RULE,
    INPUT_LOG_FILE,
    KeyEvents,
    align,
    lost_presses,
    read_input_log,
)
from bcarena.recordings.overlay import OVERLAY_FILE, Applied, Edit, apply_edits, read_overlay, recording_info
from bcarena.recordings.reaction_delay import check_delay, check_lengths, player_name, resolve_delays, shift_episode

DEFAULT_SPLIT = (0.8, 0.1, 0.1)
# Measured on 96 correct episodes (pro, brawler, random, turtle, mover, idle; as player 0 and 1): every frame and
# every skill start agrees (100%). The same episodes with the player flipped agree on 9-82% of the frames; with an
# empty key log on 6-96% of the frames and 0% of the skill starts; cut to half its events, 48-99% and 12-100%:
# each of those 240 broken episodes fails one of the two thresholds (idle players excepted: their key log is empty).
MIN_FRAME_AGREEMENT = 0.95
MIN_SKILL_AGREEMENT = 0.95
MAX_NAMED_SKIPPED = 20  # skipped entries named in one message; the rest are counted


@dataclass
class EpisodeData:
    """One validated, aligned episode, ready to be concatenated."""

    folder: Path
    meta: Meta
    labels: np.ndarray  # (F,) int64
    events: dict[str, np.ndarray]  # EVENT_TYPES -> (F,) bool
    features: np.ndarray  # (F, D) float32
    pixels: np.ndarray | None  # (F, 84, 84) uint8
    lost: dict[str, dict[str, int]]  # rule -> lost-press counts
    meta_sha256: str
    frame_index: np.ndarray | None = None  # (F,) recorded frame of each row; None: 0..F-1 (no frames excluded)


def load_episode(
    folder: str | os.PathLike,
    alignment: str = "window-priority",
    fps: float = 10.0,
    pixels: bool = True,
    verify_hashes: bool = True,
    game: str | None = None,
    edits: Sequence[Edit] = (),
) -> EpisodeData:
    """Validate and align one episode folder. Problems raise RecordingError naming the file.

    ``edits`` (a label overlay's edits of this episode, see ``recordings/overlay.py``) relabel frames,
    mark moments (the ``marked`` event) and drop excluded frames, after the key log was checked.
    """
    folder = Path(folder)
    meta_path = folder / META_FILE
    try:
        meta = parse_meta(meta_path.read_bytes(), str(meta_path))
    except FileNotFoundError:
        raise RecordingError(f"{meta_path}: missing (not an episode folder?)") from None
    spec = game_spec(meta.game, str(meta_path))
    if game is not None and meta.game != game:
        raise RecordingError(f"{meta_path}: game {meta.game!r}, but this dataset holds {game!r} episodes")
    if meta.fps != fps:
        raise RecordingError(f"{meta_path}: fps is {meta.fps}, expected {fps} (datasets are built at {fps} FPS)")
    action_map = spec.action_map()
    unknown = [a for a in meta.action_names if a not in action_map.action_names]
    if unknown or meta.action_names != list(action_map.action_names):
        raise RecordingError(
            f"{meta_path}: unknown action name(s) {unknown or meta.action_names}; "
            f"{meta.game} actions are {list(action_map.action_names)}"
        )
    if meta.map() != action_map:
        raise RecordingError(f"{meta_path}: action_map differs from the {meta.game} key map")
    spec.check(meta, str(meta_path))
    if verify_hashes:
        _verify_files(folder, meta)
    frames = meta.num_frames
    tpf = meta.ticks_per_frame
    events = read_input_log(folder / INPUT_LOG_FILE, action_map)
    presses = events.tick[events.down]
    if presses.size and presses.max() >= frames * tpf:
        raise RecordingError(
            f"{folder / INPUT_LOG_FILE}: frame-count mismatch: a key goes down at tick "
            f"{int(presses.max())} but the video has {frames} frames (ticks < {frames * tpf})"
        )
    if events.tick.size and events.tick.max() >= (frames + 1) * tpf:
        raise RecordingError(
            f"{folder / INPUT_LOG_FILE}: frame-count mismatch: events run to tick "
            f"{int(events.tick.max())}, past the {frames} frames of the video"
        )
    states = _read_states(folder / STATES_FILE, spec, frames)
    by_rule = {rule: align(events, action_map, frames, tpf, rule) for rule in ALIGNMENTS}
    labels = by_rule[alignment]
    lost = {rule: lost_presses(events, action_map, by_rule[rule], tpf) for rule in ALIGNMENTS}
    check_inputs(folder, meta, spec, states, events, by_rule[DECISION_RULE])
    applied = apply_edits(edits, labels, meta.action_names)
    labels = applied.labels
    flags = spec.events(states, meta, labels)
    flags["marked"] = applied.marked
    flags["action_change"] = np.r_[False, labels[1:] != labels[:-1]]
    features = np.asarray(spec.features(states, meta, str(folder / STATES_FILE)), dtype=np.float32)
    view = _decode_view(folder / AGENT_VIEW_FILE, frames) if pixels else None
    if VIDEO_FILE in meta.files:
        _check_video(folder / VIDEO_FILE, frames)
    data = EpisodeData(
        folder, meta, labels, {e: flags[e] for e in EVENT_TYPES}, features, view, lost, sha256_file(meta_path)
    )
    return _keep_frames(data, applied) if edits else data


def _keep_frames(data: EpisodeData, applied: Applied) -> EpisodeData:
    """The episode without the frames an overlay excluded (rows keep their recorded frame index)."""
    keep = applied.keep
    if not keep.any():
        raise RecordingError(f"{data.folder}: its label overlay excludes every frame; undo an exclude_segment edit")
    data.labels, data.features = data.labels[keep], data.features[keep]
    data.events = {name: flags[keep] for name, flags in data.events.items()}
    data.pixels = data.pixels[keep] if data.pixels is not None else None
    data.frame_index = np.flatnonzero(keep).astype(np.int32)
    return data


def check_inputs(
    folder: Path, meta: Meta, spec: GameSpec, states: pd.DataFrame, events: KeyEvents, decisions: np.ndarray
) -> InputAgreement | None:
    """Refuse an episode whose key log does not explain its state log (where the game can tell).

    ``decisions`` (F,) are the labels under ``DECISION_RULE``, the rule the game itself acts on, so
    the check does not depend on the alignment chosen for the dataset. Raises RecordingError naming
    the episode, the agreement counts and the likely cause.
    """
    if spec.input_agreement is None:
        return None
    where = str(folder / STATES_FILE)
    found = spec.input_agreement(states, meta, decisions, where)
    if found.frame_agreement >= MIN_FRAME_AGREEMENT and found.skill_agreement >= MIN_SKILL_AGREEMENT:
        return found
    raise RecordingError(
        f"{folder}: {INPUT_LOG_FILE} does not match {STATES_FILE}: replaying the key log as player "
        f"{found.player} reproduces {int(found.agreeing.sum())} of {found.frames} frames "
        f"({found.frame_agreement:.0%}, at least {MIN_FRAME_AGREEMENT:.0%} expected), and of the "
        f"{found.skill_starts} skill(s) the state log shows player {found.player} starting, the key "
        f"log presses {found.skill_starts_pressed}; likely cause: "
        f"{_likely_cause(found, meta, spec, states, events, decisions, where)}"
    )


def _likely_cause(
    found: InputAgreement,
    meta: Meta,
    spec: GameSpec,
    states: pd.DataFrame,
    events: KeyEvents,
    decisions: np.ndarray,
    where: str,
) -> str:
    if len(events) == 0:
        return "the key log is empty (no key events): it was not saved, or cut off before the first press"
    if len(meta.players) == 2:
        other = spec.input_agreement(states, meta, decisions, where, player=1 - meta.player)
        if other.frame_agreement >= MIN_FRAME_AGREEMENT:
            return (
                f"a flipped player: {META_FILE} says player {meta.player}, but as player {other.player} the key "
                f"log reproduces {other.frame_agreement:.0%} of the frames"
            )
    last_frame = int(events.tick.max()) // meta.ticks_per_frame
    before = found.agreeing[:last_frame]  # the frames wholly before the last key event
    if 0 < last_frame < found.frames - 1 and before.mean() >= MIN_FRAME_AGREEMENT:
        return (
            f"a truncated key log: its last event is in frame {last_frame} of {found.frames}, and it agrees "
            f"on {before.mean():.0%} of the frames before that"
        )
    if found.frame_agreement >= MIN_FRAME_AGREEMENT:
        return "skill presses are missing from the key log (a key logger that missed those keys, or rows deleted)"
    return f"the key log belongs to another recording or was edited (recorded by {meta.game_version!r})"


def _verify_files(folder: Path, meta: Meta) -> None:
    for name, entry in meta.files.items():
        path = folder / name
        if not path.is_file():
            raise RecordingError(f"{path}: missing (listed in {META_FILE})")
        size = path.stat().st_size
        if size != entry.bytes or sha256_file(path) != entry.sha256:
            raise RecordingError(
                f"{path}: content differs from {META_FILE} ({size} bytes, expected {entry.bytes}; "
                f"sha256 mismatch): truncated or modified after recording"
            )


def _read_states(path: Path, spec: GameSpec, frames: int) -> pd.DataFrame:
    try:
        states = pd.read_parquet(path)
    except FileNotFoundError:
        raise RecordingError(f"{path}: state log missing") from None
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise RecordingError(f"{path}: unreadable Parquet ({type(exc).__name__}: {exc})") from None
    missing = [c for c in spec.log_columns() if c not in states.columns]
    if missing:
        raise RecordingError(f"{path}: missing column(s) {missing[:8]}")
    if len(states) != frames:
        raise RecordingError(f"{path}: frame-count mismatch: {len(states)} rows, meta.json says {frames} frames")
    return states


def _decode_view(path: Path, frames: int) -> np.ndarray:
    try:
        view = read_video(path, gray=True)
    except VideoError as exc:
        raise RecordingError(str(exc)) from None
    if view.shape[0] != frames:
        raise RecordingError(
            f"{path}: frame-count mismatch: {view.shape[0]} decodable frames, meta.json says "
            f"{frames} (truncated video?)"
        )
    return view


def _check_video(path: Path, frames: int) -> None:
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise RecordingError(f"{path}: OpenCV cannot open this video (unreadable or truncated)")
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        capture.release()
    if count != frames:
        raise RecordingError(f"{path}: frame-count mismatch: {count} frames, meta.json says {frames}")


def split_episodes(num_episodes: int, fractions: Sequence[float], seed: int) -> np.ndarray:
    """Split name index (num_episodes,) into ``SPLITS``: whole episodes, shuffled with ``seed``.

    Every split with a positive fraction gets at least one episode when there are enough episodes.
    """
    fractions = np.asarray(fractions, dtype=np.float64)
    if (
        fractions.shape != (3,)
        or not np.isfinite(fractions).all()
        or (fractions < 0).any()
        or not np.isclose(fractions.sum(), 1.0)
        or fractions[0] <= 0
    ):
        raise DatasetError(
            f"split must be three fractions (train, val, test) >= 0 summing to 1 with train > 0, "
            f"got {tuple(fractions.tolist())}"
        )
    counts = np.floor(fractions * num_episodes + 0.5).astype(np.int64)
    wanted = fractions > 0
    if num_episodes >= wanted.sum():
        counts = np.where(wanted, np.maximum(counts, 1), 0)
    while counts.sum() > num_episodes:
        counts[np.argmax(counts)] -= 1
    counts[0] += num_episodes - counts.sum()
    order = np.random.default_rng(seed).permutation(num_episodes)
    out = np.empty(num_episodes, dtype=np.int64)
    out[order] = np.repeat(np.arange(3), counts)
    return out


def build_dataset(
    recordings: str | os.PathLike | Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    alignment: str = "window-priority",
    split: Sequence[float] = DEFAULT_SPLIT,
    seed: int = 0,
    pixels: bool = True,
    fps: float = 10.0,
    verify_hashes: bool = True,
    workers: int | None = None,
    progress: bool = True,
    strict: bool = True,
    reaction_delay: int | str | None = None,
    max_reaction_delay: int = 5,
) -> ActionDataset:
    """Convert recordings (a folder of episode folders, or a list of folders) into a dataset at ``out_dir``.

    A visible entry of a recordings folder that is not a complete episode (no ``meta.json``) is an
    error naming it, unless ``strict=False``: then it is skipped with a ``UserWarning`` naming it,
    and listed in the manifest (``skipped``). ``reaction_delay`` (frames, or ``"auto"``: chosen per
    player in 0..``max_reaction_delay``, see ``recordings/reaction_delay.py``) pairs each observation
    with the action k frames later; the manifest records ``reaction_delay: {player: k}``. Returns the
    saved dataset, loaded back (pixels memory-mapped).
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise DatasetError(f"{out_dir}: already exists; choose a new folder or delete the old dataset first")
    if alignment not in ALIGNMENTS:
        raise DatasetError(f"unknown alignment {alignment!r}; choose one of {sorted(ALIGNMENTS)}")
    check_delay(reaction_delay, max_reaction_delay)
    groups = [Path(p) for p in recordings] if isinstance(recordings, (list, tuple)) else [Path(recordings)]
    listings = [list_episodes(group) for group in groups]
    folders = [folder for listing in listings for folder in listing.episodes]
    skipped = [entry for listing in listings for entry in listing.skipped]
    if skipped:
        _report_skipped(skipped, len(folders), strict)
    if not folders:
        raise RecordingError(f"{recordings}: no complete episode folders (with {META_FILE}) found")
    split_of = split_episodes(len(folders), split, seed)  # validate before the long part
    check_lengths(folders, reaction_delay, max_reaction_delay)
    first = parse_meta((folders[0] / META_FILE).read_bytes(), str(folders[0] / META_FILE)).game
    overlays, edits = _read_overlays(groups)
    load = lambda folder: load_episode(  # noqa: E731
        folder, alignment, fps, pixels, verify_hashes, game=first, edits=edits.get(folder.resolve(), ())
    )
    with ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1)) as pool:
        episodes = list(
            tqdm(pool.map(load, folders), total=len(folders), desc="converting", unit="episode", disable=not progress)
        )
    delays, search = resolve_delays(episodes, split_of, reaction_delay, max_reaction_delay, seed)
    episodes = [shift_episode(e, delays[player_name(e)]) for e in episodes]
    dataset = assemble(episodes, alignment, split_of, split, seed)
    dataset.manifest["reaction_delay"] = delays
    if search is not None:
        dataset.manifest["reaction_delay_search"] = search
    dataset.manifest["skipped"] = [{"path": str(path), "reason": reason} for path, reason in skipped]
    dataset.manifest["overlays"] = overlays
    _warn_empty_splits(split_of, split)
    dataset.save(out_dir)
    return ActionDataset.load(out_dir)


def _read_overlays(groups: list[Path]) -> tuple[list[dict[str, Any]], dict[Path, list[Edit]]]:
    """The label overlays beside the recordings (manifest entries with their sha256) and each episode's edits."""
    entries, edits = [], {}
    for group in groups:
        path = group / OVERLAY_FILE
        if not path.is_file():
            continue
        overlay = read_overlay(group, recording_info(group))
        entries.append(
            {
                "path": str(path.resolve()),
                "sha256": sha256_file(path),
                "revision": overlay.revision,
                "edits": len(overlay.edits),
            }
        )
        for edit in overlay.edits:
            edits.setdefault((group / edit.episode).resolve(), []).append(edit)
    return entries, edits


def _report_skipped(skipped: list[tuple[Path, str]], complete: int, strict: bool) -> None:
    """Raise (strict) or warn about recordings entries that are not complete episodes, naming them."""
    named = "; ".join(f"{path} ({reason})" for path, reason in skipped[:MAX_NAMED_SKIPPED])
    more = f"; and {len(skipped) - MAX_NAMED_SKIPPED} more" if len(skipped) > MAX_NAMED_SKIPPED else ""
    are = "entry is" if len(skipped) == 1 else "entries are"
    what = f"{len(skipped)} {are} not complete episode folders: {named}{more}"
    if strict:
        raise RecordingError(
            f"{what}; complete them, move them out of the recordings folder, or build from the "
            f"{complete} complete episode(s) without them with --no-strict (strict=False)"
        )
    warnings.warn(f"skipped {what}; the dataset holds the {complete} complete episode(s)", UserWarning, stacklevel=3)


def _warn_empty_splits(split_of: np.ndarray, fractions: Sequence[float]) -> None:
    """An empty split builds, but training validates on 'val': say so while the build is cheap to redo."""
    empty = [name for k, name in enumerate(SPLITS) if not (split_of == k).any()]
    if empty:
        need = "; `bcarena train` refuses a dataset without 'val' episodes" if "val" in empty else ""
        warnings.warn(
            f"split(s) {empty} get no episodes (split {tuple(float(f) for f in fractions)} of "
            f"{len(split_of)} episodes){need}: use e.g. --split 0.8,0.1,0.1",
            UserWarning,
            stacklevel=3,
        )


def assemble(
    episodes: list[EpisodeData], alignment: str, split_of: np.ndarray, fractions: Sequence[float], seed: int
) -> ActionDataset:
    """Concatenate aligned episodes into one ActionDataset (in memory)."""
    spec = game_spec(episodes[0].meta.game)
    action_map = spec.action_map()
    features = spec.state_features()
    lengths = np.array([e.labels.shape[0] for e in episodes])
    episode = np.repeat(np.arange(len(episodes), dtype=np.int32), lengths)
    labels = np.concatenate([e.labels for e in episodes])
    frame_of = [
        e.frame_index if e.frame_index is not None else np.arange(n, dtype=np.int32) for e, n in zip(episodes, lengths)
    ]
    table: dict[str, Any] = {
        "episode": episode,
        "frame": np.concatenate(frame_of),
        "split": pd.Categorical(np.asarray(SPLITS)[np.repeat(split_of, lengths)], categories=list(SPLITS)),
        "action": labels.astype(np.int16),
    }
    flags = {name: np.concatenate([e.events[name] for e in episodes]) for name in EVENT_TYPES}
    table.update({f"event_{name}": flags[name] for name in EVENT_TYPES})
    table.update({f"frames_to_{name}": frames_to_nearest(flags[name], episode) for name in EVENT_TYPES})
    states = np.concatenate([e.features for e in episodes])
    table.update({f"s_{name}": states[:, i] for i, name in enumerate(features)})
    frame = pd.DataFrame(table)
    frame["split"] = frame["split"].astype(str)
    pixels = np.concatenate([e.pixels for e in episodes]) if episodes[0].pixels is not None else None
    counts = np.bincount(labels, minlength=action_map.num_actions)
    nonzero = counts[counts > 0]
    skills = list(action_map.skill_actions)
    lost = {
        rule: {key: sum(e.lost[rule][key] for e in episodes) for key in episodes[0].lost[rule]}
        for rule in episodes[0].lost
    }
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "game": spec.name,
        "game_version": episodes[0].meta.game_version,
        "fps": episodes[0].meta.fps,
        "action_names": list(action_map.action_names),
        "skill_actions": skills,
        "state_features": list(features),
        "frame_shape": list(pixels.shape[1:]) if pixels is not None else None,
        "num_frames": int(labels.size),
        "num_episodes": len(episodes),
        "splits": {
            name: {"episodes": np.flatnonzero(split_of == k).tolist(), "frames": int(lengths[split_of == k].sum())}
            for k, name in enumerate(SPLITS)
        },
        "split_fractions": [float(f) for f in fractions],
        "split_seed": int(seed),
        "class_counts": {name: int(c) for name, c in zip(action_map.action_names, counts)},
        "event_counts": {name: int(flags[name].sum()) for name in EVENT_TYPES},
        "imbalance_ratio": float(nonzero.max() / nonzero.min()) if nonzero.size else None,
        "skill_fraction": float(counts[skills].sum() / max(1, labels.size)),
        "alignment": alignment,
        "lost_presses": lost,
        "episode_lengths": lengths.tolist(),
        "sources": [
            {
                "episode": i,
                "folder": e.folder.name,
                "path": str(e.folder.resolve()),
                "meta_sha256": e.meta_sha256,
                "players": [p.name for p in e.meta.players],
                "player": e.meta.player,
                "seeds": e.meta.seeds,
                "result": e.meta.result,
                "files": {n: f.sha256 for n, f in e.meta.files.items()},
            }
            for i, e in enumerate(episodes)
        ],
    }
    return ActionDataset(frame, manifest, pixels)


def make_duel_dataset(
    out_dir: str | os.PathLike,
    player: Any = "pro",
    opponents: Sequence[Any] = ("brawler", "turtle", "random", "pro"),
    episodes: int = 50,
    seed: int = 0,
    alignment: str = "window-priority",
    split: Sequence[float] = DEFAULT_SPLIT,
    config: DuelConfig | None = None,
    video: bool = False,
    pixels: bool = True,
    progress: bool = False,
) -> ActionDataset:
    """Record ``episodes`` Duel matches of ``player`` and build a dataset, in one call.

    Recordings go to ``out_dir/recordings``, the dataset to ``out_dir/dataset``. The 640x360
    ``video.mp4`` is skipped by default (the dataset never reads it and it is the slow part).
    """
    from bcarena.recordings.recorder import RecordOptions, record_duel

    out_dir = Path(out_dir)
    record_duel(
        player,
        opponents,
        episodes,
        out_dir / "recordings",
        seed,
        config,
        options=RecordOptions(video=video, progress=progress),
    )
    return build_dataset(
        out_dir / "recordings", out_dir / "dataset", alignment, split, seed, pixels=pixels, progress=progress
    )
