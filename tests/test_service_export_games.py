"""Export, parity and the requirements check for any game: quick-draw (the fixture game) and ALE Boxing."""

import json

import numpy as np
import pytest
import torch
from fixtures.quickdraw import ACTIONS, FEATURES
from fixtures.quickdraw_data import quickdraw_files, registered_quickdraw

from bcarena.agents import load_agent
from bcarena.agents.policies import CNNPolicy, MLPPolicy, ScoreModel
from bcarena.agents.torch_agent import TorchAgent
from bcarena.eval.matches import evaluate_game_matches
from bcarena.eval.service.export import EXPORT_FILE, export_agent, load_export, record_from_matches
from bcarena.eval.service.requirements import (
    RequirementsError,
    check_requirements,
    load_requirements,
    requirements_for_game,
)
from bcarena.recordings.dataset import ActionDataset

pytest.importorskip("onnxruntime")
torch.set_num_threads(1)  # tiny nets on a shared machine


@pytest.fixture(scope="module")
def quickdraw(tmp_path_factory):
    with registered_quickdraw() as game:
        yield game, quickdraw_files(tmp_path_factory)


def _write(tmp_path, text: str, name: str = "req.yaml"):
    (tmp_path / name).write_text(text)
    return tmp_path / name


def test_a_quickdraw_agent_exports_with_parity_on_its_own_games_matches(quickdraw, tmp_path):
    game, files = quickdraw
    agent = load_agent(files["weighted"])
    # Quick-draw's states repeat a lot (a duel is ~20 decisions on a line): 40 distinct ones is what it offers.
    rec = record_from_matches(agent, 40)
    assert rec.inputs.shape == (40, len(FEATURES)) and "matches of weighted vs slowpoke" in rec.source
    report = export_agent(agent, "onnx", tmp_path / "exp", rec, required=40)
    assert report.parity.passed and report.parity.mismatches == 0 and report.parity.module_mismatches == 0
    meta = json.loads((tmp_path / "exp" / EXPORT_FILE).read_text())
    assert meta["game"] == {"name": "quickdraw", "version": "quickdraw 1"}
    assert meta["action_names"] == list(ACTIONS) and meta["layout"]["features"] == list(FEATURES)
    assert meta["layout"]["shape"] == [len(FEATURES)] and meta["layout"]["frame_stack"] == 1
    served = load_export(tmp_path / "exp")
    assert served.game == "quickdraw" and served.action_names == ACTIONS
    np.testing.assert_array_equal(served.runtime.actions(rec.inputs.astype(np.float32)), rec.actions)


def test_the_int8_win_rate_check_plays_the_agents_own_game_against_its_opponents(quickdraw, tmp_path):
    from bcarena.eval.service.quantize import QuantizeError, RuntimeAgent, export_int8, paired_win_rates

    _, files = quickdraw
    agent = load_agent(files["weighted"])
    rec = record_from_matches(agent, 40)
    served = load_export(export_agent(agent, "onnx", tmp_path / "exp", rec, required=40).path)
    player = RuntimeAgent(served.runtime, served.layout, "weighted[onnx]", agent)
    assert player.game == "quickdraw" and player.action_names == list(ACTIONS)
    wins = paired_win_rates(agent, player, "slowpoke", 30, seed=5)
    expected = evaluate_game_matches(agent, "slowpoke", 30, "quickdraw", seed=5).win_rate
    # one game per seed (quick-draw has no sides to swap); the exported model decides every game as the agent does
    assert wins["games"] == 30 and wins["fp32"]["win_rate"] == wins["int8"]["win_rate"] == expected
    assert wins["difference"] == 0.0 and wins["games_decided_differently"] == 0 and wins["accepted"]
    with pytest.raises(
        QuantizeError, match=r"'pro' is not an opponent of game 'quickdraw' .*opponents are \['slowpoke'\]"
    ):
        export_int8(agent, tmp_path / "int8", rec, opponent="pro", required=40)
    assert not (tmp_path / "int8").exists()


def test_the_requirements_check_of_a_quickdraw_agent_uses_its_games_opponents_and_skills(quickdraw, tmp_path):
    _, files = quickdraw
    agent = load_agent(files["weighted"])
    text = (
        "name: qd\nserving: {format: onnx, max_model_mb: 1}\nlatency:\n  - {batch: 1, p99_ms: 100}\n"
        "win_rate:\n  - {opponent: slowpoke, min: 0.0, matches: 20, seed: 3}\n"
        "offline:\n  min: {recall_shoot: 0.0, event_recall_shoot: 0.0, event_f1_any_skill: 0.0}\n"
    )
    req = load_requirements(_write(tmp_path, text), "quickdraw")
    dataset = ActionDataset.load(files["dataset"])
    report = check_requirements(agent, req, files["weighted"], files["dataset"], parity_observations=40)
    rows = {r.requirement: r for r in report.rows}
    assert rows["action parity (onnx vs torch)"].passed and rows["action parity (onnx vs torch)"].value == 0
    assert (
        report.details["export"]["parity"]["observations"] >= 40
        and "dataset" in report.details["observations"]["source"]
    )
    expected = evaluate_game_matches(agent, "slowpoke", 20, "quickdraw", seed=3)
    assert rows["win rate vs slowpoke"].value == expected.win_rate
    assert report.details["win_rate vs slowpoke"]["wins"] == expected.wins
    for name in ("recall_shoot", "event_recall_shoot", "event_f1_any_skill"):
        row = rows[f"offline {name} (test)"]
        assert row.passed and 0 <= row.value <= 1, row
    assert report.details["offline"]["frames"] == int((dataset.table["split"] == "test").sum())


def test_requirements_naming_what_the_game_lacks_are_refused_naming_the_game(quickdraw, tmp_path):
    _, files = quickdraw
    agent = load_agent(files["weighted"])
    duel_bounds = (
        "name: duel-release\nwin_rate:\n  - {opponent: brawler, min: 0.5}\noffline:\n  min: {recall_light: 0.1}\n"
    )
    with pytest.raises(RequirementsError) as err:
        load_requirements(_write(tmp_path, duel_bounds), "quickdraw")
    message = str(err.value)
    assert "win_rate.0.opponent" in message and "'brawler' is neither a bot of game 'quickdraw'" in message
    assert (
        "its opponents are ['slowpoke']" in message
        and "unknown offline metric 'recall_light' for game 'quickdraw'" in message
    )
    duel_req = load_requirements(_write(tmp_path, duel_bounds))  # fine for Duel ...
    with pytest.raises(
        RequirementsError, match=r"requirements 'duel-release' for quickdraw agent 'weighted': win_rate"
    ):
        check_requirements(agent, duel_req)  # ... refused for a quick-draw agent before anything is measured
    boxing = load_requirements(_write(tmp_path, "name: box\ngame: boxing\nwin_rate:\n  - {opponent: cpu, min: 0.9}\n"))
    with pytest.raises(
        RequirementsError, match="requirements 'box' are for game 'boxing'; agent 'weighted' plays 'quickdraw'"
    ):
        requirements_for_game(boxing, quickdraw[0], agent.name)
    with pytest.raises(RequirementsError, match=r"req.yaml: game: unknown game 'chess'; known games are \["):
        load_requirements(_write(tmp_path, "game: chess\n"))


# ----------------------------------------------------------------------------------------------- ALE Boxing
@pytest.fixture(scope="module")
def boxing():
    pytest.importorskip("ale_py")
    from bcarena.envs.games import get_game

    return get_game("boxing")


def _boxing_mlp(game) -> TorchAgent:
    torch.manual_seed(0)
    n = len(game.state_features)
    model = ScoreModel(MLPPolicy(n, game.num_actions, (16,)), torch.zeros(n), torch.ones(n))
    return TorchAgent(model, list(game.action_names), list(game.skill_actions), 1, name="box-mlp", game="boxing")


def test_a_boxing_ram_agent_exports_with_parity_on_bouts_against_the_cpu(boxing, tmp_path):
    agent = _boxing_mlp(boxing)
    rec = record_from_matches(agent, 300)  # the bout stops once 300 distinct inputs are recorded
    assert rec.inputs.shape == (300, len(boxing.state_features)) and "vs cpu, seeds 0..0" in rec.source
    report = export_agent(agent, "onnx", tmp_path / "exp", rec, required=300)
    assert report.parity.passed and report.parity.max_abs_score_diff < 1e-4
    meta = report.metadata
    assert meta["game"] == {"name": "boxing", "version": boxing.version} and meta["action_names"] == list(
        boxing.action_names
    )
    assert meta["layout"]["features"] == list(boxing.state_features)
    served = load_export(tmp_path / "exp")
    assert served.game == "boxing" and served.layout.shape == (len(boxing.state_features),)
    np.testing.assert_array_equal(served.runtime.actions(rec.inputs), rec.actions)


def test_a_boxing_pixel_agent_exports_its_frame_stacks_with_parity(boxing, tmp_path):
    torch.manual_seed(0)
    model = ScoreModel(CNNPolicy(4, boxing.num_actions, (4, 8, 8), hidden=16), torch.tensor(0.0), torch.tensor(255.0))
    agent = TorchAgent(model, list(boxing.action_names), list(boxing.skill_actions), 4, name="box-cnn", game="boxing")
    rec = record_from_matches(agent, 100)
    assert rec.inputs.shape == (100, 4, 84, 84) and rec.inputs.dtype == np.uint8
    report = export_agent(agent, "onnx", tmp_path / "exp", rec, required=100)
    assert report.parity.passed and report.layout.frame_stack == 4 and report.layout.wire_dtype == "uint8"
    assert load_export(tmp_path / "exp").action_names == boxing.action_names


@pytest.mark.slow
def test_the_requirements_check_of_a_boxing_agent_plays_bouts_against_the_cpu(boxing, tmp_path):
    agent = _boxing_mlp(boxing)
    text = "game: boxing\nserving: {format: onnx}\nwin_rate:\n  - {opponent: cpu, min: 0.0, matches: 2}\n"
    report = check_requirements(agent, load_requirements(_write(tmp_path, text)), parity_observations=300)
    rows = {r.requirement: r for r in report.rows}
    assert rows["action parity (onnx vs torch)"].passed
    expected = evaluate_game_matches(agent, "cpu", 2, "boxing")
    assert rows["win rate vs cpu"].value == expected.win_rate
    with pytest.raises(
        RequirementsError, match=r"'brawler' is neither a bot of game 'boxing' \(its opponents are \['cpu'\]\)"
    ):
        load_requirements(_write(tmp_path, "win_rate:\n  - {opponent: brawler, min: 0.5}\n"), "boxing")
