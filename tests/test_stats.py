"""Aggregates across seeds (eval/stats.py): numbers against hand-computed values and rliable."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest, kendalltau, spearmanr

from bcarena.eval.errors import EvalError
from bcarena.eval.stats import (
    SeedRun,
    aggregate,
    iqm,
    iqm_estimate,
    kendall_bootstrap,
    paired_difference,
    paired_test,
    probability_of_improvement,
    profile,
    profile_curve,
    spearman_bootstrap,
)


def test_iqm_of_a_known_array_is_the_mean_of_its_middle_half():
    # 8 values: the lowest 2 and highest 2 are trimmed, (3 + 4 + 5 + 6) / 4 = 4.5
    assert iqm([1, 2, 3, 4, 5, 6, 7, 100]) == pytest.approx(4.5)
    assert iqm(np.array([[0.1, 0.9], [0.2, 0.8], [0.3, 0.7], [0.4, 0.6]])) == pytest.approx(0.5)


def test_iqm_interval_contains_the_iqm_and_is_deterministic():
    scores = np.random.default_rng(1).uniform(0.2, 0.8, size=(5, 2))
    est = iqm_estimate(scores, n_boot=1000, seed=3)
    assert est.ci95[0] <= est.value <= est.ci95[1]
    assert est.ci95[1] - est.ci95[0] > 0
    assert iqm_estimate(scores, n_boot=1000, seed=3) == est


def test_constant_scores_have_a_zero_width_interval():
    est = iqm_estimate(np.full((4, 3), 0.25), n_boot=200)
    assert est.value == pytest.approx(0.25)
    assert est.ci95 == pytest.approx((0.25, 0.25))


def test_probability_of_improvement_of_identical_samples_is_one_half():
    x = np.array([[0.1, 0.5], [0.3, 0.7], [0.6, 0.2]])
    est = probability_of_improvement(x, x.copy(), n_boot=500)
    assert est.value == pytest.approx(0.5)
    assert est.ci95[0] <= 0.5 <= est.ci95[1]


def test_probability_of_improvement_by_hand_and_against_rliable():
    x = np.array([[0.9], [0.4]])
    y = np.array([[0.5], [0.4]])
    # pairs (x, y): (0.9, 0.5) 1, (0.9, 0.4) 1, (0.4, 0.5) 0, (0.4, 0.4) tie 0.5 -> 2.5 / 4
    assert probability_of_improvement(x, y, n_boot=10).value == pytest.approx(0.625)
    metrics = pytest.importorskip("rliable.metrics")
    rng = np.random.default_rng(0)
    a, b = rng.uniform(size=(5, 3)), rng.uniform(size=(4, 3))
    assert probability_of_improvement(a, b, n_boot=10).value == pytest.approx(metrics.probability_of_improvement(a, b))
    assert iqm(a) == pytest.approx(metrics.aggregate_iqm(a))


def test_performance_profile_is_monotone_and_bounded():
    scores = np.array([[0.0, 0.25], [0.5, 1.0]])
    taus = np.array([-0.1, 0.0, 0.3, 0.5, 0.99, 1.0])
    assert profile(scores, taus).tolist() == [1.0, 0.75, 0.5, 0.25, 0.25, 0.0]
    curve = profile_curve(np.random.default_rng(2).uniform(size=(5, 2)), n_boot=300)
    fraction = np.array(curve.fraction)
    assert np.all(np.diff(fraction) <= 0) and fraction[0] == 1.0 and fraction[-1] == 0.0
    assert np.all(np.array(curve.low) <= fraction + 1e-12) and np.all(fraction <= np.array(curve.high) + 1e-12)


def _runs(recipe, rates, match_seed=100, opponents=("brawler", "pro"), matches=40, seeds=None):
    """SeedRuns whose wins come first: rate r gives round(r * matches) wins out of ``matches``."""
    out = []
    for i, rate in enumerate(rates):
        for opponent in opponents:
            wins = np.zeros(matches, dtype=bool)
            wins[: round(rate * matches)] = True
            seed = i if seeds is None else seeds[i]
            out.append(SeedRun(recipe, seed, opponent, match_seed, wins))
    return out


def test_paired_test_counts_discordant_matches_and_calls_the_winner():
    a, b = _runs("good", [0.75, 0.5, 0.75]), _runs("bad", [0.25, 0.25, 0.5])
    test = paired_test(a, b)
    # per seed and opponent: 30 vs 10, 20 vs 10, 30 vs 20 wins, always nested -> A-only = 20 + 10 + 10, twice
    assert (test.matches, test.a_only, test.b_only, test.seed_pairs) == (240, 80, 0, 6)
    assert test.mcnemar_p < 1e-20
    assert test.verdict == "good beats bad"
    assert test.mean_difference == pytest.approx((0.5 + 0.25 + 0.25) / 3)
    same = paired_test(a, _runs("copy", [0.75, 0.5, 0.75]))
    assert (same.mcnemar_p, same.wilcoxon_p, same.verdict) == (1.0, None, "no significant difference")


def test_paired_difference_of_one_seed_on_the_same_matches():
    a = np.r_[np.ones(50, bool), np.zeros(10, bool)]  # A wins 50 of 60
    b = np.r_[np.ones(38, bool), np.zeros(20, bool), np.ones(2, bool)]  # B wins 40: 12 A-only, 2 B-only
    d = paired_difference(a, b, n_boot=2000, seed=0)
    assert (d.matches, d.a_only, d.b_only) == (60, 12, 2)
    assert d.difference == pytest.approx(10 / 60) and d.ci95[0] < d.difference < d.ci95[1]
    assert d.ci95[0] > 0 and d.mcnemar_p == pytest.approx(binomtest(12, 14, 0.5).pvalue)
    assert paired_difference(a, b, seed=0) == d  # deterministic
    with pytest.raises(EvalError, match=r"shapes \(60,\) and \(59,\)"):
        paired_difference(a, b[:59])


def test_paired_test_refuses_mismatched_match_seeds():
    with pytest.raises(EvalError, match=r"seed 0 vs brawler played match seeds 100\.\.139 for a but 500\.\.539 for b"):
        paired_test(_runs("a", [0.5, 0.5]), _runs("b", [0.5, 0.5], match_seed=500))
    with pytest.raises(EvalError, match="no \\(training seed, opponent\\) in common"):
        paired_test(_runs("a", [0.5, 0.5]), _runs("b", [0.5, 0.5], seeds=[7, 8]))


def test_aggregates_need_two_seeds_per_recipe():
    with pytest.raises(EvalError, match=r"need >= 2 training seeds per recipe; 'one' has 1 \(seeds \[0\]\)"):
        aggregate(_runs("one", [0.5]) + _runs("two", [0.5, 0.6]))


def test_aggregate_ranks_recipes_and_writes_its_files(tmp_path):
    runs = _runs("strong", [0.9, 0.8, 0.85]) + _runs("weak", [0.1, 0.2, 0.15]) + _runs("mid", [0.5, 0.4, 0.6])
    agg = aggregate(runs, n_boot=300)
    assert agg.recipes == ["strong", "mid", "weak"]
    assert agg.iqm["strong"].value == pytest.approx(0.85, abs=0.01)
    assert [(c.a, c.b) for c in agg.comparisons] == [("strong", "mid"), ("strong", "weak"), ("mid", "weak")]
    assert agg.comparisons[1].poi.value == pytest.approx(1.0)
    paths = agg.write(tmp_path)
    assert sorted(p.name for p in paths.values()) == ["aggregates.json", "aggregates.md", "performance_profile.png"]
    assert "| strong | 85.0% [" in paths["markdown"].read_text()
    assert agg.to_dict()["iqm"]["weak"]["value"] == pytest.approx(0.15, abs=0.01)


def test_kendall_and_spearman_match_scipy_and_their_intervals_hold_them():
    rng = np.random.default_rng(4)
    x = rng.uniform(size=20)
    y = x + rng.normal(scale=0.3, size=20)
    y[:4] = y[4]  # ties
    k, s = kendall_bootstrap(x, y, n_boot=500), spearman_bootstrap(x, y, n_boot=500)
    assert k.method == "kendall" and k.rho == pytest.approx(kendalltau(x, y)[0])
    assert s.method == "spearman" and s.rho == pytest.approx(spearmanr(x, y)[0])
    for c in (k, s):
        assert c.ci95[0] <= c.rho <= c.ci95[1]


# ------------------------------------------------------------------------------------- in a run
def _agent(variant, seed, wins, decoding="argmax", kind="bc"):
    from bcarena.experiments.results import AgentResult

    winners = [0] * wins + [1] * (10 - wins)
    online = {o: {"seed": 300, "winners": winners, "win_rate": wins / 10} for o in ("brawler", "pro")}
    suffix = "" if decoding == "argmax" else f"@{decoding}"
    return AgentResult(f"{variant}-s{seed}{suffix}", variant, seed, kind, None, online=online, decoding=decoding)


def test_run_results_become_seed_runs_per_recipe_and_decoding():
    from bcarena.experiments.report import seed_runs
    from bcarena.experiments.results import AgentResult, RunResults

    agents = [_agent("naive", s, 2 + s) for s in range(3)] + [_agent("naive", s, 8, "sample") for s in range(3)]
    agents.append(AgentResult("pro", "pro", None, "bot", None, online=agents[0].online))
    runs = seed_runs(RunResults("x", "r", agents, "brawler"))
    assert sorted({r.recipe for r in runs}) == ["naive", "naive@sample"]
    assert len(runs) == 12 and all(r.match_seed == 300 for r in runs)
    agg = aggregate(runs, n_boot=200)
    assert agg.recipes == ["naive@sample", "naive"]
    assert agg.iqm["naive@sample"].value == pytest.approx(0.8)
    assert agg.comparisons[0].test.verdict == "naive@sample beats naive"


def test_three_seeds_turn_aggregates_on_and_one_seed_cannot_ask_for_them(tmp_path):
    from bcarena.experiments.config import ExperimentError, load_experiment

    def experiment(text):
        (tmp_path / "e.yaml").write_text("name: x\nvariants:\n  - name: a\n" + text)
        return load_experiment(tmp_path / "e.yaml")

    assert experiment("seeds: [0, 1, 2]\n").wants_aggregates
    assert not experiment("seeds: [0, 1]\n").wants_aggregates
    assert experiment("seeds: [0, 1]\nevaluation: {aggregates: true}\n").wants_aggregates
    assert not experiment("seeds: [0, 1, 2]\nevaluation: {aggregates: false}\n").wants_aggregates
    with pytest.raises(ExperimentError, match=r"e.yaml:\d+: evaluation.aggregates: aggregate statistics across "):
        experiment("seeds: [4]\nevaluation: {aggregates: true}\n")


@pytest.mark.slow
def test_a_batched_run_with_three_seeds_writes_aggregates(tmp_path):
    import json

    from bcarena.experiments.runner import run_experiment

    (tmp_path / "e.yaml").write_text(
        "name: agg\ngame: {round_seconds: 8}\nrecording: {episodes: 10}\nseeds: [0, 1, 2]\n"
        "training: {batched: true}\ntracking: {mlflow: false}\n"
        "evaluation: {opponents: [brawler], matches: 8, reference: null}\nvariants:\n"
        "  - {name: naive, train: {epochs: 1, hidden: [16], allow_missing_classes: true}}\n"
        "  - {name: over, train: {epochs: 1, hidden: [16], sampler: oversample, allow_missing_classes: true}}\n"
    )
    run = run_experiment(tmp_path / "e.yaml", tmp_path / "runs", progress=False)
    data = json.loads((run / "aggregates.json").read_text())
    assert sorted(data["recipes"]) == ["naive", "over"] and data["seeds"]["naive"] == [0, 1, 2]
    assert (run / "aggregates.md").is_file() and (run / "performance_profile.png").is_file()
    cached = sorted(p.name for p in (tmp_path / "runs" / ".cache" / "agents").iterdir())
    assert len(cached) == 6  # six members, each committed to its own cache folder


def test_dashboard_tables_of_a_runs_aggregates():
    from bcarena.experiments.dashboard import aggregates_tables

    agg = aggregate(_runs("strong", [0.9, 0.8, 0.85]) + _runs("weak", [0.1, 0.2, 0.15]), n_boot=200)
    recipes, pairs = aggregates_tables(agg.to_dict())
    assert recipes["recipe"].tolist() == ["strong", "weak"] and recipes["seeds"].tolist() == [3, 3]
    assert recipes["IQM %"].iloc[0] == pytest.approx(100 * agg.iqm["strong"].value)
    assert pairs[["A", "B", "verdict"]].values.tolist() == [["strong", "weak", "strong beats weak"]]
    assert pairs["P(A>B)"].iloc[0] == pytest.approx(1.0)
