import json

import numpy as np
import pandas as pd
import pytest

from bcarena.agents.base import Agent, BotAgent
from bcarena.envs.duel import ACTION_NAMES, SKILL_ACTIONS, STATE_FEATURES
from bcarena.eval.errors import EvalError
from bcarena.eval.offline import ANY_SKILL, evaluate_offline, event_metrics, offline_metrics, predict_dataset
from bcarena.recordings.converter import make_duel_dataset
from bcarena.recordings.dataset import ActionDataset, DatasetError


@pytest.fixture(scope="module")
def pro_dataset(tmp_path_factory):
    """The pro's recorded frames (recordings layer), 4 of 12 episodes in the test split, with pixels."""
    out = tmp_path_factory.mktemp("pro")
    return make_duel_dataset(out, "pro", ("brawler", "turtle"), episodes=12, seed=3, split=(0.5, 0.17, 0.33))


class StackChecker(Agent):
    """Acts with the frame index it counted since reset: exposes a wrong episode order or a missed reset."""

    name = "counter"

    def reset(self, batch_size: int) -> None:
        self.calls = 0

    def _act(self, obs: np.ndarray) -> np.ndarray:
        self.calls += 1
        return np.full(obs.shape[0], min(self.calls - 1, 7), dtype=np.int64)


def test_event_metrics_match_hand_counted_values():
    #          frame: 0  1  2  3  4  5  6  7  8  9
    y_true = np.array([0, 0, 5, 0, 0, 0, 0, 6, 0, 0])
    y_pred = np.array([0, 0, 0, 5, 0, 0, 0, 0, 0, 6])
    episode = np.zeros(10, dtype=int)
    exact = event_metrics(y_true, y_pred, episode, [5, 6, 7], ANY_SKILL, tolerance=0)
    assert (exact.precision, exact.recall, exact.f1) == (0.0, 0.0, 0.0)
    k1 = event_metrics(y_true, y_pred, episode, [5, 6, 7], ANY_SKILL, tolerance=1)
    assert (k1.precision, k1.recall) == (0.5, 0.5)  # frame 3 matches 2; frame 9 is 2 away from 7
    k2 = event_metrics(y_true, y_pred, episode, [5, 6, 7], ANY_SKILL, tolerance=2)
    assert (k2.precision, k2.recall, k2.f1) == (1.0, 1.0, 1.0)
    # Per skill: a heavy press does not match an expert light press.
    light = event_metrics(y_true, np.array([0, 0, 0, 6, 0, 0, 0, 0, 0, 0]), episode, [5], "light", tolerance=2)
    assert light.recall == 0.0 and light.precision is None and light.f1 == 0.0
    assert "never pressed light" in light.undefined["precision"]


def test_event_tolerance_never_crosses_episodes():
    y_true = np.array([0, 0, 5, 0, 0, 0])
    y_pred = np.array([0, 0, 0, 5, 0, 0])
    episode = np.array([0, 0, 0, 1, 1, 1])  # the prediction is 1 frame later, but in the next episode
    m = event_metrics(y_true, y_pred, episode, [5], "light", tolerance=3)
    assert (m.precision, m.recall) == (0.0, 0.0)


def test_never_occurring_classes_are_undefined_not_zero():
    y_true = np.array([0, 0, 1, 1, 2, 0])
    y_pred = np.array([0, 0, 1, 0, 2, 0])
    report = offline_metrics(y_true, y_pred, np.zeros(6, dtype=int), list(ACTION_NAMES), list(SKILL_ACTIONS))
    jump = next(c for c in report.per_class if c.action == "jump")
    assert (jump.precision, jump.recall, jump.f1) == (None, None, None)
    assert "expert never chose 'jump'" in jump.undefined["recall"]
    any_skill = report.event(ANY_SKILL)
    assert (any_skill.precision, any_skill.recall, any_skill.f1) == (None, None, None)
    assert set(any_skill.undefined) == {"precision", "recall", "f1"}
    assert report.macro_f1_classes == ["idle", "left", "right"]
    assert report.accuracy == pytest.approx(5 / 6)
    assert report.balanced_accuracy == pytest.approx((1 + 0.5 + 1) / 3)
    json.dumps(report.to_dict())  # None, not NaN: valid JSON throughout
    assert "NaN" not in json.dumps(report.to_dict())


def test_js_divergence_and_confusion_of_a_skill_less_clone():
    y_true = np.array([0] * 90 + [5] * 10)
    y_pred = np.zeros(100, dtype=int)
    report = offline_metrics(y_true, y_pred, np.zeros(100, dtype=int), list(ACTION_NAMES), list(SKILL_ACTIONS))
    assert report.accuracy == 0.9 and report.balanced_accuracy == 0.5
    assert report.confusion[5][0] == 10 and report.confusion[0][0] == 90
    p, q = np.array([0.9, 0.1]), np.array([1.0, 0.0])
    m = (p + q) / 2
    expected = 0.5 * (p * np.log2(p / m)).sum() + 0.5 * (q[:1] * np.log2(q[:1] / m[:1])).sum()
    assert report.js_divergence == pytest.approx(expected)
    light = next(c for c in report.per_class if c.action == "light")
    assert light.recall == 0.0 and light.precision is None and light.f1 == 0.0


def test_predictions_follow_episode_order_with_one_reset_per_batch(pro_dataset):
    test = pro_dataset.split("test")
    shuffled = ActionDataset(test.table.sample(frac=1.0, random_state=0), test.manifest)
    predictions = predict_dataset(StackChecker(), shuffled, batch_episodes=1)
    expected = np.minimum(shuffled.table["frame"].to_numpy(), 7)
    np.testing.assert_array_equal(predictions, expected)


def test_expert_scores_well_and_its_skill_less_copy_is_exposed(pro_dataset, tmp_path):
    pro = evaluate_offline(BotAgent("pro", seed=1), pro_dataset, "test", tolerance=2)
    naive = evaluate_offline(BotAgent("idle"), pro_dataset, "test", tolerance=2)
    assert pro.accuracy > 0.85 and pro.event(ANY_SKILL).f1 > 0.05  # it hesitates at random: far from 1
    loose = evaluate_offline(BotAgent("pro", seed=1), pro_dataset, "test", tolerance=6)
    assert loose.event(ANY_SKILL).recall > pro.event(ANY_SKILL).recall and loose.accuracy == pro.accuracy
    assert naive.event(ANY_SKILL).f1 == 0.0 and naive.event(ANY_SKILL).precision is None
    assert naive.balanced_accuracy < pro.balanced_accuracy
    paths = pro.write(tmp_path / "offline")
    saved = json.loads(paths["confusion_json"].read_text())
    assert saved["labels"] == list(ACTION_NAMES) and np.sum(saved["matrix"]) == pro.frames
    assert paths["confusion_png"].read_bytes()[:4] == b"\x89PNG"
    assert json.loads(paths["report"].read_text())["accuracy"] == pro.accuracy


def test_dataset_without_needed_columns_or_pixels_is_a_clear_error(pro_dataset, tmp_path):
    no_states = dict(pro_dataset.manifest, state_features=[])
    bare = ActionDataset(pro_dataset.table.drop(columns=[f"s_{f}" for f in STATE_FEATURES]), no_states)
    with pytest.raises(DatasetError, match="observes states, but this dataset has no s_<feature> columns"):
        evaluate_offline(BotAgent("pro"), bare, "test")

    class PixelAgent(StackChecker):
        obs_type = "pixels"

    with pytest.raises(DatasetError, match="stores no pixels.npy"):
        evaluate_offline(PixelAgent(), ActionDataset(pro_dataset.table, pro_dataset.manifest), "test")
    assert evaluate_offline(PixelAgent(), pro_dataset, "test").frames > 0  # the same agent runs on pixels
    path = ActionDataset(pro_dataset.table, pro_dataset.manifest).save(tmp_path / "ds")
    table = pd.read_parquet(path / "frames.parquet").drop(columns=["frames_to_skill_used"])
    table.to_parquet(path / "frames.parquet")
    with pytest.raises(DatasetError, match=r"frames.parquet: missing column\(s\) \['frames_to_skill_used'\]"):
        ActionDataset.load(path)


def test_agent_that_does_not_fit_the_dataset_is_named(pro_dataset):
    class Wrong(StackChecker):
        name = "wrong-shape"

        def _act(self, obs):
            raise ValueError(f"expected (B, 12), got {obs.shape}")

    with pytest.raises(EvalError, match="agent 'wrong-shape' cannot act on this dataset's state observations"):
        evaluate_offline(Wrong(), pro_dataset, "test")
    with pytest.raises(EvalError, match="tolerance must be >= 0"):
        evaluate_offline(BotAgent("pro"), pro_dataset, "test", tolerance=-1)
