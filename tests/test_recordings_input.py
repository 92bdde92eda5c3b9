"""Input logs and alignment rules, bad recordings, and fuzzing of the input-log and meta parsers."""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bcarena.envs.files import sha256_file
from bcarena.recordings import RecordingError, RecordOptions, build_dataset, load_episode, record_duel
from bcarena.recordings.actions import DUEL_ACTION_MAP, boxing_action_map
from bcarena.recordings.dataset import DatasetError
from bcarena.recordings.episode import AGENT_VIEW_FILE, META_FILE, STATES_FILE, VIDEO_FILE, parse_meta
from bcarena.recordings.inputlog import (
    INPUT_LOG_FILE,
    InputLogError,
    KeyEvents,
    align,
    key_events,
    lost_presses,
    parse_input_log,
)

LEFT, RIGHT, UP, DOWN, LIGHT, HEAVY, SPECIAL = range(7)  # Duel button indices
IDLE_A, LEFT_A, RIGHT_A, JUMP_A, GUARD_A, LIGHT_A, HEAVY_A, SPECIAL_A = range(8)


def _events(*rows: tuple[int, int, bool]) -> KeyEvents:
    t, b, d = zip(*rows)
    return KeyEvents.concat([np.array(t)], [np.array(b)], [np.array(d)])


def test_short_tap_is_lost_by_sample_and_kept_by_window_priority() -> None:
    # frame 0 = ticks 0..5 (sampled at 5); a light tap at ticks 1..3 ends before the sample instant
    events = _events((0, RIGHT, True), (1, LIGHT, True), (3, LIGHT, False), (10, HEAVY, True), (13, HEAVY, False))
    sample = align(events, DUEL_ACTION_MAP, 3, 6, "sample")
    window = align(events, DUEL_ACTION_MAP, 3, 6, "window-priority")
    assert sample.tolist() == [RIGHT_A, HEAVY_A, RIGHT_A]  # heavy held across tick 11: sampled
    assert window.tolist() == [LIGHT_A, HEAVY_A, RIGHT_A]
    assert lost_presses(events, DUEL_ACTION_MAP, sample, 6) == {
        "presses": 2,
        "lost": 1,
        "lost_light": 1,
        "lost_heavy": 0,
        "lost_special": 0,
    }
    assert lost_presses(events, DUEL_ACTION_MAP, window, 6)["lost"] == 0


def test_first_tap_in_a_window_wins_and_the_second_is_counted_lost() -> None:
    events = _events((0, HEAVY, True), (2, HEAVY, False), (3, SPECIAL, True), (5, SPECIAL, False))
    labels = align(events, DUEL_ACTION_MAP, 1, 6, "window-priority")
    assert labels.tolist() == [HEAVY_A]
    assert lost_presses(events, DUEL_ACTION_MAP, labels, 6)["lost_special"] == 1


def test_conflicting_holds_resolve_to_the_latest_press() -> None:
    events = _events((0, LEFT, True), (2, RIGHT, True), (8, RIGHT, False), (20, UP, True))
    assert align(events, DUEL_ACTION_MAP, 4, 6, "sample").tolist() == [RIGHT_A, LEFT_A, LEFT_A, JUMP_A]


def test_boxing_taps_combine_with_held_directions() -> None:
    boxing = boxing_action_map()
    up, fire = boxing.buttons.index("up"), boxing.buttons.index("fire")
    right = boxing.buttons.index("right")
    events = _events((0, up, True), (1, right, True), (2, fire, True), (4, fire, False), (8, up, False))
    labels = align(events, boxing, 2, 6, "window-priority")
    assert [boxing.action_names[a] for a in labels] == ["UPRIGHTFIRE", "RIGHT"]  # Boxing's exact names
    assert [boxing.action_names[a] for a in align(events, boxing, 2, 6, "sample")] == ["UPRIGHT", "RIGHT"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 17), min_size=1, max_size=80), st.integers(0, 2**32 - 1))
def test_key_events_round_trip_through_window_priority(actions: list[int], seed: int) -> None:
    for action_map in (DUEL_ACTION_MAP, boxing_action_map()):
        acts = np.array(actions) % action_map.num_actions
        events = key_events(acts, action_map, np.random.default_rng(seed))
        assert align(events, action_map, acts.size, 6, "window-priority").tolist() == acts.tolist()
        assert lost_presses(events, action_map, acts, 6)["lost"] == 0
        # each button alternates down/up, and a tap lasts 2-5 ticks
        for b in range(len(action_map.buttons)):
            downs = events.down[events.button == b]
            assert not (downs[1:] == downs[:-1]).any() and (downs.size == 0 or downs[0])


def test_parse_input_log_errors_name_the_line_and_problem() -> None:
    ok = b"tick,time_s,button,event\n3,0.05,right,down\n"
    assert len(parse_input_log(ok, DUEL_ACTION_MAP)) == 1
    cases = {
        b"": "header",
        b"tick,time,button,event\n": "header",
        b"tick,time_s,button,event\n3,0.05,kick,down\n": "unknown button 'kick'",
        b"tick,time_s,button,event\n3,0.05,right,pressed\n": "'down' or 'up'",
        b"tick,time_s,button,event\nx,0.05,right,down\n": "line 2: tick must be an integer",
        b"tick,time_s,button,event\n9,0.15,right,down\n3,0.05,right,up\n": "back in time",
        b"tick,time_s,button,event\n3,0.05,right,up\n": "already up",
        b"tick,time_s,button,event\n3,nan,right,down\n": "time_s",
        b"tick,time_s,button,event\n3,0.05,right\n": "expected 4 fields",
        b"\xff\xfe": "not UTF-8",
    }
    for data, message in cases.items():
        with pytest.raises(InputLogError, match=message):
            parse_input_log(data, DUEL_ACTION_MAP, "x/inputs.csv")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_fuzz_input_log_parser_bytes(data: bytes) -> None:
    try:
        events = parse_input_log(data, DUEL_ACTION_MAP)
    except InputLogError:
        return
    align(events, DUEL_ACTION_MAP, 5, 6)


_ROW = st.tuples(
    st.integers(-3, 400).map(str) | st.text(max_size=4),
    st.sampled_from(["0.1", "1e9", "-1", "inf", "x"]),
    st.sampled_from(DUEL_ACTION_MAP.buttons + ("kick", "")),
    st.sampled_from(["down", "up", "DOWN"]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_ROW, max_size=30))
def test_fuzz_input_log_parser_rows(rows: list[tuple[str, str, str, str]]) -> None:
    text = "tick,time_s,button,event\n" + "".join(",".join(r) + "\n" for r in rows)
    try:
        events = parse_input_log(text.encode(), DUEL_ACTION_MAP)
    except InputLogError:
        return
    labels = align(events, DUEL_ACTION_MAP, 70, 6)
    assert labels.min() >= 0 and labels.max() < 8


@pytest.fixture(scope="module")
def episode(tmp_path_factory) -> Path:
    [folder] = record_duel(
        "pro",
        ("brawler",),
        1,
        tmp_path_factory.mktemp("rec"),
        seed=2,
        options=RecordOptions(video=True, max_frames=40, progress=False),
    )
    return folder


@pytest.fixture(scope="module")
def meta_bytes(episode: Path) -> bytes:
    return (episode / META_FILE).read_bytes()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300))
def test_fuzz_meta_parser_bytes(meta_bytes: bytes, data: bytes) -> None:
    try:
        parse_meta(data)
    except RecordingError:
        pass


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzz_meta_parser_mutated_fields(meta_bytes: bytes, data: st.DataObject) -> None:
    meta = json.loads(meta_bytes)
    key = data.draw(st.sampled_from(sorted(meta)))
    meta[key] = data.draw(_JSON)
    try:
        parsed = parse_meta(json.dumps(meta).encode())
    except RecordingError as exc:
        assert "meta.json" in str(exc)
        return
    assert parsed.num_frames >= 1


# ------------------------------------------------------------------------------ bad recordings
def _copy(episode: Path, tmp_path: Path) -> Path:
    target = tmp_path / "rec" / episode.name
    shutil.copytree(episode, target)
    return target


def _rehash(folder: Path, **changes) -> None:
    """Update meta.json after editing a file on purpose (to reach the checks behind the hash check)."""
    meta = json.loads((folder / META_FILE).read_text())
    for name in list(meta["files"]):
        if (folder / name).exists():
            meta["files"][name] = {"sha256": sha256_file(folder / name), "bytes": (folder / name).stat().st_size}
    meta.update(changes)
    (folder / META_FILE).write_text(json.dumps(meta))


def _assert_build_fails(tmp_path: Path, message: str) -> None:
    with pytest.raises(RecordingError, match=message):
        build_dataset(tmp_path / "rec", tmp_path / "ds", split=(1.0, 0.0, 0.0), progress=False)
    assert not (tmp_path / "ds").exists()
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".ds")] == []  # nothing half-written


def test_good_copy_builds(episode: Path, tmp_path: Path) -> None:
    _copy(episode, tmp_path)
    ds = build_dataset(tmp_path / "rec", tmp_path / "ds", split=(1.0, 0.0, 0.0), progress=False)
    assert len(ds) == 40
    with pytest.raises(DatasetError, match="already exists"):
        build_dataset(tmp_path / "rec", tmp_path / "ds", progress=False)


def test_truncated_video_is_caught_by_hash_and_by_frame_count(episode: Path, tmp_path: Path) -> None:
    folder = _copy(episode, tmp_path)
    view = folder / AGENT_VIEW_FILE
    view.write_bytes(view.read_bytes()[: view.stat().st_size // 2])
    _assert_build_fails(tmp_path, r"agent_view.mkv: content differs .* truncated or modified")
    with pytest.raises(RecordingError, match=r"agent_view.mkv: (frame-count mismatch|.*cannot open|no decodable)"):
        load_episode(folder, verify_hashes=False)


def test_unreadable_video(episode: Path, tmp_path: Path) -> None:
    folder = _copy(episode, tmp_path)
    (folder / VIDEO_FILE).write_bytes(b"not a video at all" * 10)
    _rehash(folder)
    _assert_build_fails(tmp_path, r"video.mp4: OpenCV cannot open")


def test_missing_and_malformed_input_log(episode: Path, tmp_path: Path) -> None:
    folder = _copy(episode, tmp_path)
    (folder / INPUT_LOG_FILE).unlink()
    _assert_build_fails(tmp_path, r"inputs.csv: missing")
    (folder / INPUT_LOG_FILE).write_text("tick,time_s,button,event\n5,0.08,fireball,down\n")
    _rehash(folder)
    _assert_build_fails(tmp_path, r"inputs.csv: line 2: unknown button 'fireball'")


def test_frame_count_mismatch_between_video_and_log(episode: Path, tmp_path: Path) -> None:
    folder = _copy(episode, tmp_path)
    with open(folder / INPUT_LOG_FILE, "a") as handle:
        handle.write("900,15.0,light,down\n")
    _rehash(folder)
    _assert_build_fails(tmp_path, r"inputs.csv: frame-count mismatch: a key goes down at tick 900 but the video has 40")
    shutil.rmtree(folder)
    folder = _copy(episode, tmp_path)
    _rehash(folder, num_frames=39)
    _assert_build_fails(tmp_path, r"frame-count mismatch")


def test_state_log_frame_count_mismatch(episode: Path, tmp_path: Path) -> None:
    import pandas as pd

    folder = _copy(episode, tmp_path)
    pd.read_parquet(folder / STATES_FILE).iloc[:-3].to_parquet(folder / STATES_FILE)
    _rehash(folder)
    _assert_build_fails(tmp_path, r"states.parquet: frame-count mismatch: 37 rows")


def test_wrong_fps_in_meta(episode: Path, tmp_path: Path) -> None:
    folder = _copy(episode, tmp_path)
    _rehash(folder, fps=30.0, tick_rate=180)
    _assert_build_fails(tmp_path, r"meta.json: fps is 30.0, expected 10.0")
    _rehash(folder, fps=12.0)
    _assert_build_fails(tmp_path, r"meta.json: invalid meta .*fps \(12.0\) x ticks_per_frame")


def test_unknown_action_names(episode: Path, tmp_path: Path) -> None:
    folder = _copy(episode, tmp_path)
    meta = json.loads((folder / META_FILE).read_text())
    meta["action_names"][5] = "hadouken"
    meta["action_map"]["actions"][5]["name"] = "hadouken"
    (folder / META_FILE).write_text(json.dumps(meta))
    _assert_build_fails(tmp_path, r"meta.json: unknown action name\(s\) \['hadouken'\]")


def test_no_recordings(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(RecordingError, match="no complete episode folders"):
        build_dataset(tmp_path / "empty", tmp_path / "ds", progress=False)
    with pytest.raises(RecordingError, match="no recordings folder"):
        build_dataset(tmp_path / "missing", tmp_path / "ds", progress=False)


def test_bad_split(episode: Path, tmp_path: Path) -> None:
    _copy(episode, tmp_path)
    with pytest.raises(DatasetError, match="three fractions"):
        build_dataset(tmp_path / "rec", tmp_path / "ds", split=(0.5, 0.6, 0.1), progress=False)
    with pytest.raises(DatasetError, match="unknown alignment"):
        build_dataset(tmp_path / "rec", tmp_path / "ds", alignment="nearest", progress=False)


# ------------------------------------------------------- entries that are not episodes (issue 15, item 7)
def _recordings_with_strays(episode: Path, tmp_path: Path) -> Path:
    """rec/ with one good episode, a folder without meta.json, one with a folder in its place, a file named like an
    episode, and the hidden temporary of a killed recorder."""
    _copy(episode, tmp_path)
    rec = tmp_path / "rec"
    cut = _copy(episode, tmp_path / "cut")
    cut.rename(rec / "episode_000001")
    (rec / "episode_000001" / META_FILE).unlink()
    (rec / "episode_000002" / META_FILE).mkdir(parents=True)
    (rec / "episode_000003").write_text("not a folder")
    (rec / ".episode_000004.partial-x1y2").mkdir()
    (rec / "notes.txt").write_text("files that are not named like episodes are not episodes-to-be")
    return rec


def test_strict_build_refuses_entries_that_are_not_episodes(episode: Path, tmp_path: Path) -> None:
    rec = _recordings_with_strays(episode, tmp_path)
    with pytest.raises(RecordingError) as info:
        build_dataset(rec, tmp_path / "ds", split=(1.0, 0.0, 0.0), progress=False)
    message = str(info.value)
    assert message.startswith("3 entries are not complete episode folders: ")
    for name, reason in (
        ("episode_000001", "no meta.json"),
        ("episode_000002", "meta.json is not a file"),
        ("episode_000003", "a file where an episode folder should be"),
    ):
        assert f"{rec / name} ({reason})" in message
    assert "partial" not in message and "notes.txt" not in message
    assert "--no-strict (strict=False)" in message and "1 complete episode(s)" in message
    assert not (tmp_path / "ds").exists()


def test_no_strict_build_warns_naming_each_skipped_entry(episode: Path, tmp_path: Path) -> None:
    rec = _recordings_with_strays(episode, tmp_path)
    with pytest.warns(UserWarning, match=r"skipped 3 entries are not complete episode folders") as caught:
        ds = build_dataset(rec, tmp_path / "ds", split=(1.0, 0.0, 0.0), progress=False, strict=False)
    [warning] = [w for w in caught if "skipped" in str(w.message)]
    for name in ("episode_000001", "episode_000002", "episode_000003"):
        assert str(rec / name) in str(warning.message)
    assert "partial" not in str(warning.message)
    assert ds.manifest["num_episodes"] == 1
    assert [s["path"] for s in ds.manifest["skipped"]] == [str(rec / f"episode_00000{i}") for i in (1, 2, 3)]


def test_hidden_partial_folders_are_never_reported(episode: Path, tmp_path: Path) -> None:
    _copy(episode, tmp_path)
    (tmp_path / "rec" / ".episode_000001.partial-abc").mkdir()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = build_dataset(tmp_path / "rec", tmp_path / "ds", split=(1.0, 0.0, 0.0), progress=False)
    assert not [w for w in caught if "skipped" in str(w.message) or "partial" in str(w.message)]
    assert ds.manifest["num_episodes"] == 1 and ds.manifest["skipped"] == []


def test_cli_dataset_build_strict_and_no_strict(episode: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from bcarena.experiments.cli import app

    rec = _recordings_with_strays(episode, tmp_path)
    res = CliRunner().invoke(app, ["dataset", "build", str(rec), str(tmp_path / "ds"), "--split", "1,0,0"])
    output = " ".join(res.output.split())
    assert res.exit_code == 2 and str(rec / "episode_000001") in output and "--no-strict" in output
    with pytest.warns(UserWarning, match=r"skipped 3 entries .*episode_000003"):
        res = CliRunner().invoke(
            app, ["dataset", "build", str(rec), str(tmp_path / "ds"), "--split", "1,0,0", "--no-strict"]
        )
    assert res.exit_code == 0, res.output


# ------------------------------------------- the key log must explain the state log (issue 15, item 11)
def _edit_input_log(folder: Path, keep) -> None:
    lines = (folder / INPUT_LOG_FILE).read_text().splitlines(keepends=True)
    (folder / INPUT_LOG_FILE).write_text(lines[0] + "".join(keep(lines[1:])))
    _rehash(folder)


@pytest.mark.parametrize(
    "edit, cause",
    [
        (
            lambda folder: _rehash(folder, player=1),
            r"likely cause: a flipped player: meta.json says player 1, but as player 0 the key log reproduces 100%",
        ),
        (
            lambda folder: _edit_input_log(folder, lambda rows: []),
            r"likely cause: the key log is empty \(no key events\)",
        ),
        (
            lambda folder: _edit_input_log(folder, lambda rows: rows[: len(rows) // 2]),
            r"likely cause: a truncated key log: its last event is in frame \d+ of 40",
        ),
        (
            lambda folder: _edit_input_log(
                folder, lambda rows: [r for r in rows if "light" not in r and "heavy" not in r and "special" not in r]
            ),
            (
                r"of the 2 skill\(s\) the state log shows player 0 starting, the key log presses 0; "
                r"likely cause: skill "
                r"presses are missing"
            ),
        ),
    ],
    ids=["flipped-player", "empty-key-log", "truncated-key-log", "skill-presses-dropped"],
)
def test_key_log_that_does_not_explain_the_state_log_is_refused(episode: Path, tmp_path: Path, edit, cause) -> None:
    folder = _copy(episode, tmp_path)
    edit(folder)
    _assert_build_fails(
        tmp_path,
        rf"{re.escape(str(folder))}: inputs.csv does not match states.parquet: replaying the "
        rf"key log as player \d reproduces \d+ of 40 frames \(\d+%, at least 95% expected\)"
        rf".*{cause}",
    )
    for alignment in ("sample", "window-priority"):  # the check does not depend on the dataset's alignment
        with pytest.raises(RecordingError, match="does not match"):
            load_episode(folder, alignment=alignment, pixels=False)


def test_correct_recordings_agree_on_every_frame_under_every_alignment(tmp_path: Path) -> None:
    from bcarena.recordings.converter import check_inputs
    from bcarena.recordings.games import game_spec
    from bcarena.recordings.inputlog import ALIGNMENTS, DECISION_RULE, read_input_log

    for player in (0, 1):
        for folder in record_duel(
            "random",
            ("pro", "brawler"),
            2,
            tmp_path / f"p{player}",
            seed=4,
            player=player,
            options=RecordOptions(video=False, max_frames=120, progress=False),
        ):
            for alignment in ALIGNMENTS:
                load_episode(folder, alignment=alignment, pixels=False)
            meta = parse_meta((folder / META_FILE).read_bytes())
            spec = game_spec("duel")
            events = read_input_log(folder / INPUT_LOG_FILE, spec.action_map())
            decisions = align(events, spec.action_map(), meta.num_frames, meta.ticks_per_frame, DECISION_RULE)
            found = check_inputs(folder, meta, spec, pd.read_parquet(folder / STATES_FILE), events, decisions)
            assert found.frame_agreement == 1.0 and found.skill_agreement == 1.0 and found.skill_starts > 0
