"""The open-loop client's own costs: a pre-opened pool, request bytes built once, no GC pause, honest failures."""

import asyncio
import gc

import numpy as np
from test_service_ops import META, SlowServer

from bcarena.eval.service.loadtest import (
    UNSENT,
    _Connection,
    _model_version,
    frozen_gc,
    pool_size,
    request_bytes,
    run_open_loop,
)


def test_the_pool_is_sized_by_littles_law_with_headroom_and_capped():
    assert pool_size(1000, 0.005, 64) == 20  # 5 requests in flight on average, x4
    assert pool_size(10, 0.005, 64) == 2 and pool_size(1000, 0.005, 1) == 1
    assert pool_size(20_000, 0.005, 64) == 64


def test_requests_are_whole_http_messages_and_versions_are_read_without_json():
    raw = request_bytes("127.0.0.1", 8000, "/act", "application/json", b'{"obs": [1]}')
    assert raw.startswith(b"POST /act HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n") and raw.endswith(b'\r\n\r\n{"obs": [1]}')
    assert b"Content-Length: 12\r\n" in raw
    assert _model_version(b'{"actions": [0], "model_version": "duel/2", "model_hash": "ab"}') == "duel/2"
    assert _model_version(b'{"actions":[0],"model_version":"v1"}') == "v1" and _model_version(b"{}") is None


def test_objects_alive_at_the_start_are_frozen_out_of_collection_during_the_run_only():
    gc.unfreeze()
    with frozen_gc():
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0


def test_the_pool_opens_before_the_clock_and_requests_never_sent_count_as_failed():
    with SlowServer(0.01) as server:
        result = run_open_loop(server.url, 100, 0.3, connections=8, meta=META)
    # pool_size(100, 5 ms) = 2 opened before the first send; more only while all are busy (a busy machine)
    assert result.failed == 0 and result.connections >= 2
    # No answer within the 50 ms timeout on the one connection; 20 requests are due per millisecond, so while one
    # waits out its timeout, the deadlines of those queued behind it pass: never sent.
    with SlowServer(10.0) as server:
        result = run_open_loop(server.url, 20_000, 0.1, connections=1, timeout=0.05, meta=META)
    status = result.trace.status
    assert result.unsent == int(np.sum(status == UNSENT)) > 0 and np.isnan(result.trace.lag[status == UNSENT]).all()
    assert result.ok == 0 and result.failed == result.dropped == result.requests and result.dropped > result.unsent


def test_a_kept_alive_connection_the_server_closed_while_idle_is_reopened_not_lost():
    """A server closes idle keep-alive connections (uvicorn: after 5 s); a request sent on one whose FIN has arrived
    would be lost (it was the cause of every failed request of a 60 s run at 1,000 requests/s)."""
    answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"

    async def answer_once_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0]))
        writer.write(answer)
        await writer.drain()
        writer.close()  # no "connection: close" header: the client learns it from the FIN alone

    async def two_requests_on_one_connection() -> tuple[int, int, int]:
        server = await asyncio.start_server(answer_once_then_close, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        conn = _Connection("127.0.0.1", port, timeout=5.0)
        first, _ = await conn.post("/act", "application/json", b"{}")
        await asyncio.sleep(0.05)  # the FIN arrives while the connection is idle
        second, _ = await conn.post("/act", "application/json", b"{}")
        await conn.close()
        server.close()
        return first, second, conn.opened

    assert asyncio.run(two_requests_on_one_connection()) == (200, 200, 2)
