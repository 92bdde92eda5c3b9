"""A real two-node Ray cluster on this machine (two `ray start`), with token authentication, as the README describes.

Slow: it starts and stops Ray processes (``ray stop`` at the end stops every Ray process of this machine).
"""

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")
pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
EXPERIMENT = """\
name: two-node
seed: 1
game: {round_seconds: 8.0}
recording: {player: pro, opponents: [brawler, random], episodes: 12}
dataset: {split: [0.5, 0.25, 0.25]}
variants:
  - name: naive
    train: {epochs: 2, hidden: [32]}
  - name: weighted
    train: {loss: weighted_ce, class_weights: inverse, epochs: 2, hidden: [32]}
seeds: [0]
evaluation: {opponents: [brawler], matches: 20}
tracking: {mlflow: false}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ray(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ray"), *args], env=env, capture_output=True, text=True, timeout=timeout)


def _active_nodes(env: dict[str, str]) -> int:
    status = _ray("status", env=env, timeout=60).stdout
    active = status.split("Active:")[1].split("Pending:")[0]
    return sum(1 for line in active.splitlines() if "node_" in line)


@pytest.fixture()
def cluster():
    """A head and a worker node (1 CPU each) with token auth; yields (address, env with the token)."""
    port = _free_port()
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    address = f"127.0.0.1:{port}"
    try:
        head = _ray("start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false", env=env)
        assert head.returncode == 0, head.stderr[-2000:]
        yield address, env
    finally:
        _ray("stop", "--force", env=env, timeout=120)


def test_a_worker_without_the_token_is_refused_and_one_with_it_joins(cluster):
    address, env = cluster
    no_token = {k: v for k, v in env.items() if k != "RAY_AUTH_TOKEN"}
    refused = _ray("start", f"--address={address}", "--num-cpus=1", env=no_token, timeout=120)
    assert refused.returncode != 0
    assert "AuthenticationError" in refused.stderr + refused.stdout
    joined = _ray("start", f"--address={address}", "--num-cpus=1", env=env)
    assert joined.returncode == 0, joined.stderr[-2000:]
    deadline = time.monotonic() + 60
    while _active_nodes(env) < 2 and time.monotonic() < deadline:
        time.sleep(1)
    assert _active_nodes(env) == 2


def test_an_experiment_runs_on_the_two_node_cluster_with_the_local_results(cluster, tmp_path):
    address, env = cluster
    assert _ray("start", f"--address={address}", "--num-cpus=1", env=env).returncode == 0
    experiment = tmp_path / "two_node.yaml"
    experiment.write_text(EXPERIMENT)

    def run(runs: Path, *extra: str) -> dict:
        done = subprocess.run(
            [str(BIN / "bcarena"), "run", str(experiment), "--runs", str(runs), "--no-progress", *extra],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            cwd=tmp_path,
        )
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
        results = sorted((runs / "two-node").glob("*/results.json"))
        assert len(results) == 1
        return json.loads(results[0].read_text())

    on_cluster = run(tmp_path / "cluster-runs", "--executor", "ray", "--address", address)
    local = run(tmp_path / "local-runs")
    assert _active_nodes(env) == 2

    def metrics(results: dict) -> dict:
        return {a["agent_id"]: (a.get("offline"), a.get("online")) for a in results["agents"]}

    assert {"naive-s0", "weighted-s0"} <= set(metrics(on_cluster))
    assert all(a["error"] is None for a in on_cluster["agents"])
    assert metrics(on_cluster) == metrics(local)
