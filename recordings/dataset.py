"""The action dataset: what recordings become and what agents train on.

On disk, one folder:
  manifest.json   self-describing metadata (``Manifest`` keys below; schema version, action
                  names, class and event counts, alignment rule, splits, source hashes)
  frames.parquet  one row per 10 FPS frame (``REQUIRED_COLUMNS`` + ``s_<feature>`` state columns)
  pixels.npy      optional (num_frames, H, W) uint8 frames, row-aligned with the table, read
                  memory-mapped so random access costs no load time
A dataset is written into a temporary sibling folder and renamed into place: a folder under the
final name is always complete.

Columns:
  episode            int32  episode id (unique within the dataset)
  frame              int32  frame index within the episode's recording, increasing (0..len-1, with gaps
                            where a label overlay excluded a segment)
  split              str    "train" | "val" | "test" (whole episodes, never mixed)
  action             int16  the player's action label at this frame
  event_<name>       bool   for name in ``EVENTS``, and ``marked`` (moments people marked in a label
                            overlay, ``recordings/overlay.py``) in datasets built since overlays exist
  frames_to_<name>   int32  |frames| to the nearest frame of that event in the episode (NO_EVENT if none)
  s_<feature>        float32 state features (Duel: ``STATE_FEATURES``), optional
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bcarena.envs.files import atomic_folder, write_json
from bcarena.envs.games import GameError, check_dataset_for_game
from bcarena.recordings.errors import RecordingError

SCHEMA_VERSION = 1
EVENTS: tuple[str, ...] = ("skill_used", "hit_landed", "hit_taken", "ko", "action_change")
# Event columns a dataset may hold beyond the required ``EVENTS`` (older datasets lack them).
OPTIONAL_EVENTS: tuple[str, ...] = ("marked",)
EVENT_TYPES: tuple[str, ...] = EVENTS + OPTIONAL_EVENTS
SPLITS: tuple[str, ...] = ("train", "val", "test")
NO_EVENT = 2**31 - 1  # frames_to_<event> when the episode has no such event
REQUIRED_COLUMNS: tuple[str, ...] = (
    ("episode", "frame", "split", "action")
    + tuple(f"event_{e}" for e in EVENTS)
    + tuple(f"frames_to_{e}" for e in EVENTS)
)
REQUIRED_MANIFEST_KEYS: tuple[str, ...] = (
    "schema_version",
    "game",
    "fps",
    "action_names",
    "skill_actions",
    "state_features",
    "frame_shape",
    "num_frames",
    "num_episodes",
    "splits",
    "class_counts",
    "event_counts",
    "alignment",
    "sources",
)
MANIFEST_FILE, TABLE_FILE, PIXELS_FILE = "manifest.json", "frames.parquet", "pixels.npy"
# What each required manifest key holds: a hand-edited manifest fails on load, not deep inside training.
MANIFEST_TYPES: dict[str, tuple[type, ...]] = {
    "schema_version": (int,),
    "game": (str,),
    "fps": (int, float),
    "action_names": (list,),
    "skill_actions": (list,),
    "state_features": (list,),
    "frame_shape": (list, type(None)),
    "num_frames": (int,),
    "num_episodes": (int,),
    "splits": (dict,),
    "class_counts": (dict,),
    "event_counts": (dict,),
    "alignment": (str,),
    "sources": (list,),
}


class DatasetError(RecordingError):
    """A dataset is missing, malformed or does not fit what is asked of it."""


def frames_to_nearest(flags: np.ndarray, episode: np.ndarray) -> np.ndarray:
    """For each row, |frames| to the nearest True in ``flags`` within the same episode (NO_EVENT if none).

    ``flags`` and ``episode`` are (n,) arrays in frame order (rows of one episode contiguous).
    """
    flags = np.asarray(flags, dtype=bool)
    episode = np.asarray(episode)
    n = flags.shape[0]
    out = np.full(n, NO_EVENT, dtype=np.int64)
    idx = np.arange(n)
    starts = np.flatnonzero(np.r_[True, episode[1:] != episode[:-1]]) if n else np.array([], dtype=np.int64)
    ends = np.r_[starts[1:], n]
    for start, end in zip(starts, ends):
        hits = idx[start:end][flags[start:end]]
        if hits.size == 0:
            continue
        pos = np.searchsorted(hits, idx[start:end])
        before = hits[np.clip(pos - 1, 0, hits.size - 1)]
        after = hits[np.clip(pos, 0, hits.size - 1)]
        out[start:end] = np.minimum(np.abs(idx[start:end] - before), np.abs(after - idx[start:end]))
    return out.astype(np.int32)


@dataclass
class ActionDataset:
    """Frames (rows of ``table``), optional pixels aligned with them, and the manifest."""

    table: pd.DataFrame
    manifest: dict[str, Any]
    pixels: np.ndarray | None = None
    path: Path | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        self.validate()

    # --------------------------------------------------------------- access
    @property
    def action_names(self) -> list[str]:
        return list(self.manifest["action_names"])

    @property
    def num_actions(self) -> int:
        return len(self.manifest["action_names"])

    @property
    def skill_actions(self) -> list[int]:
        return list(self.manifest["skill_actions"])

    @property
    def state_columns(self) -> list[str]:
        return [f"s_{name}" for name in self.manifest["state_features"]]

    def __len__(self) -> int:
        return len(self.table)

    def states(self) -> np.ndarray:
        """State features (n, D) float32."""
        if not self.state_columns:
            raise DatasetError(f"{self._where()}: this dataset has no state features (game {self.manifest['game']!r})")
        return self.table[self.state_columns].to_numpy(dtype=np.float32)

    def actions(self) -> np.ndarray:
        """Action labels (n,) int64."""
        return self.table["action"].to_numpy(dtype=np.int64)

    @property
    def event_names(self) -> list[str]:
        """The events this dataset has columns for (``EVENTS``, plus ``marked`` where built with it)."""
        return [name for name in EVENT_TYPES if f"event_{name}" in self.table.columns]

    def _event_column(self, prefix: str, name: str) -> str:
        if name not in self.event_names:
            if name in EVENT_TYPES:
                raise DatasetError(
                    f"{self._where()}: has no {name!r} event column (built before label overlays); rebuild it"
                )
            raise DatasetError(f"unknown event {name!r}; events are {self.event_names}")
        return f"{prefix}{name}"

    def events(self, name: str) -> np.ndarray:
        """Event flags (n,) bool for one of ``event_names``."""
        return self.table[self._event_column("event_", name)].to_numpy(dtype=bool)

    def frames_to(self, name: str) -> np.ndarray:
        """Frames (n,) int32 to the nearest ``name`` event in the same episode (NO_EVENT if none)."""
        return self.table[self._event_column("frames_to_", name)].to_numpy(dtype=np.int32)

    def frames(self) -> np.ndarray:
        """Pixels (n, H, W) uint8 of these rows (a memory-mapped view until indexed)."""
        if self.pixels is None:
            raise DatasetError(f"{self._where()}: this dataset stores no pixels ({PIXELS_FILE})")
        rows = self.table.index.to_numpy()
        if rows.size == self.pixels.shape[0] and (rows.size == 0 or (rows[0] == 0 and np.all(np.diff(rows) == 1))):
            return self.pixels
        return self.pixels[rows]

    def split(self, name: str) -> ActionDataset:
        """The rows of one split (shares the pixel memory map). Empty splits are an error."""
        if name not in SPLITS:
            raise DatasetError(f"unknown split {name!r}; splits are {list(SPLITS)}")
        part = self.table[self.table["split"] == name]
        if part.empty:
            raise DatasetError(f"{self._where()}: split {name!r} is empty")
        return ActionDataset(part, self.manifest, self.pixels, self.path)

    def _where(self) -> str:
        return str(self.path) if self.path is not None else "dataset"

    # ----------------------------------------------------------- validation
    def validate(self) -> None:
        where = self._where()
        missing_keys = [k for k in REQUIRED_MANIFEST_KEYS if k not in self.manifest]
        if missing_keys:
            raise DatasetError(f"{where}/{MANIFEST_FILE}: missing key(s) {missing_keys}")
        wrong = [
            k
            for k, kinds in MANIFEST_TYPES.items()
            if not isinstance(self.manifest[k], kinds) or isinstance(self.manifest[k], bool)
        ]
        if wrong:
            raise DatasetError(
                f"{where}/{MANIFEST_FILE}: "
                + "; ".join(
                    f"{k} must be {' or '.join(t.__name__ for t in MANIFEST_TYPES[k])}, got {self.manifest[k]!r}"
                    for k in wrong
                )
            )
        names, skills = self.manifest["action_names"], self.manifest["skill_actions"]
        if (
            not names
            or not all(isinstance(n, str) for n in names)
            or not all(type(a) is int and 0 <= a < len(names) for a in skills)
        ):
            raise DatasetError(
                f"{where}/{MANIFEST_FILE}: action_names must be a non-empty list of names and "
                f"skill_actions action ids in [0, {len(names)}), got {names!r} and {skills!r}"
            )
        try:  # exact names, as the game's: a dataset of another spelling would train an agent no match accepts
            check_dataset_for_game(f"{where}/{MANIFEST_FILE}", str(self.manifest["game"]), names)
        except GameError as exc:
            raise DatasetError(str(exc)) from None
        version = self.manifest["schema_version"]
        if version != SCHEMA_VERSION:
            raise DatasetError(
                f"{where}/{MANIFEST_FILE}: schema_version {version!r} is not supported "
                f"(this bcarena reads version {SCHEMA_VERSION}); rebuild the dataset"
            )
        columns = list(REQUIRED_COLUMNS) + self.state_columns
        missing = [c for c in columns if c not in self.table.columns]
        if missing:
            raise DatasetError(f"{where}/{TABLE_FILE}: missing column(s) {missing}")
        actions = self.table["action"].to_numpy()
        if actions.size and (actions.min() < 0 or actions.max() >= self.num_actions):
            raise DatasetError(f"{where}/{TABLE_FILE}: column 'action' has ids outside [0, {self.num_actions})")
        bad_splits = sorted(set(self.table["split"].unique()) - set(SPLITS))
        if bad_splits:
            raise DatasetError(f"{where}/{TABLE_FILE}: column 'split' has unknown value(s) {bad_splits}")
        if self.state_columns:
            values = self.table[self.state_columns].to_numpy(dtype=np.float32)
            if not np.isfinite(values).all():
                bad = [c for c in self.state_columns if not np.isfinite(self.table[c].to_numpy(dtype=np.float32)).all()]
                raise DatasetError(f"{where}/{TABLE_FILE}: state column(s) {bad[:5]} hold NaN or inf")
        if self.pixels is not None and self.pixels.shape[0] < (self.table.index.max() + 1 if len(self.table) else 0):
            raise DatasetError(
                f"{where}/{PIXELS_FILE}: {self.pixels.shape[0]} frames for table rows up to {self.table.index.max()}"
            )

    # ------------------------------------------------------------------ I/O
    def save(self, path: str | os.PathLike) -> Path:
        """Write to ``path`` (which must not exist) via a temporary folder renamed into place."""
        path = Path(path)
        if path.exists():
            raise DatasetError(f"{path}: already exists; choose a new folder or delete the old dataset first")
        with atomic_folder(path) as tmp:
            table = self.table.reset_index(drop=True)
            table.to_parquet(tmp / TABLE_FILE, index=False)
            if self.pixels is not None:
                np.save(tmp / PIXELS_FILE, np.ascontiguousarray(self.frames()))
            write_json(tmp / MANIFEST_FILE, self.manifest)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = True, pixels: bool = True) -> ActionDataset:
        """Read a dataset folder; pixels are memory-mapped unless ``mmap=False``, and left unread (``None``)
        with ``pixels=False``, so a state-only reader never depends on ``pixels.npy``."""
        path = Path(path)
        if not path.is_dir():
            raise DatasetError(f"{path}: no dataset folder here")
        manifest_path = path / MANIFEST_FILE
        try:
            manifest = json.loads(manifest_path.read_text())
        except FileNotFoundError:
            raise DatasetError(f"{manifest_path}: missing (not a dataset folder?)") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DatasetError(f"{manifest_path}: not valid JSON ({exc})") from None
        if not isinstance(manifest, dict):
            raise DatasetError(f"{manifest_path}: must hold a JSON object")
        try:
            table = pd.read_parquet(path / TABLE_FILE)
        except FileNotFoundError:
            raise DatasetError(f"{path / TABLE_FILE}: missing") from None
        except Exception as exc:  # pyarrow raises several types for corrupt files
            raise DatasetError(f"{path / TABLE_FILE}: unreadable Parquet ({exc})") from None
        frames = None
        if pixels and (path / PIXELS_FILE).exists():
            frames = _load_pixels(path / PIXELS_FILE, len(table), manifest.get("frame_shape"), mmap)
        return cls(table, manifest, frames, path)


def _load_pixels(path: Path, num_frames: int, frame_shape: Any, mmap: bool) -> np.ndarray:
    """``pixels.npy`` as a (num_frames, H, W) uint8 array, its header and size checked before any data is read.

    An empty, truncated or foreign file is a one-line ``DatasetError`` naming the file and the expected shape
    (numpy itself would raise EOFError or a reshape error).
    """
    want = (
        f"expected a ({num_frames}, {', '.join(map(str, frame_shape))}) uint8 array"
        if isinstance(frame_shape, list)
        else f"expected a ({num_frames}, H, W) uint8 array"
    )
    headers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version not in headers:
                raise ValueError(f"unsupported .npy format version {version}")
            shape, fortran_order, dtype = headers[version](handle)
            data_offset = handle.tell()
    except (ValueError, EOFError, OSError) as exc:
        raise DatasetError(f"{path}: not a readable .npy array ({exc}); {want}") from None
    if (
        dtype != np.uint8
        or len(shape) != 3
        or shape[0] != num_frames
        or fortran_order
        or (isinstance(frame_shape, list) and list(shape[1:]) != frame_shape)
    ):
        raise DatasetError(f"{path}: holds a {shape} {dtype} array; {want} (one frame per table row)")
    needed = data_offset + int(np.prod(shape))
    size = path.stat().st_size
    if size < needed:
        raise DatasetError(
            f"{path}: truncated: {size} bytes, where the header's {shape} uint8 array needs {needed}; "
            f"{want}; rebuild the dataset"
        )
    return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
