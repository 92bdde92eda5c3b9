"""Load test and fuzz test of an agent server (``bcarena loadtest``), loopback only.

The client is bounded on purpose: it talks only to loopback addresses (it is a test tool, not a
traffic generator), caps concurrency (``MAX_CONCURRENCY``), rate (``MAX_RATE``), duration
(``MAX_DURATION_S``) and requests per run (``MAX_REQUESTS``), and gives every request a timeout.

Closed loop (``run_loadtest``): for each concurrency level it sends ``requests`` valid
observations with that many requests in flight and reports latency p50/p95/p99 (ms, client side:
send to full response), throughput (requests/s and decisions/s), and every outcome: 2xx, 4xx,
5xx and dropped (no response: timeout, connection reset). It waits for each answer before the
next request, so a slow server is never measured at the rate users would send (coordinated
omission). The fuzz phase sends malformed requests of many kinds (``FUZZ_CASES``); each must be
answered 4xx.

Open loop (``run_open_loop``, ``ramp_open_loop``): request i is due at ``i / rate`` seconds
whatever the answers, and its latency is measured from that intended send time, so time spent
queued behind a slow answer (waiting for a free connection of the bounded pool, or in the server)
counts. Percentiles come from an HdrHistogram (1 us resolution, 3 significant digits). The send
lag (actual minus intended send time) is reported too: when it grows, the client itself cannot
keep the rate. The ramp raises the rate until p99 exceeds a bound or a request fails.
"""

from __future__ import annotations

import asyncio
import gc
import io
import ipaddress
import json
import math
import re
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import numpy as np
from tqdm.auto import tqdm

from bcarena.eval.errors import EvalError
from bcarena.eval.service.layout import JSON_TYPE, NPY_TYPE, ObsLayout

MAX_CONCURRENCY = 256
MAX_REQUESTS = 1_000_000
MAX_RATE = 20_000.0  # requests/s of the open loop
MAX_DURATION_S = 600.0  # one open-loop run
ENCODINGS = (JSON_TYPE, NPY_TYPE)
T = TypeVar("T")


class LoadTestError(EvalError):
    """A load test that must not run (non-loopback host, limits exceeded) or whose server is unusable."""


def check_loopback(url: str) -> str:
    """``url`` without a trailing slash if its host is a loopback address; LoadTestError otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LoadTestError(f"load test URL must look like http://127.0.0.1:PORT, got {url!r}")
    host = parts.hostname
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise LoadTestError(
            f"refusing to load-test {host!r}: the load test only targets loopback addresses "
            "(127.0.0.0/8, ::1, localhost)"
        )
    return url.rstrip("/")


# ----------------------------------------------------------------------------- payloads
def valid_observations(layout: ObsLayout, count: int, seed: int = 0) -> np.ndarray:
    """``count`` random observations (count, *shape) in the layout's wire dtype and realistic ranges."""
    rng = np.random.default_rng(seed)
    shape = (count, *layout.shape)
    if layout.obs_type == "pixels":
        return rng.integers(0, 256, size=shape, dtype=np.uint8)
    return rng.uniform(-1, 1, size=shape).astype(np.float32)


def encode(obs: np.ndarray, content_type: str) -> bytes:
    """A request body for observations ``obs`` (one or a batch) in ``content_type``."""
    if content_type == NPY_TYPE:
        buf = io.BytesIO()
        np.save(buf, obs, allow_pickle=False)
        return buf.getvalue()
    return json.dumps({"obs": obs.tolist()}).encode()


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=arr.dtype == object)
    return buf.getvalue()


def _json(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def _nested_list(depth: int) -> str:
    return '{"obs": ' + "[" * depth + "1" + "]" * depth + "}"


FuzzCase = Callable[[ObsLayout, np.random.Generator, int], tuple[str, bytes]]


def _one(layout: ObsLayout, rng: np.random.Generator) -> np.ndarray:
    return valid_observations(layout, 1, int(rng.integers(1 << 31)))[0]


def _wrong_shape(layout: ObsLayout, rng: np.random.Generator, max_batch: int) -> tuple[str, bytes]:
    shape = list(layout.shape)
    axis = int(rng.integers(len(shape)))
    shape[axis] += int(rng.choice([-1, 1, 3]))
    lead = [int(rng.integers(1, 4))] if rng.random() < 0.5 else []
    return JSON_TYPE, _json({"obs": np.zeros([*lead, *shape], dtype=np.uint8).tolist()})


def _extra_axis(layout: ObsLayout, rng: np.random.Generator, max_batch: int) -> tuple[str, bytes]:
    return JSON_TYPE, _json({"obs": [[_one(layout, rng).tolist()]]})


def _strings(layout: ObsLayout, rng: np.random.Generator, max_batch: int) -> tuple[str, bytes]:
    obs = _one(layout, rng).astype(object).reshape(-1)
    obs[int(rng.integers(obs.size))] = "x"
    return JSON_TYPE, _json({"obs": obs.reshape(layout.shape).tolist()})


def _booleans(layout: ObsLayout, rng: np.random.Generator, max_batch: int) -> tuple[str, bytes]:
    return JSON_TYPE, _json({"obs": (rng.random(layout.shape) < 0.5).tolist()})


def _non_finite(layout: ObsLayout, rng: np.random.Generator, max_batch: int) -> tuple[str, bytes]:
    obs = _one(layout, rng).astype(np.float64).reshape(-1)
    obs[int(rng.integers(obs.size))] = [np.nan, np.inf, -np.inf][int(rng.integers(3))]
    return JSON_TYPE, json.dumps({"obs": obs.reshape(layout.shape).tolist()}).encode()  # NaN / Infinity literals


def _overflow(layout: ObsLayout, rng: np.random.Generator, max_batch: int) -> tuple[str, bytes]:
    """Numbers JSON can write but float32 / int64 cannot hold (shape kept: the first value is replaced)."""
    text = json.dumps({"obs": _one(layout, rng).astype(np.float64).tolist()})
    big = ["1e400", "-1e400", "3.5e38", "123456789012345678901234567890"][int(rng.integers(4))]
    start = text.index("[")
    while text[start] == "[":
        start += 1
    end = min(i for i in (text.find(",", start), text.find("]", start)) if i >= 0)
    return JSON_TYPE, (text[:start] + big + text[end:]).encode()


def _oversize_batch(layout: ObsLayout, rng: np.random.Generator, max_batch: int) -> tuple[str, bytes]:
    count = max_batch + int(rng.integers(1, 4))
    obs = np.zeros((count, *layout.shape), dtype=np.dtype(layout.wire_dtype))
    return (NPY_TYPE, _npy(obs)) if rng.random() < 0.5 else (JSON_TYPE, encode(obs, JSON_TYPE))


def _empty_batch(layout: ObsLayout, rng: np.random.Generator, max_batch: int) -> tuple[str, bytes]:
    return JSON_TYPE, _json({"obs": []})


def _bad_json(layout: ObsLayout, rng: np.random.Generator, max_batch: int) -> tuple[str, bytes]:
    text = encode(_one(layout, rng)[None], JSON_TYPE)
    return JSON_TYPE, text[: int(rng.integers(1, len(text)))]


def _not_utf8(layout: ObsLayout, rng: np.random.Generator, max_batch: int) -> tuple[str, bytes]:
    return JSON_TYPE, bytes(rng.integers(128, 256, size=64, dtype=np.uint8))


def _empty_body(layout: ObsLayout, rng: np.random.Generator, max_batch: int) -> tuple[str, bytes]:
    return [JSON_TYPE, NPY_TYPE][int(rng.integers(2))], b""


def _wrong_structure(layout: ObsLayout, rng: np.random.Generator, max_batch: int) -> tuple[str, bytes]:
    obs = _one(layout, rng).tolist()
    bodies = [
        _json(obs),
        _json({"observation": obs}),
        _json({"obs": obs, "extra": 1}),
        _json({"obs": None}),
        _json({"obs": {"a": 1}}),
        _json("obs"),
        _json(7),
        b"null",
        _json({"obs": 3.5}),
    ]
    return JSON_TYPE, bodies[int(rng.integers(len(bodies)))]


def _ragged(layout: ObsLayout, rng: np.random.Generator, max_batch: int) -> tuple[str, bytes]:
    rows = valid_observations(layout, 2, int(rng.integers(1 << 31))).tolist()
    rows[1] = np.asarray(rows[1]).reshape(-1)[:-1].tolist()
    return JSON_TYPE, _json({"obs": rows})


def _deep_nesting(layout: ObsLayout, rng: np.random.Generator, max_batch: int) -> tuple[str, bytes]:
    return JSON_TYPE, _nested_list(int(rng.choice([40, 70, 5000]))).encode()


def _wrong_npy_dtype(layout: ObsLayout, rng: np.random.Generator, max_batch: int) -> tuple[str, bytes]:
    dtype = [d for d in ("float64", "float16", "int32", "uint8", "float32", "bool") if d != layout.wire_dtype]
    return NPY_TYPE, _npy(_one(layout, rng).astype(dtype[int(rng.integers(len(dtype)))]))


def _npy_garbage(layout: ObsLayout, rng: np.random.Generator, max_batch: int) -> tuple[str, bytes]:
    good = _npy(_one(layout, rng))
    variants = [
        bytes(rng.integers(0, 256, size=256, dtype=np.uint8)),
        good[: len(good) // 2],
        b"\x93NUMPY" + bytes(rng.integers(0, 256, size=32, dtype=np.uint8)),
        good[:10],
    ]
    return NPY_TYPE, variants[int(rng.integers(len(variants)))]


def _npy_pickle(layout: ObsLayout, rng: np.random.Generator, max_batch: int) -> tuple[str, bytes]:
    return NPY_TYPE, _npy(np.array([{"obs": 1}, "x"], dtype=object))


def _npz(layout: ObsLayout, rng: np.random.Generator, max_batch: int) -> tuple[str, bytes]:
    buf = io.BytesIO()
    np.savez(buf, obs=_one(layout, rng))
    return NPY_TYPE, buf.getvalue()


def _npy_non_finite(layout: ObsLayout, rng: np.random.Generator, max_batch: int) -> tuple[str, bytes]:
    if layout.obs_type == "pixels":  # uint8 cannot hold NaN: send a wrong shape instead
        return NPY_TYPE, _npy(_one(layout, rng)[..., :-1].copy())
    obs = _one(layout, rng).reshape(-1)
    obs[int(rng.integers(obs.size))] = np.nan
    return NPY_TYPE, _npy(obs.reshape(layout.shape))


def _content_type(layout: ObsLayout, rng: np.random.Generator, max_batch: int) -> tuple[str, bytes]:
    kinds = ["text/plain", "application/xml", "multipart/form-data", "application/x-www-form-urlencoded", "image/png"]
    return kinds[int(rng.integers(len(kinds)))], encode(_one(layout, rng), JSON_TYPE)


def _out_of_range(layout: ObsLayout, rng: np.random.Generator, max_batch: int) -> tuple[str, bytes]:
    obs = _one(layout, rng).astype(np.float64).reshape(-1)
    if layout.obs_type == "pixels":
        obs = obs.astype(np.int64)
        obs[int(rng.integers(obs.size))] = [-1, 256, 100000][int(rng.integers(3))]
        if rng.random() < 0.5:  # or floats where uint8 integers are required
            return JSON_TYPE, _json({"obs": (obs.reshape(layout.shape) + 0.5).tolist()})
        return JSON_TYPE, _json({"obs": obs.reshape(layout.shape).tolist()})
    obs[int(rng.integers(obs.size))] = 1e39  # finite in JSON, infinite as float32
    return JSON_TYPE, _json({"obs": obs.reshape(layout.shape).tolist()})


FUZZ_CASES: dict[str, FuzzCase] = {
    "wrong_shape": _wrong_shape,
    "extra_axis": _extra_axis,
    "strings": _strings,
    "booleans": _booleans,
    "non_finite": _non_finite,
    "overflow": _overflow,
    "oversize_batch": _oversize_batch,
    "empty_batch": _empty_batch,
    "bad_json": _bad_json,
    "not_utf8": _not_utf8,
    "empty_body": _empty_body,
    "wrong_structure": _wrong_structure,
    "ragged": _ragged,
    "deep_nesting": _deep_nesting,
    "wrong_npy_dtype": _wrong_npy_dtype,
    "npy_garbage": _npy_garbage,
    "npy_pickle": _npy_pickle,
    "npz": _npz,
    "npy_non_finite": _npy_non_finite,
    "content_type": _content_type,
    "out_of_range": _out_of_range,
}


def fuzz_requests(layout: ObsLayout, count: int, max_batch: int, seed: int = 0) -> list[tuple[str, str, bytes]]:
    """``count`` malformed requests (case name, content type, body), cycling through ``FUZZ_CASES``."""
    rng = np.random.default_rng(seed)
    names = list(FUZZ_CASES)
    out = []
    for i in range(count):
        name = names[i % len(names)]
        content_type, body = FUZZ_CASES[name](layout, rng, max_batch)
        out.append((name, content_type, body))
    return out


# ----------------------------------------------------------------------------- running
@dataclass
class LevelResult:
    """Outcome of one concurrency level."""

    concurrency: int
    requests: int
    batch: int  # observations per request
    ok: int
    client_errors: int  # 4xx
    server_errors: int  # 5xx
    dropped: int  # no HTTP response (timeout, connection error)
    duration_s: float
    requests_per_s: float
    decisions_per_s: float
    latency_ms: dict[str, float]  # p50, p95, p99, max, mean over answered requests


@dataclass
class FuzzResult:
    """Outcome of the malformed-request phase: every request must be answered 4xx."""

    requests: int
    status_counts: dict[str, int]
    by_case: dict[str, dict[str, int]]
    failures: list[dict[str, Any]] = field(default_factory=list)  # first few non-4xx answers

    @property
    def all_4xx(self) -> bool:
        return sum(v for k, v in self.status_counts.items() if k.startswith("4")) == self.requests


@dataclass
class LoadTestReport:
    url: str
    content_type: str
    server: dict[str, Any]  # the server's /metadata
    levels: list[LevelResult]
    fuzz: FuzzResult | None

    @property
    def total_requests(self) -> int:
        return sum(level.requests for level in self.levels)

    @property
    def passed(self) -> bool:
        """Zero 5xx, zero dropped, every valid request 2xx, every malformed request 4xx."""
        clean = all(lv.server_errors == 0 and lv.dropped == 0 and lv.ok == lv.requests for lv in self.levels)
        return clean and (self.fuzz is None or self.fuzz.all_4xx)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["total_requests"] = self.total_requests
        data["passed"] = self.passed
        if self.fuzz is not None:
            data["fuzz"]["all_4xx"] = self.fuzz.all_4xx
        return data


def _percentiles(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {k: float("nan") for k in ("p50", "p95", "p99", "max", "mean")}
    ms = np.asarray(latencies) * 1000
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "max": float(ms.max()), "mean": float(ms.mean())}


class _Connection:
    """One keep-alive HTTP/1.1 connection speaking just what the load test needs.

    httpx costs ~1.5 ms of client CPU per request, more than the server spends answering: the
    client, not the server, would be measured. Raw asyncio streams cost a fraction of that; the open loop
    also sends request bytes built once (``request_bytes``) and parses only the status and the body length.
    """

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.opened = 0  # TCP connections opened so far

    async def open(self) -> None:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            self.opened += 1

    async def post(self, path: str, content_type: str, body: bytes, timeout: float | None = None) -> tuple[int, bytes]:
        """(status, response body) within ``timeout`` seconds (default: the connection's); raises OSError /
        asyncio.TimeoutError / ValueError when no full answer came."""
        async with asyncio.timeout(self.timeout if timeout is None else timeout):
            return await self.exchange(request_bytes(self.host, self.port, path, content_type, body))

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        """Send one whole HTTP request and read its answer: (status, response body); no timeout of its own.

        A kept-alive connection the server has closed meanwhile (idle past its keep-alive timeout: its FIN has
        arrived) is reopened first, as HTTP clients check before reusing one; sent on, the request would be lost.
        """
        if self.reader is not None and self.reader.at_eof():
            await self.close()
        await self.open()
        assert self.reader is not None and self.writer is not None
        try:
            self.writer.write(request)
            await self.writer.drain()
            head = (await self.reader.readuntil(b"\r\n\r\n")).lower()
            status = int(head[9:12])
            if b"\r\ntransfer-encoding: chunked" in head:
                payload = b""
                while size := int((await self.reader.readuntil(b"\r\n")).strip(), 16):
                    payload += (await self.reader.readexactly(size + 2))[:-2]
                await self.reader.readuntil(b"\r\n")
            else:
                length = _CONTENT_LENGTH.search(head)
                payload = await self.reader.readexactly(int(length.group(1)) if length else 0)
            if b"\r\nconnection: close" in head:
                await self.close()
            return status, payload
        except BaseException:
            await self.close()  # a half-read response poisons the connection
            raise

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)")


def request_bytes(host: str, port: int, path: str, content_type: str, body: bytes) -> bytes:
    """The whole HTTP/1.1 POST request (head and body) of ``body``, sent in one write."""
    head = f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def _send_all(
    url: str, requests: list[tuple[str, bytes]], concurrency: int, timeout: float, bar: tqdm
) -> tuple[list[float], Counter, list[Any]]:
    """Send ``requests`` with ``concurrency`` in flight; (latencies s, status counts, per-request statuses)."""
    parts = urlsplit(url)
    latencies: list[float] = []
    statuses: list[Any] = [None] * len(requests)
    counts: Counter = Counter()
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        conn = _Connection(parts.hostname, parts.port or 80, timeout)
        try:
            while next_index < len(requests):
                i = next_index
                next_index += 1
                content_type, body = requests[i]
                start = time.perf_counter()
                try:
                    status, _ = await conn.post("/act", content_type, body)
                except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                    counts["dropped"] += 1
                    statuses[i] = f"dropped: {type(exc).__name__}"
                else:
                    latencies.append(time.perf_counter() - start)
                    counts[str(status)] += 1
                    statuses[i] = status
                bar.update(1)
        finally:
            await conn.close()

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(requests)))))
    return latencies, counts, statuses


def server_metadata(url: str, timeout: float = 10.0) -> dict[str, Any]:
    """GET ``url``/metadata of an agent server on loopback, checked to describe a layout and a batch limit."""
    import httpx

    url = check_loopback(url)
    try:
        meta = httpx.get(f"{url}/metadata", timeout=timeout).json()
        ObsLayout.from_dict(meta["layout"])
        int(meta["max_batch"])
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        raise LoadTestError(
            f"{url}/metadata did not answer like an agent server: {type(exc).__name__}: {exc}"
        ) from None
    return meta


async def _run(
    url: str,
    meta: dict[str, Any],
    levels: tuple[int, ...],
    requests: int,
    batch: int,
    content_type: str,
    fuzz: int,
    seed: int,
    timeout: float,
    progress: bool,
) -> LoadTestReport:
    layout, max_batch = ObsLayout.from_dict(meta["layout"]), int(meta["max_batch"])
    pool = valid_observations(layout, 64 * batch, seed).reshape(64, batch, *layout.shape)
    bodies = [encode(obs if batch > 1 else obs[0], content_type) for obs in pool]
    results = []
    for concurrency in levels:
        work = [(content_type, bodies[i % len(bodies)]) for i in range(requests)]
        with tqdm(
            total=requests, desc=f"concurrency {concurrency}", unit="req", disable=not progress, leave=False
        ) as bar:
            start = time.perf_counter()
            latencies, counts, _ = await _send_all(url, work, concurrency, timeout, bar)
            duration = time.perf_counter() - start
        client_errors = sum(v for k, v in counts.items() if k.startswith("4"))
        server_errors = sum(v for k, v in counts.items() if k.startswith("5"))
        results.append(
            LevelResult(
                concurrency,
                requests,
                batch,
                counts.get("200", 0),
                client_errors,
                server_errors,
                counts.get("dropped", 0),
                duration,
                requests / duration,
                requests * batch / duration,
                _percentiles(latencies),
            )
        )
    fuzz_result = None
    if fuzz:
        cases = fuzz_requests(layout, fuzz, max_batch, seed)
        with tqdm(total=fuzz, desc="fuzz", unit="req", disable=not progress, leave=False) as bar:
            _, counts, statuses = await _send_all(url, [(c, b) for _, c, b in cases], min(8, max(levels)), timeout, bar)
        by_case: dict[str, Counter] = {}
        failures = []
        for (name, content_type_sent, _), status in zip(cases, statuses):
            by_case.setdefault(name, Counter())[str(status)] += 1
            if not (isinstance(status, int) and 400 <= status < 500) and len(failures) < 20:
                failures.append({"case": name, "content_type": content_type_sent, "status": status})
        fuzz_result = FuzzResult(fuzz, dict(counts), {k: dict(v) for k, v in by_case.items()}, failures)
    return LoadTestReport(url, content_type, meta, results, fuzz_result)


def run_loadtest(
    url: str,
    levels: tuple[int, ...] = (1, 4, 16, 64),
    requests: int = 2_500,
    batch: int = 1,
    content_type: str = JSON_TYPE,
    fuzz: int = 1_000,
    seed: int = 0,
    timeout: float = 30.0,
    progress: bool = False,
) -> LoadTestReport:
    """Load-test the agent server at ``url`` (loopback only): ``requests`` per concurrency level, then ``fuzz``
    malformed requests."""
    url = check_loopback(url)
    if not levels or min(levels) < 1 or max(levels) > MAX_CONCURRENCY:
        raise LoadTestError(f"concurrency levels must be within 1..{MAX_CONCURRENCY}, got {list(levels)}")
    if requests < 1 or requests * len(levels) + fuzz > MAX_REQUESTS or fuzz < 0:
        raise LoadTestError(f"requests per level must be >= 1 and the run at most {MAX_REQUESTS} requests in total")
    if content_type not in ENCODINGS:
        raise LoadTestError(f"content type must be one of {list(ENCODINGS)}, got {content_type!r}")
    if batch < 1:
        raise LoadTestError(f"batch must be >= 1, got {batch}")
    meta = server_metadata(url, timeout)
    if batch > int(meta["max_batch"]):
        raise LoadTestError(f"batch {batch} exceeds the server's max_batch {meta['max_batch']}")
    return asyncio.run(_run(url, meta, tuple(levels), requests, batch, content_type, fuzz, seed, timeout, progress))


# ----------------------------------------------------------------------------- open loop
DROPPED = -1  # status of a request that was sent and got no HTTP answer in time
UNSENT = -2  # status of a request no connection came free for within its timeout (never sent)
EXPECTED_LATENCY_S = 0.005  # sizes the connection pool opened before the clock starts (``pool_size``)
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99_9": 99.9}
HDR_MAX_US = 600_000_000  # the histogram's range ends at 10 minutes (longer waits count as 10 minutes)


def hdr_percentiles(seconds: np.ndarray) -> dict[str, float]:
    """p50/p90/p99/p99.9 in ms of latencies ``seconds`` (NaN = no answer, skipped) from an HdrHistogram of
    microseconds (1 us .. 10 min, 3 significant digits), with the exact max and mean; NaN when nothing answered."""
    from hdrh.histogram import HdrHistogram

    values = seconds[np.isfinite(seconds)]
    if not values.size:
        return dict.fromkeys([*PERCENTILES, "max", "mean"], float("nan"))
    hist = HdrHistogram(1, HDR_MAX_US, 3)
    for us in np.clip(np.rint(values * 1e6), 1, HDR_MAX_US).astype(np.int64).tolist():
        hist.record_value(us)
    at = hist.get_percentile_to_value_dict(list(PERCENTILES.values()))
    out = {key: at[q] / 1000 for key, q in PERCENTILES.items()}
    out.update(max=float(values.max() * 1000), mean=float(values.mean() * 1000))
    return out


@dataclass
class OpenLoopTrace:
    """Every request of one open-loop run; times in seconds from the first intended send."""

    intended: np.ndarray  # (N,) float64 intended send times, i / rate
    lag: np.ndarray  # (N,) float64 actual minus intended send time (waiting for a free connection included); NaN
    # when no connection came free within the timeout
    latency: np.ndarray  # (N,) float64 answer time minus intended send time; NaN when no answer came
    status: np.ndarray  # (N,) int64 HTTP status; DROPPED when no answer came, UNSENT when never sent
    version: list[str | None]  # model_version of each 200 answer

    def window(self, start_s: float, end_s: float) -> dict[str, Any]:
        """Requests due in [start_s, end_s): their count, failures and latency percentiles (ms)."""
        inside = (self.intended >= start_s) & (self.intended < end_s)
        status = self.status[inside]
        return {
            "start_s": start_s,
            "end_s": end_s,
            "requests": int(inside.sum()),
            "failed": int(np.sum(status != 200)),
            "latency_ms": hdr_percentiles(self.latency[inside]),
        }


@dataclass
class OpenLoopResult:
    """One open-loop run at a fixed target rate."""

    url: str
    rate: float  # target requests/s
    duration_s: float
    requests: int  # scheduled: rate * duration
    ok: int
    client_errors: int  # 4xx
    server_errors: int  # 5xx
    dropped: int  # no HTTP answer (timeout, connection error), the unsent included
    unsent: int  # never sent: no connection came free within the timeout (the client could not keep the rate)
    achieved_rate: float  # answers per second between the first intended send and the last answer
    latency_ms: dict[str, float]  # from the intended send time (HdrHistogram)
    send_lag_ms: dict[str, float]  # the client's own backlog
    connections: int  # TCP connections the bounded pool opened
    versions: dict[str, int]  # 200 answers per model_version
    per_second_p99_ms: list[float]  # p99 of the requests due in each second
    actions: list[dict[str, Any]] = field(default_factory=list)  # side actions run during the load (a swap)
    trace: OpenLoopTrace | None = field(default=None, repr=False)

    @property
    def failed(self) -> int:
        return self.requests - self.ok

    def meets(self, p99_ms: float) -> bool:
        """Every request answered 200 and p99 (from the intended send time) within ``p99_ms``."""
        return self.failed == 0 and self.latency_ms["p99"] <= p99_ms

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("trace")
        data["failed"] = self.failed
        return data


SideAction = tuple[float, Callable[[], Awaitable[Any]]]  # (seconds after the start, coroutine function)


def _check_open_loop(url: str, rate: float, duration_s: float, connections: int) -> str:
    url = check_loopback(url)
    if not 0 < rate <= MAX_RATE:
        raise LoadTestError(f"rate must be within (0, {MAX_RATE:g}] requests/s, got {rate:g}")
    if not 0 < duration_s <= MAX_DURATION_S:
        raise LoadTestError(f"duration must be within (0, {MAX_DURATION_S:g}] seconds, got {duration_s:g}")
    if rate * duration_s > MAX_REQUESTS:
        raise LoadTestError(f"rate x duration is {rate * duration_s:,.0f} requests; at most {MAX_REQUESTS:,} per run")
    if not 1 <= connections <= MAX_CONCURRENCY:
        raise LoadTestError(f"connections must be within 1..{MAX_CONCURRENCY}, got {connections}")
    return url


async def _sleep_until(when: float) -> None:
    """Sleep until ``time.perf_counter() >= when``, in whole milliseconds: the loop's timers have millisecond steps
    (they may fire up to one early), and a shorter sleep returns at once, so waiting out the rest of a millisecond
    would spin the loop (measured: ~0.7 ms of client CPU per request at 1,000 requests/s, taken from the server on
    a 2-core machine). A request may so leave up to ~1 ms late: that is in its latency, never hidden."""
    while (delay := when - time.perf_counter()) > 0:
        await asyncio.sleep(math.ceil(delay * 1000) / 1000)


async def _side_action(at_s: float, action: Callable[[], Awaitable[Any]], t0: float) -> dict[str, Any]:
    await _sleep_until(t0 + at_s)
    start = time.perf_counter() - t0
    try:
        outcome: dict[str, Any] = {"result": await action()}
    except Exception as exc:  # noqa: BLE001 - reported beside the load, which goes on
        outcome = {"error": f"{type(exc).__name__}: {exc}"}
    return {"at_s": at_s, "start_s": start, "end_s": time.perf_counter() - t0, **outcome}


_MODEL_VERSION = re.compile(rb'"model_version": *"([^"\\]*)"')


def _model_version(payload: bytes) -> str | None:
    """The ``model_version`` of an /act answer, read without decoding the JSON (a plain string, as servers send)."""
    found = _MODEL_VERSION.search(payload)
    return found.group(1).decode() if found else None


def pool_size(rate: float, expected_latency_s: float, cap: int) -> int:
    """Connections to open before the clock starts: Little's law (rate x expected latency requests in flight)
    times 4 for bursts and stalls, at least 2, at most ``cap``."""
    return max(1, min(cap, max(2, int(np.ceil(4 * rate * expected_latency_s)))))


async def _open_loop(
    url: str,
    requests: list[bytes],
    rate: float,
    duration_s: float,
    connections: int,
    timeout: float,
    actions: list[SideAction],
    bar: tqdm,
    expected_latency_s: float = EXPECTED_LATENCY_S,
) -> tuple[OpenLoopTrace, float, int, list[dict[str, Any]]]:
    """(trace, seconds from the first intended send to the last answer, connections opened, side-action records).

    ``requests`` are whole HTTP requests (``request_bytes``), cycled. Requests due while every connection is busy
    wait in one first-come-first-served queue; a connection that comes free takes the oldest. The pool
    (``pool_size``) is opened before the clock starts; more connections, up to ``connections``, open only when
    all are busy. No task or future per request: one task per busy connection works through the queue.
    """
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    count = max(1, int(round(rate * duration_s)))
    intended = np.arange(count) / rate
    lag, latency = np.full(count, np.nan), np.full(count, np.nan)
    status = np.full(count, DROPPED, dtype=np.int64)
    version: list[str | None] = [None] * count
    conns = [_Connection(parts.hostname or "127.0.0.1", parts.port or 80, timeout) for _ in range(connections)]
    await asyncio.gather(*(conn.open() for conn in conns[: pool_size(rate, expected_latency_s, connections)]))
    idle = list(reversed(conns))  # a stack: the opened connections on top, the rest opened only when needed
    due: deque[int] = deque()
    busy: set[asyncio.Task] = set()
    # perf_counter, not loop.time(): uvloop's loop clock has millisecond steps and is cached per loop iteration.
    clock = time.perf_counter
    t0 = clock() + 0.05

    async def work(conn: _Connection) -> None:
        while due:
            i = due.popleft()
            now = clock()
            # Given up (UNSENT) when no connection came free ``timeout`` seconds after the intended send time, and
            # DROPPED when no answer came by then: an overloaded server cannot stretch the run beyond
            # duration + timeout.
            left = t0 + intended[i] + timeout - now
            if left <= 0:
                status[i] = UNSENT
                bar.update(1)
                continue
            lag[i] = now - t0 - intended[i]
            try:
                async with asyncio.timeout(left):
                    code, payload = await conn.exchange(requests[i % len(requests)])
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
                pass  # stays DROPPED, latency NaN
            else:
                latency[i], status[i] = clock() - t0 - intended[i], code
                if code == 200:
                    version[i] = _model_version(payload)
            bar.update(1)
        idle.append(conn)

    side = [loop.create_task(_side_action(at, action, t0)) for at, action in actions]
    sent = 0
    while sent < count:
        await _sleep_until(t0 + intended[sent])
        now = clock() - t0
        while sent < count and intended[sent] <= now:  # every request due by now, sent or not earlier answered
            due.append(sent)
            sent += 1
            if idle:
                task = loop.create_task(work(idle.pop()))
                busy.add(task)
                task.add_done_callback(busy.discard)
    while busy:
        await asyncio.gather(*busy)
    elapsed = clock() - t0
    records = list(await asyncio.gather(*side))
    for conn in conns:
        await conn.close()
    return OpenLoopTrace(intended, lag, latency, status, version), elapsed, sum(c.opened for c in conns), records


def _run_async(coroutine: Awaitable[T]) -> T:
    """Run on uvloop when it is installed, else asyncio's loop (same client CPU per request, measured; a lower p99)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)  # type: ignore[arg-type]
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)  # type: ignore[arg-type]


@contextmanager
def frozen_gc() -> Iterator[None]:
    """Objects alive now are left out of garbage collection until the block ends.

    With torch or ONNX Runtime imported a full collection walks millions of objects: a pause of 0.2-0.35 s
    (measured in the client), which stalls every request due meanwhile. Frozen, a collection walks only the objects
    made during the run. No collection first (it would cost that pause up front): garbage frozen now is collected
    after the block.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _open_loop_result(
    url: str, rate: float, duration_s: float, trace: OpenLoopTrace, elapsed: float, opened: int, records: list
) -> OpenLoopResult:
    status = trace.status
    ok = int(np.sum(status == 200))
    seconds = int(np.ceil(trace.intended[-1] + 1e-9)) if len(trace.intended) else 0
    per_second = [trace.window(s, s + 1)["latency_ms"]["p99"] for s in range(max(seconds, 1))]
    return OpenLoopResult(
        url=url,
        rate=rate,
        duration_s=duration_s,
        requests=len(status),
        ok=ok,
        client_errors=int(np.sum((status >= 400) & (status < 500))),
        server_errors=int(np.sum(status >= 500)),
        dropped=int(np.sum(status < 0)),
        unsent=int(np.sum(status == UNSENT)),
        achieved_rate=ok / elapsed if elapsed > 0 else 0.0,
        latency_ms=hdr_percentiles(trace.latency),
        send_lag_ms=hdr_percentiles(trace.lag),
        connections=opened,
        versions=dict(Counter(v for v in trace.version if v is not None)),
        per_second_p99_ms=per_second,
        actions=records,
        trace=trace,
    )


def run_open_loop(
    url: str,
    rate: float,
    duration_s: float,
    content_type: str = JSON_TYPE,
    connections: int = 64,
    seed: int = 0,
    timeout: float = 10.0,
    actions: list[SideAction] | None = None,
    progress: bool = False,
    meta: dict[str, Any] | None = None,
) -> OpenLoopResult:
    """Send one valid observation per request to ``url``/act at ``rate`` requests/s for ``duration_s`` seconds,
    whatever the answers, over at most ``connections`` keep-alive connections (loopback only). A request not
    answered ``timeout`` seconds after its intended send time is dropped (counted failed; ``unsent`` when no
    connection came free for it by then), so a run lasts at most ``duration_s + timeout`` seconds.

    ``actions`` run beside the load at their offsets (seconds), e.g. a model swap; their outcomes and times are
    in the result. Raises LoadTestError for a non-loopback URL or a non-positive or too large rate or duration.
    """
    url = _check_open_loop(url, rate, duration_s, connections)
    if content_type not in ENCODINGS:
        raise LoadTestError(f"content type must be one of {list(ENCODINGS)}, got {content_type!r}")
    meta = meta or server_metadata(url, timeout)
    layout = ObsLayout.from_dict(meta["layout"])
    parts = urlsplit(url)
    requests = [
        request_bytes(parts.hostname or "127.0.0.1", parts.port or 80, "/act", content_type, encode(obs, content_type))
        for obs in valid_observations(layout, 64, seed)
    ]
    count = max(1, int(round(rate * duration_s)))
    with (
        tqdm(total=count, desc=f"{rate:g} req/s", unit="req", disable=not progress, leave=False) as bar,
        frozen_gc(),
    ):
        trace, elapsed, opened, records = _run_async(
            _open_loop(url, requests, rate, duration_s, connections, timeout, list(actions or []), bar)
        )
    return _open_loop_result(url, rate, duration_s, trace, elapsed, opened, records)


def ramp_rates(start: float, stop: float, steps: int) -> list[float]:
    """``steps`` rates from ``start`` to ``stop`` requests/s, evenly spaced on a log scale."""
    if not 0 < start <= stop or steps < 1:
        raise LoadTestError(f"a ramp needs 0 < start <= stop and steps >= 1, got {start:g}..{stop:g} in {steps}")
    return [float(r) for r in np.unique(np.round(np.geomspace(start, stop, steps)))]


@dataclass
class RampReport:
    """The open-loop ramp: one run per rate, up to the first that misses the bound."""

    p99_ms: float
    levels: list[OpenLoopResult]

    @property
    def best_rate(self) -> float | None:
        """The highest rate whose run met the bound (0 failed, p99 <= ``p99_ms``), or None."""
        met = [lv.rate for lv in self.levels if lv.meets(self.p99_ms)]
        return max(met) if met else None

    def to_dict(self) -> dict[str, Any]:
        return {"p99_ms": self.p99_ms, "best_rate": self.best_rate, "levels": [lv.to_dict() for lv in self.levels]}


def ramp_open_loop(
    url: str,
    rates: list[float],
    duration_s: float,
    p99_ms: float,
    content_type: str = JSON_TYPE,
    connections: int = 64,
    pause_s: float = 1.0,
    progress: bool = False,
    meta: dict[str, Any] | None = None,
) -> RampReport:
    """Open-loop runs at increasing ``rates`` (each ``duration_s`` long, ``pause_s`` apart so the server drains),
    stopping after the first rate that misses p99 <= ``p99_ms`` or fails a request."""
    if not rates:
        raise LoadTestError("a ramp needs at least one rate")
    if not 0 < p99_ms <= 60_000:
        raise LoadTestError(f"the p99 bound must be within (0, 60000] ms, got {p99_ms:g}")
    for rate in rates:
        _check_open_loop(url, rate, duration_s, connections)
    url = check_loopback(url)
    meta = meta or server_metadata(url, 10.0)
    levels: list[OpenLoopResult] = []
    for rate in sorted(rates):
        if levels:
            time.sleep(pause_s)
        levels.append(run_open_loop(url, rate, duration_s, content_type, connections, progress=progress, meta=meta))
        if not levels[-1].meets(p99_ms):
            break
    return RampReport(p99_ms, levels)


def plot_loadtest(report: LoadTestReport, path: Path) -> Path:
    """Latency percentiles and throughput against concurrency, as a PNG."""
    import matplotlib.pyplot as plt

    from bcarena.eval.plots import save_figure

    fig, (left, right) = plt.subplots(1, 2, figsize=(10.0, 4.0))
    conc = [lv.concurrency for lv in report.levels]
    for key in ("p50", "p95", "p99"):
        left.plot(conc, [lv.latency_ms[key] for lv in report.levels], marker="o", label=key)
    left.set_xscale("log", base=2)
    left.set_xlabel("concurrent requests")
    left.set_ylabel("latency per request (ms)")
    left.set_title("latency")
    left.legend()
    right.plot(conc, [lv.decisions_per_s for lv in report.levels], marker="o", color="tab:green")
    right.set_xscale("log", base=2)
    right.set_ylim(bottom=0)
    right.set_xlabel("concurrent requests")
    right.set_ylabel("decisions / s")
    right.set_title(f"throughput (batch {report.levels[0].batch})")
    for ax in (left, right):
        ax.set_xticks(conc, [str(c) for c in conc])
        ax.minorticks_off()
    fig.suptitle(f"{report.server.get('agent', '?')} via {report.server.get('runtime', '?')} at {report.url}")
    return save_figure(fig, path)
