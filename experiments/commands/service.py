"""``bcarena check | export | serve | loadtest``: an agent as a service.

AGENT arguments are agent folders (agent.json + model.safetensors); ``serve`` also takes an
export folder written by ``bcarena export``. ``check`` and ``loadtest`` exit with code 1 when the
agent or the server misses a requirement: that is a result, not an error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from bcarena.envs.limits import MAX_OBSERVATIONS, MAX_SEED
from bcarena.eval.service.layout import FORMAT_NAMES, MIN_PARITY_OBSERVATIONS
from bcarena.eval.service.loadtest import ENCODINGS, MAX_CONCURRENCY, MAX_REQUESTS
from bcarena.experiments.commands import command_app, console
from bcarena.experiments.commands.options import choice, path_to

app = command_app()
# Request body encodings by short name: "application/json" -> json, "application/x-npy" -> npy.
ENCODING_NAMES = {content_type.split("/")[1].removeprefix("x-"): content_type for content_type in ENCODINGS}
if TYPE_CHECKING:  # the names are known at run time only: to a type checker each choice is a str
    FORMAT = str
    BACKEND = str
    ENCODING = str
else:
    FORMAT = choice(FORMAT_NAMES)
    BACKEND = choice(("torch", *FORMAT_NAMES))  # an agent folder runs eagerly in torch, or as any export format
    ENCODING = choice(ENCODING_NAMES)


def _write_json(path: Path, data: dict) -> None:
    from bcarena.envs.files import write_json

    console.print(f"wrote {write_json(path, data)}")


@app.command("check")
def check(
    agent: Path = typer.Argument(..., exists=True, file_okay=False, help="agent folder"),
    requirements: Path = typer.Option(
        ..., "--requirements", "-r", exists=True, dir_okay=False, help="requirements YAML file"
    ),
    dataset: Path | None = typer.Option(
        None,
        exists=True,
        file_okay=False,
        help="action dataset: offline metrics and the recorded observations "
        "for latency and parity (default: observations from matches)",
    ),
    out: Path = typer.Option(Path("runs/service/check.json"), parser=path_to("file"), help="JSON report"),
    parity_observations: int = typer.Option(
        10_000, min=1, max=MAX_OBSERVATIONS, help="recorded observations for the parity check"
    ),
) -> None:
    """Measure an agent against a requirements file and print pass/fail per requirement.

    Latency p50/p99 single and batched, throughput, model size, device, win rates, offline metrics,
    each with the measured value beside its bound. Exit code 1 when any requirement is not met.
    """
    from bcarena.agents import load_agent
    from bcarena.eval.service.requirements import check_requirements, load_requirements

    req = load_requirements(requirements)
    report = check_requirements(
        load_agent(agent), req, agent, dataset, progress=True, parity_observations=parity_observations
    )
    table = Table(
        "requirement",
        "bound",
        "measured",
        "result",
        title=f"{report.agent} vs {requirements} ({req.serving.format} on {req.serving.device})",
    )
    for row in report.rows:
        result = "PASS" if row.passed else ("FAIL: " + row.reason if row.reason else "FAIL")
        table.add_row(row.requirement, row.bound, row.measured, result, style=None if row.passed else "red")
    console.print(table)
    console.print(
        f"{'all requirements met' if report.passed else 'requirements NOT met'} "
        f"({sum(r.passed for r in report.rows)}/{len(report.rows)})"
    )
    _write_json(out, report.to_dict())
    if not report.passed:
        raise typer.Exit(1)


@app.command("export")
def export(
    agent: Path = typer.Argument(..., exists=True, file_okay=False, help="agent folder"),
    fmt: FORMAT = typer.Option("onnx", "--format", help="serving format"),
    out: Path = typer.Option(..., parser=path_to("folder"), help="export folder to create"),
    dataset: Path | None = typer.Option(
        None,
        exists=True,
        file_okay=False,
        help="action dataset whose frames feed the parity check "
        "(default: observations recorded in matches of the agent)",
    ),
    observations: int = typer.Option(
        MIN_PARITY_OBSERVATIONS,
        min=MIN_PARITY_OBSERVATIONS,
        max=MAX_OBSERVATIONS,
        help="recorded observations for the parity check",
    ),
    force: bool = typer.Option(False, help="replace an existing export folder"),
) -> None:
    """Export an agent to ONNX or TorchScript, checked for action parity.

    Refused unless the exported model picks the torch agent's argmax action on every one of the
    recorded observations (at least 10,000).
    """
    from bcarena.agents import load_agent
    from bcarena.eval.service.export import export_agent, record_observations
    from bcarena.recordings.dataset import ActionDataset

    loaded = load_agent(agent)
    data = ActionDataset.load(dataset) if dataset is not None else None
    recording = record_observations(loaded, observations, data)
    report = export_agent(loaded, fmt, out, recording, overwrite=force, required=observations, agent_source=str(agent))
    p = report.parity
    console.print(
        f"parity: {p.mismatches} mismatches on {p.observations} observations ({p.source}); "
        f"max score difference {p.max_abs_score_diff:.2e}"
    )
    console.print(f"wrote {report.model_file} ({report.model_bytes / 1e6:.3f} MB, sha256 {report.sha256[:16]}...)")


@app.command("serve")
def serve(
    agent: Path = typer.Argument(..., exists=True, file_okay=False, help="agent folder or export folder"),
    host: str = typer.Option("127.0.0.1", help="bind address (loopback by default)"),
    port: int = typer.Option(8000, min=1, max=65535),
    backend: BACKEND | None = typer.Option(
        None, help="default: torch for an agent folder, the export's own format for an export folder"
    ),
    device: str = typer.Option("cpu", help="cpu | cuda"),
    max_batch: int = typer.Option(
        1024, min=1, max=MAX_OBSERVATIONS, help="observations per request (larger batches get 413)"
    ),
    batch_window_ms: float = typer.Option(
        0.0, min=0.0, max=1000.0, help="micro-batching: merge requests arriving within this window"
    ),
) -> None:
    """Serve an agent over HTTP (FastAPI + uvicorn): POST /act, GET /health, GET /metadata.

    Pixel agents take the frame stack from the client (see GET /metadata layout).
    """
    from bcarena.eval.service.export import load_served
    from bcarena.eval.service.server import ServerSettings, require_serving_extra
    from bcarena.eval.service.server import serve as run_server

    require_serving_extra()
    served = load_served(agent, backend, device)
    console.print(
        f"serving {served.agent_name} ({served.format} via {served.runtime.name} on {served.runtime.device}, "
        f"sha256 {served.sha256[:16]}...) on http://{host}:{port}"
    )
    run_server(served, host, port, ServerSettings(max_batch, batch_window_ms))


@app.command("loadtest")
def loadtest(
    url: str = typer.Option("http://127.0.0.1:8000", help="agent server URL (loopback only)"),
    concurrency: list[int] = typer.Option(
        [1, 4, 16, 64], min=1, max=MAX_CONCURRENCY, help="concurrency levels, repeatable"
    ),
    requests: int = typer.Option(2_500, min=1, max=MAX_REQUESTS, help="valid requests per concurrency level"),
    batch: int = typer.Option(1, min=1, max=MAX_OBSERVATIONS, help="observations per request"),
    encoding: ENCODING = typer.Option("json", help="request body encoding"),
    fuzz: int = typer.Option(1_000, min=0, max=MAX_REQUESTS, help="malformed requests (each must get a 4xx)"),
    seed: int = typer.Option(0, min=0, max=MAX_SEED),
    out: Path = typer.Option(
        Path("runs/service/loadtest"), parser=path_to("folder"), help="folder for loadtest.json and loadtest.png"
    ),
) -> None:
    """Load-test an agent server on loopback: latency percentiles and throughput.

    Latency p50/p95/p99 and throughput per concurrency level, 5xx and dropped requests, then fuzzed
    malformed requests. Exit code 1 unless all clean.
    """
    from bcarena.eval.service.loadtest import plot_loadtest, run_loadtest

    report = run_loadtest(url, tuple(concurrency), requests, batch, ENCODING_NAMES[encoding], fuzz, seed, progress=True)
    table = Table(
        "concurrency",
        "requests",
        "2xx",
        "4xx",
        "5xx",
        "dropped",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "decisions/s",
        title=f"{report.server.get('agent')} at {report.url} (batch {batch}, {encoding})",
    )
    for lv in report.levels:
        table.add_row(
            str(lv.concurrency),
            str(lv.requests),
            str(lv.ok),
            str(lv.client_errors),
            str(lv.server_errors),
            str(lv.dropped),
            f"{lv.latency_ms['p50']:.2f}",
            f"{lv.latency_ms['p95']:.2f}",
            f"{lv.latency_ms['p99']:.2f}",
            f"{lv.decisions_per_s:,.0f}",
        )
    console.print(table)
    if report.fuzz is not None:
        f = report.fuzz
        console.print(
            f"fuzz: {f.requests} malformed requests -> {dict(sorted(f.status_counts.items()))}; "
            f"{'all 4xx' if f.all_4xx else 'NOT all 4xx: ' + json.dumps(f.failures[:5])}"
        )
    _write_json(out / "loadtest.json", report.to_dict())
    console.print(f"wrote {plot_loadtest(report, out / 'loadtest.png')}")
    console.print("PASS" if report.passed else "FAIL")
    if not report.passed:
        raise typer.Exit(1)
