"""Load test: loopback only, bounded, zero 5xx / dropped requests, every malformed request answered 4xx."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from bcarena.agents.policies import MLPPolicy, ScoreModel
from bcarena.agents.torch_agent import TorchAgent
from bcarena.envs.duel import ACTION_NAMES, SKILL_ACTIONS
from bcarena.eval.service.export import served_from_agent
from bcarena.eval.service.loadtest import FUZZ_CASES, LoadTestError, check_loopback, plot_loadtest, run_loadtest
from bcarena.eval.service.server import NPY_TYPE, BackgroundServer, ServerSettings, free_port

pytest.importorskip("fastapi")


def mlp_agent() -> TorchAgent:
    torch.manual_seed(0)
    model = ScoreModel(MLPPolicy(37, 8, (32, 32)), torch.zeros(37), torch.ones(37))
    return TorchAgent(model, list(ACTION_NAMES), list(SKILL_ACTIONS), 1, name="mlp")


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com:8000",
        "http://10.0.0.1:8000",
        "http://0.0.0.0:8000",
        "http://192.168.1.5",
        "ftp://127.0.0.1:21",
        "127.0.0.1:8000",
    ],
)
def test_only_loopback_urls_are_load_tested(url):
    with pytest.raises(LoadTestError):
        check_loopback(url)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000/", "http://localhost:1", "http://[::1]:9000", "http://127.3.4.5:80"]
)
def test_loopback_urls_are_accepted(url):
    assert check_loopback(url) == url.rstrip("/")


def test_limits_are_enforced_before_any_request():
    with pytest.raises(LoadTestError, match="concurrency levels must be within 1..256"):
        run_loadtest("http://127.0.0.1:1", levels=(1, 512))
    with pytest.raises(LoadTestError, match="at most 1000000 requests"):
        run_loadtest("http://127.0.0.1:1", levels=(1,), requests=2_000_000)


def test_small_load_test_is_clean_and_fuzz_is_all_4xx(tmp_path):
    served = served_from_agent(mlp_agent(), None, "torch")
    with BackgroundServer(served, ServerSettings(max_batch=32)) as server:
        report = run_loadtest(server.url, levels=(1, 8), requests=150, fuzz=3 * len(FUZZ_CASES))
        batched = run_loadtest(server.url, levels=(4,), requests=50, batch=32, content_type=NPY_TYPE, fuzz=0)
        with pytest.raises(LoadTestError, match="exceeds the server's max_batch 32"):
            run_loadtest(server.url, levels=(1,), requests=1, batch=33)
    assert report.passed and report.total_requests == 300
    for level in report.levels:
        assert (level.ok, level.server_errors, level.dropped, level.client_errors) == (150, 0, 0, 0)
        assert (
            0 < level.latency_ms["p50"] <= level.latency_ms["p95"] <= level.latency_ms["p99"] <= level.latency_ms["max"]
        )
        assert level.decisions_per_s == pytest.approx(level.requests_per_s)
    assert report.fuzz.all_4xx and set(report.fuzz.by_case) == set(FUZZ_CASES) and not report.fuzz.failures
    assert batched.passed and batched.levels[0].decisions_per_s == pytest.approx(32 * batched.levels[0].requests_per_s)
    data = report.to_dict()
    assert data["passed"] and data["fuzz"]["all_4xx"] and data["server"]["agent"] == "mlp"
    json.dumps(data)  # JSON-serializable as is
    assert plot_loadtest(report, tmp_path / "lt.png").stat().st_size > 10_000


def test_dropped_requests_are_counted_not_hidden():
    port = free_port()  # nothing listens here: every request is dropped
    from bcarena.eval.service import loadtest

    meta = {"layout": {"obs_type": "state", "shape": [37], "wire_dtype": "float32"}, "max_batch": 4}
    report = loadtest.asyncio.run(
        loadtest._run(f"http://127.0.0.1:{port}", meta, (2,), 5, 1, "application/json", 2, 0, 2.0, False)
    )
    assert report.levels[0].dropped == 5 and report.levels[0].ok == 0 and not report.passed
    assert report.fuzz.status_counts == {"dropped": 2} and not report.fuzz.all_4xx


@pytest.mark.slow
def test_10000_requests_through_a_served_export_with_zero_errors_and_1000_fuzzed_4xx(tmp_path):
    agent_dir = mlp_agent().save(tmp_path / "agent")
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bcarena.experiments.cli",
            "serve",
            str(agent_dir),
            "--port",
            str(port),
            "--backend",
            "onnx",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        import httpx

        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, server.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.5)
        report = run_loadtest(f"http://127.0.0.1:{port}", levels=(1, 4, 16, 64), requests=2_500, fuzz=1_000)
    finally:
        server.terminate()
        server.wait(30)
    assert report.total_requests == 10_000 and report.passed
    assert sum(lv.server_errors + lv.dropped for lv in report.levels) == 0
    assert report.fuzz.requests == 1_000 and report.fuzz.all_4xx
    assert np.all([lv.ok == 2_500 for lv in report.levels])
