"""Matches played through the service: RemoteAgent's results equal the in-process agent's on the same seeds."""

import numpy as np
import pytest
import torch

from bcarena.agents.base import BotAgent
from bcarena.agents.policies import CNNPolicy, MLPPolicy, ScoreModel
from bcarena.agents.torch_agent import TorchAgent
from bcarena.envs.duel import ACTION_NAMES, SKILL_ACTIONS
from bcarena.eval.matches import play_matches
from bcarena.eval.service.client import RemoteAgent, RemoteError
from bcarena.eval.service.export import served_from_agent
from bcarena.eval.service.server import BackgroundServer, ServerSettings, free_port

pytest.importorskip("fastapi")


def skilled_mlp(k: int = 1) -> TorchAgent:
    """A random MLP whose scores favour skills, so matches have real wins and losses to compare."""
    torch.manual_seed(1)
    model = ScoreModel(MLPPolicy(37 * k, 8, (32,)), torch.zeros(37 * k), torch.ones(37 * k) * 0.3)
    with torch.no_grad():
        model.class_offsets.copy_(torch.tensor([0, 0.5, 0.5, -2, -1, 1.5, 1.0, 0.5]))
    return TorchAgent(model, list(ACTION_NAMES), list(SKILL_ACTIONS), k, name="mlp")


def assert_same_matches(local, remote):
    np.testing.assert_array_equal(local.winner, remote.winner)
    np.testing.assert_array_equal(local.action_counts, remote.action_counts)
    np.testing.assert_array_equal(local.hp, remote.hp)


@pytest.mark.parametrize("backend,k", [("torch", 1), ("onnx", 3)])
def test_remote_agent_wins_exactly_like_the_in_process_agent(backend, k):
    agent = skilled_mlp(k)
    seeds = np.arange(100, 124)
    local = play_matches(agent, BotAgent("brawler"), seeds)
    assert 0 < local.win_rate() < 1 or local.skills_used[:, 0].sum() > 0  # a non-trivial agent
    served = served_from_agent(agent, None, backend, parity_observations=1000)
    # max_batch below the 24 matches: RemoteAgent must split each step into several requests.
    with BackgroundServer(served, ServerSettings(max_batch=16)) as server, RemoteAgent(server.url) as remote:
        assert remote.obs_type == "state" and remote.name.startswith("mlp@127.0.0.1:")
        assert remote.model_sha256 == served.sha256
        through_service = play_matches(remote, BotAgent("brawler"), seeds)
    assert through_service.win_rate() == local.win_rate()
    assert_same_matches(local, through_service)


def test_remote_pixel_agent_keeps_the_frame_stack_client_side():
    torch.manual_seed(0)
    agent = TorchAgent(
        ScoreModel(CNNPolicy(3, 8, (4, 8, 8), hidden=16), torch.tensor(0.0), torch.tensor(255.0)),
        list(ACTION_NAMES),
        list(SKILL_ACTIONS),
        3,
        name="cnn",
    )
    seeds = np.arange(3)
    local = play_matches(agent, BotAgent("brawler"), seeds)
    with BackgroundServer(served_from_agent(agent, None, "torch")) as server, RemoteAgent(server.url) as remote:
        assert remote.obs_type == "pixels"
        assert_same_matches(local, play_matches(remote, BotAgent("brawler"), seeds))


def test_remote_agent_errors_name_the_server():
    port = free_port()
    with pytest.raises(RemoteError, match=rf"agent server http://127.0.0.1:{port}/metadata unreachable"):
        RemoteAgent(f"http://127.0.0.1:{port}", timeout=2)
    with pytest.raises(RemoteError, match="must start with http"):
        RemoteAgent("127.0.0.1:8000")


def test_remote_agent_rejects_observations_of_the_wrong_shape():
    served = served_from_agent(skilled_mlp(), None, "torch")
    with BackgroundServer(served) as server, RemoteAgent(server.url) as remote:
        remote.reset(2)
        with pytest.raises(ValueError, match=r"expected state observations of shape \(B, 37\) float32, got \(2, 36\)"):
            remote.act(np.zeros((2, 36), dtype=np.float32))
