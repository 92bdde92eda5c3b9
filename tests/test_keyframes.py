"""Keyframe weighting: history features, which frames are keyframes, the trainer option, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from bcarena.agents.config import TrainConfigError, make_train_config
from bcarena.agents.keyframes import combine, history_features, keyframe_weights, prediction_error
from bcarena.agents.train import train_bc


def test_history_features_one_hot_previous_actions_with_an_episode_start_token():
    actions = np.array([1, 2, 0, 2, 1])
    episodes = np.array([0, 0, 0, 1, 1])
    x = history_features(actions, episodes, history=2, num_actions=3)
    assert x.shape == (5, 2 * 4)
    np.testing.assert_array_equal(x.sum(axis=1), 2)  # one token per history slot
    start = 3  # the "none" token of 3 actions
    assert x[0, start] == 1 and x[0, 4 + start] == 1  # first frame: nothing before it
    assert x[2, 2] == 1 and x[2, 4 + 1] == 1  # frame 2 of episode 0: actions 2 (1 back) and 1 (2 back)
    assert x[3, start] == 1 and x[3, 4 + start] == 1  # a new episode starts clean


def test_keyframes_are_where_the_action_is_unpredictable_from_the_previous_ones():
    # A walker holds each move for 10 frames, but a rare "skill" (3) interrupts at random moments.
    rng = np.random.default_rng(0)
    actions = np.repeat(np.tile([1, 2], 60), 10)
    surprise = rng.choice(np.arange(20, actions.size), size=24, replace=False)
    actions[surprise] = 3
    episodes = np.repeat(np.arange(4), actions.size // 4)
    error = prediction_error(actions, episodes, 4, history=9)
    top = np.argsort(-error, kind="stable")[: surprise.size]
    assert np.isin(top, surprise).mean() >= 0.9  # the surprises score highest
    assert np.median(error[actions != 3]) < 0.05  # holding a move is predictable


def test_keyframe_weights_mark_exactly_the_top_fraction(pro_ds):
    cfg = make_train_config({"keyframe_weighting": {"history": 9, "top_fraction": 0.1, "weight": 5.0}})
    train = pro_ds.split("train")
    weights = keyframe_weights(train, cfg.keyframe_weighting)
    assert weights.shape == (len(train.table),)
    assert (weights == 5.0).sum() == int(np.ceil(0.1 * len(train.table)))
    assert set(np.unique(weights)) == {1.0, 5.0}
    skills = np.isin(train.actions(), train.skill_actions)
    assert weights[skills].mean() > 2 * weights[~skills].mean()  # skill presses are among the surprises
    assert keyframe_weights(train, None) is None
    np.testing.assert_array_equal(combine(None, weights, np.full(len(weights), 2.0)), weights * 2)
    assert combine(None, None) is None


def test_trainer_samples_keyframes_more_often(pro_ds):
    cfg = make_train_config({"epochs": 1, "hidden": [16], "keyframe_weighting": {}})
    assert cfg.keyframe_weighting.history == 9 and cfg.keyframe_weighting.weight == 5.0  # the paper's defaults
    result = train_bc(pro_ds, cfg, progress=False)
    assert result.sampling.event_weighted_frames == pytest.approx(0.1, abs=0.002)  # frames with weight > 1
    mix = result.sampling
    skills = pro_ds.skill_actions
    assert sum(mix.class_mix_sampled[a] for a in skills) > 1.5 * sum(mix.class_mix_data[a] for a in skills)


def test_keyframe_history_below_one_is_an_error():
    with pytest.raises(
        TrainConfigError, match=r"keyframe_weighting.history: Input should be greater than or equal to 1"
    ):
        make_train_config({"keyframe_weighting": {"history": 0}})
    with pytest.raises(TrainConfigError, match="unknown key 'keyframe_weighting.top'"):
        make_train_config({"keyframe_weighting": {"top": 0.2}})
