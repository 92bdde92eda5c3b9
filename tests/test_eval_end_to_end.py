"""The whole evaluation story on trained clones (slow; the fast twins use perturbed bots)."""

import json

import pytest
import torch

from bcarena.agents.config import TrainConfig
from bcarena.agents.train import train_bc
from bcarena.eval.gap import gap_report
from bcarena.eval.matches import evaluate_matches
from bcarena.eval.replays import record_side_by_side
from bcarena.eval.tournament import run_tournament
from bcarena.recordings.converter import make_duel_dataset


@pytest.mark.slow
def test_trained_clones_show_the_gap_end_to_end(tmp_path):
    torch.set_num_threads(1)
    data = make_duel_dataset(tmp_path / "data", episodes=60, seed=0, pixels=False)
    naive = train_bc(
        data, TrainConfig(policy="mlp", frame_stack=4, epochs=8), tmp_path / "naive", progress=False, name="naive"
    ).agent
    fixed = train_bc(
        data,
        TrainConfig(policy="mlp", frame_stack=4, epochs=8, loss="weighted_ce", class_weights="inverse"),
        tmp_path / "fixed",
        progress=False,
        name="fixed",
    ).agent
    # 1,000 matches each, the same seed list: the accurate clone loses, the rebalanced one wins.
    naive_online = evaluate_matches(naive, "brawler", 1000, seed=0)
    fixed_online = evaluate_matches(fixed, "brawler", 1000, seed=0)
    assert naive_online.win_rate_ci95[1] < fixed_online.win_rate_ci95[0]
    assert naive_online.skill_use_rate < 0.01 < fixed_online.skill_use_rate

    report = gap_report(
        [naive, fixed, "pro", "pro[skill_drop=1]", "pro[random=0.3]", "brawler", "mover"],
        data,
        ["brawler", "pro"],
        matches=200,
        seed=0,
    )
    rows = {r.agent: r for r in report.rows}
    assert rows["naive"].offline["accuracy"] > rows["fixed"].offline["accuracy"]
    assert rows["naive"].win_rate < rows["fixed"].win_rate
    corr = report.correlations
    assert corr["balanced_accuracy"].rho > corr["accuracy"].rho
    paths = report.write(tmp_path / "gap")
    assert json.loads(paths["json"].read_text())["correlations"]["accuracy"]["ci95"] is not None

    video = record_side_by_side(naive, fixed, "pro", 3, tmp_path / "story.mp4", ("naive clone", "fixed clone"))
    assert video["left"]["skill_actions"][0] < video["right"]["skill_actions"][0]
    t = run_tournament([naive, fixed, "pro", "brawler"], matches=100, seed=0)
    ranks = {r.player: r.rank for r in t.ratings}
    assert ranks["fixed"] < ranks["naive"]
