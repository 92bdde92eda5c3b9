"""Load test and fuzz test of an agent server (``bcarena loadtest``), loopback only.

The client is bounded on purpose: it talks only to loopback addresses (it is a test tool, not a
traffic generator), caps concurrency (``MAX_CONCURRENCY``) and requests per run
(``MAX_REQUESTS``), and gives every request a timeout. For each concurrency level it sends
``requests`` valid observations with that many requests in flight and reports latency
p50/p95/p99 (ms, client side: send to full response), throughput (requests/s and decisions/s),
and every outcome: 2xx, 4xx, 5xx and dropped (no response: timeout, connection reset). The fuzz
phase sends malformed requests of many kinds (``FUZZ_CASES``); each must be answered 4xx.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from tqdm.auto import tqdm

from bcarena.eval.errors import EvalError
from bcarena.eval.service.layout import JSON_TYPE, NPY_TYPE, ObsLayout

MAX_CONCURRENCY = 256
MAX_REQUESTS = 1_000_000
ENCODINGS = (JSON_TYPE, NPY_TYPE)


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
    client, not the server, would be measured. Raw asyncio streams cost a fraction of that.
    """

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, content_type: str, body: bytes) -> tuple[int, bytes]:
        """(status, response body); raises OSError / asyncio.TimeoutError / ValueError when no full answer came."""
        return await asyncio.wait_for(self._post(path, content_type, body), self.timeout)

    async def _post(self, path: str, content_type: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        try:
            self.writer.write(head + body)
            await self.writer.drain()
            status_line, *header_lines = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            status = int(status_line.split(" ", 2)[1])
            headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines if h)}
            if headers.get("transfer-encoding", "").lower() == "chunked":
                payload = b""
                while size := int((await self.reader.readuntil(b"\r\n")).strip(), 16):
                    payload += (await self.reader.readexactly(size + 2))[:-2]
                await self.reader.readuntil(b"\r\n")
            else:
                payload = await self.reader.readexactly(int(headers.get("content-length", "0")))
            if headers.get("connection", "").lower() == "close":
                await self.close()
            return status, payload
        except BaseException:
            await self.close()  # a half-read response poisons the connection
            raise

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


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


def _server_metadata(url: str, timeout: float) -> dict[str, Any]:
    import httpx

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
    meta = _server_metadata(url, timeout)
    if batch > int(meta["max_batch"]):
        raise LoadTestError(f"batch {batch} exceeds the server's max_batch {meta['max_batch']}")
    return asyncio.run(_run(url, meta, tuple(levels), requests, batch, content_type, fuzz, seed, timeout, progress))


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
