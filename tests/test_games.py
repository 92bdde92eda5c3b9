"""The Game interface: the registry, the one action-name check, plugins, and a third game end to end.

The third game (``tests/fixtures/quickdraw.py``) is registered only through ``register_game`` and
goes record -> dataset -> train -> matches -> run folder with no edit anywhere else.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.quickdraw import ACTIONS, SHOOT, quickdraw_game
from fixtures.quickdraw_data import quickdraw_files, registered_quickdraw

from bcarena.envs.games import (
    GameError,
    GamePluginError,
    MatchOptions,
    UnknownGameError,
    check_agent_for_game,
    get_game,
    list_games,
    register_game,
    unregister_game,
)
from bcarena.envs.play import play


@pytest.fixture
def quickdraw():
    register_game("quickdraw", quickdraw_game, replace=True)
    yield get_game("quickdraw")
    unregister_game("quickdraw")


def test_the_built_in_games_describe_themselves_without_loading_boxing_until_asked():
    assert {"duel", "boxing"} <= set(list_games())
    duel = get_game("duel")
    assert duel.num_players == 2 and duel.action_names[duel.skill_actions[0]] == "light"
    assert duel.obs_shapes == {"state": (37,), "pixels": (84, 84, 1)} and "brawler" in duel.opponents
    assert list(duel.experts) == ["pro"] and duel.timing(duel.make_config({})) == (10.0, 6, 60)
    boxing = get_game("boxing")
    assert boxing.num_players == 1 and list(boxing.opponents) == ["cpu"] and list(boxing.experts) == ["expert"]
    assert boxing.action_names[:3] == ("NOOP", "FIRE", "UP") and len(boxing.skill_actions) == 9
    assert boxing.player("cpu") is None  # played by the console inside the match


def test_unknown_games_and_players_are_one_line_errors_listing_what_exists():
    with pytest.raises(UnknownGameError, match=r"^unknown game 'chess'; known games are \[.*'boxing', 'duel'"):
        get_game("chess")
    with pytest.raises(GameError, match=r"game 'boxing' has no player 'pro'; its players are \['cpu', 'expert'\]"):
        get_game("boxing").player("pro")


def test_the_one_name_check_refuses_other_games_and_other_spellings():
    boxing = get_game("boxing")
    with pytest.raises(GameError, match="agent 'x' was trained on game 'duel', not 'boxing'"):
        check_agent_for_game("x", "duel", get_game("duel").action_names, boxing)
    lower = [name.lower() for name in boxing.action_names]  # what older bcarena wrote for Boxing datasets
    with pytest.raises(
        GameError, match=r"trained on actions \['noop', 'fire'.*boxing's 18 actions are \['NOOP'.*retrain"
    ):
        check_agent_for_game("old", "boxing", lower, boxing)
    assert check_agent_for_game("ok", "boxing", list(boxing.action_names), "boxing") is boxing


def test_plugins_that_fail_to_import_or_break_the_match_contract_are_named(quickdraw):
    register_game("broken", "no_such_module_for_bcarena:game")
    try:
        with pytest.raises(GamePluginError, match=r"^game 'broken' failed to load \(ModuleNotFoundError: "):
            get_game("broken")
    finally:
        unregister_game("broken")
    wrong = replace(quickdraw, name="wrongshape", observation_spaces={**quickdraw.observation_spaces})
    wrong = replace(wrong, state_features=(*quickdraw.state_features, "extra"))
    wrong.observation_spaces["state"] = type(quickdraw.observation_spaces["state"])(-1, 1, (6,), np.float32)
    register_game("wrongshape", wrong)
    try:
        with pytest.raises(
            GamePluginError, match=r"game 'wrongshape': state observations are float32 \(2, 5\), expected"
        ):
            get_game("wrongshape").match(2)
    finally:
        unregister_game("wrongshape")


def test_quickdraw_plays_on_the_one_loop_and_the_expert_beats_the_slowpoke(quickdraw):
    match = quickdraw.match(64, options=MatchOptions(frozenset({"state", "pixels"})))
    policies = [quickdraw.player("gunslinger"), quickdraw.player("slowpoke")]
    play(match, policies, np.arange(64))
    outcome = quickdraw.result(match)
    assert match.done.all() and outcome.winner.shape == (64,) and outcome.score.shape == (64, 2)
    assert (outcome.winner == 0).mean() > 0.6 and (outcome.winner == 1).sum() == 0  # draws when both shoot at +3
    assert match.observe(0, "pixels").shape == (64, 84, 84, 1)


def test_quickdraw_goes_record_dataset_train_matches(quickdraw, tmp_path: Path):
    from bcarena.agents.base import load_agent
    from bcarena.agents.config import make_train_config
    from bcarena.agents.train import train_bc
    from bcarena.eval.matches import evaluate_matches
    from bcarena.recordings import RecordOptions, build_dataset, record_episodes

    torch.set_num_threads(1)  # small nets, and a shared machine
    record_episodes("gunslinger", ["slowpoke"], 12, tmp_path / "rec", 0, "quickdraw", RecordOptions(progress=False))
    data = build_dataset(tmp_path / "rec", tmp_path / "ds", split=(0.6, 0.2, 0.2), progress=False)
    m = data.manifest
    assert m["game"] == "quickdraw" and m["action_names"] == list(ACTIONS) and m["skill_actions"] == [SHOOT]
    assert 0 < m["class_counts"]["shoot"] < 0.2 * m["num_frames"] and m["event_counts"]["skill_used"] == 12
    train_bc(
        data,
        make_train_config({"loss": "weighted_ce", "class_weights": "inverse", "epochs": 1}),
        tmp_path / "a",
        progress=False,
    )
    agent = load_agent(tmp_path / "a" / "agent")
    assert agent.game == "quickdraw" and agent.action_names == list(ACTIONS)
    report = evaluate_matches(agent, "slowpoke", 20, seed=100)
    assert report.matches == 20 and report.opponent == "slowpoke" and set(report.action_distribution) == set(ACTIONS)
    with pytest.raises(GameError, match="trained on game 'quickdraw', not 'duel'"):
        check_agent_for_game(agent.name, agent.game, agent.action_names, "duel")


@pytest.mark.slow  # ~15 s of runner on an idle machine; the fast twin above covers record -> matches
def test_quickdraw_experiment_writes_a_run_folder(quickdraw, tmp_path: Path):
    from bcarena.experiments.runner import run_experiment

    torch.set_num_threads(1)
    experiment = tmp_path / "quickdraw.yaml"
    experiment.write_text(
        "name: quickdraw_story\ngame: {name: quickdraw, patience: 6}\n"
        "recording: {player: gunslinger, opponents: [slowpoke], episodes: 10}\n"
        "dataset: {split: [0.6, 0.2, 0.2]}\n"
        "variants:\n  - {name: naive, train: {loss: ce, epochs: 2}}\n"
        "  - {name: weighted, train: {loss: weighted_ce, class_weights: inverse, epochs: 2}}\n"
        "evaluation: {opponents: [slowpoke], matches: 10, reference: gunslinger,\n"
        "  replay: {side_by_side: [naive, weighted], opponent: slowpoke}}\n"
        "tracking: {mlflow: false}\n"
    )
    run = run_experiment(experiment, tmp_path / "runs", progress=False)
    results = json.loads((run / "results.json").read_text())
    rows = {a["agent_id"]: a for a in results["agents"]}
    assert set(rows) == {"naive-s0", "weighted-s0", "gunslinger"} and not any(a["error"] for a in rows.values())
    assert rows["gunslinger"]["online"]["slowpoke"]["matches"] == 10
    assert (run / "replays" / "side_by_side.mp4").stat().st_size > 0 and (run / "table.md").is_file()


def test_experiments_name_their_game_and_its_opponents(tmp_path: Path):
    from bcarena.experiments.config import ExperimentError, load_experiment

    def load(text: str):
        path = tmp_path / "e.yaml"
        path.write_text("name: e\nvariants: [{name: v}]\n" + text)
        return load_experiment(path)

    assert load("game: {round_seconds: 10}\n").duel_config.round_seconds == 10  # the old form: Duel's rules
    assert load("game: {name: duel, round_seconds: 10}\n").game_name == "duel"
    boxing = "game: {name: boxing}\nrecording: {player: expert, opponents: [cpu]}\nevaluation: {reference: expert, "
    assert load(boxing + "opponents: [cpu], replay: {opponent: cpu}}\n").game_config.frameskip == 6
    with pytest.raises(
        ExperimentError, match=r"evaluation.opponents.0: game 'boxing' has opponents \['cpu'\], not 'brawler'"
    ):
        load(boxing + "opponents: [brawler], replay: {opponent: cpu}}\n")
    with pytest.raises(ExperimentError, match=r"game: unknown game 'chess'; known games are"):
        load("game: {name: chess}\n")
    with pytest.raises(ExperimentError, match=r"game: game 'boxing': unknown option\(s\) \['round_seconds'\]"):
        load("game: {name: boxing, round_seconds: 3}\n")
    # sticky actions in the evaluation's bouts only: the recordings keep the exact, replayable emulator
    sticky = load(boxing + "opponents: [cpu], replay: {opponent: cpu}, game: {repeat_action_probability: 0.25}}\n")
    assert sticky.evaluation_game_config.repeat_action_probability == 0.25
    assert sticky.game_config.repeat_action_probability == 0.0 and sticky.evaluation_game_config.frameskip == 6
    with pytest.raises(ExperimentError, match=r"evaluation.game: game 'boxing': unknown option\(s\) \['round_s"):
        load(boxing + "opponents: [cpu], replay: {opponent: cpu}, game: {round_seconds: 3}}\n")
    with pytest.raises(ExperimentError, match=r"evaluation.game.name: names no game: evaluations play the experim"):
        load(boxing + "opponents: [cpu], replay: {opponent: cpu}, game: {name: duel}}\n")


# ------------------------------------------- the rest of the pipeline on quick-draw: sweep, dashboard, datasets
@pytest.fixture(scope="module")
def quickdraw_files_(tmp_path_factory):
    with registered_quickdraw():
        yield quickdraw_files(tmp_path_factory)


QUICKDRAW_EXPERIMENT = (
    "name: qd\ngame: {name: quickdraw, patience: 6}\nrecording: {player: gunslinger, opponents: [slowpoke]}\n"
    "evaluation: {opponents: [slowpoke], reference: gunslinger, replay: {opponent: slowpoke}}\n"
    "variants: [{name: naive, train: {loss: ce, epochs: 2}}]\n"
)


def test_a_sweep_trial_plays_the_experiments_game(quickdraw_files_, tmp_path: Path):
    from bcarena.experiments.config import game_setup
    from bcarena.experiments.sweep import SweepError, SweepSettings, TrialSetup, _check_sweep, run_trial

    game, config = game_setup({"name": "quickdraw", "patience": 6})  # the runner's resolution, not DuelConfig
    assert game.name == "quickdraw" and config.patience == 6
    setup = TrialSetup(
        dataset_dir=str(quickdraw_files_["dataset"]),
        base_train={"loss": "ce"},
        fixed={},
        opponent="slowpoke",
        matches=10,
        match_seed=1_000_000,
        epochs=2,
        eval_every=1,
        train_seed=0,
        game={"name": "quickdraw", "patience": 6},
    )
    reports: list[dict] = []
    run_trial({"loss": "weighted_ce", "class_weights": "inverse"}, setup, reports.append)
    assert [r["epoch"] for r in reports] == [1, 2] and all(0 <= r["win_rate"] <= 1 for r in reports)
    experiment = tmp_path / "qd.yaml"
    experiment.write_text(QUICKDRAW_EXPERIMENT)
    exp, base, epochs = _check_sweep(experiment, SweepSettings(opponent="slowpoke"), None)
    assert (exp.game_name, base.name, epochs) == ("quickdraw", "naive", 2)
    with pytest.raises(SweepError, match=r"^opponent: game 'quickdraw' has opponents \['slowpoke'\], not 'brawler'"):
        _check_sweep(experiment, SweepSettings(opponent="brawler"), None)


def test_the_dashboards_blind_replays_play_the_runs_game(quickdraw_files_, tmp_path: Path):
    import shutil

    from bcarena.experiments import dashboard as dash
    from bcarena.experiments.results import AgentResult

    run = tmp_path / "runs" / "qd" / "20250101-120000"
    (run / "replays").mkdir(parents=True)
    (run / "config.resolved.yaml").write_text(QUICKDRAW_EXPERIMENT)
    shutil.copytree(quickdraw_files_["naive"], tmp_path / "runs" / ".cache" / "naive" / "agent")
    naive = AgentResult("naive-s0", "naive", 0, "bc", str(tmp_path / "runs" / ".cache" / "naive" / "agent"))
    expert = AgentResult("gunslinger", "gunslinger", None, "bot", None)
    for agent in (naive, expert):
        path = dash.blind_replay(run, agent, "slowpoke", 10_000)
        assert path.name == f"blind_{agent.agent_id}_vs_slowpoke_s10000.mp4" and path.stat().st_size > 1_000
    with pytest.raises(dash.RunFolderError, match=r"pro: not a known bot of quickdraw; its built-in players are \["):
        dash.player_spec(run, AgentResult("pro", "pro", None, "bot", None))
    (run / "config.resolved.yaml").write_text("name: qd\ngame: {name: chess}\n")
    with pytest.raises(dash.RunFolderError, match=r"config.resolved.yaml: game: unknown game 'chess'"):
        dash.player_spec(run, expert)


def test_dataset_stats_and_minari_export_of_quickdraw(quickdraw_files_, tmp_path: Path, monkeypatch):
    from typer.testing import CliRunner

    from bcarena.experiments.cli import app

    pytest.importorskip("minari")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    cli, data = CliRunner(), str(quickdraw_files_["dataset"])
    stats = cli.invoke(app, ["dataset", "stats", data, "--json", str(tmp_path / "stats.json")])
    assert stats.exit_code == 0 and "quickdraw dataset" in stats.output, stats.output
    counts = json.loads((tmp_path / "stats.json").read_text())
    assert [c["action"] for c in counts["classes"]] == list(ACTIONS) and counts["event_counts"]["skill_used"] == 12
    assert counts["missing_classes"] == [] and counts["episode_lengths"]["count"] == 12
    export = cli.invoke(app, ["dataset", "export-minari", data, "bcarena/quickdraw-test-v0"])
    assert export.exit_code == 0 and "Minari dataset bcarena/quickdraw-test-v0: 12 episodes" in export.output
