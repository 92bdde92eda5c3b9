"""One recorded episode on disk: the folder layout, ``meta.json`` and crash-safe writing.

An episode folder (``episode_000012/``) holds::

    video.mp4        what the player saw: 640x360 colour at the recording fps (mp4v, lossy), optional
    agent_view.mkv   the recorded player's 84x84 gray view, FFV1 (lossless: decoded pixels equal
                     the env's pixel observations bit for bit)
    inputs.csv       key events at the game's tick rate (see ``inputlog``)
    states.parquet   per-frame state log (Duel: core state + step events; Boxing: RAM + events)
    meta.json        game, version, config, fps, tick rate, action map, players, seeds, result,
                     and the sha256 of every other file

Everything is written into a hidden sibling ``.episode_000012.partial-*`` folder and renamed
into place when complete, so a recorder killed mid-episode leaves every earlier episode intact
and no half-written one under a visible name.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bcarena.envs.files import commit_partial, discard_partial, new_partial, sha256_file
from bcarena.envs.video import VideoWriter
from bcarena.recordings.actions import ActionMap
from bcarena.recordings.errors import RecordingError
from bcarena.recordings.inputlog import INPUT_LOG_FILE, KeyEvents, write_input_log

FORMAT = "bcarena-recording"
FORMAT_VERSION = 1
VIDEO_FILE, AGENT_VIEW_FILE, STATES_FILE, META_FILE = "video.mp4", "agent_view.mkv", "states.parquet", "meta.json"
REQUIRED_FILES = (AGENT_VIEW_FILE, INPUT_LOG_FILE, STATES_FILE)


EPISODE_NAME = re.compile(r"episode_\d+")  # the folder names ``episode_name`` gives


def episode_name(index: int) -> str:
    return f"episode_{index:06d}"


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class PlayerInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    kind: str
    obs_type: str


class Meta(BaseModel):
    """Schema of ``meta.json``. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")
    format: Literal["bcarena-recording"]
    format_version: Literal[1]
    episode: int = Field(ge=0)
    game: str
    game_version: str
    game_config: dict[str, Any]
    fps: float = Field(gt=0, allow_inf_nan=False)
    tick_rate: float = Field(gt=0, allow_inf_nan=False)
    ticks_per_frame: int = Field(ge=1)
    num_frames: int = Field(ge=1)
    action_names: list[str] = Field(min_length=1)
    action_map: dict[str, Any]
    player: int = Field(ge=0)
    players: list[PlayerInfo] = Field(min_length=1)
    seeds: dict[str, int]
    result: dict[str, Any]
    files: dict[str, FileEntry]

    @field_validator("files")
    @classmethod
    def _required_files(cls, files: dict[str, FileEntry]) -> dict[str, FileEntry]:
        missing = [f for f in REQUIRED_FILES if f not in files]
        if missing:
            raise ValueError(f"must list {missing}")
        unknown = sorted(set(files) - set(REQUIRED_FILES) - {VIDEO_FILE})
        if unknown:
            raise ValueError(f"unknown file(s) {unknown}")
        return files

    @model_validator(mode="after")
    def _consistent(self) -> Meta:
        if not math.isclose(self.fps * self.ticks_per_frame, self.tick_rate, rel_tol=1e-9):
            raise ValueError(
                f"fps ({self.fps}) x ticks_per_frame ({self.ticks_per_frame}) must equal tick_rate ({self.tick_rate})"
            )
        if self.player >= len(self.players):
            raise ValueError(f"player {self.player} is not one of the {len(self.players)} players")
        return self

    def map(self) -> ActionMap:
        return ActionMap.from_json(self.action_map)


def parse_meta(data: bytes, where: str = META_FILE) -> Meta:
    """Parse and validate ``meta.json`` bytes; any problem raises RecordingError naming ``where``."""
    try:
        raw = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise RecordingError(f"{where}: not UTF-8 text ({exc.reason})") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise RecordingError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise RecordingError(f"{where}: must hold a JSON object, got {type(raw).__name__}")
    try:
        meta = Meta.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()[:5])
        raise RecordingError(f"{where}: invalid meta ({problems})") from None
    except RecursionError:
        raise RecordingError(f"{where}: nested too deeply") from None
    try:
        action_map = meta.map()
    except ValueError as exc:
        raise RecordingError(f"{where}: {exc}") from None
    if list(action_map.action_names) != meta.action_names:
        raise RecordingError(
            f"{where}: action_map names {list(action_map.action_names)} differ from action_names {meta.action_names}"
        )
    return meta


class EpisodeWriter:
    """Streams one episode's frames into a hidden temp folder; ``finish`` completes it atomically.

    Use as a context manager: leaving it by an exception (or never calling ``finish``) removes
    the temp folder, so the episode is either complete under its final name or absent.
    """

    def __init__(self, out_dir: str | os.PathLike, index: int, fps: float, video: bool = True) -> None:
        self.out_dir = Path(out_dir)
        self.index = index
        self.final = self.out_dir / episode_name(index)
        if self.final.exists():
            raise RecordingError(f"{self.final}: already exists; record into a new folder or pass resume=True")
        self.tmp = new_partial(self.final, folder=True)
        self.video = VideoWriter(self.tmp / VIDEO_FILE, fps) if video else None
        self.view = VideoWriter(self.tmp / AGENT_VIEW_FILE, fps)
        self.frames = 0

    def add_frame(self, gray: np.ndarray, rgb: np.ndarray | None = None) -> None:
        """One frame: the 84x84 gray agent view (H, W) uint8 and, if videos are on, the BGR frame for people."""
        self.view.write(gray)
        if self.video is not None:
            if rgb is None:
                raise RecordingError(f"{self.final}: frame {self.frames} has no colour frame for {VIDEO_FILE}")
            self.video.write(rgb)
        self.frames += 1

    def finish(self, events: KeyEvents, action_map: ActionMap, states: pd.DataFrame, meta: dict[str, Any]) -> Path:
        """Write the input log, state log and meta (with file hashes), then rename into place."""
        if self.frames == 0 or len(states) != self.frames:
            raise RecordingError(f"{self.final}: {self.frames} frames but {len(states)} state rows")
        for writer in (self.view, self.video):
            if writer is not None:
                writer.close()
        write_input_log(self.tmp / INPUT_LOG_FILE, events, action_map, meta["tick_rate"])
        states.to_parquet(self.tmp / STATES_FILE, index=False)
        files = {
            p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
            for p in sorted(self.tmp.iterdir())
            if p.name != META_FILE
        }
        meta = {
            **meta,
            "episode": self.index,
            "num_frames": self.frames,
            "action_names": list(action_map.action_names),
            "action_map": action_map.to_json(),
            "files": files,
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
        }
        Meta.model_validate(meta)  # never write a meta the reader would refuse
        (self.tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return commit_partial(self.tmp, self.final, overwrite=False)

    def abort(self) -> None:
        for writer in (self.view, self.video):
            if writer is not None:
                writer.close(keep=False)
        discard_partial(self.tmp)

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.tmp.exists():
            self.abort()


@dataclass(frozen=True)
class EpisodeListing:
    """What a recordings folder holds: complete episode folders, and visible entries that are not episodes."""

    episodes: list[Path]  # folders with a meta.json file, sorted by name
    skipped: list[tuple[Path, str]]  # (entry, why it is not an episode), sorted by name


def list_episodes(folder: str | os.PathLike) -> EpisodeListing:
    """The episode folders in ``folder`` (or ``folder`` itself if it is one), and what was passed over.

    A visible sub-folder without a ``meta.json`` file, or a file named like an episode folder, is
    listed in ``skipped`` (a copy cut short, a hand-made folder). Hidden entries are never listed:
    they are the ``.partial-*`` temporaries of a recorder at work or killed, not episodes.
    """
    folder = Path(folder)
    if (folder / META_FILE).is_file():
        return EpisodeListing([folder], [])
    if not folder.is_dir():
        raise RecordingError(f"{folder}: no recordings folder here")
    episodes, skipped = [], []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            meta = entry / META_FILE
            if meta.is_file():
                episodes.append(entry)
            else:
                skipped.append((entry, f"{META_FILE} is not a file" if meta.exists() else f"no {META_FILE}"))
        elif EPISODE_NAME.fullmatch(entry.name):
            skipped.append((entry, "a file where an episode folder should be"))
    return EpisodeListing(episodes, skipped)


def find_episodes(folder: str | os.PathLike) -> list[Path]:
    """Complete episode folders under ``folder`` (see ``list_episodes``; what it skips is not reported)."""
    return list_episodes(folder).episodes
