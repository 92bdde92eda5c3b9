"""Experiment files and the cached end-to-end runner."""

import json
import textwrap

import pytest
from rich.console import Console

from bcarena.experiments import runner as runner_module
from bcarena.experiments.config import ExperimentError
from bcarena.experiments.results import load_results
from bcarena.experiments.runner import ExperimentRunner, load

TINY = """\
name: tiny
seed: 1
game: {round_seconds: 8.0}
recording:
  player: pro
  opponents: [brawler, random]
  episodes: 12
dataset: {split: [0.5, 0.25, 0.25]}
variants:
  - name: naive
    train: {epochs: 2, hidden: [32]}
  - name: weighted
    train: {loss: weighted_ce, class_weights: inverse, epochs: 2, hidden: [32]}
  - name: needs_pixels
    train: {policy: cnn, epochs: 1}
seeds: [0]
evaluation:
  opponents: [brawler]
  matches: 20
  offline: {tolerance_frames: 2}
  replay: {side_by_side: [naive, weighted], opponent: brawler, seed: 2}
tracking: {mlflow: false}
"""


def _write(tmp_path, text, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize("text, needle", [
    ("name: x\nvariants:\n  - name: a\n    trian: {}\n", r"exp.yaml:4: variants.0.trian: unknown key"),
    ("name: x\nvariants:\n  - name: a\nevaluation:\n  matches: many\n", r"exp.yaml:5: evaluation.matches: Input should be"),
    ("name: x\nvariants: []\n", r"exp.yaml:2: variants: List should have at least 1 item"),
    ("name: x\nvariants:\n  - name: a\nrecording:\n  path: /no/such/folder\n", r"does not exist"),
    ("name: x\ngame: {max_health: 3}\nvariants:\n  - name: a\n", r"exp.yaml:2: game: .*unknown key\(s\) \['max_health'\]"),
    ("name: [unclosed\n", r"not valid YAML"),
    ("- just\n- a list\n", r"must be a YAML mapping"),
])
def test_invalid_experiment_files_name_the_key_and_line(tmp_path, text, needle):
    with pytest.raises(ExperimentError, match=needle):
        load(_write(tmp_path, text))


def test_trainer_options_are_validated_on_load_with_the_variant_line(tmp_path):
    text = "name: x\nvariants:\n  - name: ok\n  - name: typo\n    train: {epoch: 3}\n"
    with pytest.raises(ExperimentError, match=r"exp.yaml:5: variants.1 \(typo\).train: .*epoch"):
        load(_write(tmp_path, text))


def test_missing_experiment_file(tmp_path):
    with pytest.raises(ExperimentError, match="no such experiment file"):
        load(tmp_path / "nope.yaml")


def _run(tmp_path, text=TINY):
    console = Console(record=True, width=160)
    exp_path = _write(tmp_path, text)
    run_dir = ExperimentRunner(load(exp_path), tmp_path / "runs", exp_path, progress=False, console=console).run()
    return run_dir, console.export_text()


def test_end_to_end_run_cache_and_failed_variant(tmp_path):
    run_dir, log = _run(tmp_path)
    results = load_results(run_dir)
    by_id = {a.agent_id: a for a in results.agents}
    assert set(by_id) == {"naive-s0", "weighted-s0", "needs_pixels-s0", "pro"}
    # The failing variant is recorded and the others finished.
    assert by_id["needs_pixels-s0"].error and "pixels" in by_id["needs_pixels-s0"].error
    assert (run_dir / "failures" / "needs_pixels-s0.txt").is_file()
    for agent_id in ("naive-s0", "weighted-s0"):
        agent = by_id[agent_id]
        assert agent.error is None
        assert 0 <= agent.offline["accuracy"] <= 1
        online = agent.online["brawler"]
        assert online["matches"] == 20 and online["win_rate_low"] <= online["win_rate"] <= online["win_rate_high"]
    assert by_id["pro"].kind == "bot" and by_id["pro"].online["brawler"]["matches"] == 20
    for name in ("results.json", "leaderboard.parquet", "config.resolved.yaml", "environment.json",
                 "dataset_stats.json", "plots/accuracy_vs_winrate.png", "plots/class_distribution.png",
                 "replays/side_by_side.mp4", "plots/side_by_side_still.png", "curves/naive-s0.json",
                 "confusion/naive-s0.json"):
        assert (run_dir / name).exists(), name
    env = json.loads((run_dir / "environment.json").read_text())
    assert env["versions"]["torch"].startswith("2.13") and env["git_commit"]
    assert "win rate vs brawler" in log

    # Re-running the same file reuses every stage that succeeded, and gives the same numbers.
    rerun_dir, rerun_log = _run(tmp_path)
    assert rerun_dir != run_dir
    for stage in ("record 12 episodes of pro", "build the action dataset", "train naive-s0", "train weighted-s0",
                  "evaluate naive-s0", "evaluate weighted-s0", "evaluate reference pro"):
        assert f"cached {stage}" in rerun_log, stage
    again = {a.agent_id: a for a in load_results(rerun_dir).agents}
    assert again["naive-s0"].online == by_id["naive-s0"].online
    assert again["weighted-s0"].offline == by_id["weighted-s0"].offline

    # Changing one variant retrains only that one.
    changed = TINY.replace("loss: weighted_ce, class_weights: inverse, epochs: 2",
                           "loss: weighted_ce, class_weights: sqrt_inverse, epochs: 2")
    _, changed_log = _run(tmp_path, changed)
    assert "cached train naive-s0" in changed_log
    assert "done   train weighted-s0" in changed_log


def test_a_killed_run_resumes_from_the_cache(tmp_path, monkeypatch):
    text = TINY.replace("  - name: needs_pixels\n    train: {policy: cnn, epochs: 1}\n", "")
    real = runner_module.evaluate_agent
    calls = []

    def dies_on_second_agent(agent, dataset, exp):
        calls.append(agent.name)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real(agent, dataset, exp)

    monkeypatch.setattr(runner_module, "evaluate_agent", dies_on_second_agent)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, text)
    monkeypatch.setattr(runner_module, "evaluate_agent", real)
    run_dir, log = _run(tmp_path, text)
    assert "cached train naive-s0" in log and "cached train weighted-s0" in log
    assert "cached evaluate naive-s0" in log and "done   evaluate weighted-s0" in log
    assert not list((tmp_path / "runs" / ".cache" / "evaluations").glob(".*partial*"))
    assert all(a.error is None for a in load_results(run_dir).agents)


def test_shipped_experiment_and_requirement_files_are_valid():
    from pathlib import Path

    from bcarena.eval.service.requirements import load_requirements

    folder = Path(runner_module.__file__).parent
    for name in ("seed_story.yaml", "gap_study.yaml"):
        assert len(load(folder / name).variants) >= 4, name
    assert load(folder / "gap_study.yaml").evaluation.gap_report
    assert load_requirements(folder / "service_requirements.yaml").win_rate


def test_runs_are_tracked_in_mlflow(tmp_path):
    mlflow = pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    text = (TINY.replace("  - name: needs_pixels\n    train: {policy: cnn, epochs: 1}\n", "")
            .replace("  replay: {side_by_side: [naive, weighted], opponent: brawler, seed: 2}\n", "")
            .replace("tracking: {mlflow: false}", f"tracking: {{mlflow: true, uri: '{uri}'}}"))
    run_dir, log = _run(tmp_path, text)
    assert "MLflow run" in log
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["tiny"])
    assert len(runs) == 1 and runs.loc[0, "tags.run_dir"] == str(run_dir)
    results = {a.agent_id: a for a in load_results(run_dir).agents}
    logged = runs.loc[0, "metrics.naive-s0.online.brawler.win_rate"]
    assert logged == pytest.approx(results["naive-s0"].online["brawler"]["win_rate"])
    assert runs.loc[0, "params.evaluation.matches"] == "20"
    artifacts = mlflow.artifacts.list_artifacts(run_id=runs.loc[0, "run_id"])
    assert {"results.json", "plots"} <= {a.path for a in artifacts}
