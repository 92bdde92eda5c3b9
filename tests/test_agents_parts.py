"""Losses, class weights, samplers, event weights, composite agents, SB3 interop, the training benchmark."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn import functional as F

from bcarena.agents import AgentFileError, load_agent
from bcarena.agents.composite import CompositeAgent, train_composite
from bcarena.agents.config import make_train_config
from bcarena.agents.losses import LOSSES, class_weights
from bcarena.agents.samplers import EpochSampler, event_weights
from bcarena.agents.sb3 import DuelSB3VecEnv, SB3Agent, SB3Error, ppo_from_bc, random_ppo, train_ppo, win_rate
from bcarena.agents.train import train_bc
from bcarena.agents.validation import classification_metrics
from bcarena.envs.duel import ACTION_NAMES, SKILL_ACTIONS
from bcarena.experiments.benchmarks.train_throughput import run_case
from bcarena.recordings.dataset import EVENTS, ActionDataset


# ---------------------------------------------------------------------------------------------- losses
def test_class_weight_schemes():
    counts = np.array([900, 90, 10, 0])
    inv = class_weights(counts, "inverse")
    assert inv[3] == 0 and np.allclose(inv[:3] * counts[:3], inv[0] * 900)  # every present class weighs the same
    assert (inv * counts).sum() == pytest.approx(counts.sum())  # mean weight of a frame is 1
    sqrt = class_weights(counts, "sqrt_inverse")
    assert sqrt[2] / sqrt[1] == pytest.approx(3.0)  # sqrt(90 / 10)
    eff = class_weights(counts, "effective_number", beta=0.99)
    expected = (1 - 0.99) / (1 - 0.99 ** counts[:3])
    assert np.allclose(eff[:3] / eff[0], expected / expected[0])
    assert class_weights(counts, "none") is None


def test_losses_reduce_to_cross_entropy_in_their_neutral_settings():
    torch.manual_seed(0)
    logits, labels = torch.randn(64, 8), torch.randint(0, 8, (64,))
    ce = F.cross_entropy(logits, labels)
    assert LOSSES["ce"]()(logits, labels).objective == pytest.approx(float(ce), rel=1e-6)
    assert LOSSES["focal"](gamma=0.0)(logits, labels).objective == pytest.approx(float(ce), rel=1e-6)
    uniform = LOSSES["logit_adjusted"](prior=np.ones(8), tau=1.0)(logits, labels)
    assert uniform.objective == pytest.approx(float(ce), rel=1e-5)
    focal = LOSSES["focal"](gamma=2.0)(logits, labels)
    assert focal.objective < float(ce) and 0 < focal.terms["modulator"] < 1
    skewed = LOSSES["logit_adjusted"](prior=np.r_[100.0, np.ones(7)], tau=1.0)(logits, labels)
    assert skewed.nll == pytest.approx(float(ce), rel=1e-6) and skewed.objective != pytest.approx(float(ce))
    weights = np.r_[np.ones(7), 10.0]
    weighted = LOSSES["weighted_ce"](weights)(logits, labels)
    assert weighted.objective == pytest.approx(
        float(F.cross_entropy(logits, labels, weight=torch.tensor(weights, dtype=torch.float32)))
    )
    assert set(weighted.scalars()) == {"objective", "nll", "p_true"}
    with pytest.raises(ValueError, match="needs class weights"):
        LOSSES["weighted_ce"](None)


# --------------------------------------------------------------------------------------------- samplers
def _toy_events(flags_by_episode: list[list[int]]) -> ActionDataset:
    rows = [(e, f, flag) for e, flags in enumerate(flags_by_episode) for f, flag in enumerate(flags)]
    table = pd.DataFrame(rows, columns=["episode", "frame", "flag"])
    for name in EVENTS:
        table[f"event_{name}"] = table["flag"].astype(bool) if name == "skill_used" else False
        table[f"frames_to_{name}"] = 0
    table = table.drop(columns="flag").assign(split="train", action=np.int16(0))
    manifest = {
        "schema_version": 1,
        "game": "duel",
        "fps": 10,
        "action_names": list(ACTION_NAMES),
        "skill_actions": [int(a) for a in SKILL_ACTIONS],
        "state_features": [],
        "frame_shape": [1, 1],
        "num_frames": len(table),
        "num_episodes": 2,
        "splits": {},
        "class_counts": {},
        "event_counts": {},
        "alignment": "x",
        "sources": [],
    }
    return ActionDataset(table, manifest)


def test_event_weights_follow_window_decay_and_episode_bounds():
    ds = _toy_events([[0, 0, 0, 0, 1, 0, 0, 0], [0, 1, 0, 0]])
    ew = make_train_config(
        {"event_weighting": {"events": ["skill_used"], "before": 2, "after": 1, "weight": 9, "decay": 0.5}}
    ).event_weighting
    w = event_weights(ds, ew)
    # episode 0: event at frame 4 -> frames 2, 3 before (decay^2, ^1), 5 after; episode 1 is its own
    np.testing.assert_allclose(w, [1, 1, 3, 5, 9, 5, 1, 1, 5, 9, 5, 1])
    assert event_weights(ds, make_train_config({}).event_weighting) is None


def test_samplers_resample_indices_and_report_the_class_mix():
    labels = np.r_[np.zeros(900), np.ones(90), np.full(10, 2), np.full(5, -1)].astype(np.int64)  # -1: not trained on
    names = ["idle", "guard", "heavy"]
    for sampler in ("oversample", "undersample", "weighted"):
        s = EpochSampler(labels, make_train_config({"sampler": sampler}), names)
        idx = s.epoch(0).numpy()
        assert idx.dtype == np.int64 and idx.min() >= 0 and (labels[idx] >= 0).all()
        report = s.report()
        assert report.class_mix_sampled == pytest.approx([1 / 3] * 3)
        assert report.class_mix_data == pytest.approx([0.9, 0.09, 0.01])
        np.testing.assert_array_equal(s.epoch(3).numpy(), s.epoch(3).numpy())  # a function of (seed, epoch)
        assert not np.array_equal(s.epoch(3).numpy(), s.epoch(4).numpy())
    assert len(EpochSampler(labels, make_train_config({"sampler": "oversample"}), names).epoch(0)) == 2700
    assert len(EpochSampler(labels, make_train_config({"sampler": "undersample"}), names).epoch(0)) == 30
    uniform = EpochSampler(labels, make_train_config({}), names).epoch(0).numpy()
    assert sorted(uniform.tolist()) == list(range(1000))  # a permutation of the trained rows
    frame_w = np.where(labels == 2, 91.0, 1.0)  # event weighting on top of uniform sampling
    mix = EpochSampler(labels, make_train_config({}), names, frame_w).report().class_mix_sampled
    assert mix[2] == pytest.approx(910 / (900 + 90 + 910))


# -------------------------------------------------------------------------------------------- composite
def test_composite_agent_trains_combines_saves_and_exports(pro_ds, tmp_path):
    move_cfg = make_train_config({"epochs": 4, "hidden": [64, 64]})
    skill_cfg = make_train_config(
        {
            "epochs": 4,
            "hidden": [64, 64],
            "loss": "weighted_ce",
            "class_weights": "sqrt_inverse",
            "allow_missing_classes": True,
        }
    )
    result = train_composite(pro_ds, move_cfg, skill_cfg, tmp_path, progress=False)
    assert result.movement.agent.action_names == ["idle", "left", "right", "jump", "guard"]
    assert result.skill.agent.action_names == ["none", "light", "heavy", "special"]
    assert result.movement.sampling.class_mix_data[3] == 0 and result.movement.history  # skill frames left out
    agent = load_agent(tmp_path / "agent")
    assert isinstance(agent, CompositeAgent) and agent.action_names == pro_ds.action_names
    x = np.array(pro_ds.split("test").states())
    actions = agent.act(x)
    np.testing.assert_array_equal(actions, result.agent.act(x))
    scores = agent.export_module()(torch.as_tensor(x))
    np.testing.assert_array_equal(scores.argmax(1).numpy(), actions)
    np.testing.assert_allclose(torch.logsumexp(scores, 1).detach().numpy(), 0, atol=1e-5)  # one joint distribution
    metrics = classification_metrics(pro_ds.split("test").actions(), actions, agent.action_names, agent.skill_actions)
    assert metrics.accuracy == pytest.approx(result.test.accuracy) and result.test.skill_frame_recall > 0.2
    spec = json.loads((tmp_path / "agent" / "agent.json").read_text())
    assert spec["kind"] == "composite" and spec["parts"] == ["movement", "skill"]
    (tmp_path / "agent" / "skill" / "agent.json").write_text(json.dumps({**spec, "kind": "bot"}))
    with pytest.raises(AgentFileError, match="composite part must be kind 'torch'"):
        load_agent(tmp_path / "agent")


# ------------------------------------------------------------------------------------------------- SB3
def test_bc_weights_in_ppo_act_like_the_bc_agent_and_start_above_random(pro_ds, tmp_path):
    bc = train_bc(
        pro_ds,
        make_train_config(
            {"epochs": 10, "hidden": [128, 128], "loss": "logit_adjusted", "allow_missing_classes": True}
        ),
        progress=False,
    ).agent
    bc.model.class_offsets[6] = 0.1  # offsets (thresholds) are folded into the SB3 action bias
    env = DuelSB3VecEnv(8, ["brawler", "turtle"])
    ppo = ppo_from_bc(bc, env, seed=0, n_steps=32, batch_size=128, verbose=0)
    x = np.array(pro_ds.states())
    sb3 = SB3Agent.from_model(ppo)
    np.testing.assert_array_equal(sb3.act(x), bc.act(x))
    seeds = np.arange(500, 520)
    bc_init = win_rate(sb3, "brawler", seeds)["win"]
    rnd = win_rate(SB3Agent.from_model(random_ppo(env, [128, 128], seed=0, verbose=0)), "brawler", seeds)["win"]
    assert bc_init >= rnd + 0.5, (bc_init, rnd)
    tuned = train_ppo(ppo, 256, tmp_path / "ft", progress=False)  # PPO runs on the vectorized bot pool
    loaded = load_agent(tmp_path / "ft" / "agent")
    np.testing.assert_array_equal(loaded.act(x[:200]), tuned.act(x[:200]))
    np.testing.assert_array_equal(
        loaded.export_module()(torch.as_tensor(x[:200])).argmax(1).numpy(), tuned.act(x[:200])
    )
    with pytest.raises(SB3Error, match="MLP policy"):
        ppo_from_bc(object(), env)


def test_sb3_vec_env_pool_and_seeding():
    env = DuelSB3VecEnv(5, ["brawler", "turtle"])
    assert [len(b.core.seeds) for b in env.blocks] == [3, 2] and [o.name for o in env.get_attr("opponent")] == [
        "brawler"
    ] * 3 + ["turtle"] * 2
    env.seed(7)
    first = env.reset()
    env.seed(7)
    np.testing.assert_array_equal(env.reset(), first)
    obs, rewards, dones, infos = env.step(np.zeros(5, dtype=np.int64))
    assert obs.shape == (5, 37) and rewards.dtype == np.float32 and len(infos) == 5


def test_train_benchmark_fast_twin():
    mlp = run_case("mlp", "index", frames=2000, batch_size=256, min_seconds=0.05, frame_stack=1, threads=1)
    cnn = run_case("cnn", "dataloader", frames=300, batch_size=16, min_seconds=0.05, frame_stack=2, threads=1)
    assert mlp["samples_per_s"] > 0 and cnn["samples_per_s"] > 0 and cnn["frame_stack"] == 2
    assert mlp["peak_rss_mb"] > 10 and mlp["tracemalloc_peak_mb"] > 0


def test_cli_composite_expert_and_agent_info(pro_ds, tmp_path):
    from typer.testing import CliRunner

    from bcarena.experiments.cli import app

    runner = CliRunner()
    out = tmp_path / "comp"
    result = runner.invoke(
        app,
        [
            "train-composite",
            "--dataset",
            str(pro_ds.path),
            "--out",
            str(out),
            "--set-movement",
            "epochs=1",
            "--set-skill",
            "epochs=1",
            "--set-skill",
            "allow_missing_classes=true",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads((out / "skill" / "config.json").read_text())["loss"] == "weighted_ce"  # the skill default
    info = runner.invoke(app, ["agent", "info", str(out / "agent")])
    assert info.exit_code == 0 and '"kind": "composite"' in info.output
    result = runner.invoke(
        app,
        [
            "expert",
            "finetune",
            "--bc",
            str(out / "agent"),
            "--out",
            str(tmp_path / "ft"),
            "--timesteps",
            "0",
            "--quiet",
        ],
    )
    assert result.exit_code == 2 and "needs a TorchAgent with an MLP policy" in " ".join(result.output.split())
    result = runner.invoke(
        app,
        [
            "expert",
            "train",
            "--out",
            str(tmp_path / "ex"),
            "--timesteps",
            "256",
            "--num-envs",
            "4",
            "--eval-matches",
            "4",
            "--opponents",
            "brawler,turtle",
            "--hidden",
            "32,32",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert isinstance(load_agent(tmp_path / "ex" / "agent"), SB3Agent) and "turtle" in result.output
