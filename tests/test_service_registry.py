"""The MLflow model registry: versions with metrics and lineage, aliases, models:/ URIs, promotion by an A/B test."""

import json
import time

import pytest
import torch
from typer.testing import CliRunner

from bcarena.agents import load_agent
from bcarena.agents.base import BotAgent
from bcarena.agents.policies import MLPPolicy, ScoreModel
from bcarena.agents.selection import Selection
from bcarena.agents.torch_agent import TorchAgent
from bcarena.envs.duel import ACTION_NAMES, SKILL_ACTIONS, STATE_DIM
from bcarena.eval.service import registry as reg
from bcarena.experiments.cli import app

mlflow = pytest.importorskip("mlflow")
runner = CliRunner()
DOWN = "http://127.0.0.1:9"  # nothing listens on the discard port: connection refused at once


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A SQLite store with model 'duel': v1 = idle bot (champion), v2 = brawler bot (challenger), v3 = a torch
    agent trained 'on' a dataset (its manifest is hashed into the lineage)."""
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    dataset = root / "dataset"
    dataset.mkdir()
    (dataset / "manifest.json").write_text('{"schema": 1}')
    torch.manual_seed(0)
    model = ScoreModel(MLPPolicy(STATE_DIM, len(ACTION_NAMES), (8,)), torch.zeros(STATE_DIM), torch.ones(STATE_DIM))
    info = {"dataset": str(dataset), "val": {"accuracy": 0.9, "skill_frame_recall": 0.25}}
    folders = {
        "idle": BotAgent("idle").save(root / "idle"),
        "brawler": BotAgent("brawler").save(root / "brawler"),
        "mlp": TorchAgent(model, list(ACTION_NAMES), list(SKILL_ACTIONS), 1, Selection(), "mlp", info).save(
            root / "mlp"
        ),
    }
    versions = {
        "idle": reg.register(folders["idle"], "duel", tracking_uri=uri, alias="champion"),
        "brawler": reg.register(folders["brawler"], "duel", tracking_uri=uri, alias="challenger"),
        "mlp": reg.register(
            folders["mlp"], "duel", win_rates={"brawler": 0.25}, lineage={"git_commit": "abc123"}, tracking_uri=uri
        ),
    }
    return {"uri": uri, "root": root, "folders": folders, "versions": versions}


def test_each_registration_is_the_next_version_with_metrics_and_lineage(store):
    assert store["versions"] == {"idle": 1, "brawler": 2, "mlp": 3}
    client = mlflow.MlflowClient(store["uri"], store["uri"])
    version = client.get_model_version("duel", "3")
    tags = version.tags
    manifest = store["root"] / "dataset" / "manifest.json"
    from bcarena.envs.files import sha256_file

    assert tags["dataset.manifest_sha256"] == sha256_file(manifest) and tags["git_commit"] == "abc123"
    assert tags["agent.name"] == "mlp" and len(tags["agent.weights_sha256"]) == 64
    run = client.get_run(version.run_id)
    assert run.data.metrics["val.accuracy"] == 0.9 and run.data.metrics["win_rate.brawler"] == 0.25
    assert run.data.tags["git_commit"] == "abc123"


def test_aliases_and_versions_resolve_to_validated_agent_folders_downloaded_once(store):
    uri = store["uri"]
    assert reg.model_version("models:/duel@champion", uri) == ("duel", 1)
    folder = reg.resolve_model("models:/duel@challenger", uri)
    assert load_agent(folder).name == "brawler" and folder.parts[-4:-2] == ("duel", "2")
    mtime = (folder / "agent.json").stat().st_mtime_ns
    assert reg.resolve_model("models:/duel/2", uri) == folder  # versions are immutable: the cache is reused
    assert (folder / "agent.json").stat().st_mtime_ns == mtime
    mlp = reg.resolve_model("models:/duel/3", uri)
    assert (mlp / "model.safetensors").read_bytes() == (store["folders"]["mlp"] / "model.safetensors").read_bytes()
    assert reg.model_folder(str(store["folders"]["idle"]), uri) == store["folders"]["idle"]
    from bcarena.eval.service.export import load_served

    served = load_served(reg.model_folder("models:/duel/3", uri))  # what `bcarena serve models:/duel/3` serves
    assert served.agent_name == "mlp" and served.format == "torch"


@pytest.mark.parametrize(
    "uri, message",
    [
        ("models:/nosuch@champion", "no registered model 'nosuch'"),
        (
            "models:/duel@nosuch",
            "registered model 'duel' has no alias 'nosuch'; its aliases: ['challenger', 'champion']",
        ),
        ("models:/duel/99", "Model Version (name=duel, version=99) not found"),
        ("models:/duel", "model URI 'models:/duel' must be models:/NAME@ALIAS or models:/NAME/VERSION"),
    ],
)
def test_unknown_names_aliases_and_versions_are_one_line_errors(store, uri, message):
    with pytest.raises(reg.RegistryError) as info:
        reg.resolve_model(uri, store["uri"])
    assert message in str(info.value) and "\n" not in str(info.value)


def test_an_unreachable_tracking_server_fails_within_seconds(store):
    start = time.perf_counter()
    with pytest.raises(reg.RegistryUnavailable, match=r"MLflow tracking server http://127.0.0.1:9 is unreachable"):
        reg.register(store["folders"]["idle"], "duel", tracking_uri=DOWN)
    with pytest.raises(reg.RegistryUnavailable, match="unreachable"):
        reg.resolve_model("models:/duel@champion", DOWN)
    assert time.perf_counter() - start < reg.PROBE_TIMEOUT_S * 2 + 1


def test_bad_names_and_aliases_are_refused_before_anything_is_logged(store):
    with pytest.raises(reg.RegistryError, match="must be non-empty, without '/'"):
        reg.register(store["folders"]["idle"], "a/b", tracking_uri=store["uri"])
    with pytest.raises(reg.RegistryError, match="alias 'v3' must be"):
        reg.set_alias("duel", "v3", 1, store["uri"])


def test_ab_promote_moves_the_champion_alias_to_a_better_challenger(store, tmp_path):
    uri = store["uri"]
    args = ["ab", "models:/duel@champion", "models:/duel@challenger", "--promote", "--tracking-uri", uri]
    result = runner.invoke(app, [*args, "--max-matches", "200", "--batch", "100", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "ab.json").read_text())
    assert data["decision"] == "H1" and data["promoted"] == {"model": "duel", "alias": "champion", "version": 2}
    assert reg.model_version("models:/duel@champion", uri) == ("duel", 2)
    reg.set_alias("duel", "champion", 1, uri)  # put it back for the other tests


def test_the_register_command_prints_the_new_version(store):
    result = runner.invoke(
        app, ["register", str(store["folders"]["idle"]), "--name", "cli-model", "--tracking-uri", store["uri"]]
    )
    assert result.exit_code == 0, result.output
    assert "as models:/cli-model/1" in result.output
