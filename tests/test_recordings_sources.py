"""Sources (policies, agents, SB3), human play with a fake screen, stats, Minari export and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from bcarena.envs.duel import DuelEnv
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
from bcarena.recordings.episode import META_FILE, STATES_FILE, parse_meta
from bcarena.recordings.inputlog import INPUT_LOG_FILE
from bcarena.recordings.play import DUEL_KEYS, KeyboardLog, play_duel
from bcarena.recordings.sources import SourceError, resolve_source
from bcarena.recordings.stats import dataset_stats, plot_class_distribution

OPTS = RecordOptions(video=False, progress=False, max_frames=30)


class ConstantPolicy:
    """Only ``act``: the duck-typed Policy protocol."""

    def __init__(self, action: int) -> None:
        self.action = action

    def act(self, obs: np.ndarray) -> np.ndarray:
        assert obs.shape[1:] == (37,) and obs.dtype == np.float32
        return np.full(obs.shape[0], self.action)


class PixelAgent:
    """An Agent-like pixel player with memory: records the frames it was shown and its resets."""

    name, obs_type = "pixel-agent", "pixels"

    def __init__(self) -> None:
        self.seen: list[np.ndarray] = []
        self.resets: list[int] = []

    def reset(self, batch_size: int) -> None:
        self.resets.append(batch_size)

    def act(self, obs: np.ndarray) -> np.ndarray:
        self.seen.append(obs.copy())
        return (obs.reshape(obs.shape[0], -1).sum(axis=1) % 3).astype(np.int64)


def test_policy_sources_are_recorded_with_their_labels(tmp_path: Path) -> None:
    folders = record_duel(ConstantPolicy(2), ("idle",), 2, tmp_path / "const", options=OPTS)
    ds = build_dataset(tmp_path / "const", tmp_path / "ds", split=(0.5, 0.5, 0.0), progress=False)
    assert (ds.actions() == 2).all()
    assert parse_meta((folders[0] / META_FILE).read_bytes()).players[0].kind == "policy"

    agent = PixelAgent()
    record_duel(
        agent,
        ("pro",),
        3,
        tmp_path / "pix",
        options=RecordOptions(video=False, progress=False, max_frames=10, batch_size=3),
    )
    assert agent.resets == [3] and agent.seen[0].shape == (3, 84, 84, 1)
    pix = build_dataset(tmp_path / "pix", tmp_path / "pds", split=(1.0, 0.0, 0.0), progress=False)
    # the dataset's frames are the observations the agent acted on, and its labels are its actions
    shown = np.stack(agent.seen, axis=1)[..., 0]  # (3 episodes, 10 frames, 84, 84)
    assert np.array_equal(pix.frames(), shown.reshape(-1, 84, 84))
    assert (pix.actions() == (shown.reshape(30, -1).sum(axis=1) % 3)).all()


def test_sb3_model_source(tmp_path: Path) -> None:
    from stable_baselines3 import PPO

    model = PPO("MlpPolicy", DuelEnv(opponent="idle"), n_steps=64, batch_size=64, seed=0, device="cpu")
    player = resolve_source(model)
    assert player.kind == "sb3" and player.obs_type == "state"
    record_duel(model, ("brawler",), 2, tmp_path / "rec", options=OPTS)
    ds = build_dataset(tmp_path / "rec", tmp_path / "ds", split=(0.5, 0.5, 0.0), progress=False)
    # the labels are the model's deterministic actions on the observations the dataset stores
    assert np.array_equal(ds.actions(), model.predict(ds.states(), deterministic=True)[0])
    assert ds.manifest["sources"][0]["players"][0] == "sb3-ppo"


def test_bad_sources() -> None:
    with pytest.raises(SourceError, match="cannot record 'int'"):
        resolve_source(3)
    with pytest.raises(KeyError, match="unknown bot 'champion'"):
        resolve_source("champion")


class FakeScreen:
    """Scripted key reports per poll (one poll per tick), no window."""

    def __init__(self, keys: dict[int, int]) -> None:
        self.keys, self.polls, self.shown, self.closed = keys, 0, [], False

    def show(self, image: np.ndarray) -> None:
        self.shown.append(image)

    def poll(self, wait_ms: int) -> int:
        key = self.keys.get(self.polls, -1)
        self.polls += 1
        return key

    def close(self) -> None:
        self.closed = True


def test_human_play_records_what_was_pressed(tmp_path: Path) -> None:
    # hold D (auto-repeat every 2 ticks) for 2 frames, tap J at tick 14, tap K at tick 40
    keys = {t: ord("d") for t in range(0, 12, 2)} | {14: ord("j"), 40: ord("K"), 60: ord("a"), 61: ord(" ")}
    screen = FakeScreen(keys)
    folder = play_duel("idle", tmp_path, seed=4, screen=screen, realtime=False, max_frames=20)
    assert screen.closed and len(screen.shown) == 21 and screen.shown[0].shape == (360, 640, 3)
    meta = parse_meta((folder / META_FILE).read_bytes())
    assert meta.players[0].kind == "human" and meta.num_frames == 20
    episode = load_episode(folder)
    names = [DUEL_ACTION_MAP.action_names[a] for a in episode.labels]
    assert names[:3] == ["right", "right", "light"]  # held right; the light tap wins frame 2
    assert names[6] == "heavy" and names[10] == "idle"  # a left tap at 60, released by space at 61
    assert "right" in names[3:6]  # held until the release timeout
    log = pd.read_csv(folder / INPUT_LOG_FILE)
    assert log.iloc[0].tolist() == [0, 0.0, "right", "down"]
    # the game applied exactly those actions: the state log shows the light attack starting on frame 2
    assert pd.read_parquet(folder / STATES_FILE)["skill_started_0"].to_numpy().nonzero()[0][0] == 2


def test_quitting_records_nothing(tmp_path: Path) -> None:
    assert play_duel("idle", tmp_path, screen=FakeScreen({5: ord("q")}), realtime=False) is None
    assert list(tmp_path.iterdir()) == []


def test_play_needs_a_display(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match="needs a display"):
        play_duel("idle", tmp_path)


def test_keyboard_log_turns_repeats_into_one_hold() -> None:
    keyboard = KeyboardLog(DUEL_ACTION_MAP, DUEL_KEYS, 60, release_after_s=0.5)
    for tick in range(0, 60, 3):  # auto-repeat while held
        keyboard.press(ord("a"), tick)
    events = keyboard.close(200)
    assert events.tick.tolist() == [0, 87] and events.down.tolist() == [True, False]  # 57 + 30 ticks


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> ActionDataset:
    return make_duel_dataset(tmp_path_factory.mktemp("small"), episodes=6, seed=1)


def test_stats_and_plot(small: ActionDataset, tmp_path: Path) -> None:
    stats = dataset_stats(small)
    assert stats.classes["count"].sum() == len(small)
    assert stats.classes.loc["idle", "count"] == int((small.actions() == 0).sum())
    assert (stats.classes[["train", "val", "test"]].sum(axis=1) == stats.classes["count"]).all()
    assert stats.episode_lengths.sum() == len(small) and stats.episode_lengths.size == 6
    assert stats.imbalance_ratio == small.manifest["imbalance_ratio"]
    png = plot_class_distribution(stats, tmp_path / "c.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(json.dumps(stats.to_json()))["episode_lengths"]["count"] == 6


def test_minari_export_reads_back(small: ActionDataset, tmp_path: Path, monkeypatch) -> None:
    import minari

    from bcarena.recordings.minari_export import export_minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    for obs in ("state", "pixels"):
        export_minari(small, f"bcarena/duel-{obs}-v0", obs)
        loaded = minari.load_dataset(f"bcarena/duel-{obs}-v0")
        assert loaded.total_episodes == 6 and loaded.total_steps == len(small)
        values = small.states() if obs == "state" else np.asarray(small.frames())[..., None]
        episodes = small.table["episode"].to_numpy()
        for ep in loaded.iterate_episodes():
            rows = episodes == ep.id
            assert np.array_equal(ep.actions, small.actions()[rows])
            assert np.array_equal(ep.observations[:-1], values[rows])
            assert ep.terminations[-1] and not ep.truncations.any()
    with pytest.raises(ValueError, match="already exists"):
        export_minari(small, "bcarena/duel-state-v0")


def test_cli_record_build_stats(tmp_path: Path) -> None:
    from bcarena.experiments.cli import app

    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "record",
            "--episodes",
            "3",
            "--out",
            str(tmp_path / "rec"),
            "--no-video",
            "--max-frames",
            "40",
            "--opponents",
            "brawler",
        ],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app,
        [
            "dataset",
            "build",
            str(tmp_path / "rec"),
            str(tmp_path / "ds"),
            "--alignment",
            "sample",
            "--split",
            "0.34,0.33,0.33",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (
        "skill presses lost" in result.output and ActionDataset.load(tmp_path / "ds").manifest["alignment"] == "sample"
    )
    result = runner.invoke(app, ["dataset", "stats", str(tmp_path / "ds"), "--json", str(tmp_path / "s.json")])
    assert result.exit_code == 0 and (tmp_path / "ds" / "classes.png").exists()
    assert json.loads((tmp_path / "s.json").read_text())["episode_lengths"]["count"] == 3
    result = runner.invoke(app, ["dataset", "build", str(tmp_path / "rec"), str(tmp_path / "ds")])
    assert result.exit_code == 2 and "already exists" in result.output
    result = runner.invoke(app, ["play"])
    assert result.exit_code == 2 and "needs a display" in result.output
