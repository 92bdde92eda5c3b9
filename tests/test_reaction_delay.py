"""Reaction-delay alignment: shifting labels, the delayed source, auto recovering a known delay, bad input."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from rich.console import Console

from bcarena.envs.duel import STATE_DIM, DuelConfig, make_bot
from bcarena.envs.play import BotPolicy
from bcarena.experiments.config import DatasetSpec
from bcarena.recordings.converter import EpisodeData, build_dataset
from bcarena.recordings.dataset import DatasetError
from bcarena.recordings.reaction_delay import ReactionDelayed, check_delay, choose_delays, parse_delay, shift_episode
from bcarena.recordings.recorder import RecordOptions, record_duel


def _episode(n: int, frame_index: np.ndarray | None = None) -> EpisodeData:
    labels = np.arange(n) % 5
    events = {"skill_used": labels == 4, "hit_landed": np.arange(n) % 3 == 0, "action_change": np.ones(n, bool)}
    features = np.arange(n, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)
    return EpisodeData(Path("ep_007"), None, labels, events, features, None, {}, "", frame_index)


def test_shift_pairs_each_observation_with_the_action_k_frames_later():
    ep = _episode(10)
    shifted = shift_episode(ep, 2)
    np.testing.assert_array_equal(shifted.labels, ep.labels[2:])
    np.testing.assert_array_equal(shifted.features, ep.features[:8])  # observations stay where they were
    np.testing.assert_array_equal(shifted.events["skill_used"], ep.events["skill_used"][2:])  # the action's event
    np.testing.assert_array_equal(shifted.events["hit_landed"], ep.events["hit_landed"][:8])  # the frame's event
    assert shifted.frame_index is None and shift_episode(ep, 0) is ep
    assert len(ep.labels) == 10  # the input is not changed


def test_shift_follows_recorded_frames_when_an_overlay_excluded_some():
    frames = np.array([0, 1, 2, 5, 6, 7, 8], dtype=np.int32)  # frames 3 and 4 were excluded
    ep = _episode(7, frames)
    shifted = shift_episode(ep, 1)
    np.testing.assert_array_equal(shifted.frame_index, [0, 1, 5, 6, 7])  # 2 and 8 have no frame + 1
    np.testing.assert_array_equal(shifted.labels, ep.labels[[1, 2, 4, 5, 6]])


def test_a_delay_larger_than_an_episode_names_it():
    with pytest.raises(DatasetError, match=r"ep_007: a reaction delay of 12 frames is larger than this episode \(10"):
        shift_episode(_episode(10), 12)


def test_delay_values_are_checked():
    assert parse_delay("auto") == "auto" and parse_delay("3") == 3
    with pytest.raises(DatasetError, match="number of frames or 'auto', got 'soon'"):
        parse_delay("soon")
    with pytest.raises(DatasetError, match=">= 0 or 'auto', got -1"):
        check_delay(-1, 5)
    with pytest.raises(DatasetError, match="max reaction delay must be an integer in 0..50"):
        check_delay("auto", 99)


def test_delayed_bot_acts_on_what_it_saw_k_decisions_ago():
    pro = make_bot("pro")
    delayed = ReactionDelayed(BotPolicy(pro), 2)
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(6, 3, STATE_DIM)).astype(np.float32)  # 6 decisions, 3 matches
    obs[..., 0] = np.abs(obs[..., 0])
    noise = rng.random((6, 3, 1))
    delayed.reset(3)
    got = [delayed.act_with_noise(obs[t], noise[t]) for t in range(6)]
    for t in range(6):
        np.testing.assert_array_equal(got[t], pro.act(obs[max(0, t - 2)], noise[t]))
    assert delayed.name == "pro-delay2"


@pytest.fixture(scope="module")
def delayed_recordings(tmp_path_factory):
    """12 short (8 s) episodes of the pro reacting 2 frames late."""
    out = tmp_path_factory.mktemp("delayed") / "rec"
    source = ReactionDelayed(BotPolicy(make_bot("pro")), 2)
    opponents = ["brawler", "turtle", "random", "pro"]
    options = RecordOptions(video=False, progress=False)
    record_duel(source, opponents, 12, out, seed=0, config=DuelConfig(round_seconds=8.0), options=options)
    return out


def test_auto_picks_the_delay_a_quick_model_predicts_best_per_player():
    rng = np.random.default_rng(0)

    def player(name: str, delay: int, n: int = 60) -> EpisodeData:
        x = rng.normal(size=(n, 3)).astype(np.float32)
        seen = np.r_[np.zeros(delay, dtype=np.int64), np.arange(n - delay)]  # what decision t answered
        labels = (x[seen, 0] > 0).astype(np.int64) + 2 * (x[seen, 1] > 0.5)
        meta = SimpleNamespace(player=0, players=[SimpleNamespace(name=name)])
        return EpisodeData(Path(f"{name}_{rng.integers(1000)}"), meta, labels, {}, x, None, {}, "")

    episodes = [player("slow", 3) for _ in range(4)] + [player("quick", 1) for _ in range(4)]
    split_of = np.array([0, 0, 0, 1] * 2)
    chosen, search = choose_delays(episodes, split_of, 4)
    assert chosen == {"slow": 3, "quick": 1}
    assert sorted(search["slow"]) == [0, 1, 2, 3, 4]


@pytest.mark.slow
def test_auto_recovers_a_known_delay_and_the_manifest_says_so(delayed_recordings, tmp_path):
    fixed = build_dataset(delayed_recordings, tmp_path / "k0", split=(0.6, 0.2, 0.2), pixels=False, progress=False)
    assert fixed.manifest["reaction_delay"] == {"pro-delay2": 0}
    auto = build_dataset(
        delayed_recordings,
        tmp_path / "auto",
        split=(0.6, 0.2, 0.2),
        pixels=False,
        progress=False,
        reaction_delay="auto",
        max_reaction_delay=3,
    )
    assert auto.manifest["reaction_delay"] == {"pro-delay2": 2}
    search = auto.manifest["reaction_delay_search"]["pro-delay2"]
    assert max(search, key=search.get) == "2" and len(search) == 4  # JSON keys: "0".."3"
    assert auto.manifest["num_frames"] == fixed.manifest["num_frames"] - 2 * 12  # the last 2 frames of each


def test_a_fixed_delay_larger_than_an_episode_fails_the_build(tmp_path):
    options = RecordOptions(video=False, progress=False, max_frames=6)
    [episode] = record_duel("pro", ["brawler"], 1, tmp_path / "rec", seed=0, options=options)
    with pytest.raises(
        DatasetError, match=rf"{episode.name}: a reaction delay of 8 frames is larger than this episode"
    ):
        build_dataset(tmp_path / "rec", tmp_path / "x", split=(1.0, 0.0, 0.0), pixels=False, reaction_delay=8)


EXPERIMENT = """\
name: delayed
recording: {{path: {path}}}
dataset: {{split: [0.5, 0.25, 0.25], {delay}}}
variants:
  - name: a
"""


def _prepare(tmp_path: Path, recordings: Path, delay: str, folder: str):
    from bcarena.experiments.runner import ExperimentRunner, load

    (tmp_path / f"{folder}.yaml").write_text(EXPERIMENT.format(path=recordings, delay=delay))
    console = Console(file=io.StringIO())
    runner = ExperimentRunner(load(tmp_path / f"{folder}.yaml"), tmp_path / "runs", progress=False, console=console)
    key, dataset = runner.prepare_dataset()
    return key, dataset, json.loads((runner.run_dir / "dataset_stats.json").read_text())


def test_an_experiment_sets_the_delay_and_its_run_folder_reports_it(tmp_path):
    options = RecordOptions(video=False, progress=False, max_frames=30)
    record_duel("pro", ["brawler"], 4, tmp_path / "rec", seed=0, options=options)
    key0, plain, stats0 = _prepare(tmp_path, tmp_path / "rec", "pixels: false", "plain")
    key2, delayed, stats2 = _prepare(tmp_path, tmp_path / "rec", "reaction_delay: 2", "delayed")
    assert stats0["reaction_delay"] == {"pro": 0} and stats2["reaction_delay"] == {"pro": 2}
    assert delayed.manifest["num_frames"] == plain.manifest["num_frames"] - 2 * 4  # each episode's last 2
    assert key2 != key0  # the delay is part of the dataset's cache key
    # ... and a spec without one keeps the key it had before delays could be set
    assert DatasetSpec().model_dump(mode="json", exclude_none=True) == {
        "alignment": "window-priority",
        "split": [0.7, 0.15, 0.15],
        "pixels": False,
    }


@pytest.mark.parametrize(
    "dataset, message",
    [
        ({"reaction_delay": -1}, "dataset.reaction_delay: expected a number of frames in 0..50 or 'auto', got -1"),
        ({"reaction_delay": "soon"}, "or 'auto', got 'soon'"),
        (
            {"reaction_delay": "auto", "max_reaction_delay": 60},
            "max_reaction_delay: expected a number of frames in 0..50, got 60",
        ),
        ({"reaction_delay": 3, "max_reaction_delay": 4}, "max_reaction_delay is the largest delay"),
    ],
)
def test_bad_delays_in_an_experiment_are_errors_on_load(tmp_path, dataset, message):
    from bcarena.experiments.config import ExperimentError, load_experiment

    (tmp_path / "x.yaml").write_text(yaml.safe_dump({"name": "x", "dataset": dataset, "variants": [{"name": "a"}]}))
    with pytest.raises(ExperimentError, match=re.escape(message)):
        load_experiment(tmp_path / "x.yaml")
