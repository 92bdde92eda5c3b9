"""Label overlays: edits beside a recording, applied by ``dataset build``, saved safely by two people at once."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bcarena.agents.config import make_train_config
from bcarena.agents.samplers import event_weights
from bcarena.agents.train import train_bc
from bcarena.envs.duel import DuelConfig
from bcarena.envs.files import sha256_file
from bcarena.recordings.converter import build_dataset
from bcarena.recordings.dataset import ActionDataset, DatasetError
from bcarena.recordings.overlay import (
    OVERLAY_FILE,
    OverlayConflict,
    OverlayError,
    episode_video,
    read_overlay,
    recording_info,
    save_overlay,
)
from bcarena.recordings.recorder import RecordOptions, record_duel


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    """6 short pro episodes (8 s rounds), no pixels needed: the read-only original every test copies."""
    out = tmp_path_factory.mktemp("overlay") / "recordings"
    record_duel(
        "pro",
        ("brawler", "random"),
        6,
        out,
        seed=3,
        config=DuelConfig(round_seconds=8.0),
        options=RecordOptions(video=False, progress=False),
    )
    return out


@pytest.fixture
def rec(recording, tmp_path) -> Path:
    copy = tmp_path / "rec"
    shutil.copytree(recording, copy)
    return copy


def file_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def build(rec: Path, out: Path) -> ActionDataset:
    return build_dataset(rec, out, split=(0.5, 0.25, 0.25), seed=0, pixels=False, progress=False)


def test_round_trip_marks_relabels_and_exclusions_change_the_dataset_exactly(rec, tmp_path):
    before = build(rec, tmp_path / "plain")
    originals = file_hashes(rec)
    assert before.manifest["event_counts"]["marked"] == 0 and before.manifest["overlays"] == []
    base = read_overlay(rec)
    assert base.revision == 0 and base.edits == ()
    ep = sorted(p.name for p in rec.iterdir() if p.is_dir())
    edited = (
        base.edit("mark_moment", ep[0], 10, 12, who="ana")
        .edit("mark_moment", ep[1], 30, who="ana")
        .edit("mark_moment", ep[1], 40, 41, who="ben")
        .edit("unmark_moment", ep[1], 41, who="ben")
        .edit("relabel", ep[2], 5, 7, value="heavy", who="ana")
        .edit("exclude_segment", ep[3], 20, 29, who="ana")
    )
    saved = save_overlay(rec, edited, base)
    assert saved.revision == 6 and [e.who for e in saved.edits] == ["ana", "ana", "ben", "ben", "ana", "ana"]
    after = build(rec, tmp_path / "labelled")
    assert after.manifest["event_counts"]["marked"] == 3 + 1 + 1  # 10-12, 30, 40 (41 unmarked again)
    (entry,) = after.manifest["overlays"]
    assert entry["sha256"] == sha256_file(rec / OVERLAY_FILE) and entry["revision"] == 6 and entry["edits"] == 6
    t, t0 = after.table, before.table
    marked = t[t["event_marked"]]
    assert sorted(zip(marked["episode"], marked["frame"])) == [(0, 10), (0, 11), (0, 12), (1, 30), (1, 40)]
    relabelled = t[(t["episode"] == 2) & t["frame"].between(5, 7)]
    assert (relabelled["action"] == before.action_names.index("heavy")).all()
    e3 = t[t["episode"] == 3]["frame"].to_numpy()
    assert len(t) == len(t0) - 10 and not np.isin(np.arange(20, 30), e3).any() and e3.max() == e3.size + 9
    untouched = t[t["episode"].isin([4, 5])].reset_index(drop=True)
    assert untouched.equals(t0[t0["episode"].isin([4, 5])].reset_index(drop=True).astype(untouched.dtypes))
    assert file_hashes(rec) == {**originals, OVERLAY_FILE: sha256_file(rec / OVERLAY_FILE)}  # episodes untouched
    # undo drops the last edit (the exclusion) as a new revision
    undone = save_overlay(rec, saved.undo(), saved)
    assert undone.revision == 7 and len(undone.edits) == 5
    assert len(build(rec, tmp_path / "undone").table) == len(t0)


def test_marked_events_weight_sampling_and_change_the_trained_clone(rec, tmp_path):
    base = read_overlay(rec)
    names = sorted(p.name for p in rec.iterdir() if p.is_dir())
    overlay = base
    for name in names:  # mark every 7th frame of every episode: enough training frames to matter
        for frame in range(3, 70, 7):
            overlay = overlay.edit("mark_moment", name, frame, who="test")
    save_overlay(rec, overlay, base)
    data = build(rec, tmp_path / "ds")
    cfg = {"epochs": 2, "allow_missing_classes": True, "hidden": [32], "seed": 0}
    weighted = {"events": ["marked"], "before": 1, "after": 0, "weight": 20.0, "decay": 1.0}
    weights = event_weights(data, make_train_config({**cfg, "event_weighting": weighted}).event_weighting)
    assert weights is not None and weights[data.events("marked")].min() == 20.0
    assert (weights > 1).sum() == 2 * data.events("marked").sum()  # the marked frame and the one before it
    plain = train_bc(data, make_train_config(cfg), progress=False).agent
    marked = train_bc(data, make_train_config({**cfg, "event_weighting": weighted}), progress=False).agent
    x = data.states()[:256]
    assert not np.allclose(plain.scores_stacked(x), marked.scores_stacked(x))
    old = ActionDataset(data.table.drop(columns=["event_marked", "frames_to_marked"]), data.manifest)
    with pytest.raises(DatasetError, match="has no 'marked' event column"):
        event_weights(old, make_train_config({**cfg, "event_weighting": weighted}).event_weighting)


def test_two_people_saving_at_once_the_later_is_refused_or_merged_explicitly(rec):
    base = read_overlay(rec)
    ep = sorted(p.name for p in rec.iterdir() if p.is_dir())
    ana = base.edit("mark_moment", ep[0], 10, 12, who="ana")
    ben = base.edit("relabel", ep[0], 30, value="guard", who="ben")
    save_overlay(rec, ana, base)
    on_disk = (rec / OVERLAY_FILE).read_bytes()
    with pytest.raises(OverlayConflict, match="revision 1 on disk, this save is based on revision 0.*mark_moment"):
        save_overlay(rec, ben, base)
    assert (rec / OVERLAY_FILE).read_bytes() == on_disk  # nothing lost, nothing written
    clash = base.edit("exclude_segment", ep[0], 12, 20, who="ben")
    with pytest.raises(OverlayConflict, match="not merged: your exclude_segment .* overlaps mark_moment"):
        save_overlay(rec, clash, base, merge=True)
    assert (rec / OVERLAY_FILE).read_bytes() == on_disk
    merged = save_overlay(rec, ben, base, merge=True)
    assert [(e.who, e.kind, e.revision) for e in merged.edits] == [("ana", "mark_moment", 1), ("ben", "relabel", 2)]
    assert read_overlay(rec) == merged


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(recording_sha256="0" * 64), "made for another recording"),
        (lambda d: d["edits"][0].update(kind="delete"), "invalid overlay .*kind"),
        (lambda d: d["edits"][0].update(end=10**6), "frames 10-1000000 do not fit"),
        (lambda d: d["edits"][0].update(kind="relabel", value="fly"), "relabel value 'fly' is not an action"),
        (lambda d: d["edits"][0].update(episode="episode_999999"), "unknown episode 'episode_999999'"),
        (lambda d: d.update(revision=0), "out of order"),
        (lambda d: d.update(extra=1), "invalid overlay .*extra"),
    ],
)
def test_an_overlay_edited_into_nonsense_is_refused_by_name(rec, tmp_path, edit, message):
    base = read_overlay(rec)
    save_overlay(rec, base.edit("mark_moment", "episode_000000", 10, 12, who="ana"), base)
    data = json.loads((rec / OVERLAY_FILE).read_text())
    edit(data)
    (rec / OVERLAY_FILE).write_text(json.dumps(data))
    originals = file_hashes(rec)
    with pytest.raises(OverlayError, match=message):
        read_overlay(rec)
    with pytest.raises(OverlayError, match=message):
        build(rec, tmp_path / "ds")
    assert not (tmp_path / "ds").exists() and file_hashes(rec) == originals


def test_an_overlay_from_another_recording_and_broken_json_are_named(rec, recording, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(recording, other)
    shutil.rmtree(other / "episode_000005")  # another recording: one episode fewer
    assert recording_info(other).sha256 != recording_info(rec).sha256
    base = read_overlay(rec)
    save_overlay(rec, base.edit("mark_moment", "episode_000000", 1, who="ana"), base)
    shutil.copy(rec / OVERLAY_FILE, other / OVERLAY_FILE)
    with pytest.raises(OverlayError, match=f"{OVERLAY_FILE}: made for another recording"):
        read_overlay(other)
    with pytest.raises(OverlayError, match="made for another recording"):
        save_overlay(other, base.edit("mark_moment", "episode_000000", 1), base)
    (rec / OVERLAY_FILE).write_text('{"format": "bcarena-label-overlay", ')
    with pytest.raises(OverlayError, match="not valid JSON"):
        read_overlay(rec)


def test_a_recording_without_video_is_named(rec):
    path, colour = episode_video(rec / "episode_000000")
    assert path.name == "agent_view.mkv" and not colour  # recorded without video.mp4: the agent view is shown
    (rec / "episode_000000" / "agent_view.mkv").unlink()
    with pytest.raises(OverlayError, match="episode_000000: no video to label"):
        episode_video(rec / "episode_000000")
    with pytest.raises(OverlayError, match="nothing to undo"):
        read_overlay(rec).undo()


def test_dataset_build_with_a_bad_overlay_is_one_line_and_exit_code_2(rec, tmp_path):
    from typer.testing import CliRunner

    from bcarena.experiments.cli import app

    (rec / OVERLAY_FILE).write_text('{"format": "bcarena-label-overlay"}')
    result = CliRunner().invoke(app, ["dataset", "build", str(rec), str(tmp_path / "ds"), "--no-pixels"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and f"{OVERLAY_FILE}: invalid overlay (recording_sha256: Field required" in line


def test_a_run_after_new_marks_builds_a_new_dataset_instead_of_reusing_the_cached_one(rec, tmp_path):
    import io

    from rich.console import Console

    from bcarena.experiments.runner import ExperimentRunner, load

    (tmp_path / "exp.yaml").write_text(
        f"name: marks\nrecording: {{path: {rec}}}\ndataset: {{split: [0.5, 0.25, 0.25], pixels: false}}\n"
        "variants: [{name: naive, train: {epochs: 1}}]\ntracking: {mlflow: false}\n"
    )

    def prepared() -> tuple[str, ActionDataset]:
        quiet = Console(file=io.StringIO())
        return ExperimentRunner(
            load(tmp_path / "exp.yaml"), tmp_path / "runs", progress=False, console=quiet
        ).prepare_dataset()

    key, data = prepared()
    assert prepared()[0] == key and data.manifest["event_counts"]["marked"] == 0  # no overlay: cached as before
    base = read_overlay(rec)
    save_overlay(rec, base.edit("mark_moment", "episode_000000", 10, 12, who="ana"), base)
    marked_key, marked = prepared()
    assert marked_key != key and marked.manifest["event_counts"]["marked"] == 3
    assert prepared()[0] == marked_key  # the same marks: the new dataset is reused
