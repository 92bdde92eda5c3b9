"""Agent folders: save/load round trips, parity of export_module, clear errors, no code execution."""

import json
import time

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
    np.testing.assert_allclose(
        scores, (torch.log_softmax(raw, -1) + agent.model.class_offsets).detach().numpy(), atol=1e-6
    )


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


# ------------------------------------------------------------------------- hand-edited agent folders
def edited(path, **changes):
    """Rewrite ``path/agent.json`` with ``changes`` (dotted keys reach into sections); NaN is written as JSON NaN."""
    spec = json.loads((path / "agent.json").read_text())
    for key, value in changes.items():
        node, *rest = key.split(".")
        if rest:
            spec[node] = {**spec[node], rest[0]: value}
        elif value is DROP:
            spec.pop(node)
        else:
            spec[node] = value
    (path / "agent.json").write_text(json.dumps(spec))  # json.dumps writes float("nan") as NaN, as a hand edit would
    return path


DROP = object()
NAN = float("nan")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"skill_actions": [-1]}, r"field 'skill_actions.0': Input should be greater than or equal to 0 \(got -1\)"),
        ({"skill_actions": [5, 5]}, r"skill_actions must be distinct action ids in \[0, 8\)"),
        ({"skill_actions": [8]}, r"skill_actions must be distinct action ids in \[0, 8\), got \[8\]"),
        ({"class_offsets": [0.0] * 5 + [NAN, 0.0, 0.0]}, r"field 'class_offsets.5': Input should be a finite number"),
        ({"class_offsets": [0.0] * 7}, r"class_offsets has 7 values for 8 actions"),
        ({"action_names": NAMES + ["dash", "taunt"]}, r"action_names lists 10 actions but the policy has 8 outputs"),
        ({"action_names": NAMES[:7] + ["idle"]}, r"action_names has duplicates"),
        (
            {"selection.mode": "greedy"},
            r"field 'selection.mode': must be one of "
            r"\['argmax', 'calibrated', 'sample', 'temperature', 'thresholds'\] \(got 'greedy'\)",
        ),
        ({"selection.temperature": NAN}, r"field 'selection.temperature': Input should be a finite number"),
        ({"selection.temperature": -1}, r"field 'selection.temperature': Input should be greater than 0"),
        ({"selection.seed": "3"}, r"field 'selection.seed': Input should be a valid integer"),
        ({"frame_stack": 0}, r"field 'frame_stack': Input should be greater than or equal to 1"),
        ({"frame_stack": 2}, r"frame_stack 2 does not fit the policy input \[37\]"),
        ({"frame_stack": True}, r"field 'frame_stack': Input should be a valid integer"),
        ({"normalization.std": [0.0] * 37}, r"field 'normalization.std.0': Input should be greater than 0"),
        ({"normalization.mean": [0.0] * 36}, r"normalization shape \[37\] needs 37 values, got 36 means"),
        ({"policy_config.hidden": "abc"}, r"policy 'mlp': field 'hidden': Input should be a valid list"),
        (
            {"policy_config.hidden": [0, 32]},
            r"policy 'mlp': field 'hidden.0': Input should be greater than or equal to 1",
        ),
        (
            {"policy_config.hidden": [10**6]},
            r"policy 'mlp': field 'hidden.0': Input should be less than or equal to 65536",
        ),
        (
            {"policy_config.activation": "swish"},
            r"policy 'mlp': field 'activation': must be one of \['gelu', 'relu', 'tanh'\] \(got 'swish'\)",
        ),
        ({"input_shape": [38]}, r"input_shape \[38\] differs from the policy's \[37\]"),
        ({"obs_type": "pixels"}, r"field 'obs_type': 'pixels', but policy 'mlp' reads 'state'"),
        ({"obs_type": "rgb"}, r"field 'obs_type': must be one of \['pixels', 'state'\] \(got 'rgb'\)"),
        ({"game": "chess"}, r"field 'game': unknown game 'chess'"),
        ({"name": ""}, r"field 'name': String should have at least 1 character"),
        ({"comment": "hi"}, r"unknown field 'comment'"),
        ({"selection": DROP}, r"field 'selection': Field required"),
    ],
)
def test_every_agent_json_field_is_validated(tmp_path, changes, message):
    path = edited(mlp_agent().save(tmp_path / "a"), **changes)
    with pytest.raises(AgentFileError, match=message) as info:
        load_agent(path)
    assert str(info.value).startswith(str(path / "agent.json")) and "\n" not in str(info.value)


def _refused_before_building(path, monkeypatch, module, names):
    """Load ``path`` with every constructor in ``names`` of ``module`` replaced by a tripwire."""

    def tripwire(*args, **kwargs):
        raise AssertionError("a module was built before the weights header was checked")

    for name in names:
        monkeypatch.setattr(module, name, tripwire)
    start = time.perf_counter()
    with pytest.raises(AgentFileError) as info:
        load_agent(path)
    return info.value, time.perf_counter() - start


def test_huge_layers_are_refused_from_the_weights_header_before_anything_is_built(tmp_path, monkeypatch):
    from bcarena.agents import torch_agent

    path = edited(mlp_agent().save(tmp_path / "a"), **{"policy_config.hidden": [20000, 20000]})
    error, seconds = _refused_before_building(path, monkeypatch, torch_agent, ["build_policy", "ScoreModel"])
    assert "model.safetensors: weights are from another architecture than policy 'mlp'" in str(error)
    assert "shape mismatch ['body.0.weight: file (32, 37) vs expected (20000, 37)'" in str(error)
    assert seconds < 0.5 and "\n" not in str(error)  # ~1 ms here; building it took 2.1 GB before


def test_weights_header_dtype_and_truncation_are_checked(tmp_path):
    path = mlp_agent().save(tmp_path / "a")
    state = {k: v.double() for k, v in mlp_agent().model.policy.state_dict().items()}
    save_file(state, str(path / "model.safetensors"))
    with pytest.raises(AgentFileError, match=r"tensors must be float32 \(F32\)"):
        load_agent(path)
    save_file({k: v.float() for k, v in state.items()}, str(path / "model.safetensors"))
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(AgentFileError, match="unreadable safetensors"):
        load_agent(path)
    (path / "model.safetensors").write_bytes(b"\xff" * 8 + b"{}")
    with pytest.raises(AgentFileError, match="unreadable safetensors"):
        load_agent(path)
    (path / "model.safetensors").unlink()
    with pytest.raises(AgentFileError, match="model.safetensors: missing"):
        load_agent(path)


def _sb3_agent(hidden=(16,)):
    import gymnasium as gym
    from stable_baselines3.common.policies import ActorCriticPolicy

    from bcarena.agents.sb3 import SB3Agent, policy_kwargs
    from bcarena.envs.duel.env import observation_space

    policy = ActorCriticPolicy(
        observation_space("state"), gym.spaces.Discrete(8), lambda _: 0.0, **policy_kwargs(list(hidden), "tanh")
    )
    return SB3Agent(policy, hidden, "tanh", deterministic=False, seed=5)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"deterministic": "no"}, r"field 'deterministic': Input should be a valid boolean \(got 'no'\)"),
        ({"action_names": NAMES + ["dash", "taunt"]}, r"action_names/skill_actions must be Duel's"),
        ({"skill_actions": [-1]}, r"action_names/skill_actions must be Duel's"),
        ({"hidden": [0]}, r"field 'hidden.0': Input should be greater than or equal to 1"),
        ({"hidden": []}, r"field 'hidden': List should have at least 1 item"),
        ({"seed": -3}, r"field 'seed': Input should be greater than or equal to 0"),
        ({"input_shape": [36]}, r"input_shape must be \[37\]"),
        ({"obs_type": "pixels"}, r"PPO experts play Duel on state observations"),
    ],
)
def test_ppo_agent_json_fields_are_validated(tmp_path, changes, message):
    path = edited(_sb3_agent().save(tmp_path / "ppo"), **changes)
    with pytest.raises(AgentFileError, match=message) as info:
        load_agent(path)
    assert "\n" not in str(info.value)


def test_ppo_round_trip_and_huge_layers_refused_before_building(tmp_path, monkeypatch):
    from bcarena.agents import sb3

    agent = _sb3_agent()
    path = agent.save(tmp_path / "ppo")
    loaded = load_agent(path)
    obs = game_obs(32)
    assert (loaded.deterministic, loaded.seed, loaded.greedy) == (False, 5, False)
    agent.reset(32)
    loaded.reset(32)
    np.testing.assert_array_equal(loaded.act(obs), agent.act(obs))
    edited(path, hidden=[20000, 20000])
    error, seconds = _refused_before_building(path, monkeypatch, sb3, ["ActorCriticPolicy"])
    assert "another architecture than an SB3 MLP actor-critic [20000, 20000]" in str(error) and seconds < 0.5


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"seed": -1}, r"field 'seed': Input should be greater than or equal to 0"),
        ({"seed": "4"}, r"field 'seed': Input should be a valid integer"),
        ({"bot": "champion"}, r"field 'bot': unknown bot 'champion'"),
        ({"duel_config": {"tick_rate_hz": -5}}, r"field 'duel_config'"),
        ({"game": "boxing"}, r"bots play Duel on state observations"),
    ],
)
def test_bot_agent_json_fields_are_validated(tmp_path, changes, message):
    path = edited(BotAgent("turtle", seed=4).save(tmp_path / "bot"), **changes)
    with pytest.raises(AgentFileError, match=message):
        load_agent(path)


def test_perturbed_bots_cannot_be_saved_under_a_name_that_does_not_load(tmp_path):
    from bcarena.eval.perturbed import parse_perturbed

    with pytest.raises(AgentFileError, match=r"bot 'pro\[skill_drop=0.9\]' \(PerturbedBot\) is not a registered bot"):
        parse_perturbed("pro[skill_drop=0.9]").save(tmp_path / "p")
    assert not list(tmp_path.iterdir())  # nothing half-written


def _composite(tmp_path):
    from bcarena.agents.composite import CompositeAgent

    movement = TorchAgent(ScoreModel(MLPPolicy(37, 5, (16,)), torch.zeros(37), torch.ones(37)), NAMES[:5], [])
    skill = TorchAgent(
        ScoreModel(MLPPolicy(37, 4, (16,)), torch.zeros(37), torch.ones(37)), ["none", *NAMES[5:]], [1, 2, 3]
    )
    return CompositeAgent(movement, skill, NAMES, SKILLS, [0, 1, 2, 3, 4]).save(tmp_path / "c")


def test_composite_agent_json_is_checked_against_its_parts_before_building(tmp_path):
    path = _composite(tmp_path)
    assert load_agent(path).game == "duel"
    edited(path, move_actions=[0, 1, 2, 3, 5])
    with pytest.raises(AgentFileError, match=r"must split the 8 actions, each exactly once"):
        load_agent(path)
    edited(path, move_actions=[0, 1, 2, 3], skill_actions=[4, 5, 6, 7])
    with pytest.raises(AgentFileError, match=r"movement/agent.json: the movement model has 5 outputs; .* needs 4"):
        load_agent(path)
    edited(path, move_actions=[0, 1, 2, 3, 4], skill_actions=[5, 6, 7], parts=["skill", "movement"])
    with pytest.raises(AgentFileError, match=r"parts must be \['movement', 'skill'\]"):
        load_agent(path)


def test_agent_json_size_is_capped(tmp_path):
    from bcarena.agents.specs import MAX_AGENT_FILE_BYTES

    path = mlp_agent().save(tmp_path / "a")
    spec = json.loads((path / "agent.json").read_text())
    (path / "agent.json").write_text(json.dumps({**spec, "info": {"pad": "x" * MAX_AGENT_FILE_BYTES}}))
    with pytest.raises(AgentFileError, match=r"agent.json: \d+ bytes; an agent.json holds at most"):
        load_agent(path)


def test_folders_without_a_declared_game_load_as_before(tmp_path):
    path = edited(mlp_agent().save(tmp_path / "a"), game=DROP)
    assert load_agent(path).game == "duel"
    saved = json.loads((mlp_agent().save(tmp_path / "b") / "agent.json").read_text())
    assert saved["game"] == "duel"
