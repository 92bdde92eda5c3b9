"""The open-loop client's own costs: a pre-opened pool, request bytes built once, no GC pause, honest failures."""

import gc

import numpy as np
from test_service_ops import META, SlowServer

from bcarena.eval.service.loadtest import (
    UNSENT,
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
