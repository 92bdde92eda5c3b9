"""Decoding: per-match deterministic sampling, the calibrated and threshold decodings, policy metrics, the axis."""

import io
import json
import math

import numpy as np
import pytest
import torch
from rich.console import Console

from bcarena.agents import load_agent
from bcarena.agents.composite import CompositeAgent
from bcarena.agents.decoding import THRESHOLD_METRICS, DecodingError, decode_agent, decoding_label, frame_metric
from bcarena.agents.policies import MLPPolicy, ScoreModel
from bcarena.agents.selection import (
    MODES,
    Selection,
    SelectionError,
    agent_uniforms,
    calibrate_boosts,
    inverse_cdf,
)
from bcarena.agents.torch_agent import TorchAgent
from bcarena.envs.duel import ACTION_NAMES, SKILL_ACTIONS, STATE_DIM, DuelConfig
from bcarena.envs.play import NoisyPolicy
from bcarena.eval.matches import evaluate_matches
from bcarena.eval.offline import ANY_SKILL, evaluate_offline, offline_metrics, predict_dataset
from bcarena.experiments.config import DECODING_MODES, EvaluationSpec, ExperimentError
from bcarena.recordings.converter import make_duel_dataset
from bcarena.recordings.dataset import ActionDataset

NAMES, SKILLS = list(ACTION_NAMES), list(SKILL_ACTIONS)
QUIET = Console(file=io.StringIO())
IDS = ["naive-s0", "naive-s0@sample", "naive-s0@T2", "naive-s0@calibrated", "only_sampled-s0@sample"]
LABELS = ["argmax", "sample", "T2", "calibrated", "sample"]
OUTCOME = ("winner", "hp", "length", "skills_used", "action_counts")


def mlp_agent(mode="sample", seed=0, weights=0, hidden=(32,), **selection) -> TorchAgent:
    torch.manual_seed(weights)
    model = ScoreModel(MLPPolicy(STATE_DIM, 8, hidden), torch.zeros(STATE_DIM), torch.ones(STATE_DIM))
    model.class_offsets.copy_(torch.tensor([0, 0, 0, 0, 0, 1.5, 1.0, 0.5]))  # skills get picked now and then
    return TorchAgent(model, NAMES, SKILLS, 1, Selection(mode=mode, seed=seed, **selection), name=f"{mode}-{seed}")


def composite_agent(mode="sample", seed=0) -> CompositeAgent:
    skills = SKILLS
    moves = [a for a in range(len(NAMES)) if a not in skills]
    torch.manual_seed(1)
    parts = [
        TorchAgent(ScoreModel(MLPPolicy(STATE_DIM, k, (16,)), torch.zeros(STATE_DIM), torch.ones(STATE_DIM)), n, s)
        for k, n, s in (
            (len(moves), [NAMES[a] for a in moves], []),
            (len(skills) + 1, ["none"] + [NAMES[a] for a in skills], [1, 2, 3]),
        )
    ]
    return CompositeAgent(*parts, NAMES, skills, moves, Selection(mode=mode, seed=seed), name="composite")


def outcomes(agent, opponent, config, batch_size, seeds=48):
    report = evaluate_matches(agent, opponent, seeds, seed=500, config=config, batch_size=batch_size)
    return {name: getattr(report.results, name).copy() for name in OUTCOME}


# ------------------------------------------------------------------------------ per-match sampling
@pytest.mark.parametrize(
    "opponent, seeds, batches, round_seconds",
    [
        ("brawler", 6, (1, 4, 6), 4.0),
        ("pro", 6, (1, 4, 6), 4.0),
        pytest.param("brawler", 48, (1, 7, 48), 8.0, marks=pytest.mark.slow),
        pytest.param("pro", 48, (1, 7, 48), 8.0, marks=pytest.mark.slow),
    ],
)
def test_a_sampled_agent_plays_each_match_the_same_whatever_the_batch(opponent, seeds, batches, round_seconds):
    config = DuelConfig(round_seconds=round_seconds)
    agent = mlp_agent("sample", seed=3)
    assert isinstance(agent, NoisyPolicy) and agent.noise_dims == 1 and not agent.greedy
    runs = [outcomes(agent, opponent, config, batch, seeds) for batch in batches]
    for run in runs[1:]:
        for name in OUTCOME:
            np.testing.assert_array_equal(run[name], runs[0][name], err_msg=name)
    assert runs[0]["skills_used"][:, 0].sum() > 0  # it does press skills, so the draws matter
    other_seed = outcomes(mlp_agent("sample", seed=4), opponent, config, seeds, seeds)
    assert (other_seed["action_counts"] != runs[0]["action_counts"]).any()


def test_a_sampled_composite_agent_follows_the_same_rule():
    agent, config = composite_agent("sample", seed=2), DuelConfig(round_seconds=4.0)
    assert agent.noise_dims == 1
    first, second = (outcomes(agent, "brawler", config, batch, seeds=5) for batch in (5, 2))
    for name in OUTCOME:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)


def test_argmax_ignores_noise_and_takes_none():
    agent = mlp_agent("argmax")
    obs = np.random.default_rng(0).normal(size=(64, STATE_DIM)).astype(np.float32)
    assert agent.noise_dims == 0 and agent.greedy
    np.testing.assert_array_equal(agent.act_with_noise(obs, np.zeros((64, 0))), agent.act(obs))
    np.testing.assert_array_equal(agent.act(obs), agent.scores_stacked(obs).argmax(axis=1))


def test_sampling_draws_by_inverse_cdf_from_the_scaled_softmax():
    probs = torch.tensor([[0.2, 0.0, 0.5, 0.3]] * 6, dtype=torch.float64)
    u = torch.tensor([0.0, 0.19, 0.2, 0.69, 0.7, 0.999], dtype=torch.float64)
    assert inverse_cdf(probs, u).tolist() == [0, 0, 2, 2, 3, 3]  # class 1 (p = 0) is never drawn
    agent = mlp_agent("temperature", temperature=2.0)
    obs = np.repeat(np.random.default_rng(1).normal(size=(1, STATE_DIM)).astype(np.float32), 20000, axis=0)
    scores = agent.scores_stacked(obs[:1])[0]
    expected = np.exp(scores / 2.0 - np.logaddexp.reduce(scores / 2.0))
    noise = np.random.default_rng(2).random((20000, 1))
    counts = np.bincount(agent.act_with_noise(obs, noise), minlength=8) / 20000
    np.testing.assert_allclose(counts, expected, atol=0.012)
    # the agent's seed is hashed with the match noise: another seed, other draws; same inputs, same draws
    u3, u4 = agent_uniforms(noise[:, 0], 3), agent_uniforms(noise[:, 0], 4)
    np.testing.assert_array_equal(u3, agent_uniforms(noise[:, 0], 3))
    assert abs(np.corrcoef(u3, u4)[0, 1]) < 0.05 and 0 <= u3.min() and u3.max() < 1


# ----------------------------------------------------------------------------- selections and files
def test_selection_mistakes_are_one_line_errors():
    cases = [
        (dict(mode="temperature", temperature=0.0), "temperature must be a finite number > 0, got 0.0"),
        (dict(mode="temperature", temperature=-2), "temperature must be a finite number > 0"),
        (dict(mode="greedy"), "selection mode must be one of"),
        (dict(mode="calibrated"), "'calibrated' needs per-class boosts"),
        (dict(mode="sample", boosts=[0.0] * 8), "only it takes boosts"),
    ]
    for kwargs, message in cases:
        with pytest.raises(SelectionError, match=message) as caught:
            Selection(**kwargs)
        assert "\n" not in str(caught.value)
    with pytest.raises(SelectionError, match="selection.boosts has 3 values for 8 actions"):
        mlp_agent("calibrated", boosts=[0.0, 1.0, 2.0])
    for mode, temperature in (("temperature", 0.0), ("nucleus", 1.0)):
        with pytest.raises(DecodingError):
            decoding_label(mode, temperature)
    assert [decoding_label(m, 2.0) for m in MODES] == ["argmax", "sample", "T2", "thresholds", "calibrated"]
    assert DECODING_MODES == MODES  # the experiment file's spelling of the modes


def test_a_saved_calibrated_agent_keeps_its_decoding(tmp_path):
    agent = mlp_agent("calibrated", seed=5, boosts=[0.5, -0.5, 0, 0, 0, 2.0, 1.0, -3.0])
    path = agent.save(tmp_path / "cal")
    spec = json.loads((path / "agent.json").read_text())["selection"]
    assert spec == {"mode": "calibrated", "temperature": 1.0, "seed": 5, "boosts": [0.5, -0.5, 0, 0, 0, 2.0, 1.0, -3.0]}
    assert (
        "boosts" not in json.loads((mlp_agent("argmax").save(tmp_path / "arg") / "agent.json").read_text())["selection"]
    )
    loaded = load_agent(path)
    obs = np.random.default_rng(0).normal(size=(200, STATE_DIM)).astype(np.float32)
    noise = np.random.default_rng(1).random((200, 1))
    assert loaded.selection == agent.selection
    np.testing.assert_array_equal(loaded.act_with_noise(obs, noise), agent.act_with_noise(obs, noise))
    body = json.loads((path / "agent.json").read_text())
    body["selection"]["boosts"] = [0.0] * 3
    (path / "agent.json").write_text(json.dumps(body))
    with pytest.raises(Exception, match="selection.boosts has 3 values for 8 actions"):
        load_agent(path)


def test_threshold_tuning_metrics_are_the_training_metrics():
    from bcarena.agents.validation import classification_metrics

    rng = np.random.default_rng(3)
    y, p = rng.choice(8, 500, p=[0.4, 0.2, 0.2, 0.1, 0.05, 0.05, 0.0, 0.0]), rng.integers(0, 8, 500)
    for name in THRESHOLD_METRICS:
        expected = getattr(classification_metrics(y, p, NAMES, SKILLS), name)
        assert frame_metric(name, 8)(y, p) == pytest.approx(expected, abs=1e-12), name


def test_calibration_fits_the_expected_rates_to_the_expert_frequencies():
    rng = np.random.default_rng(0)
    log_probs = np.log(rng.dirichlet(np.ones(5) * 0.5, size=3000))
    labels = rng.choice(5, size=3000, p=[0.5, 0.3, 0.15, 0.05, 0.0])  # class 4 never used by the expert
    fit = calibrate_boosts(log_probs, labels, 5)
    assert fit.max_rate_error < 1e-5 and fit.iterations < 100
    assert abs(fit.boosts.mean()) < 1e-9 and fit.boosts[4] == fit.boosts.min()
    np.testing.assert_allclose(fit.target_rates[:4], np.bincount(labels, minlength=5)[:4] / 3000, atol=1e-3)


# ------------------------------------------------------------------------------ on a real dataset
@pytest.fixture(scope="module")
def small_ds(tmp_path_factory):
    """8 pro episodes of 8-second rounds (state only), split 4/2/2."""
    out = tmp_path_factory.mktemp("decoding")
    return make_duel_dataset(
        out, episodes=8, seed=2, split=(0.5, 0.25, 0.25), config=DuelConfig(round_seconds=8.0), pixels=False
    )


def test_thresholds_and_calibrated_are_fitted_on_validation(small_ds):
    base = mlp_agent("argmax", seed=1)
    thresholds = decode_agent(base, "thresholds", dataset=small_ds)
    before, after = thresholds.info["decoding"]["val_macro_f1"]
    assert after >= before and thresholds.name == "argmax-1@thresholds" and thresholds.greedy
    assert not np.array_equal(thresholds.model.class_offsets.numpy(), base.model.class_offsets.numpy())
    assert base.model.class_offsets.tolist() == [0, 0, 0, 0, 0, 1.5, 1.0, 0.5]  # the trained agent is untouched
    calibrated = decode_agent(base, "calibrated", dataset=small_ds)
    fit = calibrated.info["decoding"]
    assert calibrated.selection.mode == "calibrated" and calibrated.seed == base.seed
    assert fit["max_rate_error"] < 1e-4 and calibrated.model is base.model  # same weights, no copy
    sampled = decode_agent(base, "temperature", 2.0)
    assert sampled.selection.temperature == 2.0 and sampled.name == "argmax-1@T2"
    no_val = ActionDataset(small_ds.table[small_ds.table["split"] != "val"], small_ds.manifest, path=small_ds.path)
    for mode in ("thresholds", "calibrated"):
        with pytest.raises(DecodingError, match="no 'val' split: thresholds and calibrated decodings are fitted"):
            decode_agent(base, mode, dataset=no_val)
        with pytest.raises(DecodingError, match="is fitted on a validation split: give the dataset"):
            decode_agent(base, mode)


def test_policy_metrics_of_greedy_agents_equal_their_hard_metrics(small_ds):
    greedy = evaluate_offline(mlp_agent("argmax"), small_ds, "test", tolerance=2)
    assert greedy.expected_accuracy == pytest.approx(greedy.accuracy, abs=1e-12)
    assert greedy.expected_skill_event_recall == pytest.approx(greedy.event(ANY_SKILL).recall, abs=1e-12)
    assert greedy.perplexity == pytest.approx(math.exp(-greedy.log_likelihood))
    sampled = evaluate_offline(mlp_agent("sample"), small_ds, "test", tolerance=2)
    assert sampled.log_likelihood == pytest.approx(greedy.log_likelihood)  # same soft policy
    assert 0 < sampled.expected_accuracy < 1 and set(sampled.scalars()) >= {"expected_accuracy", "perplexity"}
    # a sampled agent's offline actions are a function of (agent seed, episode, frame): batching changes nothing
    agent = mlp_agent("sample", seed=7)
    test = small_ds.split("test")
    np.testing.assert_array_equal(predict_dataset(agent, test, 1), predict_dataset(agent, test, 256))


def test_expected_event_recall_multiplies_per_frame_chances():
    # one episode of 6 frames, the expert presses a skill (5) at frame 2; the policy's skill chance per frame
    y_true = np.array([0, 0, 5, 0, 0, 0])
    p_skill = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    probs = np.zeros((6, 8))
    probs[:, 5], probs[:, 0] = p_skill, 1 - p_skill
    report = offline_metrics(
        y_true,
        probs.argmax(1),
        np.zeros(6, int),
        NAMES,
        SKILLS,
        tolerance=1,
        distributions=(probs, np.log(probs + 1e-300)),
    )
    assert report.expected_skill_event_recall == pytest.approx(1 - 0.8 * 0.7 * 0.6)
    assert report.expected_accuracy == pytest.approx(np.mean([0.9, 0.8, 0.3, 0.6, 0.5, 0.4]))
    assert report.log_likelihood == pytest.approx(np.mean(np.log([0.9, 0.8, 0.3, 0.6, 0.5, 0.4])))
    bare = offline_metrics(y_true, y_true, np.zeros(6, int), NAMES, SKILLS)
    assert bare.expected_accuracy is None and "gives actions, not a distribution" in bare.policy_undefined["perplexity"]


# ------------------------------------------------------------------------------------ the axis
def test_decodings_in_experiment_files():
    spec = EvaluationSpec(decoding=["argmax", "sample", {"mode": "temperature", "temperature": 2.0}, "calibrated"])
    assert [d.label for d in spec.decoding] == ["argmax", "sample", "T2", "calibrated"]
    assert [d.label for d in EvaluationSpec().decoding] == ["argmax"]
    for bad, message in (
        (["greedy"], "Input should be 'argmax', 'sample', 'temperature', 'thresholds' or 'calibrated'"),
        ([{"mode": "temperature", "temperature": 0}], "Input should be greater than 0"),
        ([{"mode": "temperature"}], "decoding 'temperature' needs a temperature"),
        (["sample", "sample"], "must not repeat a value"),
    ):
        with pytest.raises(ValueError, match=message):
            EvaluationSpec(decoding=bad)


DECODED = """\
name: decoded
seed: 1
game: {round_seconds: 8.0}
recording: {player: pro, opponents: [brawler], episodes: 8}
dataset: {split: [0.5, 0.25, 0.25]}
variants:
  - name: naive
    train: {epochs: 1, hidden: [16]}
  - name: only_sampled
    train: {epochs: 1, hidden: [16], loss: weighted_ce, class_weights: inverse}
    decoding: [sample]
evaluation:
  opponents: [brawler]
  matches: 6
  reference: null
  decoding: [argmax, sample, {mode: temperature, temperature: 2.0}, calibrated]
  replay: {side_by_side: [naive, only_sampled], opponent: brawler, seed: 2}
tracking: {mlflow: false}
"""


def test_the_decode_step_gives_one_row_per_agent_and_decoding(tmp_path, small_ds):
    from bcarena.experiments.runner import ExperimentRunner, load

    (tmp_path / "exp.yaml").write_text(DECODED)
    runner = ExperimentRunner(load(tmp_path / "exp.yaml"), tmp_path / "runs", progress=False, console=QUIET)
    mlp_agent("argmax", seed=0).save(tmp_path / "trained" / "agent")
    trained = [
        {
            "agent_id": f"{v}-s0",
            "variant": v,
            "seed": 0,
            "kind": "bc",
            "key": v,
            "path": tmp_path / "trained",
            "error": None,
        }
        for v in ("naive", "only_sampled")
    ]
    rows = runner._decode_all(trained, small_ds)
    assert [r["agent_id"] for r in rows] == IDS and [r["decoding"] for r in rows] == LABELS
    assert rows[0]["path"] == tmp_path / "trained" and all(r["error"] is None for r in rows)
    decoded = {r["agent_id"]: load_agent(r["path"] / "agent") for r in rows}
    assert decoded["naive-s0@calibrated"].selection.boosts is not None and decoded["naive-s0@T2"].name == "argmax-0@T2"
    assert runner._decode_all(trained, small_ds)[1]["path"] == rows[1]["path"]  # cached by (decoding, agent key)


@pytest.mark.slow
def test_the_runner_trains_once_and_evaluates_each_decoding(tmp_path):
    from bcarena.experiments.runner import ExperimentRunner, load

    text = DECODED
    (tmp_path / "exp.yaml").write_text(text)
    run_dir = ExperimentRunner(load(tmp_path / "exp.yaml"), tmp_path / "runs", progress=False, console=QUIET).run()
    results = json.loads((run_dir / "results.json").read_text())["agents"]
    ids = [a["agent_id"] for a in results]
    assert ids == IDS and [a["decoding"] for a in results] == LABELS
    assert all(a["error"] is None and a["offline"]["perplexity"] > 1 for a in results)
    agents = {a["agent_id"]: load_agent(a["agent_path"]) for a in results}
    obs = np.random.default_rng(0).normal(size=(32, STATE_DIM)).astype(np.float32)
    for name in ids[1:4]:  # the same trained weights under another selection
        np.testing.assert_array_equal(agents[name].scores_stacked(obs), agents["naive-s0"].scores_stacked(obs))
    assert agents["naive-s0@calibrated"].selection.boosts is not None
    assert (run_dir / "table.md").read_text().splitlines()[0].endswith("| decoding |")
    # a new decoding list retrains nothing and re-evaluates only the new rows
    (tmp_path / "exp.yaml").write_text(text.replace("calibrated]", "calibrated, thresholds]"))
    log = Console(record=True, file=io.StringIO())
    ExperimentRunner(load(tmp_path / "exp.yaml"), tmp_path / "runs", progress=False, console=log).run()
    printed = log.export_text()
    assert "done   train" not in printed and "done   decode naive-s0@thresholds" in printed
    assert "done   evaluate naive-s0@thresholds" in printed and "done   evaluate naive-s0 " not in printed
    with pytest.raises(
        ExperimentError, match=r"bad.yaml:16: evaluation.decoding.2.temperature: Input should be greater than 0"
    ):
        (tmp_path / "bad.yaml").write_text(text.replace("temperature: 2.0", "temperature: -1"))
        load(tmp_path / "bad.yaml")


def test_boxing_bouts_have_their_own_noise_streams():
    pytest.importorskip("ale_py")
    from bcarena.envs.boxing import BoxingBatch

    with BoxingBatch(2, pixels=False) as pair, BoxingBatch(1, pixels=False) as alone:
        pair.reset(np.array([3, 4]))
        alone.reset(np.array([4]))
        np.testing.assert_array_equal(pair.noise(0, 2)[1], alone.noise(0, 2)[0])
        assert (pair.noise(0, 1) != pair.noise(1, 1)).all()  # another player, another stream
        before = alone.noise(0, 1)
        alone.step(np.zeros((1, 1), dtype=np.int64))
        assert alone.noise(0, 1) != before  # fresh noise every decision
