"""Agent folders: save/load round trips, parity of export_module, clear errors, no code execution."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from bcarena.agents import AgentFileError, BotAgent, load_agent
from bcarena.agents.policies import CNNPolicy, MLPPolicy, ScoreModel
from bcarena.agents.selection import Selection
from bcarena.agents.torch_agent import ObservationError, TorchAgent
from bcarena.envs.duel import ACTION_NAMES, SKILL_ACTIONS, DuelMatch

NAMES, SKILLS = list(ACTION_NAMES), list(SKILL_ACTIONS)


def mlp_agent(hidden=(32, 32), mode="argmax", k=1, seed=0) -> TorchAgent:
    torch.manual_seed(seed)
    model = ScoreModel(MLPPolicy(37 * k, 8, hidden), torch.randn(37 * k) * 0.1, torch.rand(37 * k) + 0.5)
    return TorchAgent(model, NAMES, SKILLS, k, Selection(mode=mode, temperature=2.0, seed=3))


def game_obs(n=16, seed=0, obs_type="state"):
    match = DuelMatch(n, obs_type=obs_type)
    match.reset(np.arange(n) + seed)
    obs, _ = match.step(np.random.default_rng(seed).integers(0, 8, size=(n, 2)))
    return obs[:, 0]


def test_torch_agent_round_trip_keeps_actions_scores_and_selection(tmp_path):
    agent = mlp_agent()
    agent.model.class_offsets.copy_(torch.linspace(-1, 1, 8))
    obs = game_obs()
    path = agent.save(tmp_path / "a")
    loaded = load_agent(path)
    assert isinstance(loaded, TorchAgent) and loaded.selection == agent.selection
    np.testing.assert_array_equal(loaded.act(obs), agent.act(obs))
    np.testing.assert_allclose(loaded.scores_stacked(obs), agent.scores_stacked(obs), rtol=0, atol=0)
    spec = json.loads((path / "agent.json").read_text())
    assert spec["kind"] == "torch" and spec["obs_type"] == "state" and spec["action_names"] == NAMES
    assert len(spec["normalization"]["mean"]) == 37 and spec["bcarena_version"]


def test_export_module_argmax_equals_agent_action_and_normalization_is_inside():
    agent = mlp_agent()
    agent.model.class_offsets.copy_(torch.tensor([0, 0, 0, 0, 0, 3.0, 0, 0]))  # threshold-style offsets count too
    obs = game_obs(64)
    module = agent.export_module()
    scores = module(torch.as_tensor(obs)).detach().numpy()
    np.testing.assert_array_equal(scores.argmax(1), agent.act(obs))
    raw = agent.model.policy((torch.as_tensor(obs) - agent.model.mean) / agent.model.std)
    np.testing.assert_allclose(scores, (torch.log_softmax(raw, -1) + agent.model.class_offsets).detach().numpy(),
                               atol=1e-6)


def test_sampling_is_seeded_and_reset_restarts_the_stream():
    agent = mlp_agent(mode="temperature")
    obs = np.repeat(game_obs(1), 200, axis=0)
    agent.reset(200)
    first = agent.act(obs)
    agent.reset(200)
    np.testing.assert_array_equal(agent.act(obs), first)
    assert len(np.unique(first)) > 1  # it does sample, not argmax
    assert len(np.unique(mlp_agent(mode="argmax").act(obs))) == 1


def test_pixel_frame_stack_per_row_and_reset():
    torch.manual_seed(0)
    model = ScoreModel(CNNPolicy(3, 8), torch.tensor(80.0), torch.tensor(60.0))
    agent = TorchAgent(model, NAMES, SKILLS, frame_stack=3)
    frames = [game_obs(2, seed=s, obs_type="pixels") for s in range(3)]
    agent.reset(2)
    stack = agent.stacked(frames[0])
    assert stack.shape == (2, 3, 84, 84) and (stack == frames[0][:, None, :, :, 0]).all()  # first frame fills the stack
    agent.stacked(frames[1])
    stack = agent.stacked(frames[2])
    for j in range(3):
        np.testing.assert_array_equal(stack[:, j], frames[j][..., 0])
    with pytest.raises(ObservationError, match="reset"):
        agent.stacked(np.zeros((5, 84, 84, 1), np.uint8))
    agent.reset(5)
    assert agent.act(np.zeros((5, 84, 84, 1), np.uint8)).shape == (5,)
    with pytest.raises(ObservationError, match=r"\(B, 84, 84, 1\)"):
        agent.act(np.zeros((5, 37), np.float32))


def test_bot_agent_round_trip(tmp_path):
    loaded = load_agent(BotAgent("turtle", seed=4).save(tmp_path / "bot"))
    assert isinstance(loaded, BotAgent) and loaded.name == "turtle" and loaded.seed == 4


def test_checkpoint_from_another_architecture_is_a_clear_error(tmp_path):
    path = mlp_agent(hidden=(32, 32)).save(tmp_path / "a")
    other = mlp_agent(hidden=(16,))
    save_file({k: v.contiguous() for k, v in other.model.policy.state_dict().items()}, str(path / "model.safetensors"))
    with pytest.raises(AgentFileError, match=r"another architecture.*policy 'mlp'.*(missing|shape)"):
        load_agent(path)


def test_agent_files_are_data_only(tmp_path):
    path = mlp_agent().save(tmp_path / "a")
    spec = json.loads((path / "agent.json").read_text())
    for kind in ("os.system", "__import__('os').system('touch pwned')", "pickle"):
        (path / "agent.json").write_text(json.dumps({**spec, "kind": kind}))
        with pytest.raises(AgentFileError, match="unknown agent kind"):
            load_agent(path)
    assert not (tmp_path / "pwned").exists()
    (path / "agent.json").write_text(json.dumps({**spec, "policy": "subprocess"}))
    with pytest.raises(AgentFileError, match="unknown policy 'subprocess'"):
        load_agent(path)
    (path / "agent.json").write_text("{not json")
    with pytest.raises(AgentFileError, match="not valid JSON"):
        load_agent(path)
    (path / "agent.json").write_text(json.dumps({**spec, "format_version": 99}))
    with pytest.raises(AgentFileError, match="format_version 99"):
        load_agent(path)
    with pytest.raises(AgentFileError, match="no agent folder"):
        load_agent(tmp_path / "missing")


def test_save_is_atomic_and_refuses_to_clobber(tmp_path):
    agent = mlp_agent()
    agent.save(tmp_path / "a")
    with pytest.raises(AgentFileError, match="already exists"):
        agent.save(tmp_path / "a")
    agent.save(tmp_path / "a", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]  # no temp folders left behind
