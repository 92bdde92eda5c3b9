"""bcarena sweep: Ray Tune + Optuna over trainer options, win-rate objective, ASHA early stopping."""

import json
import shutil
from pathlib import Path

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from bcarena.experiments.sweep import (
    DEFAULT_SPACE,
    SearchSpace,
    SweepError,
    SweepSettings,
    TrialRecord,
    TrialSetup,
    best_trial,
    run_sweep,
    run_trial,
)

EXPERIMENT = """\
name: tiny-sweep
seed: 1
game: {round_seconds: 8.0}
recording: {player: pro, opponents: [brawler, random], episodes: 12}
dataset: {split: [0.5, 0.25, 0.25]}
variants:
  - name: base
    train: {epochs: 2, hidden: [32]}
  - name: split
    kind: composite
evaluation: {opponents: [brawler], matches: 20, seed: 500}
tracking: {mlflow: false}
"""


@pytest.fixture(scope="module")
def ray_instance(ray_for_module):
    """The shared 2-CPU Ray (conftest.py), with this module's trial functions shipped by value."""
    pytest.importorskip("optuna")
    return ray_for_module


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    path = tmp_path_factory.mktemp("sweep") / "exp.yaml"
    path.write_text(EXPERIMENT)
    return path


@pytest.fixture(scope="module")
def cached_runs(experiment, tmp_path_factory) -> Path:
    """A runs root whose stage cache holds the experiment's recordings and dataset, built once for the module."""
    from bcarena.experiments.runner import ExperimentRunner, load

    root = tmp_path_factory.mktemp("sweep-runs")
    runner = ExperimentRunner(load(experiment), root, experiment, progress=False, console=Console(quiet=True))
    runner.run_dir = root
    runner.prepare_dataset()
    return root


def _runs(cached_runs: Path, tmp_path: Path) -> Path:
    """A private runs root with the cached recordings and dataset: the sweep reuses them by content key."""
    shutil.copytree(cached_runs / ".cache", tmp_path / "runs" / ".cache")
    return tmp_path / "runs"


# Each Tune trial costs ~1.5 s of Ray overhead: 4 trials already hold both completed and early-stopped ones.
@pytest.mark.parametrize("trials", [4, pytest.param(8, marks=pytest.mark.slow)])
def test_sweep_stops_bad_trials_early_and_writes_the_best_config_as_an_experiment(
    ray_instance, experiment, cached_runs, tmp_path, trials
):
    from bcarena.experiments.runner import load

    def synthetic_trial(params, setup, report):
        """Win rate grows with the event weight and with epochs: the sweep must find a high weight."""
        for epoch in range(1, setup.epochs + 1):
            report(
                {
                    "win_rate": params["event_weighting.weight"] / 50 * epoch / setup.epochs,
                    "epoch": epoch,
                    "val_accuracy": 0.5,
                    "finished": epoch == setup.epochs,
                }
            )

    space = SearchSpace.parse(
        {
            "loss": {"choice": ["ce", "weighted_ce"]},
            "class_weights": {"choice": ["inverse", "sqrt_inverse"]},
            "event_weighting.events": ["skill_used"],
            "event_weighting.weight": {"uniform": [1.0, 50.0]},
        }
    )
    settings = SweepSettings(trials=trials, epochs=4, grace=1, concurrency=1, seed=3)
    result = run_sweep(
        experiment,
        tmp_path / "sweep",
        settings,
        space,
        runs_root=_runs(cached_runs, tmp_path),
        console=Console(quiet=True),
        trial_fn=synthetic_trial,
    )

    statuses = [r.status for r in result.trials]
    assert len(result.trials) == trials and "stopped early" in statuses and "completed" in statuses
    stopped = [r for r in result.trials if r.status == "stopped early"]
    assert all(r.epochs < 4 for r in stopped)
    completed = [r for r in result.trials if r.status == "completed"]
    assert result.best.win_rate == max(r.win_rate for r in completed)
    assert result.best.win_rate == pytest.approx(result.best.params["event_weighting.weight"] / 50)
    for r in result.trials:  # plain CE takes no class weights: the scheme is dropped from its options
        assert ("class_weights" in r.params) == (r.params["loss"] != "ce")

    exp = load(result.experiment_file)
    assert exp.name == "tiny-sweep-tuned" and [v.name for v in exp.variants] == ["base", "base-tuned"]
    tuned = exp.variants[1].train
    assert tuned["hidden"] == [32] and tuned["epochs"] == 4 and tuned.get("loss", "ce") == result.best.params["loss"]
    assert tuned["event_weighting"]["weight"] == result.best.params["event_weighting.weight"]
    assert tuned["event_weighting"]["events"] == ["skill_used"]
    assert exp.evaluation.seed == 500 and exp.recording.episodes == 12  # everything else is kept

    summary = json.loads((result.folder / "sweep.json").read_text())
    assert summary["setup"]["match_seed"] == 500 + 1_000_000  # disjoint from the evaluation seeds
    assert summary["scheduler"]["name"] == "ASHA" and summary["best"]["trial"] == result.best.trial
    assert len(json.loads((result.folder / "trials.json").read_text())) == trials
    assert (result.folder / "win_rate_by_epoch.png").stat().st_size > 1000
    assert (result.folder / "dataset_stats.json").is_file()


def test_the_sweep_command_trains_and_plays_real_trials(ray_instance, experiment, cached_runs, tmp_path):
    from bcarena.experiments.cli import app
    from bcarena.experiments.runner import load

    out = tmp_path / "cli-sweep"
    result = CliRunner().invoke(
        app,
        [
            "sweep",
            str(experiment),
            "--trials",
            "2",
            "--epochs",
            "1",
            "--matches",
            "4",
            "--runs",
            str(_runs(cached_runs, tmp_path)),
            "--out",
            str(out),
            "--opponent",
            "idle",
        ],
    )
    assert result.exit_code == 0, result.output
    trials = json.loads((out / "trials.json").read_text())
    assert len(trials) == 2 and all(t["status"] == "completed" and t["epochs"] == 1 for t in trials)
    assert all(0.0 <= t["win_rate"] <= 1.0 for t in trials)
    assert load(out / "best_experiment.yaml").variants[1].name == "base-tuned"
    assert "best config ->" in result.output


def test_a_trial_reports_win_rate_after_each_chunk_of_epochs(cached_runs):
    [dataset] = (cached_runs / ".cache" / "datasets").glob("*/dataset")  # read only: the trial trains in memory
    setup = TrialSetup(
        dataset_dir=str(dataset),
        base_train={"hidden": [16]},
        fixed={},
        opponent="idle",
        matches=4,
        match_seed=7,
        epochs=3,
        eval_every=2,
        train_seed=0,
        game={"round_seconds": 8.0},
    )
    reports = []
    run_trial({"loss": "focal"}, setup, reports.append)
    assert [r["epoch"] for r in reports] == [2, 3] and reports[-1]["finished"]
    assert all(0 <= r["win_rate"] <= 1 and 0 <= r["val_accuracy"] <= 1 for r in reports)


@pytest.mark.parametrize(
    "space, needle",
    [
        ({"lossx": {"choice": ["ce"]}}, "lossx: not a trainer option"),
        ({"loss": {"choice": ["nope"]}}, "loss: 'nope' is not a valid value"),
        ({"event_weighting.weight": {"uniform": [0.5, 3]}}, "greater than or equal to 1"),
        ({"lr": {"normal": [0, 1]}}, "a distribution is one of"),
        ({"lr": {"uniform": [0.1]}}, r"uniform takes \[low, high\]"),
        ({"hidden": {"choice": [[32], [64]]}}, "choice values must be scalars"),
        ({"hidden.width": 3}, "'hidden' is not a section"),
        ([], "non-empty mapping"),
    ],
)
def test_bad_search_spaces_name_the_key(space, needle):
    with pytest.raises(SweepError, match=needle):
        SearchSpace.parse(space)


def test_default_space_and_space_files(tmp_path):
    space = SearchSpace.parse(DEFAULT_SPACE)
    assert space.fixed == {"event_weighting.events": ["skill_used"]}
    assert set(space.searched) >= {"loss", "class_weights", "effective_beta", "event_weighting.weight"}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"lr": {"loguniform": [1e-4, 1e-2]}, "epochs": 3}))
    assert SearchSpace.load(path).searched == {"lr": {"loguniform": [1e-4, 1e-2]}}
    with pytest.raises(SweepError, match="no such search-space file"):
        SearchSpace.load(tmp_path / "missing.yaml")


def test_best_trial_prefers_fully_trained_trials():
    early = TrialRecord("a", {}, "stopped early", 1, 0.9, {1: 0.9}, 0.5)
    done = TrialRecord("b", {}, "completed", 4, 0.4, {4: 0.4}, 0.5)
    failed = TrialRecord("c", {}, "error", 0, None, {}, None, error="boom")
    assert best_trial([early, done, failed]) is done
    with pytest.raises(SweepError, match="no trial reported a win rate"):
        best_trial([failed])


def test_sweep_refuses_composite_and_unknown_variants(experiment, tmp_path):
    pytest.importorskip("ray")
    for variant, needle in (("split", "is composite; the sweep tunes bc variants"), ("nope", "no variant 'nope'")):
        with pytest.raises(SweepError, match=needle):
            run_sweep(experiment, tmp_path, variant=variant, runs_root=tmp_path / "runs", console=Console(quiet=True))
