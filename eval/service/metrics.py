"""Prometheus metrics of one agent server (``GET /metrics``), in a registry of its own.

Each app gets its own ``CollectorRegistry``, so several servers in one process (tests, benchmarks) never share or
clash over counters. Routes are labelled by the app's route paths only; any other path counts as ``other``, so a
client probing random URLs cannot grow the number of series.

Series (all names prefixed ``bcarena_``):
  requests_total{route,status}            answered HTTP requests
  request_duration_seconds{route}         histogram, server side: request received -> response sent
  errors_total{status}                    4xx/5xx answers
  request_batch_size / model_batch_size   observations per /act request / per model call (merged when batching)
  model_info{version,hash,agent,game}     1 for the served model (the series of a swapped-out model is removed)
  model_swaps_total{result}               swap attempts: swapped, refused, failed
  ready                                   1 when the model is loaded and the server is not draining
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bcarena.eval.service.models import ModelSlot

# Seconds, from 0.1 ms: a batch-1 MLP decision is answered in well under a millisecond on loopback.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ServiceMetrics:
    """The metrics of one server (prometheus-client, the ``bcarena[serve]`` extra)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("bcarena_requests", "HTTP requests answered", ["route", "status"], registry=r)
        self.latency = Histogram(
            "bcarena_request_duration_seconds",
            "server-side request time",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter("bcarena_errors", "error answers (4xx, 5xx) by status", ["status"], registry=r)
        self.request_batch = Histogram(
            "bcarena_request_batch_size", "observations per /act request", buckets=BATCH_BUCKETS, registry=r
        )
        self.model_batch = Histogram(
            "bcarena_model_batch_size", "observations per model call", buckets=BATCH_BUCKETS, registry=r
        )
        self.model = Gauge("bcarena_model_info", "the served model", ["version", "hash", "agent", "game"], registry=r)
        self.swaps = Counter("bcarena_model_swaps", "model swap attempts by result", ["result"], registry=r)
        self.alias_polls = Counter(
            "bcarena_alias_polls", "registry polls of a followed alias by outcome", ["outcome"], registry=r
        )
        self.ready = Gauge("bcarena_ready", "1 when the model is loaded and the server is not draining", registry=r)
        # The labelled children of each (route, status): ``labels()`` costs a lock and a dict lookup per call.
        self._series: dict[tuple[str, int], tuple[Any, Any, Any]] = {}

    def observe(self, route: str, status: int, seconds: float) -> None:
        series = self._series.get((route, status))
        if series is None:  # bounded: routes are the app's own (or "other"), statuses are HTTP's
            errors = self.errors.labels(str(status)) if status >= 400 else None
            series = self._series[route, status] = (
                self.requests.labels(route, str(status)),
                self.latency.labels(route),
                errors,
            )
        requests, latency, errors = series
        requests.inc()
        latency.observe(seconds)
        if errors is not None:
            errors.inc()

    def set_model(self, slot: ModelSlot, previous: ModelSlot | None = None) -> None:
        if previous is not None:
            self.model.remove(*_model_labels(previous))
        self.model.labels(*_model_labels(slot)).set(1)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


def _model_labels(slot: ModelSlot) -> tuple[str, str, str, str]:
    return slot.version, slot.model_hash, slot.served.agent_name, slot.game


class MetricsMiddleware:
    """Pure ASGI middleware timing every HTTP request and counting it by route and status.

    Pure ASGI rather than Starlette's BaseHTTPMiddleware: it adds a few microseconds per request, not a task and
    a stream copy. A request whose handler raised and sent nothing is counted as the 500 it becomes.
    """

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, routes: Iterable[str]) -> None:
        self.app, self.metrics, self.routes = app, metrics, frozenset(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope["path"] if scope["path"] in self.routes else "other"
            self.metrics.observe(route, status, time.perf_counter() - start)
