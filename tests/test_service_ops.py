"""The server for operations: /metrics, live/ready, model version and hash in answers, hot swaps (refused when the
new model does not fit), graceful shutdown on SIGTERM (a real subprocess), and the open-loop load test."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from bcarena.agents.base import game_io
from bcarena.agents.policies import CNNPolicy, MLPPolicy, ScoreModel
from bcarena.agents.torch_agent import TorchAgent
from bcarena.envs.duel import ACTION_NAMES, SKILL_ACTIONS
from bcarena.eval.service.export import served_from_agent
from bcarena.eval.service.loadtest import (
    LoadTestError,
    hdr_percentiles,
    ramp_open_loop,
    ramp_rates,
    run_open_loop,
)
from bcarena.eval.service.models import ModelSlot, SwapError, folder_sha256, incompatibility, load_slot
from bcarena.eval.service.server import BackgroundServer, MicroBatcher, ServerSettings, create_app, free_port

pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")
from fastapi.testclient import TestClient  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

STATE = [0.1] * 37


def _mlp(seed: int, name: str, stack: int = 1) -> TorchAgent:
    torch.manual_seed(seed)
    dim = 37 * stack
    model = ScoreModel(MLPPolicy(dim, 8, (16,)), torch.zeros(dim), torch.ones(dim))
    return TorchAgent(model, list(ACTION_NAMES), list(SKILL_ACTIONS), stack, name=name)


def _cnn(game: str) -> TorchAgent:
    torch.manual_seed(0)
    actions = list(game_io(game).action_names)
    model = ScoreModel(CNNPolicy(1, len(actions), (4, 8, 8), hidden=16), torch.tensor(0.0), torch.tensor(255.0))
    return TorchAgent(
        model, actions, [1] if game == "boxing" else list(SKILL_ACTIONS), 1, name=f"{game}-cnn", game=game
    )


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ops")
    return {
        "v0": _mlp(0, "mlp-a").save(root / "v0"),
        "v1": _mlp(1, "mlp-b").save(root / "v1"),
        "stack2": _mlp(2, "mlp-stack2", stack=2).save(root / "stack2"),
        "duel_cnn": _cnn("duel").save(root / "duel_cnn"),
        "boxing_cnn": _cnn("boxing").save(root / "boxing_cnn"),
    }


def _metrics(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


# ----------------------------------------------------------------------------- metrics, health, answers
def test_act_answers_carry_the_model_version_and_the_hash_of_the_agent_folder(folders):
    slot = load_slot(folders["v0"], version="2024-06-01")
    assert slot.model_hash == folder_sha256(folders["v0"]) != folder_sha256(folders["v1"])
    assert slot.game == "duel" and slot.source == str(folders["v0"])
    with TestClient(create_app(slot)) as client:
        single = client.post("/act", json={"obs": STATE}).json()
        batch = client.post("/act", json={"obs": [STATE, STATE]}).json()
        meta = client.get("/metadata").json()
    for answer in (single, batch):
        assert answer["model_version"] == "2024-06-01" and answer["model_hash"] == slot.model_hash
    assert batch["batch"] == 2 and meta["model_version"] == "2024-06-01" and meta["model_hash"] == slot.model_hash
    assert load_slot(folders["v1"]).version == "v1"  # by default, the folder's name


def test_metrics_count_requests_by_route_and_status_latency_batches_and_the_model():
    served = served_from_agent(_mlp(0, "mlp"), None, "torch")
    with TestClient(create_app(served)) as client, TestClient(create_app(served)) as other:
        for _ in range(3):
            assert client.post("/act", json={"obs": STATE}).status_code == 200
        assert client.post("/act", json={"obs": [STATE] * 5}).status_code == 200
        assert client.post("/act", json={"obs": [0.0] * 36}).status_code == 422
        assert client.get("/nowhere/at/all").status_code == 404
        text = client.get("/metrics").text
        other_text = other.get("/metrics").text
    m = _metrics(text)
    assert m[("bcarena_requests_total", (("route", "/act"), ("status", "200")))] == 4
    assert m[("bcarena_requests_total", (("route", "/act"), ("status", "422")))] == 1
    assert m[("bcarena_requests_total", (("route", "other"), ("status", "404")))] == 1  # unknown paths: one series
    assert m[("bcarena_errors_total", (("status", "422"),))] == 1
    assert m[("bcarena_request_duration_seconds_count", (("route", "/act"),))] == 5
    assert m[("bcarena_request_duration_seconds_bucket", (("le", "0.0001"), ("route", "/act")))] >= 0
    assert m[("bcarena_request_batch_size_sum", ())] == 3 + 5  # the 422 never reached the model
    assert m[("bcarena_model_batch_size_count", ())] == 4
    assert m[("bcarena_ready", ())] == 1
    info = [k for k in m if k[0] == "bcarena_model_info"]
    assert info == [
        ("bcarena_model_info", (("agent", "mlp"), ("game", "duel"), ("hash", served.sha256), ("version", "mlp")))
    ]
    # A second app in the same process has its own registry: it saw only its own request.
    assert ("bcarena_requests_total", (("route", "/act"), ("status", "200"))) not in _metrics(other_text)


def test_live_ready_and_draining():
    served = served_from_agent(_mlp(0, "mlp"), None, "torch")
    app = create_app(served)
    with TestClient(app) as client:
        assert client.get("/health/live").json() == {"live": True}
        ready = client.get("/health/ready")
        assert ready.status_code == 200 and ready.json()["ready"] is True
        app.state.service.drain()
        ready = client.get("/health/ready")
        assert ready.status_code == 503 and ready.json() == {"ready": False, "model_version": "mlp", "draining": True}
        assert client.get("/health/live").status_code == 200
        assert client.get("/health").json()["status"] == "draining"
        assert client.post("/act", json={"obs": STATE}).status_code == 200  # still answering while draining
        assert _metrics(client.get("/metrics").text)[("bcarena_ready", ())] == 0


# ----------------------------------------------------------------------------- hot swap
def test_the_admin_endpoint_refuses_clients_that_are_not_on_loopback(folders):
    with TestClient(create_app(load_slot(folders["v0"]))) as client:  # TestClient's client host is "testclient"
        answer = client.post("/admin/model", json={"path": str(folders["v1"])})
        assert answer.status_code == 403 and "loopback clients only" in answer.json()["detail"]
        assert client.post("/act", json={"obs": STATE}).json()["model_version"] == "v0"


def test_swaps_that_do_not_fit_are_refused_and_the_old_model_keeps_serving(folders):
    with BackgroundServer(load_slot(folders["v0"])) as server, httpx.Client(base_url=server.url, timeout=30) as http:

        def swap(body: object) -> httpx.Response:
            return http.post("/admin/model", content=json.dumps(body))

        refused = swap({"path": str(folders["stack2"])})
        assert refused.status_code == 409
        assert "shape [74]" in refused.json()["detail"] and "still serving 'v0'" in refused.json()["detail"]
        missing = swap({"path": str(folders["v0"]) + "-nope"})
        assert missing.status_code == 404 and "no such model folder" in missing.json()["detail"]
        not_a_model = swap({"path": str(folders["v0"].parent)})
        assert not_a_model.status_code == 404 and "neither an agent folder" in not_a_model.json()["detail"]
        for body in ({"folder": "x"}, {"path": 3}, ["x"], {"path": "x", "version": 2, "extra": 1}):
            assert swap(body).status_code == 422
        assert http.post("/act", json={"obs": STATE}).json()["model_version"] == "v0"
        swapped = swap({"path": str(folders["v1"]), "version": "b"})
        assert swapped.status_code == 200 and swapped.json()["previous"]["model_version"] == "v0"
        answer = http.post("/act", json={"obs": STATE}).json()
        assert answer["model_version"] == "b" and answer["model_hash"] == folder_sha256(folders["v1"])
        m = _metrics(http.get("/metrics").text)
        info = {dict(k[1])["version"] for k in m if k[0] == "bcarena_model_info"}
        assert info == {"b"}  # the swapped-out version's series is gone
        assert m[("bcarena_model_swaps_total", (("result", "refused"),))] == 1
        assert m[("bcarena_model_swaps_total", (("result", "swapped"),))] == 1
        assert http.get("/health").json()["swaps"] == 1


def test_a_swap_to_another_game_is_refused(folders):
    duel, boxing = load_slot(folders["duel_cnn"]), load_slot(folders["boxing_cnn"])
    assert (duel.game, boxing.game) == ("duel", "boxing")
    # The one exact name check (envs.games.check_agent_for_game) decides, with its message.
    assert (
        incompatibility(duel, boxing) == "agent 'boxing-cnn' was trained on game 'boxing', not 'duel': use a duel agent"
    )
    assert incompatibility(duel, duel) is None
    with TestClient(create_app(duel)) as client:
        with pytest.raises(SwapError, match="refused: agent 'boxing-cnn' was trained on game 'boxing'") as err:
            asyncio.run(client.app.state.service.swap(str(folders["boxing_cnn"]), None))
        assert err.value.status == 409
        assert client.get("/health").json()["model_version"] == "duel_cnn"


def test_the_micro_batcher_never_merges_requests_of_two_model_versions():
    calls: list[tuple[str, int]] = []
    served = served_from_agent(_mlp(0, "mlp"), None, "torch")
    old, new = ModelSlot.of(served, "old"), ModelSlot.of(served, "new")

    async def actions(slot: ModelSlot, inputs: np.ndarray) -> np.ndarray:
        calls.append((slot.version, inputs.shape[0]))
        return np.full(inputs.shape[0], len(calls))

    async def main() -> list[np.ndarray]:
        batcher = MicroBatcher(actions, window_s=0.05, max_rows=100)
        batcher.start()
        one = np.zeros((1, 37), np.float32)
        answers = await asyncio.gather(*(batcher.actions(s, one) for s in (old, old, new, new, old)))
        await batcher.stop()
        return answers

    answers = asyncio.run(main())
    assert calls == [("old", 2), ("new", 2), ("old", 1)]
    assert [int(a[0]) for a in answers] == [1, 1, 2, 2, 3]


def test_a_swap_during_open_loop_load_fails_no_request_and_switches_versions(folders):
    # Fast twin of the service_swap benchmark: 3 s at 100 requests/s, one swap after 0.5 s (a swap takes ~50 ms;
    # the margin is for a machine busy with other work).
    server = BackgroundServer(load_slot(folders["v0"]), ServerSettings(batch_window_ms=2))
    with server, httpx.Client(base_url=server.url, timeout=30) as admin:  # made before the load starts

        async def swap() -> dict:
            answer = await asyncio.to_thread(admin.post, "/admin/model", json={"path": str(folders["v1"])})
            return answer.json()

        result = run_open_loop(server.url, 100, 3.0, actions=[(0.5, swap)])
    assert result.requests == 300 and result.failed == 0 and result.ok == 300
    (action,) = result.actions
    assert action["result"]["swapped"] is True and 0.5 <= action["start_s"] <= action["end_s"] < 3.0, action
    assert set(result.versions) == {"v0", "v1"} and sum(result.versions.values()) == 300
    trace = result.trace
    versions = np.array(trace.version)
    # Answered before the swap began: the old version; sent after it returned: the new one.
    assert set(versions[trace.intended + trace.latency < action["start_s"]]) == {"v0"}
    assert set(versions[trace.intended + trace.lag > action["end_s"]]) == {"v1"}
    assert json.loads(json.dumps(result.to_dict()))["failed"] == 0


# ----------------------------------------------------------------------------- open loop
class SlowServer:
    """A raw HTTP/1.1 server answering every POST after ``delay_s``, one request at a time per connection."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s, self.port = delay_s, free_port()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")
                )
                await reader.readexactly(length)
                await asyncio.sleep(self.delay_s)
                body = b'{"model_version": "slow"}'
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    def __enter__(self) -> "SlowServer":
        self.thread.start()
        asyncio.run_coroutine_threadsafe(asyncio.start_server(self._handle, "127.0.0.1", self.port), self.loop).result()
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


META = {"layout": {"obs_type": "state", "shape": [37], "wire_dtype": "float32"}, "max_batch": 1}


def test_open_loop_latency_counts_from_the_intended_send_time():
    # 10 ms per answer over one connection serves 100 requests/s; 200 are due per second. A closed loop would
    # report 10 ms; the open loop reports the queue the schedule builds: the last request waits about 0.5 s.
    with SlowServer(0.01) as server:
        result = run_open_loop(server.url, 200, 0.5, connections=1, meta=META)
    assert result.failed == 0 and result.connections == 1 and result.versions == {"slow": 100}
    assert result.latency_ms["p50"] > 150 and result.latency_ms["max"] > 400
    assert result.send_lag_ms["max"] > 350  # the wait for the one connection is counted
    assert result.trace.latency[-1] > result.trace.latency[0] + 0.3


def test_an_overloaded_server_cannot_stretch_the_run_requests_are_dropped_at_their_timeout():
    with SlowServer(0.1) as server:  # 10 answers/s on one connection; 100 are due per second
        start = time.monotonic()
        result = run_open_loop(server.url, 100, 0.5, connections=1, timeout=0.3, meta=META)
        elapsed = time.monotonic() - start
    assert 1 <= result.ok <= 10 and result.dropped == result.requests - result.ok and not result.meets(1e6)
    assert elapsed < 0.5 + 0.3 + 1.0  # duration + timeout (+ set-up), not 50 answers x 0.1 s
    assert np.isnan(result.trace.latency[result.trace.status == -1]).all()


def test_the_ramp_stops_at_the_first_rate_over_the_bound():
    with SlowServer(0.01) as server:
        report = ramp_open_loop(server.url, [20, 200], 0.5, p99_ms=150, connections=1, pause_s=0.1, meta=META)
    assert [lv.rate for lv in report.levels] == [20, 200]
    assert report.levels[0].meets(150) and not report.levels[1].meets(150)
    assert report.best_rate == 20 and report.to_dict()["best_rate"] == 20
    assert ramp_rates(100, 1600, 5) == [100, 200, 400, 800, 1600]


def test_hdr_percentiles_in_milliseconds_skip_unanswered_requests():
    seconds = np.array([0.001] * 98 + [0.050, np.nan, 0.100])
    p = hdr_percentiles(seconds)
    assert p["p50"] == pytest.approx(1.0, rel=1e-3) and p["p99"] == pytest.approx(50.0, rel=1e-3)
    assert p["max"] == pytest.approx(100.0, rel=1e-3)
    assert np.isnan(hdr_percentiles(np.array([np.nan]))["p99"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rate": 0, "duration_s": 1}, "rate must be within (0, 20000] requests/s, got 0"),
        ({"rate": -5, "duration_s": 1}, "rate must be within (0, 20000] requests/s, got -5"),
        ({"rate": 1e6, "duration_s": 1}, "rate must be within (0, 20000]"),
        ({"rate": 10, "duration_s": 0}, "duration must be within (0, 600] seconds, got 0"),
        ({"rate": 20_000, "duration_s": 600}, "at most 1,000,000 per run"),
        ({"rate": 10, "duration_s": 1, "connections": 0}, "connections must be within 1..256"),
        ({"rate": 10, "duration_s": 1, "url": "http://10.1.2.3:8000"}, "only targets loopback"),
    ],
)
def test_open_loop_refuses_unbounded_or_non_loopback_runs_before_sending(kwargs, message):
    url = kwargs.pop("url", "http://127.0.0.1:9")  # nothing listens: refused before any request
    with pytest.raises(LoadTestError) as err:
        run_open_loop(url, **kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_requirements_qps_bound_is_checked_open_loop_against_a_running_server(folders, tmp_path):
    from bcarena.eval.service.requirements import RequirementsError, load_requirements, qps_row

    (tmp_path / "req.yaml").write_text("qps: {rate: 50, p99_ms: 2000, duration_s: 0.5}\n")
    bound = load_requirements(tmp_path / "req.yaml").qps
    row, data = qps_row(bound, None)
    assert not row.passed and "needs a running server" in row.reason and data == {}
    with BackgroundServer(load_slot(folders["v0"])) as server:
        row, data = qps_row(bound, server.url)
    assert row.passed and row.requirement == "open loop 50 req/s p99" and data["requests"] == 25
    assert data["server"]["model_version"] == "v0" and data["failed"] == 0
    (tmp_path / "bad.yaml").write_text("qps: {rate: 0}\n")
    with pytest.raises(RequirementsError, match="qps.rate: Input should be greater than 0"):
        load_requirements(tmp_path / "bad.yaml")


# ----------------------------------------------------------------------------- graceful shutdown
def _wait_ready(url: str, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited: {process.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("server did not become ready")


def _partial_request(port: int, body: bytes) -> socket.socket:
    """A connection whose POST /act has sent its headers and half its body: in flight for the server."""
    sock = socket.create_connection(("127.0.0.1", port))
    head = f"POST /act HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    sock.sendall(head.encode() + body[: len(body) // 2])
    return sock


def _read_response(sock: socket.socket) -> str:
    """One whole HTTP response (headers and a Content-Length body) from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(int(h.split(b":")[1]) for h in head.lower().split(b"\r\n") if h.startswith(b"content-length"))
    while len(rest) < length:
        rest += sock.recv(65536)
    return (head + b"\r\n\r\n" + rest).decode()


def _drain_and_finish(url: str, port: int, drain: float, sigterm) -> float:
    """Two requests in flight, then ``sigterm()``: checks ready goes 503 while /act still answers, that no
    connection is accepted after the drain, and that the request in flight still gets its 200 then. Returns the
    signal's time; the other request never completes (the shutdown bound must give up on it)."""
    body = json.dumps({"obs": STATE}).encode()
    in_flight, stuck = _partial_request(port, body), _partial_request(port, body)
    try:
        time.sleep(0.3)  # both requests reached the handler
        sigterm()
        signalled = time.monotonic()
        ready = httpx.get(f"{url}/health/ready", timeout=5)
        assert ready.status_code == 503 and ready.json()["draining"] is True  # not ready, still answering
        assert httpx.post(f"{url}/act", json={"obs": STATE}, timeout=5).status_code == 200
        time.sleep(max(0.0, drain + 0.5 - (time.monotonic() - signalled)))
        with pytest.raises(httpx.ConnectError):  # past the drain: no new connections
            httpx.get(f"{url}/health/live", timeout=2)
        in_flight.sendall(body[len(body) // 2 :])
        answer = _read_response(in_flight)
        assert answer.startswith("HTTP/1.1 200") and '"model_version":"v0"' in answer
        assert "connection: close" in answer.lower()
        return signalled
    finally:
        in_flight.close()
        stuck.close()


def test_shutdown_drains_then_finishes_requests_in_flight_within_the_bound(folders):
    # Fast twin of the SIGTERM test below: the server in a thread, handle_exit called as the signal handler would.
    # The drain must outlast two requests on a loaded machine (0.5 s did not at load 15).
    drain, bound = 2.0, 1.0
    settings = ServerSettings(drain_s=drain, shutdown_timeout_s=bound)
    server = BackgroundServer(load_slot(folders["v0"]), settings).start()
    signalled = _drain_and_finish(
        server.url, server.port, drain, lambda: server.server.handle_exit(signal.SIGTERM, None)
    )
    server._thread.join(10)
    assert not server._thread.is_alive() and time.monotonic() - signalled < drain + bound + 3


@pytest.mark.slow
def test_sigterm_reports_not_ready_then_finishes_requests_in_flight_and_exits_within_the_bound(folders):
    port, drain, bound = free_port(), 1.5, 3.0
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "bcarena.experiments.cli", "serve", str(folders["v0"]), "--port", str(port)]
    command += ["--drain-s", str(drain), "--shutdown-timeout-s", str(bound)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy())
    try:
        _wait_ready(url, process)
        signalled = _drain_and_finish(url, port, drain, lambda: process.send_signal(signal.SIGTERM))
        process.wait(drain + bound + 15)  # the stuck request is given up after the bound
        assert process.returncode in (0, -signal.SIGTERM) and time.monotonic() - signalled < drain + bound + 10
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


@pytest.mark.slow
def test_a_swap_during_60_s_of_open_loop_load_at_1000_per_s_fails_no_request(tmp_path):
    # The service_swap benchmark's swap run (agent folders served by torch here, no export needed).
    from bcarena.experiments.benchmarks.service_swap import make_versions, swap_under_load
    from bcarena.experiments.benchmarks.serving import start_server

    v0, v1 = make_versions(tmp_path, "torch")
    port = free_port()
    server = start_server(v0, port, "--model-version", "v0")
    try:
        result = swap_under_load(f"http://127.0.0.1:{port}", v1, 1000, 60)
    finally:
        server.terminate()
        server.wait(60)
    assert result["requests"] == 60_000 and result["failed"] == 0 and result["swap"]["result"]["swapped"]
    assert set(result["versions"]) == {"v0", "v1"} and sum(result["versions"].values()) == 60_000
    assert all(w["failed"] == 0 for w in result["windows"].values())
