"""The agent server: endpoints, input validation (4xx with a message, never 5xx), micro-batching."""

import io
import json
import re
import threading

import numpy as np
import pytest
import torch

from bcarena.agents.policies import CNNPolicy, MLPPolicy, ScoreModel
from bcarena.agents.torch_agent import TorchAgent
from bcarena.envs.duel import ACTION_NAMES, SKILL_ACTIONS, STATE_FEATURES
from bcarena.eval.service.export import served_from_agent
from bcarena.eval.service.loadtest import FUZZ_CASES, fuzz_requests
from bcarena.eval.service.server import JSON_TYPE, NPY_TYPE, BackgroundServer, ServerSettings, create_app

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402


def mlp_agent() -> TorchAgent:
    torch.manual_seed(0)
    model = ScoreModel(MLPPolicy(37, 8, (32, 32)), torch.zeros(37), torch.ones(37) * 0.5)
    return TorchAgent(model, list(ACTION_NAMES), list(SKILL_ACTIONS), 1, name="mlp")


@pytest.fixture(scope="module")
def served():
    return served_from_agent(mlp_agent(), None, "torch")


@pytest.fixture(scope="module")
def client(served):
    with TestClient(create_app(served, ServerSettings(max_batch=16)), raise_server_exceptions=False) as c:
        yield c


def npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def obs(n: int | None = None, seed: int = 0) -> np.ndarray:
    shape = (37,) if n is None else (n, 37)
    return np.random.default_rng(seed).uniform(-1, 1, size=shape).astype(np.float32)


def test_metadata_describes_layout_actions_hash_and_limits(client, served):
    meta = client.get("/metadata").json()
    assert meta["layout"] == {
        "obs_type": "state",
        "shape": [37],
        "wire_dtype": "float32",
        "features": list(STATE_FEATURES),
        "frame_stack": 1,
    }
    assert meta["action_names"] == list(ACTION_NAMES) and meta["max_batch"] == 16
    assert meta["model_sha256"] == served.sha256 and len(meta["model_sha256"]) == 64
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["agent"] == "mlp"


def test_act_single_batch_json_and_npy_agree_with_the_model(client, served):
    batch = obs(5)
    expected = served.runtime.actions(batch)
    single = client.post("/act", json={"obs": batch[0].tolist()}).json()
    assert single["action"] == expected[0] and single["name"] == ACTION_NAMES[expected[0]] and single["batch"] == 1
    assert client.post("/act", json={"obs": batch.tolist()}).json()["actions"] == expected.tolist()
    answer = client.post("/act", content=npy(batch), headers={"content-type": NPY_TYPE}).json()
    assert answer["actions"] == expected.tolist()
    # Integers are valid state values too, and a charset parameter is fine.
    ints = client.post(
        "/act", content=json.dumps({"obs": [0] * 37}), headers={"content-type": f"{JSON_TYPE}; charset=utf-8"}
    )
    assert ints.status_code == 200


BAD = [
    ("wrong shape", JSON_TYPE, json.dumps({"obs": [0.0] * 36}), 422, "expected one observation of shape (37,)"),
    ("3-d batch", JSON_TYPE, json.dumps({"obs": [[[0.0] * 37]]}), 422, "has shape (1, 1, 37)"),
    ("strings", JSON_TYPE, json.dumps({"obs": ["a"] * 37}), 422, "got strings"),
    ("booleans", JSON_TYPE, json.dumps({"obs": [True] * 37}), 422, "got booleans"),
    ("NaN", JSON_TYPE, json.dumps({"obs": [float("nan")] + [0.0] * 36}), 422, "NaN, infinite"),
    ("Infinity", JSON_TYPE, '{"obs": [Infinity' + ", 0" * 36 + "]}", 422, "NaN, infinite"),
    ("float32 overflow", JSON_TYPE, json.dumps({"obs": [1e39] + [0.0] * 36}), 422, "float32-overflowing"),
    ("huge int", JSON_TYPE, '{"obs": [' + "9" * 40 + ", 0" * 36 + "]}", 422, "must hold numbers"),
    ("ragged", JSON_TYPE, json.dumps({"obs": [[0.0] * 37, [0.0] * 36]}), 422, "rectangular"),
    ("empty batch", JSON_TYPE, json.dumps({"obs": []}), 422, "shape (0,)"),
    ("oversize batch", JSON_TYPE, json.dumps({"obs": [[0.0] * 37] * 17}), 413, "exceeds the limit of 16"),
    ("missing key", JSON_TYPE, json.dumps({"observation": [0.0] * 37}), 422, '{"obs": [...]}'),
    ("extra key", JSON_TYPE, json.dumps({"obs": [0.0] * 37, "x": 1}), 422, "unknown key(s) ['x']"),
    ("not json", JSON_TYPE, '{"obs": [0.0,', 400, "not valid JSON"),
    ("empty body", JSON_TYPE, "", 400, "empty request body"),
    ("content type", "text/plain", json.dumps({"obs": [0.0] * 37}), 415, "unsupported Content-Type 'text/plain'"),
    ("npy float64", NPY_TYPE, npy(np.zeros(37)), 422, "dtype is float64; this agent takes float32"),
    ("npy pickle", NPY_TYPE, None, 400, "not a readable .npy"),
    ("npy garbage", NPY_TYPE, b"\x93NUMPY garbage", 400, "not a readable .npy"),
    ("npy NaN", NPY_TYPE, npy(np.full(37, np.nan, dtype=np.float32)), 422, "NaN"),
]


@pytest.mark.parametrize("name,ctype,body,status,message", BAD, ids=[b[0] for b in BAD])
def test_malformed_requests_get_a_4xx_with_a_message(client, name, ctype, body, status, message):
    if body is None:  # an object array can only be read back with pickle, which the server never allows
        buf = io.BytesIO()
        np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
        body = buf.getvalue()
    response = client.post("/act", content=body, headers={"content-type": ctype})
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]


def test_body_larger_than_the_limit_is_413_before_parsing(client):
    big = b'{"obs": [' + b"0.0," * 300_000 + b"0.0]}"
    response = client.post("/act", content=big, headers={"content-type": JSON_TYPE})
    assert response.status_code == 413 and "exceeds the limit" in response.json()["detail"]


def test_every_fuzz_case_gets_a_4xx(client, served):
    cases = fuzz_requests(served.layout, 4 * len(FUZZ_CASES), max_batch=16, seed=1)
    statuses = {}
    for name, ctype, body in cases:
        status = client.post("/act", content=body, headers={"content-type": ctype}).status_code
        statuses.setdefault(name, set()).add(status)
    assert set(statuses) == set(FUZZ_CASES)
    assert all(400 <= s < 500 for seen in statuses.values() for s in seen), statuses


def test_pixel_server_takes_uint8_stacks_from_the_client():
    torch.manual_seed(0)
    agent = TorchAgent(
        ScoreModel(CNNPolicy(2, 8, (4, 8, 8), hidden=16), torch.tensor(0.0), torch.tensor(255.0)),
        list(ACTION_NAMES),
        list(SKILL_ACTIONS),
        2,
        name="cnn",
    )
    served = served_from_agent(agent, None, "torch")
    frames = np.random.default_rng(0).integers(0, 256, size=(3, 2, 84, 84), dtype=np.uint8)
    with TestClient(create_app(served, ServerSettings(max_batch=4)), raise_server_exceptions=False) as c:
        assert c.get("/metadata").json()["layout"]["shape"] == [2, 84, 84]
        expected = agent.act_stacked(frames.astype(np.float32)).tolist()
        assert c.post("/act", content=npy(frames), headers={"content-type": NPY_TYPE}).json()["actions"] == expected
        assert c.post("/act", json={"obs": frames.tolist()}).json()["actions"] == expected
        floats = c.post("/act", json={"obs": (frames[0] + 0.5).tolist()})
        assert floats.status_code == 422 and "integers 0..255" in floats.json()["detail"]
        out_of_range = frames[0].astype(np.int64)
        out_of_range[0, 0, 0] = 300
        bad = c.post("/act", json={"obs": out_of_range.tolist()})
        assert bad.status_code == 422 and "within 0..255" in bad.json()["detail"]
        single_frame = c.post("/act", content=npy(frames[:, 0]), headers={"content-type": NPY_TYPE})
        assert single_frame.status_code == 422 and "(2, 84, 84)" in single_frame.json()["detail"]


def test_micro_batching_merges_concurrent_requests_and_answers_each_its_rows(served):
    import httpx

    batches = [obs(1 + i % 3, seed=i) for i in range(24)]
    with BackgroundServer(served, ServerSettings(max_batch=64, batch_window_ms=30)) as server:
        results: dict[int, list[int]] = {}

        def send(i: int) -> None:
            results[i] = httpx.post(f"{server.url}/act", json={"obs": batches[i].tolist()}, timeout=30).json()[
                "actions"
            ]

        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(batches))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        health = httpx.get(f"{server.url}/health").json()
    for i, batch in enumerate(batches):
        assert results[i] == served.runtime.actions(batch).tolist()
    assert health["requests"] == 24 and health["model_calls"] < 24  # requests were merged
    assert not server._thread.is_alive()  # shut down cleanly


def test_settings_are_validated():
    with pytest.raises(ValueError, match="max_batch"):
        ServerSettings(max_batch=0)
    with pytest.raises(ValueError, match="batch_window_ms"):
        ServerSettings(batch_window_ms=-1)


# ----------------------------------------------------------------------------- slow and huge requests
def _raw_connection(server, timeout: float = 10.0):
    import socket

    sock = socket.create_connection((server.host, server.port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_until_closed(sock) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_a_slowloris_request_is_closed_at_its_deadline(served):
    import select
    import time

    with BackgroundServer(served, ServerSettings(request_timeout_s=0.5)) as server:
        sock = _raw_connection(server)
        started = time.monotonic()
        trickle = b"POST /act HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 10_000
        for byte in trickle:  # one header byte every 20 ms: never a complete request
            if select.select([sock], [], [], 0.02)[0]:
                break
            sock.send(bytes([byte]))
        answer = _read_until_closed(sock)
        closed_after = time.monotonic() - started
        sock.close()
        # A partial body is cut off the same way, and the server keeps serving everyone else.
        sock = _raw_connection(server)
        started = time.monotonic()
        sock.sendall(
            b'POST /act HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{"obs": ['
        )
        assert _read_until_closed(sock) == b"" and time.monotonic() - started < 3.0
        sock.close()
        assert httpx_get(server, "/health")["status"] == "ok"
    assert answer.startswith(b"HTTP/1.1 408 ") and 0.4 < closed_after < 3.0


def httpx_get(server, path: str) -> dict:
    import httpx

    return httpx.get(f"{server.url}{path}", timeout=10).json()


def _read_response(sock) -> tuple[int, bytes]:
    """(status, body) of one HTTP response with a Content-Length, read from a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: (\d+)", head, re.IGNORECASE).group(1))
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split()[1]), body


def test_oversize_bodies_get_413_before_they_are_read(served):
    import select
    import socket

    with BackgroundServer(served, ServerSettings(max_batch=16, request_timeout_s=2)) as server:
        limit = httpx_get(server, "/metadata")["max_body_bytes"][JSON_TYPE]
        sock = _raw_connection(server)
        sock.sendall(
            b"POST /act HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n"
        )  # announced, never sent
        status, body = _read_response(sock)
        sock.close()
        assert status == 413 and b"body of 1000000000 bytes exceeds the limit" in body
        # Without a length: the body is streamed in chunks and refused once the limit is passed.
        sock = _raw_connection(server)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        sock.sendall(
            b"POST /act HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        chunk, sent = b"0" * 4096, 0
        while sent < 1000 * limit and not select.select([sock], [], [], 0)[0]:
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
        status, body = _read_response(sock)
        sock.close()
    assert status == 413 and b"body exceeds the limit" in body and sent < 100 * limit


def test_huge_headers_are_refused(served):
    with BackgroundServer(served) as server:
        sock = _raw_connection(server)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * 100_000 + b"\r\n\r\n")
        answer = _read_until_closed(sock)
        sock.close()
    assert answer.startswith(b"HTTP/1.1 400 ")


def test_health_answers_while_a_large_json_body_is_decoded():
    import time

    import httpx

    torch.manual_seed(0)
    agent = TorchAgent(
        ScoreModel(CNNPolicy(1, 8, (4, 8, 8), hidden=16), torch.tensor(0.0), torch.tensor(255.0)),
        list(ACTION_NAMES),
        list(SKILL_ACTIONS),
        1,
        name="cnn",
    )
    batch = 2000
    row = b"[" + b",".join([b"7"] * 84) + b"]"
    frame = b"[[" + b",".join([row] * 84) + b"]]"  # one observation (1, 84, 84)
    body = b'{"obs":[' + b",".join([frame] * batch) + b"]}"  # 14 million values, 28 MB
    expected = agent.act_stacked(np.full((1, 1, 84, 84), 7, dtype=np.float32)).tolist() * batch
    with BackgroundServer(served_from_agent(agent, None, "torch"), ServerSettings(max_batch=batch)) as server:
        answers = {}

        def post() -> None:
            started = time.perf_counter()
            answers["act"] = httpx.post(
                f"{server.url}/act", content=body, headers={"content-type": JSON_TYPE}, timeout=120
            )
            answers["seconds"] = time.perf_counter() - started

        sender = threading.Thread(target=post)
        sender.start()
        slowest = 0.0
        with httpx.Client(timeout=30) as client:
            while sender.is_alive():
                started = time.perf_counter()
                assert client.get(f"{server.url}/health").status_code == 200
                slowest = max(slowest, time.perf_counter() - started)
                time.sleep(0.02)
        sender.join()
    assert answers["act"].status_code == 200 and answers["act"].json()["actions"] == expected
    # Decoded on the event loop, the body blocked /health for most of the request (0.6-1.9 s of ~2 s); off the loop
    # /health answers in a small fraction of it. Relative, so a busy machine slows both sides alike.
    assert slowest < answers["seconds"] / 4, f"/health took {slowest:.2f} s of the {answers['seconds']:.2f} s request"


def test_request_errors_survive_a_trip_through_a_worker_process():
    import pickle

    from bcarena.eval.service.server import RequestError

    error = pickle.loads(pickle.dumps(RequestError(422, "obs has shape (3,)")))
    assert (error.status, error.message) == (422, "obs has shape (3,)")
