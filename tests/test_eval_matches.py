import json

import numpy as np
import pytest
import torch
from statsmodels.stats.proportion import proportion_confint

from bcarena.agents.base import Agent, BotAgent
from bcarena.envs.duel import NUM_ACTIONS
from bcarena.envs.play import PolicyError
from bcarena.eval.errors import EvalError
from bcarena.eval.matches import (
    MatchResults,
    check_agent,
    evaluate_matches,
    load_player,
    match_seeds,
    play_matches,
    summarize,
)
from bcarena.experiments.benchmarks.match_throughput import untrained_agent


def test_same_seed_list_gives_identical_results_in_any_batch_size():
    seeds = match_seeds(7, 60)
    first = play_matches(BotAgent("pro"), BotAgent("brawler"), seeds)
    again = play_matches(BotAgent("pro"), BotAgent("brawler"), seeds, batch_size=16)
    for name in ("winner", "ko", "hp", "length", "damage_dealt", "skills_used", "action_counts"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name), err_msg=name)
    shifted = play_matches(BotAgent("pro"), BotAgent("brawler"), match_seeds(8, 60))
    assert not np.array_equal(first.hp, shifted.hp)  # the seed list really decides the matches


def test_report_numbers_from_hand_made_results():
    results = MatchResults(
        seeds=np.arange(4),
        winner=np.array([0, 0, 1, -1]),
        ko=np.array([True, False, True, False]),
        hp=np.array([[50.0, 0.0], [30.0, 20.0], [0.0, 10.0], [40.0, 40.0]]),
        length=np.array([100, 300, 200, 300]),
        damage_dealt=np.array([[100.0, 50.0], [80.0, 70.0], [90.0, 100.0], [60.0, 60.0]]),
        skills_used=np.array([[10, 5], [8, 4], [6, 9], [2, 2]]),
        action_counts=np.zeros((4, 2, NUM_ACTIONS), dtype=np.int64),
    )
    results.action_counts[:, 0, 0] = [90, 280, 190, 290]  # idle
    results.action_counts[:, 0, 6] = [10, 20, 10, 10]  # heavy
    r = summarize(results, "a", "b", seed=0)
    assert (r.wins, r.draws, r.losses) == (2, 1, 1)
    assert r.win_rate_ci95 == pytest.approx(proportion_confint(2, 4, alpha=0.05, method="wilson"), abs=1e-12)
    assert r.hp_diff_mean == pytest.approx((50 + 10 - 10 + 0) / 4)
    assert r.damage_dealt_mean == pytest.approx(330 / 4) and r.damage_taken_mean == pytest.approx(280 / 4)
    assert r.skill_use_rate == pytest.approx(50 / 900)
    assert r.ko_rate == 0.5 and r.ko_win_rate == 0.25
    assert r.length_mean_frames == 225 and r.length_mean_seconds == pytest.approx(22.5)
    assert r.action_distribution["heavy"] == pytest.approx(50 / 900)
    json.dumps(r.to_dict())


def test_wilson_interval_of_a_real_evaluation_matches_statsmodels():
    r = evaluate_matches("pro[skill_drop=0.7]", "brawler", 150, seed=3)
    assert 0 < r.wins < r.matches
    assert r.win_rate_ci95 == pytest.approx(proportion_confint(r.wins, r.matches, method="wilson"), abs=1e-12)


def test_both_sides_plays_each_seed_from_each_side():
    one = evaluate_matches("pro", "brawler", 40, seed=0)
    both = evaluate_matches("pro", "brawler", 40, seed=0, both_sides=True)
    assert both.matches == 80 and both.sides == [0, 1]
    res = both.results
    np.testing.assert_array_equal(res.seeds, np.r_[np.arange(40), np.arange(40)])
    np.testing.assert_array_equal(res.side, np.r_[np.zeros(40), np.ones(40)])
    np.testing.assert_array_equal(res.winner[:40], one.results.winner)
    # From player 1's side the columns are swapped back to the agent's: the pro wins and guards,
    # the brawler (never guarding) is in column 1.
    assert (res.winner[40:] == 0).mean() > 0.9
    assert res.action_counts[40:, 0, 4].sum() > 0 and res.action_counts[40:, 1, 4].sum() == 0
    idle = evaluate_matches("idle", "brawler", 20, both_sides=True)
    assert idle.wins == 0 and idle.skill_use_rate == 0 and idle.damage_dealt_mean == 0


def test_naive_clone_loses_every_match_with_zero_skill_use():
    r = evaluate_matches("pro[skill_drop=1]", "brawler", 100)
    assert r.wins == 0 and r.skill_use_rate == 0 and r.win_rate_ci95[0] == 0.0
    assert r.action_distribution["guard"] > 0.3


@pytest.fixture
def one_torch_thread():
    """Small batches gain nothing from intra-op threads, and spin-waiting threads crawl on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_torch_agents_play_batched_matches(one_torch_thread):
    mlp = untrained_agent("mlp", frame_stack=2)
    r = evaluate_matches(mlp, "brawler", 32, batch_size=16)
    assert r.matches == 32 and sum(r.action_distribution.values()) == pytest.approx(1.0)
    again = evaluate_matches(mlp, "brawler", 32, batch_size=32)
    assert again.to_dict() == r.to_dict()
    cnn = untrained_agent("cnn", frame_stack=2)
    assert evaluate_matches(cnn, "brawler", 4).matches == 4


def test_unknown_opponent_lists_the_valid_names():
    with pytest.raises(EvalError, match=r"unknown player 'champion'.*\['brawler', 'idle', 'mover', 'pro'"):
        evaluate_matches("pro", "champion", 10)
    with pytest.raises(EvalError, match="unknown bot 'champ'"):
        load_player("champ[skill_drop=0.5]")


def test_zero_matches_is_an_error():
    with pytest.raises(EvalError, match="number of matches must be >= 1, got 0"):
        evaluate_matches("pro", "brawler", 0)
    with pytest.raises(EvalError, match="at least one seed"):
        play_matches(BotAgent("pro"), BotAgent("idle"), [])


class _Fixed(Agent):
    name = "fixed"

    def __init__(self, obs_type="state", out=None):
        self.obs_type = obs_type
        self.out = out

    def _act(self, obs):
        return self.out(obs) if self.out else np.zeros(obs.shape[0], dtype=np.int64)


def test_agents_that_do_not_fit_duel_are_refused_by_name(one_torch_thread):
    with pytest.raises(EvalError, match="agent 'fixed' observes 'rgb'; 'duel' offers \\['state', 'pixels'\\]"):
        check_agent(_Fixed("rgb"))
    wrong_input = untrained_agent("mlp", frame_stack=1, state_dim=40)  # trained on another feature set
    with pytest.raises(EvalError, match=r"'untrained-mlp' cannot act on Duel state observations of shape \(37,\)"):
        evaluate_matches(wrong_input, "brawler", 5)
    with pytest.raises(PolicyError, match=r"'fixed': act\(\) must return \(1,\) integer action ids"):
        check_agent(_Fixed(out=lambda obs: np.zeros((obs.shape[0], 2), dtype=np.int64)))
    with pytest.raises(PolicyError, match=r"'fixed': actions must be in \[0, 8\)"):
        check_agent(_Fixed(out=lambda obs: np.full(obs.shape[0], 9)))

    class Boxer(_Fixed):
        game = "boxing"

    with pytest.raises(EvalError, match="trained on game 'boxing'"):
        check_agent(Boxer())
    other_actions = untrained_agent("mlp")
    other_actions.action_names = [f"a{i}" for i in range(NUM_ACTIONS)]
    with pytest.raises(EvalError, match=r"trained on actions \['a0', 'a1'"):
        check_agent(other_actions)


class _Puncher(Agent):
    """Pixels in, FIRE out: enough to play Boxing end to end."""

    name = "puncher"
    game = "boxing"
    obs_type = "pixels"

    def _act(self, obs):
        assert obs.shape[1:] == (84, 84, 1) and obs.dtype == np.uint8
        return np.full(obs.shape[0], 1, dtype=np.int64)


def test_boxing_bouts_against_the_cpu_are_reported_like_duel_matches():
    from bcarena.eval.boxing import evaluate_boxing

    r = evaluate_boxing(_Puncher(), 2, seed=0, num_envs=2)
    assert r.matches == 2 and r.opponent == "cpu" and r.wins + r.draws + r.losses == 2
    assert r.skill_use_rate == 1.0 and r.action_distribution["FIRE"] == 1.0  # every decision a punch
    assert 1150 <= r.length_mean_frames <= 1200  # 2 minutes at 10 decisions per second, less the seeded NOOPs
    assert r.hp_diff_mean == pytest.approx(r.damage_dealt_mean - r.damage_taken_mean)  # points, not HP
    assert r.win_rate_ci95 == pytest.approx(proportion_confint(r.wins, 2, method="wilson"), abs=1e-12)
    with pytest.raises(EvalError, match="trained on game 'duel', not 'boxing'"):
        evaluate_boxing(untrained_agent("cnn"), 1)


@pytest.mark.parametrize("bouts", [1, pytest.param(2, marks=pytest.mark.slow)])  # a 2-minute bout takes ~1 s
def test_boxing_expert_beats_the_cpu_on_state_features_same_result_twice(bouts):
    from bcarena.envs.boxing import BoxingExpert
    from bcarena.eval.boxing import evaluate_boxing

    r = evaluate_boxing(BoxingExpert(seed=0), bouts, seed=0, num_envs=bouts)
    assert r.wins == bouts and r.hp_diff_mean > 0 and 0.01 < r.skill_use_rate < 0.15
    again = evaluate_boxing(BoxingExpert(seed=0), bouts, seed=0, num_envs=bouts)
    assert again.to_dict() == r.to_dict()


def test_throughput_benchmark_reports_batched_and_loop_rates(one_torch_thread):
    from bcarena.experiments.benchmarks.match_throughput import measure

    out = measure(untrained_agent("mlp"), "brawler", (4, 8), matches=8, loop_matches=1)
    assert set(out["batched"]) == {"4", "8"} and out["per_match_loop"]["matches"] == 1
    for entry in out["batched"].values():
        assert entry["matches_per_s"] > 0 and entry["decisions_per_s"] >= entry["matches_per_s"]
    assert out["speedup_vs_loop"]["8"] == pytest.approx(
        out["batched"]["8"]["matches_per_s"] / out["per_match_loop"]["matches_per_s"]
    )
    json.dumps(out)
