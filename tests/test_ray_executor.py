"""Experiments and tournaments on Ray: same results as local, killed workers retried, failures recorded."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

ray = pytest.importorskip("ray")

from bcarena.eval.tournament import run_tournament  # noqa: E402
from bcarena.experiments.cli import app  # noqa: E402
from bcarena.experiments.ray_executor import RayExecutor  # noqa: E402
from bcarena.experiments.ray_map import RayMap, default_shard_size, shards  # noqa: E402
from bcarena.experiments.results import load_results  # noqa: E402
from bcarena.experiments.runner import ExperimentRunner, StageTask, TaskOutcome, load  # noqa: E402

EXPERIMENT = """\
name: tiny-ray
seed: 1
game: {round_seconds: 8.0}
recording: {player: pro, opponents: [brawler, random], episodes: 12}
dataset: {split: [0.5, 0.25, 0.25]}
variants:
  - name: naive
    train: {epochs: 2, hidden: [32]}
  - name: weighted
    train: {loss: weighted_ce, class_weights: inverse, epochs: 2, hidden: [32]}
  - name: needs_pixels
    train: {policy: cnn, epochs: 1}
seeds: [0]
evaluation: {opponents: [brawler], matches: 20}
tracking: {mlflow: false}
"""


@pytest.fixture(scope="module", autouse=True)
def ray_instance(ray_for_module):
    """The shared 2-CPU Ray (conftest.py); functions defined here go to workers by value."""
    return ray_for_module


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The experiment run by the local executor (the reference every Ray run must match)."""
    root = tmp_path_factory.mktemp("ray-exp")
    path = root / "exp.yaml"
    path.write_text(EXPERIMENT)
    run_dir = ExperimentRunner(load(path), root / "local", path, progress=False, console=Console(quiet=True)).run()
    return path, root, run_dir


def _fresh_root(local_run, name: str) -> Path:
    """A runs root holding the local run's recordings and dataset (not its agents): Ray must train and evaluate."""
    _, root, _ = local_run
    fresh = root / name
    for stage in ("recordings", "datasets"):
        shutil.copytree(root / "local" / ".cache" / stage, fresh / ".cache" / stage)
    return fresh


def _metrics(run_dir: Path) -> dict:
    """Every agent's results except the wall-clock latency (which no two runs share)."""
    return {a.agent_id: (a.offline, a.online, a.error is None) for a in load_results(run_dir).agents}


def test_ray_executor_gives_the_local_results_and_records_the_failing_variant(local_run):
    path, _, local_dir = local_run
    runs = _fresh_root(local_run, "ray")
    ray_dir = ExperimentRunner(
        load(path), runs, path, progress=False, console=Console(quiet=True), executor=RayExecutor(progress=False)
    ).run()
    assert _metrics(ray_dir) == _metrics(local_dir)
    by_id = {a.agent_id: a for a in load_results(ray_dir).agents}
    assert by_id["naive-s0"].online["brawler"]["matches"] == 20 and by_id["naive-s0"].offline["accuracy"] > 0
    assert by_id["needs_pixels-s0"].error and "pixels" in by_id["needs_pixels-s0"].error
    assert (ray_dir / "failures" / "needs_pixels-s0.txt").is_file()
    for agent_id in ("naive-s0", "weighted-s0"):
        assert json.loads((ray_dir / "confusion" / f"{agent_id}.json").read_text()) == json.loads(
            (local_dir / "confusion" / f"{agent_id}.json").read_text()
        )
    # Workers trained and evaluated: the Ray run's cache holds its own agents.
    assert len(list((runs / ".cache" / "agents").iterdir())) == 2

    # The CLI path (--executor ray) reuses the running instance and every cached stage.
    result = CliRunner().invoke(app, ["run", str(path), "--runs", str(runs), "--executor", "ray", "--no-progress"])
    assert result.exit_code == 1, result.output  # the needs_pixels variant failed (and the others finished)
    assert "error: 1 of 4 variants failed: needs_pixels-s0 (DatasetError: " in result.stderr
    assert "cached train naive-s0" in result.output and "cached evaluate weighted-s0" in result.output


def _die_mid_training(fn, log_dir: str, victim: str, task):
    """On its first attempt at ``victim``, SIGKILL this worker process while the task trains."""
    if task.label != victim:
        return fn(task)
    log = Path(log_dir) / "attempts.txt"
    first = not log.exists()
    with log.open("a") as f:
        f.write(f"{os.getpid()}\n")
    if not first:
        return fn(task)
    stage = Path(task.cache_root) / "agents"

    def kill_after_the_first_epoch():  # of 2: the first checkpoint is in the temp folder, the agent is not
        while not list(stage.glob(f".{task.key}.partial-*/checkpoint.pt")):
            time.sleep(0.001)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=kill_after_the_first_epoch, daemon=True).start()
    fn(task)
    os.kill(os.getpid(), signal.SIGKILL)  # training beat the killer: this attempt still must not return


class KillingExecutor(RayExecutor):
    def __init__(self, log_dir: Path, victim: str, **kwargs) -> None:
        super().__init__(progress=False, **kwargs)
        self.log_dir, self.victim = str(log_dir), victim

    def map(self, fn, tasks):
        return super().map(partial(_die_mid_training, fn, self.log_dir, self.victim), tasks)


def test_a_worker_killed_mid_training_is_retried_and_the_run_gives_the_same_results(local_run, tmp_path):
    path, _, local_dir = local_run
    runs = _fresh_root(local_run, "killed")
    executor = KillingExecutor(tmp_path, "train weighted-s0", max_retries=2)
    run_dir = ExperimentRunner(
        load(path), runs, path, progress=False, console=Console(quiet=True), executor=executor
    ).run()
    pids = (tmp_path / "attempts.txt").read_text().split()
    assert len(pids) == 2 and pids[0] != pids[1]  # killed once, retried in a new worker process
    assert _metrics(run_dir) == _metrics(local_dir)
    # The killed attempt left only a temp folder (a checkpoint, no agent); the retry built the entry from scratch.
    [partial] = (runs / ".cache" / "agents").glob(".*.partial-*")
    assert (partial / "checkpoint.pt").is_file() and not (partial / "agent").exists()
    assert len([p for p in (runs / ".cache" / "agents").iterdir() if not p.name.startswith(".")]) == 2


def one_variant_experiment(tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text("name: e\nvariants:\n  - name: a\n    train: {num_threads: 3}\n")
    return load(path)


def test_a_worker_that_keeps_dying_is_a_recorded_failure_not_a_crash(tmp_path):
    def always_dies(task):
        os.kill(os.getpid(), signal.SIGKILL)

    task = StageTask(
        kind="evaluate",
        label="evaluate doomed",
        cache_root=str(tmp_path),
        key="k",
        experiment=one_variant_experiment(tmp_path),
    )
    ok = replace(task, label="evaluate fine")
    outcomes = RayExecutor(max_retries=0, eval_batch=1, progress=False).map(
        lambda t: always_dies(t) if t.label == "evaluate doomed" else TaskOutcome(t.label, "x", False, 0.0), [task, ok]
    )
    assert outcomes[0].path is None and "Ray task lost after retries" in outcomes[0].error
    assert outcomes[1] == TaskOutcome("evaluate fine", "x", False, 0.0)


def test_training_tasks_reserve_their_variant_threads_and_impossible_ones_fail_cleanly(tmp_path):
    exp = one_variant_experiment(tmp_path)
    task = StageTask(
        kind="train",
        label="train a-s0",
        cache_root=str(tmp_path),
        key="k",
        experiment=exp,
        variant=exp.variants[0],
        seed=0,
    )
    assert RayExecutor(num_gpus_per_task=0.5).train_resources(task) == (3.0, 0.5)
    assert RayExecutor(num_cpus_per_task=4).train_resources(task) == (4.0, 0.0)
    [outcome] = RayExecutor(progress=False).map(lambda t: pytest.fail("must not run"), [task])
    assert outcome.path is None and "needs 3 CPUs" in outcome.error and "has 2" in outcome.error
    with pytest.raises(ValueError, match="absolute path on storage every node"):
        RayExecutor(address="auto").map(lambda t: t, [replace(task, cache_root="runs/.cache")])
    with pytest.raises(ValueError, match="max_retries >= 0"):
        RayExecutor(max_retries=-1)


def test_ray_map_keeps_order_shards_and_does_not_retry_exceptions():
    assert shards(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert default_shard_size(499_500, 64) == 1952 and default_shard_size(3, 64) == 1
    assert list(RayMap(shard_size=3)(lambda x: x * x, range(10))) == [x * x for x in range(10)]
    assert list(RayMap()(lambda x: x, [])) == []

    def broken(x):
        raise KeyError(f"bad item {x}")

    with pytest.raises(KeyError, match="bad item 0"):
        list(RayMap(shard_size=1)(broken, [0]))


def test_tournament_on_ray_matches_the_local_one(tmp_path):
    local = run_tournament(["pro", "brawler", "idle"], matches=8, seed=3)
    result = CliRunner().invoke(
        app,
        [
            "tournament",
            "pro",
            "brawler",
            "idle",
            "--matches",
            "8",
            "--seed",
            "3",
            "--executor",
            "ray",
            "--shard-size",
            "1",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "tournament.json").read_text()) == json.loads(json.dumps(local.to_dict()))


def test_executor_options_are_checked(tmp_path):
    runner = CliRunner()
    experiment = tmp_path / "x.yaml"  # the options are checked before the file is read
    experiment.write_text("name: x\n")
    bad = runner.invoke(app, ["run", str(experiment), "--executor", "dask"])
    assert bad.exit_code == 2 and "'dask' is not one of 'local', 'ray'" in bad.output
    bad = runner.invoke(app, ["run", str(experiment), "--address", "auto"])
    assert bad.exit_code == 2 and "need --executor ray" in bad.output
    bad = runner.invoke(app, ["run", str(experiment), "--executor", "ray", "--address", "auto", "--runs", "runs"])
    assert bad.exit_code == 2 and "absolute path" in bad.output
    bad = runner.invoke(app, ["tournament", "pro", "idle", "--executor", "spark"])
    assert bad.exit_code == 2 and "'spark' is not one of 'local', 'ray'" in bad.output


def test_the_cli_does_not_import_ray_until_asked():
    code = "import sys, bcarena.experiments.cli; assert 'ray' not in sys.modules, 'ray imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.slow
def test_eight_variants_by_two_seeds_give_identical_metrics_locally_and_on_ray():
    from bcarena.experiments.benchmarks.ray_scaling import parity

    result = parity(variants=8, seeds=2)
    print(json.dumps(result, indent=2))
    assert result["agents"] == 16 and not result["failed_agents"]
    assert result["identical_metrics"], result["differing_agents"]
