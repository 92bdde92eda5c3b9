"""Benchmark: open-loop HTTP load (no coordinated omission) and a hot model swap under load.

Run: ``python -m bcarena.experiments.benchmarks.service_swap [--out FILE.json]`` (or ``bcarena bench service-swap``).

Every server runs in its own process (``bcarena serve``), the load comes from ``run_open_loop`` in this one:
  1. client ceiling (the baseline): the open-loop ramp against a null server (raw asyncio in its own process,
     a canned 200 answer): the highest rate this client drives with p99 <= the bound. Rates above it measure the
     client, not the server.
  2. the model server: an untrained MLP of the default training size (37 -> 256 -> 256 -> 8; latency does not
     depend on the weights) exported to ONNX: the ramp's highest rate with p99 <= 10 ms and 0 failed requests,
     and p99 at 1,000 requests/s.
  3. the swap: ``swap_s`` seconds at 1,000 requests/s; at a third of it, ``POST /admin/model`` switches to a
     second version (other weights). Reported: failed requests (must be 0), answers per version, and p99 of the
     requests due before the swap, during it (from the admin call until 1 s after it returned) and after.
Ratios: the server's best rate over the client ceiling; p99 during / before the swap.

The client pre-opens a connection pool (4 x rate x 5 ms, at least 2, at most 64) before the clock starts, sends
request bytes built once, runs on uvloop, sleeps in whole milliseconds (a shorter asyncio sleep spins the loop) and
freezes the objects alive at the start out of garbage collection (a full collection over torch's objects paused it
for 0.2-0.35 s); ``bcarena serve`` freezes its own likewise. A kept-alive connection the server closed while it was
idle (uvicorn's 5 s keep-alive) is reopened before a request is sent on it: sent on, the request was lost, and these
were every failed request of a 60 s run at 1,000 requests/s before the client checked. ``failed`` counts every
request not answered 200: ``dropped`` (no answer within the 10 s timeout), of which ``unsent`` (no connection came
free in time).
Timings on a machine shared with other work are noisy: the JSON records the load average before and after.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import platform
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import typer

from bcarena.eval.service.loadtest import ramp_open_loop, ramp_rates, run_open_loop
from bcarena.eval.service.server import free_port
from bcarena.experiments.benchmarks import emit
from bcarena.experiments.benchmarks.serving import start_server

P99_BOUND_MS = 10.0
NULL_META = {"layout": {"obs_type": "state", "shape": [37], "wire_dtype": "float32"}, "max_batch": 1}


def _null_server(port: int) -> None:
    """Answer every HTTP/1.1 request on ``port`` at once with a canned /act answer (a process of its own)."""
    body = b'{"actions": [0], "batch": 1, "model_version": "null"}'
    answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = [int(h[15:]) for h in head.lower().split(b"\r\n") if h.startswith(b"content-length:")]
                await reader.readexactly(length[0] if length else 0)
                writer.write(answer)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        await server.serve_forever()

    asyncio.run(main())


def _wait_listening(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on port {port} after {timeout:.0f} s") from None
            time.sleep(0.1)


def make_versions(folder: Path, backend: str, observations: int = 10_000) -> list[Path]:
    """Two model versions of the same layout (the default MLP with seeds 0 and 1), as ONNX exports or agent
    folders (``backend`` torch)."""
    import torch

    from bcarena.eval.service.export import export_agent, record_from_matches
    from bcarena.experiments.benchmarks.serving import default_agent

    out = []
    for seed in (0, 1):
        agent = default_agent()
        torch.manual_seed(seed)
        with torch.no_grad():  # two versions: the same network with other weights (the normalizer kept)
            for param in agent.model.parameters():
                param.add_(torch.randn_like(param) * 0.01)
        agent_dir = agent.save(folder / f"agent-v{seed}")
        if backend == "torch":
            out.append(agent_dir)
            continue
        recording = record_from_matches(agent, observations)
        out.append(export_agent(agent, backend, folder / f"v{seed}", recording, required=observations).path)
    return out


def swap_under_load(url: str, new_version: Path, rate: float, seconds: float) -> dict[str, Any]:
    """``seconds`` of open-loop load at ``rate`` on the server at ``url`` with one swap to ``new_version`` at a third
    of it: failures, versions answered, and p99 before / during / after the swap."""
    import httpx

    admin = httpx.Client(base_url=url, timeout=60)  # made before the load: its set-up is not the swap's time

    async def swap() -> dict[str, Any]:
        body = {"path": str(new_version), "version": "v1"}
        answer = await asyncio.to_thread(admin.post, "/admin/model", json=body)
        return {"status": answer.status_code, **answer.json()}

    with admin:
        result = run_open_loop(url, rate, seconds, actions=[(seconds / 3, swap)], progress=False)
    (action,) = result.actions
    trace = result.trace
    if trace is None:
        raise RuntimeError("run_open_loop returned no trace")
    end = action["end_s"] + 1.0
    windows = {
        "before": trace.window(0.0, action["start_s"]),
        "during": trace.window(action["start_s"], end),
        "after": trace.window(end, seconds + 1.0),
    }
    p99 = {name: w["latency_ms"]["p99"] for name, w in windows.items()}
    return {
        "rate": rate,
        "seconds": seconds,
        "requests": result.requests,
        "failed": result.failed,
        "server_errors": result.server_errors,
        "dropped": result.dropped,
        "unsent": result.unsent,
        "versions": result.versions,
        "swap": {k: action.get(k) for k in ("start_s", "end_s", "result", "error")},
        "windows": windows,
        "p99_ms": p99,
        "p99_during_over_before": p99["during"] / p99["before"] if p99["before"] else None,
        "latency_ms": result.latency_ms,
        "send_lag_ms": result.send_lag_ms,
        "per_second_p99_ms": result.per_second_p99_ms,
    }


def _ramp(url: str, rates: list[float], seconds: float, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    report = ramp_open_loop(url, rates, seconds, P99_BOUND_MS, pause_s=1.0, meta=meta)
    levels = [
        {
            k: lv.to_dict()[k]
            for k in ("rate", "failed", "unsent", "achieved_rate", "latency_ms", "send_lag_ms", "connections")
        }
        for lv in report.levels
    ]
    return {"p99_bound_ms": P99_BOUND_MS, "best_rate": report.best_rate, "levels": levels}


def run(
    backend: str = "onnx",
    rate: float = 1000.0,
    swap_s: float = 60.0,
    ramp_s: float = 5.0,
    ramp_top: float = 4000.0,
    ramp_steps: int = 8,
    steady_s: float = 10.0,
    ramp_from: float = 100.0,
) -> dict[str, Any]:
    load_before = os.getloadavg()
    rates = ramp_rates(min(ramp_from, ramp_top), ramp_top, ramp_steps)
    results: dict[str, Any] = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count()}}
    null_port = free_port()
    null = multiprocessing.get_context("spawn").Process(target=_null_server, args=(null_port,), daemon=True)
    null.start()
    try:
        _wait_listening(null_port)
        results["client_ceiling"] = _ramp(f"http://127.0.0.1:{null_port}", rates, ramp_s, NULL_META)
    finally:
        null.terminate()
        null.join(10)
    with tempfile.TemporaryDirectory() as tmp:
        v0, v1 = make_versions(Path(tmp), backend)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = start_server(v0, port, "--model-version", "v0")
        try:
            results["server_ramp"] = _ramp(url, rates, ramp_s)
            steady = run_open_loop(url, rate, steady_s)
            results["steady"] = {k: steady.to_dict()[k] for k in ("rate", "failed", "latency_ms", "send_lag_ms")}
            results["swap"] = swap_under_load(url, v1, rate, swap_s)
        finally:
            server.terminate()
            server.wait(60)
    ceiling, best = results["client_ceiling"]["best_rate"], results["server_ramp"]["best_rate"]
    results["summary"] = {
        "backend": backend,
        "client_ceiling_rate": ceiling,
        "server_best_rate_p99_10ms": best,
        "server_over_client_ceiling": best / ceiling if best and ceiling else None,
        "p99_ms_at_rate": steady.latency_ms["p99"],
        "rate": rate,
        "swap_failed_requests": results["swap"]["failed"],
        "swap_p99_ms": results["swap"]["p99_ms"],
        "swap_versions": results["swap"]["versions"],
    }
    results["machine"]["load_average_before"] = load_before
    results["machine"]["load_average_after"] = os.getloadavg()
    return results


def main(
    out: Path = typer.Option(None, help="also write the JSON here"),
    backend: str = typer.Option("onnx", help="onnx (exported, parity-checked) or torch (agent folders)"),
    rate: float = typer.Option(1000.0, help="requests/s of the steady run and of the swap run"),
    swap_s: float = typer.Option(60.0, help="seconds of load around the swap"),
    ramp_s: float = typer.Option(5.0, help="seconds per ramp rate"),
    ramp_top: float = typer.Option(4000.0, help="the ramp's highest rate"),
    ramp_from: float = typer.Option(100.0, help="the ramp's first rate"),
    ramp_steps: int = typer.Option(8, min=2, help="rates of the ramp, geometric from --ramp-from to --ramp-top"),
) -> None:
    """Measure and print JSON: client ceiling, the server's highest rate with p99 <= 10 ms, p99 at --rate, a swap."""
    emit(run(backend, rate, swap_s, ramp_s, ramp_top, ramp_steps, ramp_from=ramp_from), out)


if __name__ == "__main__":
    typer.run(main)
