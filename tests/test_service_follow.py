"""``bcarena serve models:/NAME@ALIAS --follow-alias``: the server follows the registry alias and hot-swaps."""

import asyncio
import time
from pathlib import Path

import httpx
import pytest
import torch

from bcarena.agents.policies import MLPPolicy, ScoreModel
from bcarena.agents.torch_agent import TorchAgent
from bcarena.envs.duel import ACTION_NAMES, SKILL_ACTIONS
from bcarena.eval.service.follow import AliasFollower, FollowError, check_follow
from bcarena.eval.service.loadtest import run_open_loop
from bcarena.eval.service.models import load_slot
from bcarena.eval.service.server import BackgroundServer, ServerSettings

mlflow = pytest.importorskip("mlflow")
pytest.importorskip("fastapi")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from bcarena.eval.service import registry as reg  # noqa: E402

POLL_S = 0.2
DOWN = "http://127.0.0.1:9"  # nothing listens on the discard port: connection refused at once


def _mlp(seed: int, name: str, stack: int = 1) -> TorchAgent:
    torch.manual_seed(seed)
    dim = 37 * stack
    model = ScoreModel(MLPPolicy(dim, 8, (8,)), torch.zeros(dim), torch.ones(dim))
    return TorchAgent(model, list(ACTION_NAMES), list(SKILL_ACTIONS), stack, name=name)


@pytest.fixture()
def store(tmp_path: Path) -> str:
    """A SQLite store with model 'duel': v1 and v2 two tiny MLPs of one layout, v3 one with a 2-frame stack."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    reg.register(_mlp(0, "mlp-a").save(tmp_path / "a"), "duel", tracking_uri=uri, alias="champion")
    reg.register(_mlp(1, "mlp-b").save(tmp_path / "b"), "duel", tracking_uri=uri)
    reg.register(_mlp(2, "mlp-stack2", stack=2).save(tmp_path / "c"), "duel", tracking_uri=uri)
    return uri


def _polls(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics").text
    return {
        s.labels["outcome"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "bcarena_alias_polls_total"
    }


def _wait_for(url: str, outcome: str, timeout: float = 20.0) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while (polls := _polls(url)).get(outcome, 0) < 1:
        assert time.monotonic() < deadline, polls
        time.sleep(POLL_S / 2)
    return polls


@pytest.mark.slow
def test_the_server_follows_the_alias_refuses_another_layout_and_survives_a_lost_store(store):
    slot = load_slot("models:/duel@champion", tracking_uri=store)
    assert (slot.version, slot.pinned) == ("duel/1", "models:/duel/1")
    server = BackgroundServer(slot, ServerSettings(follow_poll_s=POLL_S), tracking_uri=store)
    with server:
        _follow_alias_under_load(server, lambda: reg.set_alias("duel", "champion", 2, store), 4.0)

        reg.set_alias("duel", "champion", 3, store)  # another layout: refused once, v2 keeps serving
        _wait_for(server.url, "refused")
        time.sleep(3 * POLL_S)
        assert _polls(server.url)["refused"] == 1  # not retried until the alias moves again
        answer = httpx.post(f"{server.url}/act", json={"obs": [0.1] * 37}).json()
        assert answer["model_version"] == "duel/2"

        server.service.follower.tracking_uri = DOWN  # the store goes away: every poll fails, the server serves on
        _wait_for(server.url, "failed")
        assert httpx.post(f"{server.url}/act", json={"obs": [0.1] * 37}).status_code == 200
        assert httpx.get(f"{server.url}/health/ready").status_code == 200
    assert server.service.slot.version == "duel/2"


@pytest.fixture()
def fake_registry(tmp_path, monkeypatch) -> dict[str, int]:
    """The registry functions the server calls, over three local folders (v1, v2 one layout, v3 a 2-frame stack);
    the returned dict holds the aliases. A tracking URI of DOWN is a store that cannot be reached."""
    folders = {
        1: _mlp(0, "mlp-a").save(tmp_path / "a"),
        2: _mlp(1, "mlp-b").save(tmp_path / "b"),
        3: _mlp(2, "mlp-stack2", stack=2).save(tmp_path / "c"),
    }
    aliases = {"champion": 1}

    def model_version(uri: str, tracking_uri: str | None = None) -> tuple[str, int]:
        if tracking_uri == DOWN:
            raise reg.RegistryUnavailable(f"MLflow tracking server {DOWN} is unreachable (Connection refused)")
        name, alias, version = reg.parse_model_uri(uri)
        return name, aliases[alias] if alias is not None else int(version)

    monkeypatch.setattr(reg, "model_version", model_version)
    monkeypatch.setattr(reg, "resolve_model", lambda uri, tracking_uri=None: folders[model_version(uri)[1]])
    return aliases


def _follow_alias_under_load(server: BackgroundServer, move: callable, seconds: float) -> None:
    """/act at 50 requests/s for ``seconds`` while ``move`` points the alias at v2 after 0.3 s: no request fails,
    the answers switch from duel/1 to duel/2."""

    async def promote() -> None:
        await asyncio.to_thread(move)

    result = run_open_loop(server.url, 50, seconds, actions=[(0.3, promote)])
    assert result.failed == 0 and set(result.versions) == {"duel/1", "duel/2"}, result.versions
    assert result.trace.version[-1] == "duel/2" and server.service.slot.pinned == "models:/duel/2"
    assert _wait_for(server.url, "swapped")["swapped"] == 1


def test_following_an_alias_swaps_refuses_another_layout_and_survives_an_unreachable_store(fake_registry):
    # Fast twin of the slow end-to-end test on a real SQLite store.
    slot = load_slot("models:/duel@champion")
    assert (slot.version, slot.pinned) == ("duel/1", "models:/duel/1")
    with BackgroundServer(slot, ServerSettings(follow_poll_s=0.05)) as server:
        _follow_alias_under_load(server, lambda: fake_registry.update(champion=2), 1.5)
        fake_registry["champion"] = 3  # another layout: refused once, not retried, v2 keeps serving
        _wait_for(server.url, "refused")
        time.sleep(0.3)
        assert _polls(server.url)["refused"] == 1
        assert httpx.post(f"{server.url}/act", json={"obs": [0.1] * 37}).json()["model_version"] == "duel/2"
        server.service.follower.tracking_uri = DOWN
        failed = _wait_for(server.url, "failed")["failed"]
        time.sleep(0.3)
        assert _polls(server.url)["failed"] > failed  # it keeps polling, and keeps serving
        assert httpx.post(f"{server.url}/act", json={"obs": [0.1] * 37}).status_code == 200
        assert httpx.get(f"{server.url}/health/ready").status_code == 200
        metrics = httpx.get(f"{server.url}/metrics").text
    assert 'bcarena_model_swaps_total{result="refused"} 1.0' in metrics
    assert 'bcarena_model_swaps_total{result="swapped"} 1.0' in metrics


@pytest.mark.parametrize(
    "source, poll_s, message",
    [
        ("runs/agent", 5.0, "--follow-alias follows a registry alias: serve models:/NAME@ALIAS, not 'runs/agent'"),
        ("models:/duel/3", 5.0, "not 'models:/duel/3'"),
        ("models:/duel@champion", 0.0, "--poll-s must be within (0, 3600] seconds, got 0"),
        (None, -1.0, "--poll-s must be within (0, 3600] seconds, got -1"),
    ],
)
def test_follow_refuses_a_folder_or_a_fixed_version_and_a_non_positive_poll(source, poll_s, message):
    with pytest.raises(FollowError) as err:
        check_follow(source, poll_s)
    assert message in str(err.value)
    with pytest.raises(FollowError):
        AliasFollower(source or "x", poll_s, None, lambda: None, None, None)  # type: ignore[arg-type]
