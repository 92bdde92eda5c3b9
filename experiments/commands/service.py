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

from bcarena.envs.limits import MAX_MATCHES, MAX_OBSERVATIONS, MAX_SEED
from bcarena.eval.service.layout import FORMAT_NAMES, MIN_PARITY_OBSERVATIONS, PRECISION_NAMES
from bcarena.eval.service.loadtest import ENCODINGS, MAX_CONCURRENCY, MAX_REQUESTS
from bcarena.experiments.commands import command_app, console
from bcarena.experiments.commands.options import choice, path_to

app = command_app()
# Request body encodings by short name: "application/json" -> json, "application/x-npy" -> npy.
ENCODING_NAMES = {content_type.split("/")[1].removeprefix("x-"): content_type for content_type in ENCODINGS}
if TYPE_CHECKING:  # the names are known at run time only: to a type checker each choice is a str
    FORMAT = str
    PRECISION = str
    BACKEND = str
    ENCODING = str
else:
    FORMAT = choice(FORMAT_NAMES)
    PRECISION = choice(PRECISION_NAMES)
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
    url: str | None = typer.Option(
        None, help="a running server of this agent (loopback): the qps bound is measured open-loop against it"
    ),
) -> None:
    """Measure an agent against a requirements file and print pass/fail per requirement.

    Latency p50/p99 single and batched, throughput, model size, device, win rates (matches of the agent's
    game against its opponents), offline metrics (named by its actions), the open-loop qps bound (with
    --url), each with the measured value beside its bound. Exit code 1 when any requirement is not met.
    """
    from bcarena.agents import load_agent
    from bcarena.eval.matches import declared_game
    from bcarena.eval.service.requirements import check_requirements, load_requirements

    req = load_requirements(requirements, declared_game(agent))  # opponents and metrics: the agent's game's
    report = check_requirements(
        load_agent(agent), req, agent, dataset, progress=True, parity_observations=parity_observations, service_url=url
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
        "(default: observations recorded in matches of the agent's game against its default opponent)",
    ),
    observations: int = typer.Option(
        MIN_PARITY_OBSERVATIONS,
        min=MIN_PARITY_OBSERVATIONS,
        max=MAX_OBSERVATIONS,
        help="recorded observations for the parity check",
    ),
    force: bool = typer.Option(False, help="replace an existing export folder"),
    precision: PRECISION = typer.Option("fp32", help="int8: ONNX Runtime quantization (ONNX only), gated below"),
    calibration: Path | None = typer.Option(
        None, exists=True, file_okay=False, help="int8: action dataset whose frames calibrate static quantization"
    ),
    opponent: str = typer.Option("pro", help="int8: the bot both models meet in the paired win-rate check"),
    matches: int = typer.Option(200, min=1, max=MAX_MATCHES, help="int8: seeds of that check (each on both sides)"),
) -> None:
    """Export an agent to ONNX or TorchScript, checked for action parity.

    Refused unless the exported model picks the torch agent's argmax action on every one of the
    recorded observations (at least 10,000). int8 is refused unless it picks the fp32 action on
    >= 99.9% of them and its paired win rate lies in the fp32 agent's 95% interval.
    """
    from bcarena.agents import load_agent
    from bcarena.eval.service.export import ExportError, export_agent, record_observations
    from bcarena.recordings.dataset import ActionDataset

    if precision == "int8" and fmt != "onnx":
        raise ExportError(f"--precision int8 needs --format onnx, got --format {fmt}")
    loaded = load_agent(agent)
    if precision == "int8":
        from bcarena.eval.service.quantize import check_int8_opponent

        check_int8_opponent(loaded, opponent)  # before the recording, which takes minutes
    data = ActionDataset.load(dataset) if dataset is not None else None
    recording = record_observations(loaded, observations, data)
    if precision == "int8":
        _export_int8(loaded, out, recording, calibration, opponent, matches, force, agent)
        return
    report = export_agent(loaded, fmt, out, recording, overwrite=force, required=observations, agent_source=str(agent))
    p = report.parity
    console.print(
        f"parity: {p.mismatches} mismatches on {p.observations} observations ({p.source}); "
        f"max score difference {p.max_abs_score_diff:.2e}"
    )
    console.print(f"wrote {report.model_file} ({report.model_bytes / 1e6:.3f} MB, sha256 {report.sha256[:16]}...)")


def _export_int8(agent, out, recording, calibration, opponent, matches, force, source) -> None:
    from bcarena.eval.service.export import record_from_dataset
    from bcarena.eval.service.quantize import export_int8
    from bcarena.recordings.dataset import ActionDataset

    rows = None
    if calibration is not None:
        rows = record_from_dataset(agent, ActionDataset.load(calibration, pixels=agent.obs_type == "pixels")).inputs
    report = export_int8(
        agent,
        out,
        recording,
        rows,
        opponent,
        matches,
        overwrite=force,
        required=len(recording),
        agent_source=str(source),
    )
    a, w = report.agreement, report.win_rates
    console.print(f"int8 ({report.method}): agrees with fp32 on {a.agreed} of {a.observations} ({a.rate:.3%})")
    console.print(
        f"win rate vs {opponent}: fp32 {w['fp32']['win_rate']:.1%} [{w['fp32']['ci95'][0]:.1%}, "
        f"{w['fp32']['ci95'][1]:.1%}], int8 {w['int8']['win_rate']:.1%} over {w['games']} games each"
    )
    console.print(
        f"wrote {report.model_file} ({report.model_bytes / 1e6:.3f} MB = {report.model_bytes / report.fp32_bytes:.2f}x "
        f"fp32, sha256 {report.sha256[:16]}...)"
    )


@app.command("serve")
def serve(
    agent: str = typer.Argument(..., help="agent folder, export folder or models:/NAME@ALIAS|/VERSION"),
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
    tracking_uri: str | None = typer.Option(None, help="MLflow registry for models:/ URIs (default: local SQLite)"),
    model_version: str | None = typer.Option(
        None, help="version label in every answer and in /metrics (default: the folder's name, NAME/N for models:/)"
    ),
    drain_s: float = typer.Option(
        0.0, min=0.0, max=3600.0, help="on SIGTERM: report not ready but keep serving this long, then stop"
    ),
    shutdown_timeout_s: float = typer.Option(
        30.0, min=0.001, max=3600.0, help="on shutdown: requests in flight get at most this long to finish"
    ),
    follow_alias: bool = typer.Option(
        False, "--follow-alias", help="AGENT models:/NAME@ALIAS: poll the registry and hot-swap when the alias moves"
    ),
    poll_s: float = typer.Option(5.0, help="--follow-alias: seconds between registry polls"),
) -> None:
    """Serve an agent over HTTP (FastAPI + uvicorn): POST /act, GET /health[/live|/ready], /metadata, /metrics.

    Pixel agents take the frame stack from the client (see GET /metadata layout). POST /admin/model
    {"path": FOLDER or models:/...} from loopback swaps the model with no failed request, as --follow-alias does
    when the registry alias moves (another game or layout is refused, the old model kept); SIGTERM drains.
    """
    from bcarena.eval.service.follow import check_follow
    from bcarena.eval.service.models import load_slot
    from bcarena.eval.service.registry import model_folder
    from bcarena.eval.service.server import ServerSettings, require_serving_extra
    from bcarena.eval.service.server import serve as run_server

    check_follow(agent if follow_alias else None, poll_s)
    require_serving_extra()
    settings = ServerSettings(
        max_batch,
        batch_window_ms,
        drain_s=drain_s,
        shutdown_timeout_s=shutdown_timeout_s,
        follow_poll_s=poll_s if follow_alias else None,
    )
    model_folder(agent, tracking_uri)  # the registry's checks and messages, before anything loads
    slot = load_slot(agent, model_version, backend, device, tracking_uri)
    served = slot.served
    console.print(
        f"serving {served.agent_name} version {slot.version!r} ({served.format} via {served.runtime.name} on "
        f"{served.runtime.device}, sha256 {slot.model_hash[:16]}...) on http://{host}:{port}"
        + (f", following {agent} every {poll_s:g} s" if follow_alias else "")
    )
    run_server(slot, host, port, settings, backend=backend, tracking_uri=tracking_uri)


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
    open_loop: bool = typer.Option(
        False, "--open-loop", help="send at a fixed --rate whatever the answers; latency from each intended send time"
    ),
    rate: float = typer.Option(1000.0, help="open loop: requests/s (the top rate of a --ramp)"),
    duration: float = typer.Option(10.0, help="open loop: seconds at each rate"),
    ramp: bool = typer.Option(False, help="open loop: raise the rate from --ramp-from to --rate while p99 <= --p99-ms"),
    ramp_from: float = typer.Option(100.0, help="open loop: the first rate of a --ramp"),
    ramp_steps: int = typer.Option(8, min=1, max=50, help="open loop: rates in a --ramp, log-spaced"),
    p99_ms: float = typer.Option(10.0, help="open loop: the p99 bound in ms"),
    connections: int = typer.Option(64, min=1, max=MAX_CONCURRENCY, help="open loop: keep-alive connections at most"),
    requirements: Path | None = typer.Option(
        None, "--requirements", "-r", exists=True, dir_okay=False, help="open loop: rate, duration, p99 from its qps"
    ),
) -> None:
    """Load-test an agent server on loopback: latency percentiles and throughput.

    Closed loop (default): latency p50/p95/p99 and throughput per concurrency level, 5xx and dropped
    requests, then fuzzed malformed requests. --open-loop: requests on a fixed schedule (--rate,
    --duration, or a --ramp finding the highest rate with p99 <= --p99-ms, or a requirements file's
    qps bound), HdrHistogram percentiles from the intended send times. Exit code 1 unless all clean.
    """
    from bcarena.eval.service.loadtest import plot_loadtest, run_loadtest

    if open_loop or ramp or requirements is not None:
        ramp_rates = (ramp_from, rate, ramp_steps) if ramp else None
        _open_loop(url, rate, duration, ramp_rates, p99_ms, connections, ENCODING_NAMES[encoding], requirements, out)
        return

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


def _open_loop(
    url: str,
    rate: float,
    duration: float,
    ramp: tuple[float, float, int] | None,
    p99_ms: float,
    connections: int,
    content_type: str,
    requirements: Path | None,
    out: Path,
) -> None:
    """``loadtest --open-loop``: one rate, a ramp, or a requirements file's qps bound; exit 1 when not met."""
    from bcarena.eval.service.loadtest import ramp_open_loop, ramp_rates, run_open_loop
    from bcarena.eval.service.requirements import RequirementsError, load_requirements, qps_row

    if requirements is not None:
        bound = load_requirements(requirements).qps
        if bound is None:
            raise RequirementsError(f"{requirements}: has no qps section (rate, p99_ms, duration_s) to check")
        row, data = qps_row(bound, url, progress=True)
        result = "PASS" if row.passed else "FAIL"
        console.print(f"{row.requirement}: bound {row.bound}, measured {row.measured}: {result}")
        _write_json(out / "openloop.json", {"requirement": row.requirement, "passed": row.passed, **data})
        if not row.passed:
            raise typer.Exit(1)
        return
    if ramp is not None:
        report = ramp_open_loop(url, ramp_rates(*ramp), duration, p99_ms, content_type, connections, progress=True)
        levels, passed = report.levels, report.best_rate is not None
        data = report.to_dict()
    else:
        levels = [run_open_loop(url, rate, duration, content_type, connections, progress=True)]
        passed, data = levels[0].meets(p99_ms), levels[0].to_dict()
    table = Table(
        "rate/s", "requests", "2xx", "4xx", "5xx", "dropped", "p50 ms", "p99 ms", "p99.9 ms", "max ms",
        "send lag p99 ms", "achieved/s", title=f"open loop at {url} (p99 bound {p99_ms:g} ms)",
    )  # fmt: skip
    for lv in levels:
        lat = lv.latency_ms
        table.add_row(
            f"{lv.rate:g}", str(lv.requests), str(lv.ok), str(lv.client_errors), str(lv.server_errors),
            str(lv.dropped), f"{lat['p50']:.2f}", f"{lat['p99']:.2f}", f"{lat['p99_9']:.2f}", f"{lat['max']:.2f}",
            f"{lv.send_lag_ms['p99']:.2f}", f"{lv.achieved_rate:,.0f}",
            style=None if lv.meets(p99_ms) else "red",
        )  # fmt: skip
    console.print(table)
    if ramp is not None:
        best = data["best_rate"]
        console.print(f"highest rate with p99 <= {p99_ms:g} ms and 0 failed: {best if best is None else f'{best:g}/s'}")
    _write_json(out / "openloop.json", data)
    console.print("PASS" if passed else "FAIL")
    if not passed:
        raise typer.Exit(1)
