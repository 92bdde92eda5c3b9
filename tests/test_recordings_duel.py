"""Duel recordings end to end: record from bots, convert, and check the dataset against the game."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bcarena.envs.duel import DuelConfig, DuelCore, bot_noise, make_bot
from bcarena.envs.duel.observation import state_observations
from bcarena.envs.duel.render import gray_frames
from bcarena.envs.video import read_video
from bcarena.recordings import (
    ActionDataset,
    RecordingError,
    RecordOptions,
    build_dataset,
    load_episode,
    make_duel_dataset,
    record_duel,
)
from bcarena.recordings.actions import DUEL_ACTION_MAP
from bcarena.recordings.dataset import EVENTS, NO_EVENT, SPLITS
from bcarena.recordings.episode import META_FILE, STATES_FILE, find_episodes, parse_meta
from bcarena.recordings.games import flatten_columns
from bcarena.recordings.inputlog import INPUT_LOG_FILE, read_input_log


@pytest.fixture(scope="module")
def pro_dataset(tmp_path_factory) -> ActionDataset:
    """The Must-show dataset: 50 pro episodes against mixed opponents."""
    return make_duel_dataset(tmp_path_factory.mktemp("pro50"), player="pro", episodes=50, seed=0)


def test_pro_dataset_shows_the_skill_imbalance(pro_dataset: ActionDataset) -> None:
    m = pro_dataset.manifest
    assert m["num_episodes"] == 50 and m["num_frames"] == len(pro_dataset) > 50 * 100
    assert 0.01 <= m["skill_fraction"] <= 0.05
    counts = np.bincount(pro_dataset.actions(), minlength=8)
    assert [m["class_counts"][n] for n in pro_dataset.action_names] == counts.tolist()
    assert m["imbalance_ratio"] == pytest.approx(counts.max() / counts[counts > 0].min())
    assert {s["players"][1] for s in m["sources"]} == {"brawler", "turtle", "random", "pro"}
    assert m["alignment"] == "window-priority"
    # sample alignment loses skill presses that window-priority keeps, counted on these recordings
    lost = m["lost_presses"]
    assert lost["window-priority"]["lost"] == 0
    assert 0.2 * lost["sample"]["presses"] < lost["sample"]["lost"] < lost["sample"]["presses"]
    # one tap per skill frame, and the game accepted each of the pro's presses
    skill_frames = int(np.isin(pro_dataset.actions(), pro_dataset.skill_actions).sum())
    assert lost["sample"]["presses"] == lost["window-priority"]["presses"] == skill_frames
    assert m["event_counts"]["skill_used"] == skill_frames


def test_dataset_table_is_consistent(pro_dataset: ActionDataset) -> None:
    t = pro_dataset.table
    for name in EVENTS:
        assert pro_dataset.manifest["event_counts"][name] == int(t[f"event_{name}"].sum())
    # splits hold whole episodes and every split has some
    assert (t.groupby("episode")["split"].nunique() == 1).all()
    assert set(t["split"]) == set(SPLITS)
    # frames_to_<event> is 0 exactly on event frames
    for name in ("skill_used", "action_change"):
        assert ((pro_dataset.frames_to(name) == 0) == pro_dataset.events(name)).all()
    # every skill the game accepted was pressed on that frame
    skill = np.isin(pro_dataset.actions(), pro_dataset.skill_actions)
    assert skill[pro_dataset.events("skill_used")].all()
    # action_change marks label changes within an episode
    labels, episode = pro_dataset.actions(), t["episode"].to_numpy()
    change = np.r_[False, (labels[1:] != labels[:-1]) & (episode[1:] == episode[:-1])]
    assert (change == pro_dataset.events("action_change")).all()
    assert pro_dataset.frames().shape == (len(t), 84, 84) and pro_dataset.frames().dtype == np.uint8
    assert isinstance(pro_dataset.pixels, np.memmap)


def _replay(folder: Path, actions: np.ndarray) -> tuple[DuelCore, pd.DataFrame, list[np.ndarray]]:
    """Replay an episode with the dataset's actions for the recorded player and the opponent bot re-run."""
    meta = parse_meta((folder / META_FILE).read_bytes())
    config = DuelConfig.from_dict(meta.game_config)
    core = DuelCore(1, config)
    core.reset([meta.seeds["match"]])
    opponent = make_bot(meta.players[1 - meta.player].name, config)
    rows, views = [], []
    for action in actions:
        views.append(gray_frames(core, meta.player)[0])
        state = flatten_columns(core.get_state())
        obs = state_observations(core)[:, 1 - meta.player]
        pair = np.zeros((1, 2), dtype=np.int64)
        pair[0, meta.player] = action
        pair[0, 1 - meta.player] = opponent.act(obs, bot_noise(core, 1 - meta.player, opponent.noise_dims))[0]
        events = core.step(pair)
        state.update(
            flatten_columns(
                {
                    k: getattr(events, k)
                    for k in ("skill_started", "hits_landed", "hits_taken", "damage_dealt", "damage_taken")
                }
            )
        )
        state.update(ended=events.ended, opponent_action=pair[:, 1 - meta.player])
        rows.append({k: v[0] for k, v in state.items()})
    return core, pd.DataFrame(rows), views


@pytest.mark.parametrize("episodes", [4, pytest.param(12, marks=pytest.mark.slow)])  # opponents cycle: 4 is one each
def test_round_trip_replays_the_recorded_match_exactly(pro_dataset: ActionDataset, episodes: int) -> None:
    t = pro_dataset.table
    assert {s["players"][1] for s in pro_dataset.manifest["sources"][:4]} == {"brawler", "turtle", "random", "pro"}
    for source in pro_dataset.manifest["sources"][:episodes]:
        folder = Path(source["path"])
        rows = t["episode"].to_numpy() == source["episode"]
        actions = pro_dataset.actions()[rows]
        core, log, views = _replay(folder, actions)
        recorded = pd.read_parquet(folder / STATES_FILE)
        pd.testing.assert_frame_equal(log, recorded.drop(columns="frame"), check_dtype=False)
        assert int(core.winner[0]) == source["result"]["winner"]
        assert bool(core.ko[0]) == source["result"]["ko"] and core.hp[0].tolist() == source["result"]["hp"]
        # the lossless agent view is exactly what a pixel agent sees in the env
        assert np.array_equal(np.stack(views), pro_dataset.pixels[np.flatnonzero(rows)])
        # and the state features are exactly the env's observations
        obs = np.stack([r for r in pro_dataset.states()[rows]])
        core2 = DuelCore(1, core.config)
        core2.reset([source["seeds"]["match"]])
        assert np.array_equal(obs[0], state_observations(core2)[0, 0])


def test_sample_alignment_breaks_the_round_trip(pro_dataset: ActionDataset, tmp_path: Path) -> None:
    folder = Path(pro_dataset.manifest["sources"][0]["path"])
    sampled = build_dataset([folder], tmp_path / "sampled", alignment="sample", split=(1.0, 0.0, 0.0), progress=False)
    exact = build_dataset([folder], tmp_path / "exact", split=(1.0, 0.0, 0.0), progress=False)
    assert sampled.manifest["lost_presses"] == exact.manifest["lost_presses"]  # both rules counted on every build
    lost = exact.manifest["lost_presses"]["sample"]["lost"]
    assert lost > 0
    # every lost press is a skill frame relabelled as movement
    diff = sampled.actions() != exact.actions()
    assert diff.sum() == lost
    assert np.isin(exact.actions()[diff], exact.skill_actions).all()
    assert not np.isin(sampled.actions()[diff], exact.skill_actions).any()


def test_recording_folder_contents(pro_dataset: ActionDataset) -> None:
    folder = Path(pro_dataset.manifest["sources"][3]["path"])
    meta = json.loads((folder / META_FILE).read_text())
    assert meta["fps"] == 10 and meta["tick_rate"] == 60 and meta["ticks_per_frame"] == 6
    assert meta["game"] == "duel" and meta["players"][0]["name"] == "pro"
    assert set(meta["files"]) == {"agent_view.mkv", "inputs.csv", "states.parquet"}  # video off in make_duel_dataset
    log = pd.read_csv(folder / INPUT_LOG_FILE)
    assert list(log.columns) == ["tick", "time_s", "button", "event"]
    assert np.allclose(log["time_s"], log["tick"] / 60, atol=1e-6)
    events = read_input_log(folder / INPUT_LOG_FILE, DUEL_ACTION_MAP)
    # key-logger events, not per-frame labels: far fewer events than frames, taps last 2-5 ticks
    assert len(events) < meta["num_frames"]
    taps = log[log["button"].isin(["light", "heavy", "special"])]
    durations = taps.groupby("button", group_keys=False).apply(
        lambda g: g["tick"].to_numpy()[1::2] - g["tick"].to_numpy()[0::2], include_groups=False
    )
    assert all(((d >= 2) & (d <= 5)).all() for d in durations)


def _assert_same_episode(a: Path, b: Path) -> None:
    """Same meta and files, except video containers (Matroska writes a random segment id): same pixels."""
    meta_a, meta_b = (json.loads((p / META_FILE).read_text()) for p in (a, b))
    for meta in (meta_a, meta_b):
        for name in ("agent_view.mkv", "video.mp4"):
            meta["files"].pop(name, None)
    assert meta_a == meta_b
    assert np.array_equal(read_video(a / "agent_view.mkv", gray=True), read_video(b / "agent_view.mkv", gray=True))


def test_recording_is_deterministic_and_batch_independent(tmp_path: Path) -> None:
    a = record_duel(
        "pro",
        ("brawler", "random"),
        4,
        tmp_path / "a",
        seed=7,
        options=RecordOptions(video=False, progress=False, batch_size=4),
    )
    b = record_duel(
        "pro",
        ("brawler", "random"),
        4,
        tmp_path / "b",
        seed=7,
        options=RecordOptions(video=False, progress=False, batch_size=1),
    )
    for x, y in zip(a, b):
        _assert_same_episode(x, y)


def test_video_for_people(tmp_path: Path) -> None:
    [folder] = record_duel(
        "pro", ("brawler",), 1, tmp_path, seed=1, options=RecordOptions(max_frames=12, progress=False)
    )
    meta = parse_meta((folder / META_FILE).read_bytes())
    assert meta.result["truncated"] and meta.num_frames == 12 and meta.result["winner"] is None
    import cv2

    cap = cv2.VideoCapture(str(folder / "video.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 12 and cap.get(cv2.CAP_PROP_FPS) == 10
    ok, frame = cap.read()
    assert ok and frame.shape == (360, 640, 3)
    episode = load_episode(folder)
    assert episode.labels.shape == (12,)


class _Flaky:
    """A policy that crashes the recorder on its ``fail_at``-th call."""

    obs_type = "state"

    def __init__(self, fail_at: int) -> None:
        self.calls, self.fail_at = 0, fail_at
        self.bot = make_bot("pro")
        self.rng = np.random.default_rng(0)

    def act(self, obs: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("player crashed")
        return self.bot.act(obs, self.rng.random((obs.shape[0], 3)))


def test_crash_mid_episode_leaves_earlier_episodes_and_nothing_partial(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="player crashed"):
        record_duel(
            _Flaky(fail_at=400),
            ("idle",),
            4,
            tmp_path,
            seed=0,
            options=RecordOptions(video=True, progress=False, batch_size=1),
        )
    done = find_episodes(tmp_path)
    assert 1 <= len(done) < 4
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # temp folder removed
    for folder in done:
        assert load_episode(folder).labels.size > 0


# 8-second rounds: a quarter of the frames per episode, the same files and the same kill points between them.
_KILLED_RUN = """
import sys
from bcarena.envs.duel import DuelConfig
from bcarena.recordings import RecordOptions, record_duel
options = RecordOptions(video=True, progress=False, batch_size=1)
record_duel("pro", ("turtle",), 40, sys.argv[1], seed=3, config=DuelConfig(round_seconds=8.0), options=options)
"""


def test_killed_recorder_leaves_every_earlier_episode_readable(tmp_path: Path) -> None:
    out, config = tmp_path / "rec", DuelConfig(round_seconds=8.0)
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_RUN, str(out)])
    try:
        deadline = time.time() + 60
        while len(find_episodes(out) if out.exists() else []) < 2 and time.time() < deadline:
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    done = find_episodes(out)
    assert 2 <= len(done) < 40
    assert [p.name for p in done] == [f"episode_{i:06d}" for i in range(len(done))]
    for folder in done:
        load_episode(folder)  # verifies every hash and decodes every frame
    # resuming completes the run with exactly the episodes a clean run records
    resumed, fresh = (RecordOptions(video=True, progress=False, resume=resume) for resume in (True, False))
    record_duel("pro", ("turtle",), len(done) + 1, out, seed=3, config=config, options=resumed)
    clean = record_duel("pro", ("turtle",), len(done) + 1, tmp_path / "clean", seed=3, config=config, options=fresh)
    for a, b in zip(find_episodes(out), clean):
        _assert_same_episode(a, b)
    with pytest.raises(RecordingError, match="already exists"):
        record_duel("pro", ("turtle",), 1, out, seed=3, config=config, options=RecordOptions(progress=False))


def test_frames_to_nearest_event_columns(pro_dataset: ActionDataset) -> None:
    t = pro_dataset.table
    for name in EVENTS:
        dist = pro_dataset.frames_to(name)
        for episode in (0, 7):
            rows = t["episode"].to_numpy() == episode
            flags = np.flatnonzero(pro_dataset.events(name)[rows])
            frames = np.arange(rows.sum())
            want = (
                np.abs(frames[:, None] - flags[None, :]).min(axis=1) if flags.size else np.full(frames.size, NO_EVENT)
            )
            assert (dist[rows] == want).all()


def test_dataset_build_benchmark_fast_twin() -> None:
    from bcarena.experiments.benchmarks.dataset_build import run

    result = run(episodes=2, repeats=1)
    assert result["frames"] > 100 and set(result["x_real_time"]) == {
        "pixels_threads",
        "pixels_one_thread",
        "state_only",
    }
    assert result["x_real_time"]["state_only"] == pytest.approx(result["build_frames_per_s"]["state_only"] / 10)
