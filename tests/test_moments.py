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


# ----------------------------------------------------------------------------------- any game's closed loop
class Idler:
    """A clone that never acts: stands still in any game."""

    name, obs_type = "idler", "state"

    def reset(self, batch_size: int) -> None:
        """Keeps no memory."""

    def act(self, obs: np.ndarray) -> np.ndarray:
        return np.zeros(obs.shape[0], dtype=np.int64)


@pytest.fixture
def quickdraw():
    from fixtures.quickdraw import quickdraw_game

    from bcarena.envs.games import get_game, register_game, unregister_game

    register_game("quickdraw", quickdraw_game, replace=True)
    yield get_game("quickdraw")
    unregister_game("quickdraw")


def test_closed_loop_is_generic_over_games_a_clone_that_never_draws_loses_every_time(quickdraw):
    from fixtures.quickdraw import QuickDrawConfig, QuickDrawMatch

    loop = M.closed_loop(Idler(), ["slowpoke"], matches=12, seed=3, game="quickdraw")
    assert (loop.game, loop.expert, loop.opponents, loop.horizon) == ("quickdraw", "gunslinger", ["slowpoke"], 10)
    # The gunslinger (noise 0) shoots 1, 2 and 3 decisions after the signal; the idler does not, and the slowpoke's
    # shot 3 decisions after it wins the duel: 3 moments per match, each followed by a lost exchange.
    assert len(loop.moments) == 3 * 12 and loop.moments["lost"].all()
    assert loop.types[["expert_action", "agent_action", "bucket", "moments", "lost"]].values.tolist() == [
        ["shoot", "idle", "any state", 36, 36]
    ]
    match = QuickDrawMatch(12, QuickDrawConfig())
    match.reset(np.arange(3, 15))
    lengths = match.signal_at + 4  # decisions up to the slowpoke's shot
    assert loop.decisions == lengths.sum()
    assert loop.base_lost_rate == pytest.approx(np.minimum(lengths, 10).sum() / lengths.sum())
    expert = M.closed_loop("gunslinger", ["slowpoke"], matches=12, seed=3, game="quickdraw")
    assert expert.base_lost_rate == 0 and not expert.moments["lost"].any()  # it never loses a duel
    with pytest.raises(EvalError, match="horizon must be >= 1"):
        M.closed_loop(Idler(), ["slowpoke"], matches=1, horizon=0, game="quickdraw")


# ------------------------------------------------------------------------------------------------- Boxing
@pytest.fixture(scope="module")
def boxing_ds(tmp_path_factory):
    """3 Boxing episodes of the RAM expert (150 decisions each, pixels kept): one each for train, val, test."""
    from bcarena.recordings import RecordOptions, build_dataset, record_episodes

    root = tmp_path_factory.mktemp("boxing_moments")
    options = RecordOptions(max_frames=150, progress=False)
    record_episodes("expert", episodes=3, out_dir=root / "rec", seed=5, game="boxing", options=options)
    return build_dataset(root / "rec", root / "ds", split=(0.34, 0.33, 0.33), progress=False)


def test_explorer_on_boxing_punches_hits_and_filmstrips_from_the_recording(boxing_ds, tmp_path):
    cfg = make_train_config({"epochs": 1, "hidden": [16], "allow_missing_classes": True, "seed": 0})
    agent = train_bc(boxing_ds, cfg, progress=False, name="boxing-naive").agent
    moments = M.explore(agent, boxing_ds, "test", window=2)
    assert {"skill_used", "hit_landed", "action_change"} <= set(moments["event"])
    punches = M.filter_moments(moments, events=["skill_used"])
    assert len(punches) and punches["expert_action"].str.contains("FIRE").all() and punches["skill"].all()
    # The expert punches only when the fists reach the face: its reading calls every punch opportune.
    assert punches["opportune"].all() and {"dx_px", "dy_px", "s_dx"} <= set(moments.columns)
    assert (moments["opponent"] == "cpu").all() and moments["p_expert"].between(0, 1).all()
    assert "skill_presses_in_opportune_states" in M.top_summary(moments, 10)
    first = moments.iloc[0]
    no_pixels = ActionDataset.load(boxing_ds.path, pixels=False)  # the filmstrip then comes from agent_view.mkv
    from_video, numbers = M.moment_frames(no_pixels, int(first["episode"]), int(first["frame"]))
    from_pixels, _ = M.moment_frames(boxing_ds, int(first["episode"]), int(first["frame"]))
    assert from_video.shape[1:] == (84, 84) and np.array_equal(from_video, from_pixels)
    assert M.moment_filmstrip(no_pixels, first).shape[0] == 22 + 84 * 2 + 6
    folder = tmp_path / "agent"
    agent.save(folder)
    args = [
        "eval",
        "moments",
        str(folder),
        "--dataset",
        str(boxing_ds.path),
        "--top",
        "2",
        "--out",
        str(tmp_path / "m"),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "skill presses in opportune states" in result.output and len(list((tmp_path / "m").rglob("*.png"))) == 2


def test_a_boxing_pixel_agent_is_scored_on_stacked_frames(boxing_ds):
    import torch

    from bcarena.agents.policies import CNNPolicy
    from bcarena.agents.torch_agent import ScoreModel, TorchAgent

    torch.manual_seed(0)
    model = ScoreModel(CNNPolicy(4, 18, (4, 8, 8), hidden=16), torch.tensor(0.0), torch.tensor(255.0))
    names = boxing_ds.action_names
    agent = TorchAgent(model, names, boxing_ds.skill_actions, frame_stack=4, name="cnn", game="boxing")
    moments = M.explore(agent, boxing_ds, "test", window=1, events=["skill_used", "hit_landed"])
    assert len(moments) and moments["p_expert"].between(0, 1).all() and set(moments["label"]) <= set(M.LABELS)
    assert set(moments["event"]) <= {"skill_used", "hit_landed"} and moments["opportune"].dtype == bool


class NoPunches:
    """Boxing's RAM expert with FIRE taken out of every action: a clone that never learned to punch."""

    name, obs_type, noise_dims = "no-punches", "state", 1

    def __init__(self) -> None:
        from bcarena.envs import boxing

        self.boxing, self.expert = boxing, boxing.BoxingExpert()

    def reset(self, batch_size: int) -> None:
        self.expert.reset(batch_size)

    def act_with_noise(self, obs: np.ndarray, noise: np.ndarray) -> np.ndarray:
        names = np.asarray(self.boxing.ACTION_NAMES)[self.expert.act_with_noise(obs, noise)]
        plain = [n.replace("FIRE", "") or "NOOP" for n in names]
        return np.array([self.boxing.ACTION_INDEX[n] for n in plain], dtype=np.int64)


@pytest.mark.slow  # ~30 s: two full Boxing bouts (1,190 decisions each) against the console's CPU
def test_closed_loop_on_boxing_asks_the_ram_expert_and_counts_the_cpus_points():
    loop = M.closed_loop(NoPunches(), None, matches=2, seed=0, game="boxing")
    assert (loop.game, loop.expert, loop.opponents, loop.horizon) == ("boxing", "expert", ["cpu"], 10)
    assert loop.decisions > 2 * 1000 and 0 < loop.base_lost_rate < 1
    assert not loop.moments["agent_action"].str.contains("FIRE").any()
    punches = loop.moments[loop.moments["expert_action"].str.contains("FIRE")]
    assert len(punches) and punches["bucket"].str.startswith("punch range").all()
    assert loop.types["lost"].is_monotonic_decreasing and loop.types["moments"].sum() == len(loop.moments)
