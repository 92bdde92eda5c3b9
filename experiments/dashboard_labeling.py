"""The dashboard's "Labeling" page: scrub a recording, see its aligned labels and events, and edit them.

Edits (mark / unmark a key moment, relabel frames, exclude a segment) collect in the session and are
saved as the recording's label overlay (``recordings/overlay.py``) — the only file this page writes;
the episode files never change. A save carries the revision it was based on: if someone else saved
in between it is refused with their edits named, or merged on request when the edits do not overlap.
``bcarena dataset build`` applies the overlay (``marked`` becomes an event for event weighting).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import streamlit as st

from bcarena.envs.errors import BcarenaError
from bcarena.experiments import dashboard as dash
from bcarena.recordings.converter import load_episode
from bcarena.recordings.inputlog import ALIGNMENTS
from bcarena.recordings.overlay import (
    KINDS,
    Applied,
    Overlay,
    apply_edits,
    episode_video,
    read_overlay,
    recording_info,
    save_overlay,
)

CONTEXT = 12  # frames listed either side of the current one


@st.cache_data(show_spinner="Reading the episode...", max_entries=8)
def cached_episode(folder: str, alignment: str, stamp: float) -> tuple[np.ndarray, pd.DataFrame, list[str]]:
    """Labels (F,), events (F, E) as a table, and action names of one episode as recorded (no overlay)."""
    data = load_episode(folder, alignment, pixels=False)
    return data.labels, pd.DataFrame({k: v for k, v in data.events.items() if k != "marked"}), data.meta.action_names


def video_frame(folder: str, frame: int) -> tuple[np.ndarray, str]:
    """One frame (RGB) of the episode's video (``video.mp4``, else the 84x84 agent view, enlarged)."""
    path, colour = episode_video(folder)
    capture = cv2.VideoCapture(str(path))
    try:
        capture.set(cv2.CAP_PROP_POS_FRAMES, frame)
        ok, image = capture.read()
    finally:
        capture.release()
    if not ok:
        raise dash.RunFolderError(f"{path}: frame {frame} cannot be decoded")
    if not colour:
        image = cv2.resize(image, None, fx=4, fy=4, interpolation=cv2.INTER_NEAREST)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB), path.name


def default_recording(run: dash.RunView) -> str:
    """The recordings folder of the run's dataset (from its manifest's sources), or ''."""
    stats = run.dataset_stats or {}
    try:
        manifest = json.loads((Path(str(stats.get("dataset"))) / "manifest.json").read_text())
        return str(Path(manifest["sources"][0]["path"]).parent)
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return ""


def session_overlays(folder: str) -> dict[str, Overlay]:
    """This session's {"base", "work"} overlays of ``folder`` (read from disk the first time)."""
    store = st.session_state.setdefault("label_overlays", {})
    if folder not in store:
        base = read_overlay(folder)
        store[folder] = {"base": base, "work": base}
    return store[folder]


def labeling_page(run: dash.RunView) -> None:
    st.title("Labeling")
    folder = st.text_input("Recordings folder", default_recording(run), key="label_folder")
    try:
        info = recording_info(folder)
        overlays = session_overlays(folder)
    except BcarenaError as exc:
        st.error(f"This recording cannot be labelled: {exc}")
        return
    who = st.text_input("Your name (saved with each edit)", "anonymous", key="label_who")
    a, b = st.columns([3, 1])
    episode = a.selectbox("Episode", list(info.metas), key="label_episode")
    alignment = b.selectbox("Alignment", sorted(ALIGNMENTS), index=sorted(ALIGNMENTS).index("window-priority"))
    path = Path(folder) / episode
    try:
        labels, events, names = cached_episode(str(path), alignment, (path / "meta.json").stat().st_mtime)
        frame = st.slider("Frame", 0, len(labels) - 1, 0, key="label_frame")
        image, source = video_frame(str(path), frame)
    except BcarenaError as exc:
        st.error(f"{episode} cannot be shown: {exc}")
        return
    work = overlays["work"]
    applied = apply_edits(work.for_episode(episode), labels, names)
    left, right = st.columns([3, 2])
    left.image(image, caption=f"{episode} frame {frame} ({source})")
    with right:
        here = [e for e in events.columns if events[e].iloc[frame]]
        st.metric(
            "label", names[applied.labels[frame]], delta=None if applied.labels[frame] == labels[frame] else "edited"
        )
        flags = f"marked: {bool(applied.marked[frame])} · excluded: {not applied.keep[frame]}"
        st.write(f"events: {', '.join(here) or 'none'} · {flags}")
        st.dataframe(timeline(labels, events, applied, names, frame), hide_index=True, height=300)
    edit_controls(folder, episode, frame, len(labels), names, who)
    st.caption(
        f"Overlay revision {overlays['base'].revision} on open; {work.revision - overlays['base'].revision} "
        f"unsaved change(s); {len(work.edits)} edit(s)."
    )
    if work.edits:
        st.dataframe(pd.DataFrame([e.model_dump(exclude={"id"}) for e in work.edits]), hide_index=True, width="stretch")


def timeline(labels: np.ndarray, events: pd.DataFrame, applied: Applied, names: list[str], frame: int) -> pd.DataFrame:
    rows = np.arange(max(0, frame - CONTEXT), min(len(labels), frame + CONTEXT + 1))
    return pd.DataFrame(
        {
            "frame": rows,
            "label": np.asarray(names)[labels[rows]],
            "edited": np.asarray(names)[applied.labels[rows]],
            "events": [",".join(e for e in events.columns if events[e].iloc[r]) for r in rows],
            "marked": applied.marked[rows],
            "excluded": ~applied.keep[rows],
        }
    )


def edit_controls(folder: str, episode: str, frame: int, frames: int, names: list[str], who: str) -> None:
    a, b, c = st.columns([2, 2, 1])
    kind = a.radio("Edit", list(KINDS), horizontal=True, key="label_kind")
    start, end = b.slider("Frames", 0, frames - 1, (frame, frame), key="label_range")
    value = c.selectbox("Relabel to", names, key="label_value") if kind == "relabel" else None
    merge = st.checkbox("If someone saved meanwhile, merge edits that do not overlap", key="label_merge")
    x, y, z, r = st.columns(4)
    x.button("Apply edit", key="label_apply", on_click=apply_edit, args=(folder, kind, episode, start, end, value, who))
    y.button("Undo last edit", key="label_undo", on_click=undo, args=(folder,))
    z.button("Save", key="label_save", type="primary", on_click=save, args=(folder, merge))
    r.button("Reload from disk", key="label_reload", on_click=reload, args=(folder,), help="drops unsaved edits")
    for kind_, message in st.session_state.pop("label_messages", []):
        (st.success if kind_ == "ok" else st.error)(message)


def _say(kind: str, message: str) -> None:
    st.session_state.setdefault("label_messages", []).append((kind, message))


def apply_edit(folder: str, kind: str, episode: str, start: int, end: int, value: str | None, who: str) -> None:
    overlays = session_overlays(folder)
    overlays["work"] = overlays["work"].edit(kind, episode, start, end, value, who or "anonymous")


def reload(folder: str) -> None:
    st.session_state.get("label_overlays", {}).pop(folder, None)


def undo(folder: str) -> None:
    overlays = session_overlays(folder)
    try:
        overlays["work"] = overlays["work"].undo()
    except BcarenaError as exc:
        _say("error", str(exc))


def save(folder: str, merge: bool) -> None:
    overlays = session_overlays(folder)
    try:
        saved = save_overlay(folder, overlays["work"], overlays["base"], merge=merge)
    except BcarenaError as exc:
        _say("error", f"Not saved: {exc}")
        return
    overlays["base"] = overlays["work"] = saved
    _say("ok", f"Saved revision {saved.revision} ({len(saved.edits)} edits) beside the recording.")
