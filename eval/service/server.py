"""An HTTP agent server: FastAPI + uvicorn around a ``ServedModel`` (optional extra ``bcarena[serve]``).

Endpoints
  POST /act       one observation or a batch -> {"actions": [...], "batch": B} (+ "action" for one)
  GET  /health    liveness, counters
  GET  /metadata  observation layout, action names, model hash, limits

Request bodies (``Content-Type``):
  application/json    {"obs": <one observation or a batch, nested lists of numbers>}
                      state: (k*37,) or (B, k*37) numbers; pixels: (k, 84, 84) or (B, k, 84, 84)
                      integers 0..255
  application/x-npy   a ``numpy.save`` array of exactly the wire dtype (float32 state, uint8 pixels),
                      same shapes; read with ``allow_pickle=False``
The server is stateless. Frame-stacking agents: the client sends the stack (the k most recent
observations, oldest first; see ``ObsLayout``), so one server plays any number of matches and a
restart loses nothing. ``RemoteAgent`` builds the stacks exactly as the agent does.

Every malformed request gets a 4xx with a message naming what was expected: 400 unreadable
body, 413 too many observations or bytes, 415 unsupported content type, 422 wrong shape, dtype,
range or non-finite values. With ``batch_window_ms > 0`` concurrent requests are merged into one
model call (micro-batching), which raises throughput for models whose cost grows slowly with B.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint annotations (Request) at runtime.
import asyncio
import io
import json
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from bcarena.eval.service.export import ServedModel
from bcarena.eval.service.layout import JSON_TYPE, NPY_TYPE, ExportError

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def require_serving_extra() -> None:
    """Fail with the install command when the optional serving dependencies are missing."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ExportError("serving needs FastAPI and uvicorn; install the extra: pip install 'bcarena[serve]'") from exc


@dataclass(frozen=True)
class ServerSettings:
    """Limits and batching of one server."""

    max_batch: int = 1024  # observations per request (and per merged model call)
    batch_window_ms: float = 0.0  # micro-batching: wait up to this long to merge requests; 0 = off

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        if not 0 <= self.batch_window_ms <= 1000:
            raise ValueError(f"batch_window_ms must be within [0, 1000], got {self.batch_window_ms}")


class RequestError(Exception):
    """A client error: HTTP ``status`` and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


# ----------------------------------------------------------------------------- validation
class ObservationParser:
    """Turns a request body into a float32 model-input batch (B, *shape), or raises RequestError."""

    def __init__(self, served: ServedModel, settings: ServerSettings) -> None:
        self.layout = served.layout
        self.shape = tuple(self.layout.shape)
        self.pixels = self.layout.obs_type == "pixels"
        self.max_batch = settings.max_batch
        values = self.max_batch * int(np.prod(self.shape))
        # JSON: at most ~24 characters per float ("-0.12345678901234567, "), 5 per pixel ("255, ").
        self.max_bytes = {JSON_TYPE: 4096 + values * (5 if self.pixels else 24),
                          NPY_TYPE: 4096 + values * np.dtype(self.layout.wire_dtype).itemsize}

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
        if not body:
            raise RequestError(400, "empty request body")
        arr = self._from_json(body) if kind == JSON_TYPE else self._from_npy(body)
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

    def _from_json(self, body: bytes) -> np.ndarray:
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
            raise RequestError(422, "obs must be a rectangular (nested) list of numbers; "
                                    f"expected {self.expected()}") from None
        if arr.dtype.kind not in "iuf":
            what = {"b": "booleans", "U": "strings", "O": "mixed or non-numeric values or huge integers"}.get(
                arr.dtype.kind, f"dtype {arr.dtype}")
            raise RequestError(422, f"obs must hold numbers, got {what}")
        if self.pixels and arr.dtype.kind == "f":
            raise RequestError(422, "pixel observations must be integers 0..255 (uint8), got floats")
        return arr

    def _from_npy(self, body: bytes) -> np.ndarray:
        try:
            arr = np.load(io.BytesIO(body), allow_pickle=False)
        except Exception as exc:  # noqa: BLE001 - any unreadable payload is the client's error
            raise RequestError(400, f"body is not a readable .npy array "
                                    f"({type(exc).__name__}: {str(exc)[:120]})") from None
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


# ----------------------------------------------------------------------------- micro-batching
class MicroBatcher:
    """Merges concurrent requests into one model call: waits up to ``window_s`` after the first
    request, or until ``max_rows`` observations are queued, then answers each request its rows."""

    def __init__(self, served: ServedModel, window_s: float, max_rows: int) -> None:
        self.served, self.window_s, self.max_rows = served, window_s, max_rows
        self.queue: asyncio.Queue[tuple[np.ndarray, asyncio.Future]] = asyncio.Queue()
        self.calls = 0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def actions(self, inputs: np.ndarray) -> np.ndarray:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((inputs, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            pending = [await self.queue.get()]
            rows = pending[0][0].shape[0]
            deadline = loop.time() + self.window_s
            while rows < self.max_rows:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self.queue.get(), timeout)
                except asyncio.TimeoutError:
                    break
                pending.append(item)
                rows += item[0].shape[0]
            self.calls += 1
            try:
                actions = self.served.runtime.actions(np.concatenate([p[0] for p in pending]))
            except Exception as exc:  # noqa: BLE001 - delivered to every waiting request
                for _, future in pending:
                    if not future.done():
                        future.set_exception(exc)
                continue
            start = 0
            for inputs, future in pending:
                if not future.done():  # the client may have gone away
                    future.set_result(actions[start:start + inputs.shape[0]])
                start += inputs.shape[0]


# ----------------------------------------------------------------------------- app
def create_app(served: ServedModel, settings: ServerSettings | None = None):
    """The FastAPI application serving ``served``."""
    require_serving_extra()
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    settings = settings or ServerSettings()
    parser = ObservationParser(served, settings)
    stats = {"requests": 0, "decisions": 0, "client_errors": 0, "started": time.time()}
    batcher = MicroBatcher(served, settings.batch_window_ms / 1000, settings.max_batch) \
        if settings.batch_window_ms > 0 else None
    metadata = {**served.metadata(), "max_batch": settings.max_batch, "batch_window_ms": settings.batch_window_ms,
                "content_types": [JSON_TYPE, NPY_TYPE], "frame_stack_sent_by_client": True}

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        if batcher is not None:
            batcher.start()
        yield
        if batcher is not None:
            await batcher.stop()

    app = FastAPI(title=f"bcarena agent server: {served.agent_name}", lifespan=lifespan,
                  description="Duel agent decisions over HTTP. See GET /metadata for the observation layout.")

    @app.exception_handler(RequestError)
    async def _client_error(_request: Request, exc: RequestError) -> JSONResponse:
        stats["client_errors"] += 1
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    async def read_body(request: Request, kind: str) -> bytes:
        limit = parser.max_bytes[kind]
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            raise RequestError(413, f"body of {declared} bytes exceeds the limit of {limit} bytes "
                                    f"({settings.max_batch} observations)")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(413, f"body exceeds the limit of {limit} bytes ({settings.max_batch} observations)")
            chunks.append(chunk)
        return b"".join(chunks)

    @app.post("/act")
    async def act(request: Request) -> JSONResponse:
        """Actions for one observation or a batch (see the module docstring for the body formats)."""
        kind = parser.content_type(request.headers.get("content-type"))
        inputs, single = parser.parse(await read_body(request, kind), kind)
        actions = await batcher.actions(inputs) if batcher is not None else served.runtime.actions(inputs)
        stats["requests"] += 1
        stats["decisions"] += int(actions.shape[0])
        body: dict[str, Any] = {"actions": actions.tolist(), "batch": int(actions.shape[0])}
        if single:
            body["action"] = int(actions[0])
            body["name"] = served.action_names[int(actions[0])]
        return JSONResponse(body)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness and counters."""
        return {"status": "ok", "agent": served.agent_name, "runtime": served.runtime.name,
                "uptime_s": round(time.time() - stats["started"], 3), "requests": stats["requests"],
                "decisions": stats["decisions"], "client_errors": stats["client_errors"],
                "model_calls": batcher.calls if batcher is not None else stats["requests"]}

    @app.get("/metadata")
    async def get_metadata() -> dict[str, Any]:
        """Observation layout, action names, model hash and request limits."""
        return metadata

    return app


# ----------------------------------------------------------------------------- running
def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def serve(served: ServedModel, host: str = "127.0.0.1", port: int = 8000, settings: ServerSettings | None = None,
          log_level: str = "warning") -> None:
    """Run the server in the foreground until interrupted (Ctrl-C)."""
    import uvicorn

    uvicorn.run(create_app(served, settings), host=host, port=port, log_level=log_level, access_log=False)


class BackgroundServer:
    """The server on a free port in a background thread; a context manager that shuts it down cleanly.

    For tests and single-process tools. Benchmarks run the server in its own process instead, so
    the client does not compete with it for the GIL.
    """

    def __init__(self, served: ServedModel, settings: ServerSettings | None = None, host: str = "127.0.0.1",
                 port: int | None = None) -> None:
        require_serving_extra()
        import uvicorn

        self.host, self.port = host, port or free_port(host)
        config = uvicorn.Config(create_app(served, settings), host=host, port=self.port, log_level="warning",
                                access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
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
        self.server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
