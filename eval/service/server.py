"""An HTTP agent server: FastAPI + uvicorn around a ``ServedModel`` (optional extra ``bcarena[serve]``).

Endpoints
  POST /act           one observation or a batch -> {"actions": [...], "batch": B, "model_version", "model_hash"}
                      (+ "action" and "name" for one observation)
  GET  /health        status, counters, the served model
  GET  /health/live   200 while the process runs
  GET  /health/ready  200 when the model is loaded and the server is not draining, else 503
  GET  /metadata      observation layout, action names, model version and hash, limits
  GET  /metrics       Prometheus text format (``metrics.py``)
  POST /admin/model   {"path": FOLDER or "models:/NAME@alias", "version": optional}: hot swap; loopback clients
                      only (403 otherwise); 409 when the new model's game, layout or action names differ
With ``ServerSettings.follow_poll_s`` (``bcarena serve models:/NAME@ALIAS --follow-alias``) the server also polls
the registry and swaps through the same code when the alias moves (``follow.py``).

Request bodies (``Content-Type``):
  application/json    {"obs": <one observation or a batch, nested lists of numbers>}
                      state: (k*37,) or (B, k*37) numbers; pixels: (k, 84, 84) or (B, k, 84, 84)
                      integers 0..255
  application/x-npy   a ``numpy.save`` array of exactly the wire dtype (float32 state, uint8 pixels),
                      same shapes; read with ``allow_pickle=False``
Hot swap: the new model is loaded, hashed and warmed up off the event loop while the old one keeps answering,
then one reference is switched; a request keeps the model it started with (the micro-batcher never merges
requests of two versions), so no request fails or mixes versions. On SIGTERM (or Ctrl-C) the server reports not
ready at once, keeps serving for ``drain_s`` (time for a load balancer to notice), then stops accepting and lets
requests in flight finish, for at most ``shutdown_timeout_s``.

The server is stateless. Frame-stacking agents: the client sends the stack (the k most recent
observations, oldest first; see ``ObsLayout``), so one server plays any number of matches and a
restart loses nothing. ``RemoteAgent`` builds the stacks exactly as the agent does.

Every malformed request gets a 4xx with a message naming what was expected: 400 unreadable
body, 413 too many observations or bytes, 415 unsupported content type, 422 wrong shape, dtype,
range or non-finite values. With ``batch_window_ms > 0`` concurrent requests are merged into one
model call (micro-batching), which raises throughput for models whose cost grows slowly with B.

Slow and huge requests cannot stall the server (``ServerSettings``):
  - each request, headers and body, must arrive within ``request_timeout_s`` of the connection
    opening or of the previous response, or the connection is closed (a 408 when still in the
    headers); an idle keep-alive connection is closed after ``keep_alive_s``; headers are capped
    at ``connections.MAX_HEADER_BYTES``;
  - a body is refused with 413 as soon as its Content-Length or the bytes streamed so far exceed
    the limit for its content type, which is what the largest valid batch (``max_batch``
    observations) can take; the rest is discarded as it arrives, never buffered;
  - bodies over ``INLINE_PARSE_BYTES`` are decoded off the event loop: JSON in worker processes
    (``json.loads`` and list-to-array hold the GIL for seconds on a 40 MB body, so a thread would
    still stall ``/health``), ``.npy`` in a thread (NumPy releases the GIL while copying).
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint annotations (Request) at runtime.
import asyncio
import gc
import io
import ipaddress
import json
import multiprocessing
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from bcarena.eval.errors import EvalError
from bcarena.eval.service.layout import JSON_TYPE, NPY_TYPE, ExportError
from bcarena.eval.service.metrics import ASGIApp, Receive, Scope, Send
from bcarena.eval.service.models import ModelSlot, SwapError, incompatibility, load_slot

if TYPE_CHECKING:
    # Only for annotations: the JSON worker processes import this module and must not load torch (nor the serve
    # extra, which this module works without).
    import uvicorn
    from fastapi import FastAPI, Request

    from bcarena.eval.service.export import ServedModel

T = TypeVar("T")

INLINE_PARSE_BYTES = 512 * 1024  # bodies up to this are decoded on the event loop (a few ms at most)
JSON_WORKERS = 1  # processes decoding large JSON bodies (one holds ~30x its body in memory while decoding)
PARSE_THREADS = 2  # threads decoding large .npy bodies and checking large batches


def require_serving_extra() -> None:
    """Fail with the install command when the optional serving dependencies are missing."""
    try:
        import fastapi  # noqa: F401
        import httptools  # noqa: F401  (the request deadlines are built on uvicorn's httptools protocol)
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ExportError(
            "serving needs FastAPI, uvicorn and httptools; install the extra: pip install 'bcarena[serve]'"
        ) from exc


@dataclass(frozen=True)
class ServerSettings:
    """Limits and batching of one server."""

    max_batch: int = 1024  # observations per request (and per merged model call)
    batch_window_ms: float = 0.0  # micro-batching: wait up to this long to merge requests; 0 = off
    request_timeout_s: float = 30.0  # a whole request (headers and body) must arrive within this
    keep_alive_s: float = 5.0  # an idle keep-alive connection is closed after this
    drain_s: float = 0.0  # on SIGTERM: not ready, still serving, for this long before it stops accepting
    shutdown_timeout_s: float = 30.0  # then requests in flight get at most this long to finish
    follow_poll_s: float | None = None  # poll the served models:/NAME@ALIAS this often and swap when it moves

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise EvalError(f"max_batch must be >= 1, got {self.max_batch}")
        if not 0 <= self.batch_window_ms <= 1000:
            raise EvalError(f"batch_window_ms must be within [0, 1000], got {self.batch_window_ms}")
        for name in ("request_timeout_s", "keep_alive_s", "shutdown_timeout_s"):
            if not 0 < getattr(self, name) <= 3600:
                raise EvalError(f"{name} must be within (0, 3600] seconds, got {getattr(self, name)}")
        if not 0 <= self.drain_s <= 3600:
            raise EvalError(f"drain_s must be within [0, 3600] seconds, got {self.drain_s}")
        if self.follow_poll_s is not None and not 0 < self.follow_poll_s <= 3600:
            raise EvalError(f"follow_poll_s must be within (0, 3600] seconds, got {self.follow_poll_s}")


class RequestError(Exception):
    """A client error: HTTP ``status`` and a message for the client.

    Not a ``BcarenaError`` on purpose: it never reaches a command-line user; the server turns it
    into an HTTP error response for the client that sent the request.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message

    def __reduce__(self) -> tuple:
        # Raised in a JSON worker process and re-raised here: pickle both arguments, not just the message.
        return RequestError, (self.status, self.message)


# ----------------------------------------------------------------------------- validation
class ObservationParser:
    """Turns a request body into a float32 model-input batch (B, *shape), or raises RequestError.

    ``parse`` = ``decode`` (body -> array) + ``check`` (shape, batch size, values); the server runs
    the two steps off the event loop for large bodies.
    """

    def __init__(self, served: "ServedModel", settings: ServerSettings) -> None:
        self.layout = served.layout
        self.shape = tuple(self.layout.shape)
        self.pixels = self.layout.obs_type == "pixels"
        self.max_batch = settings.max_batch
        values = self.max_batch * int(np.prod(self.shape))
        # JSON: at most ~24 characters per float ("-0.12345678901234567, "), 5 per pixel ("255, ").
        self.max_bytes = {
            JSON_TYPE: 4096 + values * (5 if self.pixels else 24),
            NPY_TYPE: 4096 + values * np.dtype(self.layout.wire_dtype).itemsize,
        }

    def expected(self) -> str:
        one = tuple(self.shape)
        batch = ", ".join(map(str, one))
        return f"one observation of shape {one} or a batch (B, {batch}) with 1 <= B <= {self.max_batch}"

    def content_type(self, header: str | None) -> str:
        kind = (header or JSON_TYPE).split(";")[0].strip().lower()
        if kind in (JSON_TYPE, NPY_TYPE):
            return kind
        if kind == "application/octet-stream":
            return NPY_TYPE
        raise RequestError(415, f"unsupported Content-Type {kind!r}; send {JSON_TYPE} or {NPY_TYPE}")

    def parse(self, body: bytes, kind: str) -> tuple[np.ndarray, bool]:
        """(inputs (B, *shape) float32, whether one unbatched observation was sent)."""
        return self.check(self.decode(body, kind))

    def decode(self, body: bytes, kind: str) -> np.ndarray:
        """The array a body holds, before its shape and values are checked."""
        if not body:
            raise RequestError(400, "empty request body")
        return decode_json(body, self.pixels, self.expected()) if kind == JSON_TYPE else self._from_npy(body)

    def check(self, arr: np.ndarray) -> tuple[np.ndarray, bool]:
        """(inputs (B, *shape) float32, single) for a decoded array, or a 413/422 RequestError."""
        if arr.shape == self.shape:
            single, arr = True, arr[None]
        elif arr.ndim == len(self.shape) + 1 and arr.shape[1:] == self.shape:
            single = False
        else:
            raise RequestError(422, f"obs has shape {arr.shape}; expected {self.expected()}")
        if arr.shape[0] == 0:
            raise RequestError(422, "obs is an empty batch; send at least one observation")
        if arr.shape[0] > self.max_batch:
            raise RequestError(413, f"batch of {arr.shape[0]} observations exceeds the limit of {self.max_batch}")
        return self._check_values(arr), single

    def _from_npy(self, body: bytes) -> np.ndarray:
        try:
            arr = np.load(io.BytesIO(body), allow_pickle=False)
        except Exception as exc:  # noqa: BLE001 - any unreadable payload is the client's error
            raise RequestError(
                400, f"body is not a readable .npy array ({type(exc).__name__}: {str(exc)[:120]})"
            ) from None
        if not isinstance(arr, np.ndarray):
            raise RequestError(400, "body must be a single .npy array, not an .npz archive")
        if arr.dtype != np.dtype(self.layout.wire_dtype):
            raise RequestError(422, f"obs dtype is {arr.dtype}; this agent takes {self.layout.wire_dtype}")
        return arr

    def _check_values(self, arr: np.ndarray) -> np.ndarray:
        if self.pixels:
            if arr.dtype != np.uint8 and (arr.min() < 0 or arr.max() > 255):
                raise RequestError(422, f"pixel values must be within 0..255, got {arr.min()}..{arr.max()}")
            return arr.astype(np.float32)
        with np.errstate(over="ignore"):
            out = arr.astype(np.float32)
        finite = np.isfinite(out)
        if not finite.all():
            bad = np.argwhere(~finite)[0].tolist()
            raise RequestError(422, f"obs holds NaN, infinite or float32-overflowing values (first at index {bad})")
        return out


def decode_json(body: bytes, pixels: bool, expected: str) -> np.ndarray:
    """The ``obs`` array of a JSON body, or a RequestError; ``expected`` describes valid shapes for messages.

    A module-level function of plain arguments so a JSON worker process can run it. Pixel values
    that fit are returned as uint8, which makes the way back from a worker 8x shorter.
    """
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise RequestError(400, f"body is not valid JSON ({type(exc).__name__}: {str(exc)[:120]})") from None
    if not isinstance(payload, dict) or "obs" not in payload:
        raise RequestError(422, 'JSON body must be an object {"obs": [...]}')
    extra = sorted(set(payload) - {"obs"})
    if extra:
        raise RequestError(422, f"unknown key(s) {extra[:5]} in the JSON body; only 'obs' is accepted")
    try:
        arr = np.asarray(payload["obs"])
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise RequestError(422, f"obs must be a rectangular (nested) list of numbers; expected {expected}") from None
    if arr.dtype.kind not in "iuf":
        what = {"b": "booleans", "U": "strings", "O": "mixed or non-numeric values or huge integers"}.get(
            arr.dtype.kind, f"dtype {arr.dtype}"
        )
        raise RequestError(422, f"obs must hold numbers, got {what}")
    if pixels and arr.dtype.kind == "f":
        raise RequestError(422, "pixel observations must be integers 0..255 (uint8), got floats")
    if pixels and arr.size and 0 <= arr.min() and arr.max() <= 255:
        return arr.astype(np.uint8)
    return arr


class JsonWorkers:
    """Worker processes that decode large JSON bodies (``decode_json``), started on first use.

    They are spawned, not forked: the server process holds model runtimes and threads that a
    forked child must not inherit. A worker that dies (out of memory on a huge body) fails only
    its request, with a 503; the next large body starts fresh workers.
    """

    def __init__(self, processes: int = JSON_WORKERS) -> None:
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None

    async def decode(self, body: bytes, pixels: bool, expected: str) -> np.ndarray:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"))
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, decode_json, body, pixels, expected)
        except BrokenProcessPool:
            self.shutdown()
            raise RequestError(
                503,
                "the JSON decoder process died on this body; retry, or send application/x-npy "
                "(smaller and decoded without a copy)",
            ) from None

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


# ----------------------------------------------------------------------------- micro-batching
class MicroBatcher:
    """Merges concurrent requests into one model call: waits up to ``window_s`` after the first
    request, or until ``max_rows`` observations are queued, then answers each request its rows.

    Only requests for the same model slot are merged: a request queued after a hot swap starts the next call, so
    every request is answered by the model it started with.
    """

    def __init__(
        self,
        actions: Callable[[ModelSlot, np.ndarray], Awaitable[np.ndarray]],
        window_s: float,
        max_rows: int,
    ) -> None:
        self.model_actions, self.window_s, self.max_rows = actions, window_s, max_rows
        self.queue: asyncio.Queue[tuple[ModelSlot, np.ndarray, asyncio.Future]] = asyncio.Queue()
        self.calls = 0
        self._task: asyncio.Task | None = None
        self._next: tuple[ModelSlot, np.ndarray, asyncio.Future] | None = None  # first item of the next call

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def actions(self, slot: ModelSlot, inputs: np.ndarray) -> np.ndarray:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((slot, inputs, future))
        return await future

    async def _gather(self) -> list[tuple[ModelSlot, np.ndarray, asyncio.Future]]:
        """The requests of the next model call: one slot, at most ``max_rows`` rows unless one request has more."""
        loop = asyncio.get_running_loop()
        first, self._next = self._next or await self.queue.get(), None
        pending, rows = [first], first[1].shape[0]
        deadline = loop.time() + self.window_s
        while rows < self.max_rows:
            timeout = deadline - loop.time()
            if timeout <= 0:
                break
            try:
                item = await asyncio.wait_for(self.queue.get(), timeout)
            except asyncio.TimeoutError:
                break
            if item[0] is not first[0]:
                self._next = item
                break
            pending.append(item)
            rows += item[1].shape[0]
        return pending

    async def _run(self) -> None:
        while True:
            pending = await self._gather()
            self.calls += 1
            try:
                actions = await self.model_actions(pending[0][0], np.concatenate([p[1] for p in pending]))
            except Exception as exc:  # noqa: BLE001 - delivered to every waiting request
                for _, _, future in pending:
                    if not future.done():
                        future.set_exception(exc)
                continue
            start = 0
            for _, inputs, future in pending:
                if not future.done():  # the client may have gone away
                    future.set_result(actions[start : start + inputs.shape[0]])
                start += inputs.shape[0]


# ----------------------------------------------------------------------------- app
class AgentService:
    """What the routes of one server do: read and check a request body, call the model (through the micro-batcher
    when batching is on), count requests, decisions and client errors, swap the model, and drain on shutdown.
    ``start``/``stop`` run in the app's lifespan.

    ``slot`` is the served model version; a swap replaces the reference, never the slot, so a request holds the
    slot it read first until it is answered. Every slot has the first one's layout (``incompatibility``), so the
    one parser fits them all.
    """

    def __init__(
        self, slot: ModelSlot, settings: ServerSettings, backend: str | None = None, tracking_uri: str | None = None
    ) -> None:
        from bcarena.eval.service.metrics import ServiceMetrics

        self.slot, self.settings = slot, settings
        self.backend, self.tracking_uri = backend, tracking_uri  # how swapped-in models are found and run
        self.parser = ObservationParser(slot.served, settings)
        self.requests = self.decisions = self.client_errors = 0
        self.swaps = 0
        self.draining = False
        self.started = time.time()
        self.metrics = ServiceMetrics()
        self.metrics.set_model(slot)
        self.metrics.ready.set(1)
        self._swap_lock = asyncio.Lock()
        self._threads = ThreadPoolExecutor(PARSE_THREADS, thread_name_prefix="bcarena-parse")
        self._json_workers = JsonWorkers()
        self._batcher = (
            MicroBatcher(self.model_actions, settings.batch_window_ms / 1000, settings.max_batch)
            if settings.batch_window_ms > 0
            else None
        )
        self.follower = None
        if settings.follow_poll_s is not None:
            from bcarena.eval.service.follow import AliasFollower

            source = slot.source or ""
            self.follower = AliasFollower(
                source, settings.follow_poll_s, tracking_uri, lambda: self.slot, self.swap, self.metrics
            )
        self.freeze_gc = False  # serve() sets it: its process holds nothing but this server
        self.limits = {
            "max_batch": settings.max_batch,
            "batch_window_ms": settings.batch_window_ms,
            "max_body_bytes": dict(self.parser.max_bytes),
            "request_timeout_s": settings.request_timeout_s,
            "content_types": [JSON_TYPE, NPY_TYPE],
            "frame_stack_sent_by_client": True,
        }

    @property
    def served(self) -> "ServedModel":
        return self.slot.served

    @property
    def ready(self) -> bool:
        return not self.draining

    def metadata(self) -> dict[str, Any]:
        """The answer to GET /metadata: the served model (layout, actions, version, hash) and the limits."""
        slot = self.slot
        return {**slot.served.metadata(), **slot.describe(), **self.limits}

    def start(self) -> None:
        if self._batcher is not None:
            self._batcher.start()
        if self.follower is not None:
            self.follower.start()

    def drain(self) -> None:
        """Report not ready from now on (shutdown has begun); requests are still answered."""
        self.draining = True
        self.metrics.ready.set(0)

    async def stop(self) -> None:
        if self.follower is not None:
            await self.follower.stop()
        if self._batcher is not None:
            await self._batcher.stop()
        self._json_workers.shutdown()
        self._threads.shutdown(wait=False, cancel_futures=True)

    async def act(self, content_type: str | None, content_length: str | None, body: AsyncIterator[bytes]) -> bytes:
        """The JSON answer to POST /act: {"actions": [...], "batch": B, "model_version", "model_hash"}, plus
        "action" and "name" for one observation; ``body`` yields the request body's chunks as they arrive."""
        slot = self.slot  # this request's model, whatever is swapped in meanwhile
        kind = self.parser.content_type(content_type)
        inputs, single = await self.parse(await self.read_body(kind, content_length, body), kind)
        self.metrics.request_batch.observe(inputs.shape[0])
        if self._batcher is not None:
            actions = await self._batcher.actions(slot, inputs)
        else:
            actions = await self.model_actions(slot, inputs)
        self.requests += 1
        self.decisions += int(actions.shape[0])
        answer: dict[str, Any] = {
            "actions": actions.tolist(),
            "batch": int(actions.shape[0]),
            "model_version": slot.version,
            "model_hash": slot.model_hash,
        }
        if single:
            answer["action"] = int(actions[0])
            answer["name"] = slot.served.action_names[int(actions[0])]
        return json.dumps(answer, separators=(",", ":")).encode()

    def refused(self, exc: RequestError) -> dict[str, str]:
        """The body of the 4xx answer to a request refused with ``exc`` (/act's handler and FastAPI's both), counted."""
        self.client_errors += 1
        return {"detail": exc.message}

    def health(self) -> dict[str, Any]:
        """The answer to GET /health: status, counters and the served model."""
        return {
            "status": "draining" if self.draining else "ok",
            "ready": self.ready,
            "agent": self.served.agent_name,
            "runtime": self.served.runtime.name,
            "model_version": self.slot.version,
            "model_hash": self.slot.model_hash,
            "uptime_s": round(time.time() - self.started, 3),
            "requests": self.requests,
            "decisions": self.decisions,
            "client_errors": self.client_errors,
            "model_calls": self._batcher.calls if self._batcher is not None else self.requests,
            "swaps": self.swaps,
        }

    async def swap(self, source: str, version: str | None) -> dict[str, Any]:
        """Load ``source`` off the event loop, check it fits the served model's clients, then switch to it.

        Raises SwapError (the served model unchanged): 404/422 when ``source`` cannot be loaded, 409 when it plays
        another game or takes other observations or actions. One swap at a time; others wait their turn.
        """
        async with self._swap_lock:
            started = time.perf_counter()
            try:
                new = await asyncio.to_thread(
                    load_slot, source, version, self.backend, self.served.runtime.device, self.tracking_uri
                )
            except SwapError:
                self.metrics.swaps.labels("failed").inc()
                raise
            except Exception as exc:  # noqa: BLE001 - whatever a broken model raises, the old one keeps serving
                self.metrics.swaps.labels("failed").inc()
                raise SwapError(f"{source}: cannot be served ({type(exc).__name__}: {str(exc)[:200]})", 422) from None
            reason = incompatibility(self.slot, new)
            if reason is not None:
                self.metrics.swaps.labels("refused").inc()
                raise SwapError(f"swap to {source} refused: {reason}; still serving {self.slot.version!r}", 409)
            previous, self.slot = self.slot, new
            if self.freeze_gc:
                gc.freeze()  # the new model's objects too (see ``serve``); instant, unlike a collection
            self.swaps += 1
            self.metrics.set_model(new, previous)
            self.metrics.swaps.labels("swapped").inc()
            return {
                "swapped": True,
                "previous": previous.describe(),
                "current": new.describe(),
                "load_s": round(time.perf_counter() - started, 4),
            }

    async def read_body(self, kind: str, declared: str | None, chunks: AsyncIterator[bytes]) -> bytes:
        """The body, refused with 413 as soon as its declared (Content-Length) or streamed size exceeds the limit for
        ``kind``, and with 408 when the client goes away before it has arrived."""
        limit = self.parser.max_bytes[kind]
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            raise RequestError(
                413,
                f"body of {declared} bytes exceeds the limit of {limit} bytes ({self.settings.max_batch} observations)",
            )
        received, size = [], 0
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise RequestError(
                    413, f"body exceeds the limit of {limit} bytes ({self.settings.max_batch} observations)"
                )
            received.append(chunk)
        return b"".join(received)

    async def parse(self, body: bytes, kind: str) -> tuple[np.ndarray, bool]:
        """(inputs (B, *shape) float32, single); bodies over ``INLINE_PARSE_BYTES`` are decoded off the event loop."""
        if len(body) <= INLINE_PARSE_BYTES:
            return self.parser.parse(body, kind)
        if kind == JSON_TYPE:
            decoded = await self._json_workers.decode(body, self.parser.pixels, self.parser.expected())
            return await self._off_loop(self.parser.check, decoded)
        return await self._off_loop(self.parser.parse, body, kind)

    async def model_actions(self, slot: ModelSlot, inputs: np.ndarray) -> np.ndarray:
        """Actions (B,) of ``slot``'s model for inputs (B, *shape)."""
        self.metrics.model_batch.observe(inputs.shape[0])
        # Torch and ONNX Runtime release the GIL while computing: a large batch runs in a thread.
        if inputs.nbytes <= INLINE_PARSE_BYTES:
            return slot.served.runtime.actions(inputs)
        return await self._off_loop(slot.served.runtime.actions, inputs)

    async def _off_loop(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._threads, function, *args)


class ActEndpoint:
    """POST /act as a plain ASGI app in front of the FastAPI routes (pure ASGI middleware).

    /act is the request the server exists for, and FastAPI's routing, dependency solving and response classes cost
    about as much CPU per batch-1 request as the model itself (profiled: ~150 us of ~460 us in process). Every other
    path and method goes on to FastAPI; errors are answered as its ``RequestError`` handler answers them.
    """

    def __init__(self, app: ASGIApp, service: AgentService) -> None:
        self.app, self.service = app, service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/act" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])  # header names arrive lower-cased
        content_type, declared = headers.get(b"content-type"), headers.get(b"content-length")
        try:
            body = await self.service.act(
                content_type.decode("latin-1") if content_type is not None else None,
                declared.decode("latin-1") if declared is not None else None,
                self._chunks(receive),
            )
            status = 200
        except RequestError as exc:
            status, body = exc.status, json.dumps(self.service.refused(exc)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _chunks(self, receive: Receive) -> AsyncIterator[bytes]:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":  # the client went away, or the request deadline closed it
                raise RequestError(
                    408, f"the request body did not arrive within {self.service.settings.request_timeout_s} s"
                )
            yield message.get("body", b"")
            if not message.get("more_body", False):
                return


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (a client or server address) is a loopback address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


async def _swap_request(request: "Request") -> tuple[str, str | None]:
    """(source, version) of a POST /admin/model body {"path": ..., "version": ...}, or a 422 RequestError."""
    try:
        payload = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        payload = None
    if (
        not isinstance(payload, dict)
        or not isinstance(payload.get("path"), str)
        or not isinstance(payload.get("version", ""), (str, type(None)))
        or set(payload) - {"path", "version"}
    ):
        raise RequestError(422, 'body must be {"path": "FOLDER or models:/NAME@alias", "version": "optional label"}')
    return payload["path"], payload.get("version")


def create_app(
    model: "ServedModel | ModelSlot",
    settings: ServerSettings | None = None,
    backend: str | None = None,
    tracking_uri: str | None = None,
) -> "FastAPI":
    """The FastAPI application serving ``model`` (a ModelSlot, or an in-memory ServedModel named by its agent).

    Swapped-in models run with ``backend`` (None: torch for agent folders, an export's own format); ``models:/``
    URIs are looked up in the MLflow registry at ``tracking_uri`` (None: the local default store).
    """
    require_serving_extra()
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response
    from starlette.routing import Route

    from bcarena.eval.service.metrics import CONTENT_TYPE, MetricsMiddleware

    slot = model if isinstance(model, ModelSlot) else ModelSlot.of(model)
    service = AgentService(slot, settings or ServerSettings(), backend, tracking_uri)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title=f"bcarena agent server: {slot.served.agent_name}",
        lifespan=lifespan,
        description="Agent decisions over HTTP. See GET /metadata for the observation layout and the game.",
        # The server's metrics are its own Prometheus series (/metrics); FastAPI's OpenTelemetry hooks, on by default,
        # look up environment variables on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.service = service

    @app.exception_handler(RequestError)
    async def _client_error(_request: Request, exc: RequestError) -> JSONResponse:
        # After an early 413 the connection stays open: uvicorn drains the rest of the body unread (within the
        # request deadline), so the client gets this answer instead of a connection reset.
        return JSONResponse(service.refused(exc), status_code=exc.status)

    @app.exception_handler(SwapError)
    async def _swap_error(_request: Request, exc: SwapError) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "model_version": service.slot.version}, status_code=exc.status)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Status, counters and the served model."""
        return service.health()

    @app.get("/health/live")
    async def live() -> dict[str, Any]:
        """200 while the process is up."""
        return {"live": True}

    @app.get("/health/ready")
    async def ready() -> JSONResponse:
        """200 when the model is loaded and the server is not draining; 503 otherwise."""
        body = {"ready": service.ready, "model_version": service.slot.version, "draining": service.draining}
        return JSONResponse(body, status_code=200 if service.ready else 503)

    @app.get("/metadata")
    async def get_metadata() -> dict[str, Any]:
        """Observation layout, action names, model version and hash, and request limits."""
        return service.metadata()

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus metrics (text exposition format)."""
        return Response(service.metrics.render(), media_type=CONTENT_TYPE)

    @app.post("/admin/model")
    async def swap_model(request: Request) -> JSONResponse:
        """Hot-swap the served model (loopback clients only)."""
        client = request.client.host if request.client is not None else None
        if not is_loopback(client):
            raise RequestError(403, f"the admin endpoint answers loopback clients only, not {client!r}")
        source, version = await _swap_request(request)
        return JSONResponse(await service.swap(source, version))

    routes = ["/act", *(route.path for route in app.routes if isinstance(route, Route))]
    app.add_middleware(ActEndpoint, service=service)
    app.add_middleware(MetricsMiddleware, metrics=service.metrics, routes=routes)  # the outer one: it times /act too
    return app


def _uvicorn_server(
    model: "ServedModel | ModelSlot",
    settings: ServerSettings,
    host: str,
    port: int,
    log_level: str,
    backend: str | None = None,
    tracking_uri: str | None = None,
) -> tuple["uvicorn.Server", AgentService]:
    """The uvicorn server of ``model`` (graceful, see ``_graceful_server``) and the service behind its routes."""
    import uvicorn

    from bcarena.eval.service.connections import deadline_protocol

    app = create_app(model, settings, backend, tracking_uri)
    service: AgentService = app.state.service
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        lifespan="on",
        http=deadline_protocol(settings.request_timeout_s),
        # uvicorn annotates ints but hands both to asyncio, which takes float seconds.
        timeout_keep_alive=settings.keep_alive_s,  # type: ignore[arg-type]
        timeout_graceful_shutdown=settings.shutdown_timeout_s,  # type: ignore[arg-type]
    )
    return _graceful_server(config, service, settings.drain_s), service


def _graceful_server(config: "uvicorn.Config", service: AgentService, drain_s: float) -> "uvicorn.Server":
    """A uvicorn server whose first SIGTERM/SIGINT makes /health/ready answer 503 at once and starts uvicorn's
    graceful shutdown (stop accepting, finish requests in flight within ``timeout_graceful_shutdown``) only
    ``drain_s`` seconds later; a second signal skips the drain."""
    import uvicorn

    class GracefulServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            if service.draining or drain_s <= 0:
                service.drain()
                super().handle_exit(sig, frame)
                return
            service.drain()
            self._captured_signals.append(sig)  # uvicorn re-raises it after the shutdown, as it does without a drain
            # A timer thread, not the event loop: a signal handler must not touch the loop, and uvicorn polls
            # should_exit every 0.1 s.
            timer = threading.Timer(drain_s, setattr, (self, "should_exit", True))
            timer.daemon = True  # never what keeps the process alive
            timer.start()

    return GracefulServer(config)


# ----------------------------------------------------------------------------- running
def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def serve(
    model: "ServedModel | ModelSlot",
    host: str = "127.0.0.1",
    port: int = 8000,
    settings: ServerSettings | None = None,
    log_level: str = "warning",
    backend: str | None = None,
    tracking_uri: str | None = None,
) -> None:
    """Run the server in the foreground until SIGTERM or Ctrl-C, then drain and shut down gracefully.

    The objects alive at start (torch or ONNX Runtime, the model) are frozen out of garbage collection: a full
    collection walking them pauses every request for 0.2-0.3 s (measured in the load-test client, which holds the
    same libraries).
    """
    settings = settings or ServerSettings()
    server, service = _uvicorn_server(model, settings, host, port, log_level, backend, tracking_uri)
    service.freeze_gc = True
    gc.collect()
    gc.freeze()
    server.run()


class BackgroundServer:
    """The server on a free port in a background thread; a context manager that shuts it down cleanly.

    For tests and single-process tools. Benchmarks run the server in its own process instead, so
    the client does not compete with it for the GIL.
    """

    def __init__(
        self,
        model: "ServedModel | ModelSlot",
        settings: ServerSettings | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        backend: str | None = None,
        tracking_uri: str | None = None,
    ) -> None:
        require_serving_extra()
        settings = settings or ServerSettings()
        self.host, self.port = host, port or free_port(host)
        # Signals reach only the main thread: ``server.handle_exit(signal.SIGTERM, None)`` stands in for one here.
        self.server, self.service = _uvicorn_server(model, settings, host, self.port, "warning", backend, tracking_uri)
        self._thread = threading.Thread(target=self.server.run, name=f"bcarena-server-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> "BackgroundServer":
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"agent server on {self.url} did not start within {timeout:.0f} s")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.service.drain()
        self.server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
