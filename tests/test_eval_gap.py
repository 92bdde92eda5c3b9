import json
import re

import numpy as np
import pandas as pd
import pytest
from fixtures.quickdraw_data import quickdraw_files, registered_quickdraw
from scipy.stats import spearmanr
from typer.testing import CliRunner

from bcarena.agents.base import BotAgent
from bcarena.eval.errors import EvalError
from bcarena.eval.gap import gap_report
from bcarena.eval.stats import spearman_bootstrap
from bcarena.experiments.cli import app
from bcarena.recordings.converter import make_duel_dataset
from bcarena.recordings.dataset import ActionDataset

AGENTS = ["pro", "pro[skill_drop=1]", "pro[skill_drop=0.6]", "pro[random=0.4]", "mover", "brawler"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("gap")
    return make_duel_dataset(
        out, "pro", ("brawler", "turtle"), episodes=8, seed=11, split=(0.5, 0.0, 0.5), pixels=False
    )


@pytest.fixture(scope="module")
def report(dataset):
    return gap_report(AGENTS, dataset, ["brawler"], matches=40, seed=0, n_boot=400)


def test_spearman_bootstrap_against_scipy_and_edge_cases():
    x = [0.1, 0.4, 0.35, 0.8, 0.9, 0.2]
    y = [0.0, 0.5, 0.6, 0.7, 1.0, 0.1]
    c = spearman_bootstrap(x, y, n_boot=500)
    ref = spearmanr(x, y)
    assert c.rho == pytest.approx(ref.statistic) and c.p_value == pytest.approx(ref.pvalue)
    assert c.ci95[0] <= c.rho <= c.ci95[1] <= 1 and c.bootstrap_valid <= 500
    assert spearman_bootstrap(x, y, n_boot=500).to_dict() == c.to_dict()  # seeded
    perfect = spearman_bootstrap([1, 2, 3, 4], [10, 20, 30, 40], n_boot=200)
    assert perfect.rho == pytest.approx(1.0) and perfect.ci95 == pytest.approx((1.0, 1.0))
    assert spearman_bootstrap([1, 2], [3, 4]).rho is None
    constant = spearman_bootstrap([1, 2, 3], [0.0, 0.0, 0.0])
    assert constant.rho is None and "constant" in constant.note
    dropped = spearman_bootstrap([1, None, 3, 4], [1, 2, np.nan, 4])
    assert dropped.n == 2 and dropped.rho is None


def test_gap_report_shows_accuracy_and_win_rate_side_by_side(report, tmp_path):
    rows = {r.agent: r for r in report.rows}
    assert list(rows) == AGENTS
    pro, naive = rows["pro"], rows["pro[skill_drop=1]"]
    # The story: the skill-less copy is about as accurate frame by frame, and never wins.
    assert naive.offline["accuracy"] > pro.offline["accuracy"] - 0.05
    assert naive.win_rate == 0.0 and pro.win_rate > 0.8
    assert naive.offline["event_f1_any_skill"] == 0.0 and naive.offline["event_precision_any_skill"] is None
    assert rows["mover"].win_rate == 0.0
    assert report.correlations["event_f1_any_skill"].rho > report.correlations["accuracy"].rho
    assert report.correlations["event_f1_any_skill"].rho > 0.5
    for c in report.correlations.values():
        assert c.rho is None or -1 <= c.rho <= 1
    paths = report.write(tmp_path)
    data = json.loads(paths["json"].read_text())
    assert [a["agent"] for a in data["agents"]] == AGENTS
    assert data["correlations"]["accuracy"]["ci95"] is not None
    md = paths["markdown"].read_text()
    assert "| pro[skill_drop=1] | 0.0% [" in md and "| accuracy |" in md
    for key in ("scatter_accuracy", "scatter_event_f1_any_skill"):
        assert paths[key].read_bytes()[:4] == b"\x89PNG"


def test_gap_report_bad_input(dataset):
    with pytest.raises(EvalError, match="at least 3"):
        gap_report(["pro", "idle"], dataset, ["brawler"])
    with pytest.raises(EvalError, match="at least one opponent"):
        gap_report(AGENTS[:3], dataset, [])
    with pytest.raises(EvalError, match="unknown offline metric"):
        gap_report(AGENTS[:3], dataset, ["brawler"], matches=2, metrics=("accuracy", "vibes"))


def test_cli_offline_gap_and_errors(dataset, tmp_path):
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "eval",
            "offline",
            "--agent",
            "pro[skill_drop=1]",
            "--dataset",
            str(dataset.path),
            "--tolerance",
            "3",
            "--out",
            str(tmp_path / "off"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "undefined" in res.output  # the clone never presses a skill: precision is undefined
    saved = json.loads((tmp_path / "off" / "offline.json").read_text())
    assert saved["tolerance"] == 3 and (tmp_path / "off" / "confusion.png").exists()
    res = runner.invoke(
        app,
        [
            "eval",
            "gap",
            "--agent",
            "pro",
            "--agent",
            "idle",
            "--agent",
            "pro[random=0.5]",
            "--dataset",
            str(dataset.path),
            "--matches",
            "10",
            "--out",
            str(tmp_path / "gap"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "gap" / "gap.md").exists() and (tmp_path / "gap" / "accuracy_vs_win_rate.png").exists()
    broken = tmp_path / "broken"
    table = pd.read_parquet(dataset.path / "frames.parquet").drop(columns=["event_skill_used"])
    ActionDataset.load(dataset.path)  # the original is fine
    broken.mkdir()
    table.to_parquet(broken / "frames.parquet")
    (broken / "manifest.json").write_text((dataset.path / "manifest.json").read_text())
    res = runner.invoke(app, ["eval", "offline", "--agent", "pro", "--dataset", str(broken)])
    assert res.exit_code == 2 and "missing column(s) ['event_skill_used']" in res.output
    res = runner.invoke(app, ["eval", "matches", "--agent", "pro", "--opponent", "champ", "--matches", "5"])
    assert res.exit_code == 2 and "unknown player 'champ'" in res.output and "brawler" in res.output
    res = runner.invoke(app, ["tournament", "pro", "idle", "--matches", "5", "--out", str(tmp_path / "t")])
    assert res.exit_code == 0 and (tmp_path / "t" / "win_rate.png").exists()


# ------------------------------------------------------------ the same agent twice (issue 15, item 12)
def _saved_mlp(folder, seed=0, temperature=1.0):
    import torch

    from bcarena.agents.policies import MLPPolicy, ScoreModel
    from bcarena.agents.selection import Selection
    from bcarena.agents.torch_agent import TorchAgent
    from bcarena.envs.duel import ACTION_NAMES, SKILL_ACTIONS, STATE_DIM

    torch.manual_seed(seed)
    model = ScoreModel(MLPPolicy(STATE_DIM, len(ACTION_NAMES), (16,)), torch.zeros(STATE_DIM), torch.ones(STATE_DIM))
    selection = Selection(mode="temperature" if temperature != 1.0 else "argmax", temperature=temperature)
    return TorchAgent(model, list(ACTION_NAMES), list(SKILL_ACTIONS), 1, selection, name=f"mlp{seed}").save(folder)


@pytest.mark.parametrize(
    "agents, needle",
    [
        (["pro", "brawler", "pro"], r"agents 'pro' and 'pro' are the same agent \(both are the bot 'pro'\)"),
        (
            ["pro[skill_drop=0.9]", "idle", "pro[skill_drop=0.90]"],
            r"agents 'pro\[skill_drop=0.9\]' and 'pro\[skill_drop=0.90\]' are the same agent",
        ),
        (["pro[skill_drop=0]", "idle", "pro"], r"'pro\[skill_drop=0\]' and 'pro' are the same agent"),
    ],
)
def test_gap_report_refuses_the_same_bot_twice(dataset, agents, needle):
    with pytest.raises(EvalError, match=needle + ".*needs distinct agents"):
        gap_report(agents, dataset, ["brawler"], matches=2)


def test_gap_report_refuses_the_same_agent_folder_or_weights_twice(dataset, tmp_path, monkeypatch):
    import shutil

    from bcarena.eval.gap import check_distinct
    from bcarena.eval.matches import load_player

    first = _saved_mlp(tmp_path / "a")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        EvalError,
        match=rf"agents '{re.escape(str(first))}' and 'a/' are the same agent \(the same "
        rf"folder {re.escape(str(first.resolve()))}\)",
    ):
        gap_report([str(first), "idle", "a/"], dataset, ["brawler"], matches=2)
    copy = tmp_path / "copy"
    shutil.copytree(first, copy)
    (copy / "history.json").write_text("{}")  # training logs do not make another agent
    spec = json.loads((copy / "agent.json").read_text())
    (copy / "agent.json").write_text(json.dumps({**spec, "name": "renamed"}))
    with pytest.raises(EvalError, match=r"'a' and 'copy' are the same agent \(identical weights and settings"):
        gap_report(["a", "idle", "copy"], dataset, ["brawler"], matches=2)
    # Other weights, or the same weights decoded differently, are other agents.
    specs = ["a", str(_saved_mlp(tmp_path / "b", seed=1)), str(_saved_mlp(tmp_path / "c", temperature=2.0)), "idle"]
    check_distinct(specs, [load_player(s) for s in specs])


def test_cli_gap_refuses_duplicates(dataset):
    res = CliRunner().invoke(
        app,
        [
            "eval",
            "gap",
            "--agent",
            "pro",
            "--agent",
            "idle",
            "--agent",
            "pro",
            "--dataset",
            str(dataset.path),
            "--matches",
            "2",
        ],
    )
    assert res.exit_code == 2 and "agents 'pro' and 'pro' are the same agent" in res.output


def test_gap_report_ranks_with_kendall_too_and_names_the_best_headline_metric(report):
    assert set(report.kendall) == set(report.correlations)
    assert all(
        k.method == "kendall" and c.method == "spearman"
        for k, c in zip(report.kendall.values(), report.correlations.values())
    )
    best = report.best_predictor()
    assert best in report.headline
    defined = [m for m in report.headline if report.correlations[m].rho is not None]
    assert abs(report.correlations[best].rho) == max(abs(report.correlations[m].rho) for m in defined)
    assert report.summary().startswith(f"Best predictor of {len(report.headline)} summary metrics of win rate across")
    assert f"{best} (Spearman rho {report.correlations[best].rho:+.2f} [" in report.summary()
    data = report.to_dict()
    assert data["best_predictor"] == best and data["kendall"]["accuracy"]["method"] == "kendall"
    assert report.summary() in report.to_markdown()


# ------------------------------------------------------------------------- any game: the quick-draw fixture
@pytest.fixture(scope="module")
def quickdraw(tmp_path_factory):
    with registered_quickdraw() as game:
        yield game, quickdraw_files(tmp_path_factory)


def test_a_quickdraw_gap_report_plays_the_datasets_game(quickdraw, tmp_path):
    _, files = quickdraw
    agents = [str(files[name]) for name in ("naive", "weighted", "logit")]
    data = ActionDataset.load(files["dataset"])
    report = gap_report(agents, data, ["slowpoke"], matches=20, seed=0, split="val", n_boot=100)
    assert report.game == "quickdraw" and report.opponents == ["slowpoke"] and report.to_dict()["game"] == "quickdraw"
    assert [r.agent for r in report.rows] == ["naive", "weighted", "logit"]
    for row, online in zip(report.rows, report.match_reports):
        assert online[0].matches == 20 and set(online[0].action_distribution) == {"idle", "left", "right", "shoot"}
        assert row.win_rate == online[0].win_rate and 0 <= row.offline["accuracy"] <= 1
    assert report.correlations["accuracy"].n == 3
    # The command reads the game from the dataset, and its default opponent is the game's first.
    out = tmp_path / "gap"
    args = ["eval", "gap", *[a for spec in agents for a in ("--agent", spec)], "--dataset", str(files["dataset"])]
    done = CliRunner().invoke(app, [*args, "--matches", "5", "--split", "val", "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert json.loads((out / "gap.json").read_text())["opponents"] == ["slowpoke"]


def test_a_quickdraw_gap_report_refuses_other_games_players(quickdraw, tmp_path):
    _, files = quickdraw
    agents = [str(files[name]) for name in ("naive", "weighted", "logit")]
    data = ActionDataset.load(files["dataset"])
    with pytest.raises(EvalError, match=r"'brawler' is a Duel bot; game 'quickdraw' has players \['slowpoke'"):
        gap_report(agents, data, ["brawler"], matches=2, split="val")
    with pytest.raises(EvalError, match=r"\['gunslinger'\]: built-in quickdraw players have no offline predictions"):
        gap_report([*agents[:2], "gunslinger"], data, ["slowpoke"], matches=2, split="val")
    duel = BotAgent("pro").save(tmp_path / "duel_pro")
    with pytest.raises(EvalError, match=r"agent 'pro' was trained on game 'duel', not 'quickdraw'"):
        gap_report([*agents[:2], str(duel)], data, ["slowpoke"], matches=2, split="val")
