"""DAgger: the pro's explicit probabilities, per-match deterministic rollouts, relabelling, the loop, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bcarena.agents.base import BotAgent, load_agent
from bcarena.agents.config import make_train_config
from bcarena.agents.dagger import (
    Aggregate,
    DaggerError,
    _Frames,
    collect_rollouts,
    fit_recipe,
    fit_targets,
    game_expert,
    is_plain,
    make_dagger_config,
    queryable,
    rollout_seeds,
    rollout_weights,
    train_dagger,
)
from bcarena.agents.policies import MLPPolicy, ScoreModel
from bcarena.agents.selection import Selection
from bcarena.agents.threads import torch_threads
from bcarena.envs.duel import NUM_ACTIONS, SKILL_ACTIONS, make_bot
from bcarena.envs.games import get_game
from bcarena.envs.play import BotPolicy, DuelBatch, Hook, MatchwisePolicy, play


class _States(Hook):
    """Player 0's state observations of live matches, every step."""

    def __init__(self) -> None:
        self.rows: list[np.ndarray] = []

    def on_step(self, step) -> None:
        self.rows.append(step.match.observe(0, "state")[~step.match.done])


@pytest.fixture(scope="module")
def pro_states():
    """~1,000 states from pro-vs-brawler and pro-vs-pro matches (opportune moments included)."""
    hook = _States()
    rivals = MatchwisePolicy([BotPolicy(make_bot("brawler")), BotPolicy(make_bot("pro"))], np.arange(8) % 2, 8)
    play(DuelBatch(8), [BotPolicy(make_bot("pro")), rivals], np.arange(8), hooks=[hook], max_steps=120)
    return np.concatenate(hook.rows)


def test_pro_probabilities_are_the_distribution_act_draws_from(pro_states):
    pro = make_bot("pro")
    probs = pro.action_probabilities(pro_states)
    assert probs.shape == (len(pro_states), NUM_ACTIONS)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    grid = (np.arange(1000) + 0.5) / 1000  # noise quantiles: the empirical distribution of act over them
    counts = np.zeros_like(probs)
    for u in grid:
        counts[np.arange(len(pro_states)), pro.act(pro_states, np.full((len(pro_states), 1), u))] += 1
    np.testing.assert_allclose(counts / grid.size, probs, atol=1e-3)
    assert ((probs > 0) & (probs < 1)).any(axis=1).mean() > 0.01  # some states are genuinely random
    assert np.isclose(probs.max(axis=1), 1 - pro.punish_chance).any()  # a punish moment: 0.18 chance of a skill


def test_rollouts_are_per_match_deterministic_and_relabelled_with_soft_labels():
    game = get_game("duel")
    expert = game_expert(game, "pro")
    seeds = rollout_seeds(0, 1, 6)
    clone = BotAgent("brawler")  # a noisy clone: the match's noise is passed through to it
    together = collect_rollouts(clone, expert, game, ["pro", "brawler"], seeds, 0.5, max_steps=30)
    apart = [
        collect_rollouts(clone, expert, game, ["pro", "brawler"][i % 2 :], seeds[i : i + 1], 0.5, max_steps=30)
        for i in range(6)
    ]
    assert together.states.shape == (sum(len(a.states) for a in apart), together.states.shape[1])
    order = lambda x: x[np.lexsort(x.T[::-1])]  # noqa: E731 - rows of all matches, in a fixed order
    np.testing.assert_array_equal(order(together.states), order(np.concatenate([a.states for a in apart])))
    np.testing.assert_allclose(together.targets, make_bot("pro").action_probabilities(together.states), atol=1e-6)
    assert 0.35 < together.expert_fraction < 0.65  # beta 0.5 per decision


def test_beta_decides_who_plays_and_hard_labels_are_one_hot():
    game = get_game("duel")
    expert = game_expert(game, "pro")
    seeds = rollout_seeds(3, 2, 4)
    always = collect_rollouts(BotAgent("idle"), expert, game, ["brawler"], seeds, 1.0, soft=False, max_steps=40)
    never = collect_rollouts(BotAgent("idle"), expert, game, ["brawler"], seeds, 0.0, soft=False, max_steps=40)
    assert always.expert_fraction == 1.0 and never.expert_fraction == 0.0
    for data in (always, never):
        assert set(np.unique(data.targets)) <= {0.0, 1.0}
        np.testing.assert_array_equal(data.targets.sum(axis=1), 1.0)
    assert (never.clone_actions == 0).all()  # the idle clone played every decision


def test_boxing_expert_is_asked_through_its_actions():
    game = get_game("boxing")
    expert = game_expert(game, "expert")
    data = collect_rollouts(BotLike(), expert, game, ["cpu"], np.array([0, 1]), 0.0, max_steps=25)
    assert data.states.shape == (50, len(game.state_features))
    assert data.targets.shape == (50, game.num_actions)
    assert (data.targets.sum(axis=1) == 1).all() and data.targets[:, 0].mean() < 1.0  # it moves, not only NOOP


class BotLike:
    """A plain Boxing policy (no noise) that never presses anything."""

    name, obs_type = "noop", "state"

    def reset(self, batch_size: int) -> None:
        pass

    def act(self, obs: np.ndarray) -> np.ndarray:
        return np.zeros(len(obs), dtype=np.int64)


def test_train_dagger_writes_iterations_and_a_loadable_agent(pro_ds, tmp_path):
    cfg = make_train_config({"epochs": 2, "hidden": [32], "selection": "sample"})
    dc = make_dagger_config(
        {"iterations": 2, "rollouts_per_iteration": 4, "opponents": ["pro", "brawler"], "epochs": 1, "max_steps": 30}
    )
    calls = []

    def online(agent):
        calls.append(agent.name)
        if len(calls) == 2:  # an evaluator may skip rounds: the plot and history keep the others
            return {}
        return {"pro": {"win_rate": 0.5, "win_rate_low": 0.4, "win_rate_high": 0.6, "matches": 10}}

    result = train_dagger(pro_ds, cfg, dc, tmp_path / "run", evaluate_online=online, progress=False)
    rows = result.iterations
    assert [r["iteration"] for r in rows] == [0, 1, 2] and len(calls) == 3
    assert [r["beta"] for r in rows] == [1.0, 0.5, 0.25]
    assert rows[1]["aggregate_rows"] == rows[0]["aggregate_rows"] + rows[1]["visited_states"]
    assert rows[1]["visited_states"] == 4 * 30  # 30 decisions of 4 matches (none ends that soon)
    saved = json.loads((tmp_path / "run" / "dagger.json").read_text())
    assert saved["expert"] == "pro" and len(saved["iterations"]) == 3
    assert (tmp_path / "run" / "dagger.png").stat().st_size > 0
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history[2]["win_rate_pro"] == 0.5 and "win_rate_pro" not in history[1]
    agent = load_agent(tmp_path / "run" / "agent")
    obs = pro_ds.split("val").states()[:16]
    agent.reset(16)
    result.agent.reset(16)
    np.testing.assert_array_equal(agent.scores_stacked(obs), result.agent.scores_stacked(obs))


def test_experts_that_cannot_be_queried_are_one_line_errors(tmp_path):
    duel = get_game("duel")
    with pytest.raises(DaggerError, match=r"expert 'brawler' cannot be queried in game 'duel'.*\['pro'\]"):
        game_expert(duel, "brawler")
    with pytest.raises(DaggerError, match="cannot be queried"):
        queryable(BotAgent("brawler"))  # a bot without explicit chances
    with pytest.raises(DaggerError, match="cannot be queried"):
        game_expert(duel, str(tmp_path / "some_agent_folder"))
    with pytest.raises(DaggerError, match=r"'turtle2'\] are not opponents of game 'duel'"):
        from bcarena.agents.dagger import check_opponents

        check_opponents(duel, ["turtle2"])
    with pytest.raises(DaggerError, match="unknown key 'iteratons'"):
        make_dagger_config({"iteratons": 3, "opponents": ["pro"]})


def test_dagger_needs_a_state_mlp_without_frame_stack(pro_ds):
    cfg = make_train_config({"frame_stack": 2})
    with pytest.raises(DaggerError, match="frame_stack 2"):
        train_dagger(pro_ds, cfg, make_dagger_config({"opponents": ["pro"]}), progress=False)


def test_dagger_variants_in_experiment_files(tmp_path):
    from bcarena.experiments.config import ExperimentError
    from bcarena.experiments.runner import load

    for name in ("dagger_duel", "dagger_boxing"):
        exp = load(f"experiments/{name}.yaml")
        assert [v.kind for v in exp.variants] == ["bc", "dagger"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nvariants:\n  - name: d\n    kind: dagger\n    dagger: {opponents: [pro], beta: 2}\n")
    with pytest.raises(ExperimentError, match=r"variants.0 \(d\).train: variant d.dagger: invalid DAgger config: beta"):
        load(bad)
    bad.write_text("name: x\nvariants:\n  - name: d\n    kind: dagger\n")
    with pytest.raises(ExperimentError, match="kind dagger needs one"):
        load(bad)


def test_rollout_rows_carry_their_match_and_events_for_the_recipes_weighting():
    game = get_game("duel")
    seeds = rollout_seeds(1, 1, 4)
    data = collect_rollouts(BotAgent("brawler"), game_expert(game, "pro"), game, ["pro"], seeds, 0.5, max_steps=40)
    assert np.bincount(data.match_ids).tolist() == [40] * 4 and data.match_ids[:4].tolist() == [0, 1, 2, 3]
    assert data.hits["hit_landed"].any() and data.hits["hit_taken"].any()  # the brawler trades blows with the pro
    frames = _Frames(data, SKILL_ACTIONS, NUM_ACTIONS)  # grouped by match, as a dataset's episodes
    assert (np.diff(frames.table["episode"].to_numpy()) >= 0).all()
    skills = np.isin(data.expert_actions, SKILL_ACTIONS)
    np.testing.assert_array_equal(frames.events("skill_used"), skills[frames.order])
    assert not frames.events("action_change")[np.r_[0, 40, 80, 120]].any()  # a match's first row changes nothing
    assert not frames.events("ko").any()
    cfg = make_train_config({"event_weighting": {"events": ["skill_used"], "before": 0, "after": 0, "weight": 4}})
    np.testing.assert_array_equal(rollout_weights(data, cfg, SKILL_ACTIONS, NUM_ACTIONS, 0), np.where(skills, 4.0, 1.0))


def _aggregate(q_rows: np.ndarray, n: int = 600) -> Aggregate:
    x = torch.as_tensor(np.random.default_rng(0).normal(size=(n, 4)), dtype=torch.float32)
    return Aggregate(x, torch.as_tensor(np.repeat(q_rows[None], n, axis=0), dtype=torch.float32), np.ones(n))


def _model(seed: int = 0) -> ScoreModel:
    torch.manual_seed(seed)
    return ScoreModel(MLPPolicy(4, 3, (16,)), torch.zeros(4), torch.ones(4))


@torch_threads(1)
def test_rounds_train_with_the_recipe_loss_and_soft_targets_as_weighted_pairs():
    names = ["a", "b", "c"]
    soft = _aggregate(np.array([0.7, 0.3, 0.0]))
    plain_cfg = make_train_config({"batch_size": 64, "lr": 0.01})
    exact, pairs = _model(), _model()
    fit_targets(exact, soft.x, soft.q, plain_cfg, 8, 0)
    fit_recipe(pairs, soft, plain_cfg, names, 8, 1)
    for model in (exact, pairs):  # both learn the expert's chances (the pairs in expectation)
        p = torch.softmax(model.logits(soft.x), dim=-1).mean(dim=0).detach().numpy()
        np.testing.assert_allclose(p, [0.7, 0.3, 0.0], atol=0.05)
    # class weights are counted on the aggregate: inverse weights make the 10% class as likely as the 90% one
    hard = _aggregate(np.array([0.0, 0.0, 1.0]))
    hard.q[:60] = torch.tensor([0.0, 1.0, 0.0])
    weighted = _model()
    fit_recipe(weighted, hard, make_train_config({"batch_size": 64, "lr": 0.01, "loss": "weighted_ce"}), names, 8, 1)
    p = torch.softmax(weighted.logits(hard.x), dim=-1).mean(dim=0).detach().numpy()
    assert abs(p[1] - p[2]) < 0.1 and p[0] < 0.05
    assert is_plain(plain_cfg) and not is_plain(make_train_config({"sampler": "oversample"}))


def test_dagger_rounds_play_the_variants_decoding_and_keep_its_recipe(pro_ds, tmp_path):
    cfg = make_train_config(
        {"epochs": 1, "hidden": [16], "loss": "focal", "event_weighting": {"events": ["hit_taken"]}}
    )
    dc = make_dagger_config(
        {"iterations": 1, "rollouts_per_iteration": 2, "opponents": ["brawler"], "epochs": 1, "max_steps": 20}
    )
    played = []

    def decode(agent):
        played.append(agent.name)
        return agent.with_selection(Selection(mode="sample", seed=3))

    seen = []
    result = train_dagger(
        pro_ds, cfg, dc, tmp_path / "run", progress=False, decode=decode, evaluate_online=lambda a: seen.append(a) or {}
    )
    assert len(played) >= 3 and all(a.selection.mode == "sample" for a in seen)  # rounds 0 and 1 were scored
    saved = json.loads((tmp_path / "run" / "dagger.json").read_text())
    assert saved["round_training"] == "fit_recipe" and saved["rollout_selection"]["mode"] == "sample"
    assert result.agent.selection.mode == "argmax"  # the saved agent keeps its own selection; decoding comes later


def test_a_dagger_variants_first_decoding_plays_its_rollouts_and_keys_its_agent(tmp_path):
    from bcarena.experiments.runner import load, rollout_decoding

    text = "name: x\nvariants:\n  - name: d\n    kind: dagger\n    dagger: {{opponents: [pro]}}\n{extra}"
    (tmp_path / "a.yaml").write_text(text.format(extra=""))
    (tmp_path / "s.yaml").write_text(text.format(extra="    decoding: [sample, argmax]\n"))
    plain, sampled = load(tmp_path / "a.yaml"), load(tmp_path / "s.yaml")
    assert rollout_decoding(plain.variants[0], plain) is None  # argmax: the trained agent itself
    assert rollout_decoding(sampled.variants[0], sampled).mode == "sample"
