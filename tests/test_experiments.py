"""Experiment files and the cached end-to-end runner."""

import json
import os
import socket
import textwrap
import time

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


@pytest.mark.parametrize(
    "text, needle",
    [
        ("name: x\nvariants:\n  - name: a\n    trian: {}\n", r"exp.yaml:4: variants.0.trian: unknown key"),
        (
            "name: x\nvariants:\n  - name: a\nevaluation:\n  matches: many\n",
            r"exp.yaml:5: evaluation.matches: Input should be",
        ),
        ("name: x\nvariants: []\n", r"exp.yaml:2: variants: List should have at least 1 item"),
        ("name: x\nvariants:\n  - name: a\nrecording:\n  path: /no/such/folder\n", r"does not exist"),
        (
            "name: x\ngame: {max_health: 3}\nvariants:\n  - name: a\n",
            r"exp.yaml:2: game: .*unknown key\(s\) \['max_health'\]",
        ),
        ("name: [unclosed\n", r"not valid YAML"),
        ("- just\n- a list\n", r"must be a YAML mapping"),
    ],
)
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


def alias_bomb(levels: int) -> str:
    """A "billion laughs": each level is a list of nine aliases of the level below (9**levels values)."""
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "name: x\nvariants:\n  - name: a\n" + "\n".join(lines) + "\n"


def test_alias_bomb_experiment_is_refused_before_anything_expands(tmp_path):
    import time
    import tracemalloc

    path = _write(tmp_path, alias_bomb(8))  # 440 bytes that expand to 387 million values
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(ExperimentError, match=r"exp.yaml: its aliases expand to \d+ more values, over the limit"):
        load(path)
    seconds, (_, peak) = time.perf_counter() - started, tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert seconds < 1.0 and peak < 5_000_000


def test_moderate_aliases_still_load_with_their_lines(tmp_path):
    text = (
        "name: x\nvariants:\n  - name: a\n    train: &common {epochs: 2, hidden: [32]}\n"
        "  - name: b\n    train: *common\n  - name: c\n    train: {<<: *common, epoch: 3}\n"
    )
    with pytest.raises(ExperimentError, match=r"exp.yaml:8: variants.2 \(c\).train: .*'epoch'"):
        load(_write(tmp_path, text))
    experiment = load(_write(tmp_path, text.replace("epoch: 3", "lr: 0.01")))
    assert [v.train for v in experiment.variants] == [{"epochs": 2, "hidden": [32]}] * 2 + [
        {"epochs": 2, "hidden": [32], "lr": 0.01}
    ]


def _yaml_readers():
    """Every reader of a YAML file the project has, as (name, read(path), error type)."""
    import typer

    from bcarena.agents.config import TrainConfigError, load_train_config
    from bcarena.eval.service.requirements import RequirementsError, load_requirements
    from bcarena.experiments.commands.options import parse_sets
    from bcarena.experiments.sweep import SearchSpace, SweepError

    return [
        ("experiment", load, ExperimentError),
        ("requirements", load_requirements, RequirementsError),
        ("search space", SearchSpace.load, SweepError),
        ("train config", load_train_config, TrainConfigError),
        ("--set value", lambda path: parse_sets([f"x={path.read_text()}"]), typer.BadParameter),
    ]


HOSTILE_YAML = [
    ("recursive alias", "a: &x [1, *x]\n", "an alias refers to a node that contains it"),
    ("too many aliases", "a: &x 1\nb: [" + ", ".join(["*x"] * 1001) + "]\n", "more than 1000 YAML aliases"),
    ("deep nesting", "a: " + "[" * 100 + "]" * 100 + "\n", "nested more than 64 levels deep"),
    ("deeper than Python's stack", "[" * 20_000 + "]" * 20_000, "nested too deeply"),
    ("alias bomb", alias_bomb(5), r"its aliases expand to \d+ more values, over the limit of 10000"),
]


@pytest.mark.parametrize("reader", range(5), ids=["experiment", "requirements", "space", "train", "set"])
@pytest.mark.parametrize("name, text, message", HOSTILE_YAML, ids=[h[0] for h in HOSTILE_YAML])
def test_every_yaml_reader_refuses_hostile_documents(tmp_path, reader, name, text, message):
    _, read, error = _yaml_readers()[reader]
    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    with pytest.raises(error, match=message) as info:
        read(path)
    assert "hostile.yaml" in str(info.value) or "--set x" in str(info.value)
    assert "\n" not in str(info.value)


def test_yaml_files_over_the_size_cap_or_not_utf8_are_refused(tmp_path):
    from bcarena.envs.yaml_files import MAX_YAML_BYTES, YamlError, load_yaml

    big = tmp_path / "big.yaml"
    big.write_text("a: " + "x" * MAX_YAML_BYTES)
    with pytest.raises(YamlError, match="big.yaml: experiment file is larger than the limit of 1048576 bytes"):
        load_yaml(big, "experiment")
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"a: \xff\xfe")
    with pytest.raises(YamlError, match="bin.yaml: not UTF-8 text"):
        load_yaml(binary)
    with pytest.raises(YamlError, match="is a folder; expected a requirements file"):
        load_yaml(tmp_path, "requirements")
    assert load_yaml(_write(tmp_path, "")) is None


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
    for name in (
        "results.json",
        "leaderboard.parquet",
        "config.resolved.yaml",
        "environment.json",
        "dataset_stats.json",
        "plots/accuracy_vs_winrate.png",
        "plots/class_distribution.png",
        "replays/side_by_side.mp4",
        "plots/side_by_side_still.png",
        "curves/naive-s0.json",
        "confusion/naive-s0.json",
    ):
        assert (run_dir / name).exists(), name
    env = json.loads((run_dir / "environment.json").read_text())
    assert env["versions"]["torch"].startswith("2.13") and env["git_commit"]
    assert "win rate vs brawler" in log
    naive = by_id["naive-s0"].offline  # run folders name event recall as such (training reports frame recall)
    assert naive["skill_event_recall"] == naive["event_recall_any_skill"] and "skill_recall" not in naive
    header = "| agent | frame acc. | balanced acc. | skill-event recall | skill-event F1 |"
    assert header in (run_dir / "table.md").read_text()

    # Re-running the same file reuses every stage that succeeded, and gives the same numbers.
    rerun_dir, rerun_log = _run(tmp_path)
    assert rerun_dir != run_dir
    for stage in (
        "record 12 episodes of pro",
        "build the action dataset",
        "train naive-s0",
        "train weighted-s0",
        "evaluate naive-s0",
        "evaluate weighted-s0",
        "evaluate reference pro",
    ):
        assert f"cached {stage}" in rerun_log, stage
    again = {a.agent_id: a for a in load_results(rerun_dir).agents}
    assert again["naive-s0"].online == by_id["naive-s0"].online
    assert again["weighted-s0"].offline == by_id["weighted-s0"].offline

    # Changing one variant retrains only that one.
    changed = TINY.replace(
        "loss: weighted_ce, class_weights: inverse, epochs: 2",
        "loss: weighted_ce, class_weights: sqrt_inverse, epochs: 2",
    )
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
    text = (
        TINY.replace("  - name: needs_pixels\n    train: {policy: cnn, epochs: 1}\n", "")
        .replace("  replay: {side_by_side: [naive, weighted], opponent: brawler, seed: 2}\n", "")
        .replace("tracking: {mlflow: false}", f"tracking: {{mlflow: true, uri: '{uri}'}}")
    )
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

    # A tracking server that is down costs seconds and one line; the run still counts (every stage cached here).
    down = f"http://127.0.0.1:{_free_port()}"
    started = time.perf_counter()
    down_dir, down_log = _run(tmp_path, text.replace(uri, down))
    assert time.perf_counter() - started < 30
    [line] = [line for line in down_log.splitlines() if "tracking skipped" in line]
    assert f"MLflow tracking server {down} is unreachable" in line and "run folder is complete" in line
    assert (down_dir / "results.json").is_file() and (down_dir / "environment.json").is_file()
    assert len(mlflow.search_runs(experiment_names=["tiny"])) == 1


def _free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.timeout(60)
def test_unreachable_tracking_server_fails_fast_with_one_line(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from bcarena.experiments import tracking

    uri = f"http://127.0.0.1:{_free_port()}"
    started = time.perf_counter()
    with pytest.raises(tracking.TrackingUnavailable, match=r"server http://127.0.0.1:\d+ is unreachable") as info:
        tracking.log_run(uri, "x", "run", {}, {}, tmp_path)
    assert time.perf_counter() - started < 10 and "\n" not in str(info.value)
    # Past the probe (a server that goes down mid-run), MLflow's own retries are bounded too.
    monkeypatch.setattr(tracking, "check_reachable", lambda uri: None)
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    started = time.perf_counter()
    with pytest.raises(tracking.TrackingUnavailable, match=r"MLflow at http://127.0.0.1:\d+ failed \(MlflowException"):
        tracking.log_run(uri, "x", "run", {}, {}, tmp_path)
    assert time.perf_counter() - started < 20
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # the limits apply only while logging


def test_two_runs_building_the_same_stage_at_once_both_succeed(tmp_path):
    # Two `bcarena run`s on one --runs folder: both build the same content-hashed entry at the same time.
    # The first rename wins; the second finds the entry there and counts it as cached instead of crashing.
    import threading

    from bcarena.experiments.cache import StageCache

    cache, both_building = StageCache(tmp_path / ".cache"), threading.Barrier(2, timeout=30)
    outcomes: dict[str, tuple] = {}

    def make(tmp):
        both_building.wait()  # neither entry exists yet: both runs are past the cache check
        (tmp / "agent.json").write_text(threading.current_thread().name)

    def run(name):
        outcomes[name] = cache.build("agents", "k1", make)

    threads = [threading.Thread(target=run, args=(name,), name=name) for name in ("run-a", "run-b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(reused for _, reused in outcomes.values()) == [False, True]
    [winner] = [name for name, (_, reused) in outcomes.items() if not reused]
    folder = cache.path("agents", "k1")
    assert {path for path, _ in outcomes.values()} == {folder}
    assert (folder / "agent.json").read_text() == winner
    assert sorted(p.name for p in folder.parent.iterdir()) == ["k1"]  # the loser's temporary is gone

    # The same when the other run finishes between our check and our rename.
    def make_while_another_finishes(tmp):
        (tmp / "ours").write_text("ours")
        cache.path("agents", "k2").mkdir()
        (cache.path("agents", "k2") / "theirs").write_text("theirs")

    path, reused = cache.build("agents", "k2", make_while_another_finishes)
    assert reused and sorted(p.name for p in path.iterdir()) == ["theirs"]


def test_older_run_folders_are_read_with_the_current_metric_names(tmp_path):
    """Runs written before the frame/event split stored event recall as ``skill_recall``."""
    from bcarena.experiments.results import AgentResult, RunResults, save_results

    offline = {"accuracy": 0.9, "skill_recall": 0.4, "skill_f1": 0.3, "event_f1": 0.3}
    save_results(tmp_path, RunResults("old", "r1", [AgentResult("a-s0", "a", 0, "bc", None)], "brawler"))
    data = json.loads((tmp_path / "results.json").read_text())
    data["agents"][0]["offline"] = offline
    (tmp_path / "results.json").write_text(json.dumps(data))
    agent = load_results(tmp_path).agents[0]
    assert agent.offline == {"accuracy": 0.9, "skill_event_recall": 0.4, "skill_event_f1": 0.3}
    row = load_results(tmp_path).leaderboard().iloc[0]
    assert row["skill_event_recall"] == 0.4 and row["skill_event_f1"] == 0.3


def test_the_report_table_keeps_brackets_in_errors_and_names():
    from bcarena.experiments.report import markdown_table, results_table
    from bcarena.experiments.results import AgentResult, RunResults

    failed = AgentResult("x-s0", "x", 0, "bc", None, error="EvalError: needs .[ray] and [bold]x[/bold]")
    table = results_table(RunResults("exp", "r", [failed], "brawler"), ["brawler"])
    text = Console(width=200, record=True, file=open(os.devnull, "w"))
    text.print(table)
    assert "needs .[ray] and [bold]x[/bold]" in text.export_text()
    assert "| x-s0 | failed | EvalError: needs .[ray] and [bold]x[/bold] |" in markdown_table(table)


def test_local_executor_runs_tasks_in_worker_processes_in_task_order():
    """``--jobs N`` maps tasks over N spawned processes; outcomes come back in task order. One pool serves
    every stage (map) of a run, until ``close``."""
    from bcarena.experiments.runner import LocalExecutor

    executor = LocalExecutor(2)
    executor.start()
    workers = set(executor._pool._processes)
    assert len(workers) == 2
    assert list(executor.map(abs, [-3, 1, -2, 5, -4])) == [3, 1, 2, 5, 4]
    assert list(executor.map(abs, [-7, 8])) == [7, 8]
    assert set(executor._pool._processes) == workers  # the same workers, not a new pool per stage
    executor.close()
    assert executor._pool is None
    assert list(LocalExecutor(1).map(abs, [-1])) == [1]
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        LocalExecutor(0)


def test_jobs_is_for_the_local_executor(tmp_path):
    from typer.testing import CliRunner

    from bcarena.experiments.cli import app

    exp = tmp_path / "e.yaml"
    exp.write_text("name: x\n")
    result = CliRunner().invoke(app, ["run", str(exp), "--executor", "ray", "--jobs", "2"])
    assert result.exit_code == 2
    assert "--jobs is for the local executor" in result.output
