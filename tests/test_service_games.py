"""The service commands check games with the one exact name check, and ``bcarena ab`` plays the agents' own game."""

import json

import numpy as np
import pytest
import torch
from fixtures.quickdraw import ACTIONS, SHOOT
from fixtures.quickdraw_data import registered_quickdraw
from typer.testing import CliRunner

from bcarena.agents.policies import MLPPolicy, ScoreModel
from bcarena.agents.torch_agent import TorchAgent
from bcarena.envs.duel import ACTION_NAMES, SKILL_ACTIONS
from bcarena.envs.games import GameError
from bcarena.eval.errors import EvalError
from bcarena.eval.service.ab import SprtSettings, ab_game, load_ab_player, run_ab
from bcarena.experiments.cli import app

runner = CliRunner()
torch.set_num_threads(1)  # tiny nets on a shared machine: more threads only contend


def _agent(game: str, actions: list[str], skills: list[int], features: int, seed: int = 0) -> TorchAgent:
    torch.manual_seed(seed)
    model = ScoreModel(MLPPolicy(features, len(actions), (8,)), torch.zeros(features), torch.ones(features))
    return TorchAgent(model, actions, skills, 1, name=f"{game}-mlp{seed}", game=game)


@pytest.fixture()
def quickdraw(tmp_path):
    """Quick-draw registered, with an untrained agent of it and a Duel agent."""
    with registered_quickdraw() as game:
        yield {
            "game": game,
            "agent": _agent("quickdraw", list(ACTIONS), [SHOOT], len(game.state_features)).save(tmp_path / "qd"),
            "duel": _agent("duel", list(ACTION_NAMES), list(SKILL_ACTIONS), 37).save(tmp_path / "duel"),
        }


def test_ab_on_quickdraw_agents_plays_quickdraw_matches(quickdraw):
    specs = [str(quickdraw["agent"]), "gunslinger"]  # the expert is one of quick-draw's own players
    game = ab_game(specs)
    assert game == "quickdraw"
    champion, challenger = (load_ab_player(s, game=game) for s in specs)
    result = run_ab(champion, challenger, SprtSettings(max_matches=200, batch=40), game=game)
    data = result.to_dict()
    # The expert draws after the signal; an untrained net never wins a duel against it.
    assert data["game"] == "quickdraw" and data["decision"] == "H1" and data["wdl"]["losses"] == 0, data["wdl"]
    assert data["matches"] <= 200 and data["elo"] > 100


def test_ab_refuses_agents_of_two_games_and_duel_bots_in_quickdraw(quickdraw):
    with pytest.raises(EvalError, match="quickdraw") as err:
        ab_game([str(quickdraw["duel"]), str(quickdraw["agent"])])
    assert "duel" in str(err.value)
    with pytest.raises(EvalError, match="'brawler' is a Duel bot; game 'quickdraw' has players"):
        load_ab_player("brawler", game="quickdraw")


def test_the_ab_command_writes_the_game_it_played(quickdraw, tmp_path):
    out = tmp_path / "ab"
    args = ["ab", str(quickdraw["agent"]), "gunslinger", "--max-matches", "40", "--batch", "40", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads((out / "ab.json").read_text())
    assert data["game"] == "quickdraw" and data["matches"] == 40


def test_export_and_check_refuse_an_agent_whose_actions_are_not_its_games_exactly(quickdraw, tmp_path):
    from bcarena.agents import load_agent
    from bcarena.eval.service.export import ParityInputs, export_agent
    from bcarena.eval.service.requirements import Requirements, check_requirements

    agent = load_agent(quickdraw["agent"])
    agent.action_names = [name.upper() for name in agent.action_names]  # not quick-draw's names, exactly
    message = r"agent 'quickdraw-mlp0' was trained on actions \['IDLE', .*; quickdraw's 4 actions are \['idle'"
    recording = ParityInputs(np.zeros((1, 5), np.float32), np.zeros(1, np.int64), "none")
    with pytest.raises(GameError, match=message):
        export_agent(agent, "onnx", tmp_path / "export", recording)
    with pytest.raises(GameError, match=message):
        check_requirements(agent, Requirements())
    assert not (tmp_path / "export").exists()
