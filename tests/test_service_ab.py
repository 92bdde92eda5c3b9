"""Champion/challenger A/B: the GSPRT against closed forms and its own approximation, paired matches, the CLI."""

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from bcarena.agents.base import BotAgent
from bcarena.envs.duel import DuelConfig
from bcarena.eval.service.ab import (
    AbResult,
    SprtError,
    SprtSettings,
    elo_estimate,
    llr_exact,
    llr_normal,
    logistic_score,
    mle_expected,
    pair_counts,
    run_ab,
    score_to_elo,
    sprt_bounds,
)
from bcarena.experiments.benchmarks.ab_null import ShiftedNoise, null_runs
from bcarena.experiments.cli import app

runner = CliRunner()
SHORT = DuelConfig(round_seconds=8.0)


def test_without_draws_the_trinomial_gsprt_is_the_binomial_likelihood_ratio():
    """W wins, L losses, no draws: the MLE under mean s is Bernoulli(s): LLR = W ln(s1/s0) + L ln((1-s1)/(1-s0))."""
    s0, s1 = logistic_score(0.0), logistic_score(20.0)
    for wins, losses in ((60, 40), (30, 45), (500, 480)):
        closed = wins * math.log(s1 / s0) + losses * math.log((1 - s1) / (1 - s0))
        assert llr_exact(np.array([losses, 0, wins]), 0.0, 20.0) == pytest.approx(closed, abs=2e-3)


def test_the_exact_gsprt_and_its_normal_approximation_agree_on_ordinary_results():
    for counts in ([100, 200, 130], [40, 100, 60], [5, 20, 40, 25, 10], [30, 120, 400, 140, 40]):
        exact, approx = llr_exact(np.array(counts), 0, 20), llr_normal(np.array(counts), 0, 20)
        assert approx == pytest.approx(exact, rel=0.02), counts
    assert llr_exact(np.array([100, 200, 130]), 0, 20) == pytest.approx(1.9011, abs=1e-3)  # recorded value
    # One side winning everything: the approximation explodes (regularized variance ~0), the exact LLR does not.
    assert llr_exact(np.array([0, 0, 10]), 0, 20) == pytest.approx(0.559, abs=1e-3)
    assert llr_normal(np.array([0, 0, 10]), 0, 20) > 100


def test_the_constrained_mle_has_the_requested_mean_and_keeps_the_shape():
    scores, probs = np.array([0.0, 0.25, 0.5, 0.75, 1.0]), np.array([0.05, 0.2, 0.4, 0.25, 0.1])
    for s in (0.45, 0.5, logistic_score(20)):
        q = mle_expected(scores, probs, s)
        assert q.sum() == pytest.approx(1.0) and np.dot(scores, q) == pytest.approx(s, abs=1e-9)
        assert np.all(q > 0)
    assert np.allclose(mle_expected(scores, probs, float(np.dot(scores, probs))), probs, atol=1e-9)


def test_bounds_elo_and_los():
    assert sprt_bounds(0.05, 0.05) == pytest.approx((-math.log(19), math.log(19)))
    assert score_to_elo(logistic_score(35.0)) == pytest.approx(35.0)
    even = elo_estimate(np.array([10, 30, 10]))
    assert even["elo"] == pytest.approx(0.0, abs=1e-9) and even["los"] == pytest.approx(0.5)
    ahead = elo_estimate(np.array([0, 2, 10, 6, 2]))  # pentanomial: pair mean 0.6
    assert ahead["elo"] == pytest.approx(score_to_elo(0.6)) and 0.98 < ahead["los"] < 1
    assert ahead["elo_ci95"][0] < ahead["elo"] < ahead["elo_ci95"][1]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"elo0": 20.0, "elo1": 0.0}, "SPRT bounds are inverted: H1 (0 Elo) must be above H0 (20 Elo)"),
        ({"elo0": 5.0, "elo1": 5.0}, "SPRT bounds are inverted"),
        ({"alpha": 0.0}, "SPRT alpha must lie in (0, 0.5), got 0"),
        ({"beta": 0.5}, "SPRT beta must lie in (0, 0.5), got 0.5"),
        ({"max_matches": 0}, "the match budget must be >= 2 games (one pair), got 0"),
        ({"model": "binomial"}, "SPRT model must be one of ['trinomial', 'pentanomial']"),
    ],
)
def test_bad_sprt_settings_are_one_line_errors(kwargs, message):
    with pytest.raises(SprtError) as info:
        SprtSettings(**kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_pairs_are_counted_as_games_and_as_pairs():
    first, second = np.array([1.0, 0.5, 0.0, 1.0]), np.array([1.0, 0.0, 0.0, 0.5])
    tri, penta = pair_counts(first, second)
    assert tri.tolist() == [3, 2, 3] and penta.tolist() == [1, 1, 0, 1, 1]
    result = AbResult("a", "b", "head-to-head", SprtSettings(batch=8))
    result.update(first, second)
    assert result.matches == 8 and result.to_dict()["pentanomial"] == [1, 1, 0, 1, 1]


@pytest.mark.parametrize("model", ["pentanomial", "trinomial"])
def test_a_clearly_better_challenger_reaches_h1_head_to_head(model):
    settings = SprtSettings(model=model, max_matches=400, batch=40)
    result = run_ab(BotAgent("idle"), BotAgent("brawler"), settings, config=SHORT)
    data = result.to_dict()
    assert data["decision"] == "H1" and data["llr"] >= data["bounds"][1] and data["matches"] <= 200
    assert data["wdl"]["wins"] > 0 and data["wdl"]["losses"] == 0 and data["los"] > 0.99
    assert [t["matches"] for t in data["trace"]] == list(range(40, data["matches"] + 1, 40))


def test_against_a_reference_the_weaker_challenger_reaches_h0():
    settings = SprtSettings(max_matches=400, batch=40)
    result = run_ab(BotAgent("brawler"), BotAgent("idle"), settings, reference=BotAgent("random"), config=SHORT)
    assert result.decision == "H0" and result.opponent == "random" and result.to_dict()["elo"] < 0


def test_mirror_copies_never_reach_h1_fast_twin():
    """Fast twin of the 20-run null benchmark (`bcarena bench ab`): a bot and its shifted-noise copy."""
    outcome = null_runs(BotAgent("brawler"), 3, SprtSettings(max_matches=100, batch=100), SHORT)
    assert outcome["false_positives"] == 0 and len(outcome["runs"]) == 3
    assert len({run["llr"] for run in outcome["runs"]}) == 3  # other seed ranges, other matches


def test_shifted_noise_changes_the_dice_not_the_policy():
    bot = BotAgent("random")
    copy = ShiftedNoise(bot)
    obs = np.zeros((4, 37), dtype=np.float32)
    noise = np.random.default_rng(0).random((4, bot.noise_dims))
    assert copy.noise_dims == bot.noise_dims
    np.testing.assert_array_equal(copy.act_with_noise(obs, noise), bot.act_with_noise(obs, (noise + copy.shift) % 1))


def test_the_cli_writes_the_decision_the_trace_and_the_plot(tmp_path):
    out = tmp_path / "ab"
    result = runner.invoke(
        app,
        ["ab", "idle", "brawler", "--max-matches", "100", "--batch", "50", "--model", "trinomial", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    data = json.loads((out / "ab.json").read_text())
    assert data["decision"] == "H1" and data["sprt"]["model"] == "trinomial" and data["matches"] in (50, 100)
    assert [t["matches"] for t in data["trace"]] == list(range(50, data["matches"] + 1, 50))
    assert {"llr", "llr_normal", "bounds", "trace", "elo", "elo_ci95", "los", "wdl", "pentanomial"} <= set(data)
    assert (out / "ab_llr.png").read_bytes()[:4] == b"\x89PNG"
    assert "H1: LLR" in result.output


@pytest.mark.slow
def test_two_copies_of_a_trained_agent_never_reach_h1_over_20_seed_ranges(pro_ds, tmp_path):
    from bcarena.agents.config import make_train_config
    from bcarena.agents.selection import Selection
    from bcarena.agents.train import train_bc

    cfg = make_train_config({"epochs": 8, "allow_missing_classes": True, "loss": "weighted_ce"})
    agent = train_bc(pro_ds, cfg, progress=False).agent.with_selection(Selection(mode="sample"))
    outcome = null_runs(agent, 20, SprtSettings(max_matches=400, batch=100), SHORT)
    assert outcome["false_positives"] == 0
