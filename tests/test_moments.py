"""Key moments: timing labels, the ranked explorer on a recorded pro dataset, filmstrips, the closed loop, the CLI."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from bcarena.agents.base import BotAgent
from bcarena.agents.config import make_train_config
from bcarena.agents.train import train_bc
from bcarena.eval import moments as M
from bcarena.eval.errors import EvalError
from bcarena.experiments.cli import app
from bcarena.recordings.dataset import ActionDataset

runner = CliRunner()


@pytest.fixture(scope="module")
def clones(pro_ds):
    """A plain clone and a class-weighted one of the pro, trained briefly on the shared 16-episode dataset."""
    base = {"epochs": 6, "hidden": [64], "allow_missing_classes": True, "seed": 0}
    plain = train_bc(pro_ds, make_train_config(base), progress=False, name="naive").agent
    weighted = train_bc(
        pro_ds, make_train_config({**base, "loss": "weighted_ce", "class_weights": "inverse"}), progress=False
    ).agent
    weighted.name = "class_weighted"
    return plain, weighted


def test_timing_labels_right_early_late_missed_within_one_episode():
    expert = np.array([5, 5, 0, 0, 7, 0, 0, 0, 6, 6])
    agent = np.array([5, 0, 0, 7, 0, 0, 0, 0, 0, 6])
    episode = np.array([0, 0, 0, 0, 0, 0, 0, 0, 1, 1])
    label, offset = M.timing(expert, agent, episode, window=1)
    names = np.asarray(M.LABELS)[label]
    # row 4: the agent pressed 7 one frame before (early); row 8: 6 comes one frame after (late);
    # row 1: 5 was one frame before (early); row 7: agent picks 0 on the frame (right)
    assert names.tolist()[:2] == ["right", "early"] and names[4] == "early" and offset[4] == -1
    assert names[8] == "late" and offset[8] == 1 and names[9] == "right"
    across = M.timing(np.array([7, 0]), np.array([0, 7]), np.array([0, 1]), 1)[0]
    assert across.tolist() == [0, 0]  # never matched across an episode boundary
    with pytest.raises(EvalError, match="window must be >= 0"):
        M.timing(expert, agent, episode, -1)


def test_naive_clone_misses_skill_presses_in_opportune_states_and_the_fixed_one_moves_the_misses(pro_ds, clones):
    plain, weighted = clones
    naive = M.explore(plain, pro_ds, "test", window=2)
    fixed = M.explore(weighted, pro_ds, "test", window=2)
    test = pro_ds.split("test").table
    assert len(naive) == int(test[[f"event_{e}" for e in pro_ds.event_names]].any(axis=1).sum())
    assert naive["rank"].tolist() == list(range(1, len(naive) + 1))
    severity = naive["label"].map({label: k for k, label in enumerate(M.LABELS)}).to_numpy()
    assert (np.diff(severity) >= 0).all() and naive["p_expert"].between(0, 1).all()
    for label in M.LABELS:  # within a label, the least likely expert action first
        assert naive.loc[naive["label"] == label, "p_expert"].is_monotonic_increasing
    counts = M.counts(naive)
    assert counts["all"]["total"] == len(naive) == sum(counts["all"][k] for k in M.LABELS)
    # The naive clone misses every skill press, each in a state the pro itself reads as opportune; the
    # class-weighted clone gets some right, and skill presses make up less of its worst moments.
    presses = naive[naive["skill"]]
    assert len(presses) >= 10 and (presses["label"] == "missed").all() and presses["opportune"].mean() >= 0.9
    assert counts["skill_used"]["right"] == 0 < M.counts(fixed)["skill_used"]["right"]
    k = len(presses)
    assert M.top_summary(fixed, k)["skill_presses"] < M.top_summary(naive, k)["skill_presses"]
    both = M.side_by_side(naive, fixed)
    assert len(both) == len(naive) and {"label_left", "label_right", "p_expert_right"} <= set(both.columns)
    opponent = presses["opponent"].iloc[0]
    only = M.filter_moments(naive, events=["skill_used"], opponents=[opponent], labels=["missed"])
    assert len(only) and only["events"].str.contains("skill_used").all() and (only["opponent"] == opponent).all()
    assert set(M.filter_moments(naive, episodes=[int(presses["episode"].iloc[0])])["episode"]) == {
        presses["episode"].iloc[0]
    }
    with pytest.raises(EvalError, match=r"unknown event\(s\) \['skill'\]"):
        M.explore(plain, pro_ds, "test", events=["skill"])


def test_filmstrips_from_pixels_and_from_the_recording_agree_and_files_are_written(pro_ds, clones, tmp_path):
    moments = M.explore(clones[0], pro_ds, "test", window=2)
    paths = M.write_moments(moments, pro_ds, tmp_path / "out", top=3)
    assert pd.read_parquet(paths["table"]).shape[0] == len(moments)
    summary = json.loads(paths["summary"].read_text())
    assert summary["agent"] == "naive" and summary["counts"]["all"]["total"] == len(moments)
    pngs = sorted(paths["filmstrips"].glob("*.png"))
    assert [p.name for p in pngs] == ["rank_0001.png", "rank_0002.png", "rank_0003.png"]
    image = cv2.imread(str(pngs[0]))
    assert image.shape[0] == 22 + 84 * 2 + 6 and image.shape[1] <= 5 * (84 * 2 + 6)
    first = moments.iloc[0]
    from_pixels, numbers = M.moment_frames(pro_ds, int(first["episode"]), int(first["frame"]))
    no_pixels = ActionDataset.load(pro_ds.path, pixels=False)
    from_video, _ = M.moment_frames(no_pixels, int(first["episode"]), int(first["frame"]))
    assert np.array_equal(from_pixels, from_video) and int(first["frame"]) in numbers  # FFV1 is lossless


def test_a_bot_without_scores_gets_labels_but_no_probabilities(pro_ds):
    moments = M.explore(BotAgent("pro", seed=0), pro_ds, "test", window=2, events=["skill_used"])
    assert moments["p_expert"].isna().all() and set(moments["label"]) <= set(M.LABELS)
    assert (moments["events"] == "skill_used").all()


def test_closed_loop_moments_of_the_pro_itself_are_its_hesitations(short_round):
    loop = M.closed_loop("pro", ["brawler"], matches=6, seed=0, config=short_round)
    assert len(loop.moments) and loop.decisions > 0 and 0 <= loop.base_lost_rate <= 1
    # The pro differs from its own hesitation-free self only where it hesitated: the expert pressed a skill.
    assert set(loop.moments["expert_action"]) <= {"light", "heavy", "special"}
    assert loop.moments["bucket"].str.match(r"^(punish|opportune), ").all()
    assert loop.types["moments"].sum() == len(loop.moments) and loop.types["lost"].sum() == loop.moments["lost"].sum()
    assert loop.types["lost"].is_monotonic_decreasing
    again = M.closed_loop("pro", ["brawler"], matches=6, seed=0, config=short_round)
    pd.testing.assert_frame_equal(loop.types, again.types)  # deterministic


def test_closed_loop_needs_a_duel_agent_and_a_positive_horizon(short_round):
    with pytest.raises(EvalError, match="horizon must be >= 1"):
        M.closed_loop("pro", ["brawler"], matches=1, horizon=0, config=short_round)


def test_cli_writes_offline_and_closed_loop_moments(pro_ds, clones, tmp_path):
    folder = tmp_path / "naive"
    clones[0].save(folder)
    out = tmp_path / "moments"
    args = ["eval", "moments", str(folder), "--dataset", str(pro_ds.path), "--top", "2", "--matches", "2"]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "skill presses in opportune states" in result.output and "closed loop:" in result.output
    for name in ("moments.parquet", "moments.json", "closed_loop.parquet", "closed_loop.json"):
        assert (out / name).is_file()
    assert len(list((out / "filmstrips").glob("*.png"))) == 2


def test_a_pixel_agent_is_scored_on_stacked_frames(pro_ds):
    import torch

    from bcarena.agents.policies import CNNPolicy
    from bcarena.agents.torch_agent import ScoreModel, TorchAgent

    torch.manual_seed(0)
    model = ScoreModel(CNNPolicy(2, 8, (4, 8, 8), hidden=16), torch.tensor(0.0), torch.tensor(255.0))
    agent = TorchAgent(model, pro_ds.action_names, pro_ds.skill_actions, frame_stack=2, name="cnn")
    moments = M.explore(agent, pro_ds, "test", window=1)
    actions, probs = M.agent_choices(agent, pro_ds.split("test"))
    assert probs is not None and probs.shape == (len(actions), 8) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert moments["p_expert"].between(0, 1).all() and len(moments) == M.counts(moments)["all"]["total"]
