"""Label overlays: people's corrections to a recording, kept beside it, never in it.

A recordings folder (the folder of episode folders) may hold ``labels.overlay.json``::

    {"format": "bcarena-label-overlay", "schema_version": 1,
     "recording_sha256": "<sha256 over every episode's name and meta.json hash>",
     "revision": 7,
     "edits": [{"id": "...", "revision": 3, "kind": "mark_moment", "episode": "episode_000012",
                "start": 140, "end": 140, "value": null, "who": "ana", "when": "2026-12-01T10:00:00Z"}, ...]}

Edit kinds: ``mark_moment`` / ``unmark_moment`` (frames become / stop being the ``marked`` event),
``relabel`` (``value`` is the action name the frames get) and ``exclude_segment`` (the frames are
dropped from datasets). ``start`` and ``end`` are inclusive 10 FPS frame indices of that episode.
Edits apply in list order; a later edit wins where they overlap.

The episode files are never touched, so their ``meta.json`` hashes still match; the overlay is
bound to them by ``recording_sha256`` (an overlay copied next to another recording is refused).
``revision`` counts saves: every edit and every undo makes a new revision, and a save names the
revision it was based on. A save based on an older revision than the file's is refused (someone
else saved in between), unless ``merge=True`` and the two sides' edits touch disjoint frames of
every episode: then ours are appended after theirs, and the message-free merge is returned.
Saves hold an exclusive lock on the recordings folder while they compare and write, and the file
is replaced atomically (``bcarena.envs.files``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bcarena.envs.files import sha256_file, write_text
from bcarena.recordings.episode import AGENT_VIEW_FILE, META_FILE, VIDEO_FILE, Meta, list_episodes, parse_meta
from bcarena.recordings.errors import RecordingError

OVERLAY_FILE = "labels.overlay.json"
FORMAT = "bcarena-label-overlay"
SCHEMA_VERSION = 1
KINDS: tuple[str, ...] = ("mark_moment", "unmark_moment", "relabel", "exclude_segment")


class OverlayError(RecordingError):
    """A label overlay is malformed, belongs to another recording, or cannot be applied."""


class OverlayConflict(OverlayError):
    """A save was based on an older revision than the one on disk (and could not be merged)."""


class Edit(BaseModel):
    """One person's change to a range of frames of one episode."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=r"^[0-9a-f]{32}$")
    revision: int = Field(ge=1)
    kind: Literal["mark_moment", "unmark_moment", "relabel", "exclude_segment"]
    episode: str = Field(min_length=1)
    start: int = Field(ge=0)
    end: int = Field(ge=0)
    value: str | None = None
    who: str = Field(min_length=1, max_length=100)
    when: datetime

    def overlaps(self, other: Edit) -> bool:
        return self.episode == other.episode and self.start <= other.end and other.start <= self.end

    def describe(self) -> str:
        frames = f"frame {self.start}" if self.start == self.end else f"frames {self.start}-{self.end}"
        value = f" -> {self.value}" if self.value is not None else ""
        return f"{self.kind}{value} {self.episode} {frames} by {self.who}"


class Overlay(BaseModel):
    """The whole overlay file. Immutable: ``edit`` and ``undo`` return the next revision."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    format: Literal["bcarena-label-overlay"] = FORMAT
    schema_version: Literal[1] = SCHEMA_VERSION
    recording_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    revision: int = Field(0, ge=0)
    edits: tuple[Edit, ...] = ()

    def edit(
        self, kind: str, episode: str, start: int, end: int | None = None, value: str | None = None, who: str = "?"
    ) -> Overlay:
        """This overlay plus one edit (frames ``start``..``end`` inclusive), as revision + 1."""
        new = Edit.model_validate(
            {
                "id": uuid.uuid4().hex,
                "revision": self.revision + 1,
                "kind": kind,
                "episode": episode,
                "start": start,
                "end": start if end is None else end,
                "value": value,
                "who": who,
                "when": datetime.now(UTC),
            }
        )
        return self.model_copy(update={"revision": self.revision + 1, "edits": (*self.edits, new)})

    def undo(self) -> Overlay:
        """This overlay without its last edit, as revision + 1."""
        if not self.edits:
            raise OverlayError(f"{OVERLAY_FILE}: nothing to undo (no edits)")
        return self.model_copy(update={"revision": self.revision + 1, "edits": self.edits[:-1]})

    def for_episode(self, episode: str) -> list[Edit]:
        return [e for e in self.edits if e.episode == episode]


@dataclass(frozen=True)
class RecordingInfo:
    """What an overlay is checked against: the episodes (name -> meta) and the recording's hash."""

    folder: Path
    metas: dict[str, Meta]
    sha256: str


def recording_info(folder: str | os.PathLike) -> RecordingInfo:
    """The episodes of a recordings folder and its hash: sha256 over each episode's name and meta.json sha256."""
    folder = Path(folder)
    listing = list_episodes(folder)
    if not listing.episodes or listing.episodes == [folder]:
        raise OverlayError(f"{folder}: not a recordings folder (a folder of episode folders with {META_FILE})")
    digest = hashlib.sha256()
    metas = {}
    for episode in listing.episodes:
        meta_path = episode / META_FILE
        metas[episode.name] = parse_meta(meta_path.read_bytes(), str(meta_path))
        digest.update(f"{episode.name}:{sha256_file(meta_path)}\n".encode())
    return RecordingInfo(folder, metas, digest.hexdigest())


def overlay_sha256(folder: str | os.PathLike) -> str | None:
    """The sha256 of a recordings folder's overlay file, or None without one (what dataset caches key on)."""
    path = Path(folder) / OVERLAY_FILE
    return sha256_file(path) if path.is_file() else None


def empty_overlay(info: RecordingInfo) -> Overlay:
    return Overlay(recording_sha256=info.sha256)


def read_overlay(folder: str | os.PathLike, info: RecordingInfo | None = None) -> Overlay:
    """The overlay of a recordings folder (revision 0 without edits if it has none), fully checked.

    Raises OverlayError naming the file and the problem: not JSON, unknown keys or kinds, another
    recording's hash, an unknown episode, frames past the episode's end, a relabel to an unknown action.
    """
    info = info or recording_info(folder)
    path = info.folder / OVERLAY_FILE
    try:
        raw = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        return empty_overlay(info)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise OverlayError(f"{path}: not valid JSON ({exc}); fix it or delete it to start over") from None
    try:
        overlay = Overlay.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()[:3])
        raise OverlayError(f"{path}: invalid overlay ({problems})") from None
    if overlay.recording_sha256 != info.sha256:
        raise OverlayError(
            f"{path}: made for another recording (recording_sha256 {overlay.recording_sha256[:12]}..., this "
            f"folder's episodes hash to {info.sha256[:12]}...): episodes were added, removed or re-recorded"
        )
    check_edits(overlay, info, str(path))
    return overlay


def check_edits(overlay: Overlay, info: RecordingInfo, where: str) -> None:
    """Every edit fits the recording and the revisions are consistent (OverlayError otherwise)."""
    previous, seen = 0, set()
    for k, e in enumerate(overlay.edits):
        at = f"{where}: edit {k} ({e.kind})"
        meta = info.metas.get(e.episode)
        if meta is None:
            raise OverlayError(f"{at}: unknown episode {e.episode!r} (not a folder of {info.folder})")
        if not e.start <= e.end < meta.num_frames:
            raise OverlayError(
                f"{at}: frames {e.start}-{e.end} do not fit {e.episode} (frames 0-{meta.num_frames - 1}, start <= end)"
            )
        if e.kind == "relabel" and e.value not in meta.action_names:
            raise OverlayError(f"{at}: relabel value {e.value!r} is not an action; actions are {meta.action_names}")
        if e.kind != "relabel" and e.value is not None:
            raise OverlayError(f"{at}: only relabel edits carry a value, got {e.value!r}")
        if e.revision <= previous or e.revision > overlay.revision or e.id in seen:
            raise OverlayError(
                f"{at}: revision {e.revision} (or id) out of order: edit revisions must increase, be unique "
                f"and not exceed the file's revision {overlay.revision}"
            )
        previous = e.revision
        seen.add(e.id)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on the recordings folder itself (nothing is created beside the recording)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def save_overlay(folder: str | os.PathLike, overlay: Overlay, base: Overlay, merge: bool = False) -> Overlay:
    """Write ``overlay`` (edited from ``base``, the overlay as read before editing) beside the recording.

    The file on disk must still be at ``base.revision``; otherwise the save is refused with an
    :class:`OverlayConflict` naming what was saved in between, or, with ``merge``, merged when no
    edit of ours touches frames an edit of theirs touches (ours are appended after theirs; an undo
    of ours removes our undone edit). Returns what was written.
    """
    info = recording_info(folder)
    path = info.folder / OVERLAY_FILE
    if overlay.recording_sha256 != info.sha256 or base.recording_sha256 != info.sha256:
        raise OverlayError(f"{path}: this overlay was made for another recording; reload the labels")
    check_edits(overlay, info, str(path))
    with _locked(info.folder):
        current = read_overlay(info.folder, info)
        if current.revision != base.revision:
            overlay = _merged(current, overlay, base, merge, path)
        write_text(path, json.dumps(overlay.model_dump(mode="json"), indent=2, sort_keys=True) + "\n")
    return overlay


def _changes(old: Overlay, new: Overlay) -> list[Edit]:
    """Edits added or removed between two revisions (by id)."""
    old_ids, new_ids = {e.id for e in old.edits}, {e.id for e in new.edits}
    return [e for e in new.edits if e.id not in old_ids] + [e for e in old.edits if e.id not in new_ids]


def _merged(current: Overlay, ours: Overlay, base: Overlay, merge: bool, path: Path) -> Overlay:
    theirs = _changes(base, current)
    saved = ", ".join(e.describe() for e in theirs[:3]) or "an undo"
    head = (
        f"{path}: revision {current.revision} on disk, this save is based on revision {base.revision} "
        f"(saved meanwhile: {saved})"
    )
    if not merge:
        raise OverlayConflict(f"{head}; reload the labels and redo your edits, or save with merge")
    mine = _changes(base, ours)
    clash = next(((a, b) for a in mine for b in theirs if a.overlaps(b)), None)
    if clash is not None:
        raise OverlayConflict(
            f"{head}; not merged: your {clash[0].describe()} overlaps {clash[1].describe()}; reload and redo"
        )
    ours_ids, base_ids = {e.id for e in ours.edits}, {e.id for e in base.edits}
    undone = {e.id for e in base.edits if e.id not in ours_ids}
    kept = [e for e in current.edits if e.id not in undone]
    revision = current.revision
    for e in ours.edits:
        if e.id not in base_ids:
            revision += 1
            kept.append(e.model_copy(update={"revision": revision}))
    return current.model_copy(update={"revision": revision + bool(undone), "edits": tuple(kept)})


# ------------------------------------------------------------------------------------- applying
@dataclass
class Applied:
    """An episode's labels after its edits: labels (F,) int64, ``marked`` (F,) bool, ``keep`` (F,) bool."""

    labels: np.ndarray
    marked: np.ndarray
    keep: np.ndarray


def apply_edits(edits: Sequence[Edit], labels: np.ndarray, action_names: Sequence[str]) -> Applied:
    """Apply one episode's edits in order to its labels (F,); the input array is not changed."""
    labels = np.array(labels, dtype=np.int64, copy=True)
    marked = np.zeros(labels.shape[0], dtype=bool)
    keep = np.ones(labels.shape[0], dtype=bool)
    names = list(action_names)
    for e in edits:
        frames = slice(e.start, e.end + 1)
        if e.kind == "relabel":
            labels[frames] = names.index(str(e.value))
        elif e.kind == "exclude_segment":
            keep[frames] = False
        else:
            marked[frames] = e.kind == "mark_moment"
    return Applied(labels, marked, keep)


# ---------------------------------------------------------------------------------------- video
def episode_video(folder: str | os.PathLike) -> tuple[Path, bool]:
    """The video a person scrubs for one episode: ``video.mp4`` (True) or, if it was not recorded,
    the 84x84 agent view (False). An episode with neither file is an OverlayError naming it."""
    folder = Path(folder)
    for name, colour in ((VIDEO_FILE, True), (AGENT_VIEW_FILE, False)):
        if (folder / name).is_file():
            return folder / name, colour
    raise OverlayError(
        f"{folder}: no video to label ({VIDEO_FILE} and {AGENT_VIEW_FILE} are missing); "
        f"record it again with video (bcarena record --video)"
    )
