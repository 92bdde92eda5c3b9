"""Service requirements: a validated YAML file, and ``check_requirements`` measuring an agent against it.

Example (every section optional; unknown keys and wrong types are errors naming the key)::

    name: duel-release
    game: duel              # optional: the game these bounds are for (default: the checked agent's)
    serving:
      format: onnx          # torch | onnx | torchscript: what will be served (and measured)
      precision: fp32       # fp32 | int8 (onnx only: >= 99.9% fp32 actions, win rate in fp32's 95% interval)
      device: cpu           # cpu | cuda
      max_model_mb: 5       # size of the served model file, MB = 10^6 bytes
    latency:                # one model call in the serving format on the device, in-process
      - {batch: 1, p50_ms: 1.0, p99_ms: 1.0}     # batch 1: the latency of one decision
      - {batch: 64, p99_ms: 5.0}                 # batched: every decision of the call waits this long
    throughput:
      min_decisions_per_s: 5000
      batch: 256
    qps:                    # open-loop HTTP traffic against a running server (check --url, loadtest --requirements)
      rate: 1000            # requests/s of one observation, sent on schedule whatever the answers
      p99_ms: 10            # latency from each request's intended send time; every request must get a 200
      duration_s: 10
    win_rate:               # in simulated matches of the game (Wilson 95% interval reported beside the rate)
      - {opponent: brawler, min: 0.6, matches: 200}   # one of the game's opponents (Boxing: cpu) or an agent folder
    offline:                # on --dataset (or offline.dataset, relative to this file), one split
      split: test
      tolerance: 2
      min: {balanced_accuracy: 0.4, recall_light: 0.2, event_recall_any_skill: 0.5}
      max: {js_divergence: 0.2}

Names are the game's own: win-rate opponents are its opponents, ``recall_<action>`` its action
names, ``event_*_<skill>`` its skill actions (or ``any_skill``). A file is validated against the
game it names, else the game it is loaded for (``load_requirements(path, game)``; Duel by default),
and again against the checked agent's game, so Duel bounds given to a Boxing agent are a one-line
RequirementsError naming the game and what it has.

A requirement that cannot be measured here (CUDA on a CPU machine, offline bounds without a
dataset) is reported as not met with the reason; nothing passes by default.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from bcarena.agents.base import Agent
from bcarena.envs.games import Game, GameError, get_game
from bcarena.envs.yaml_files import YamlError, load_yaml
from bcarena.eval.errors import EvalError
from bcarena.eval.service.export import (
    MIN_PARITY_OBSERVATIONS,
    ExportError,
    ParityInputs,
    Runtime,
    ServedModel,
    agent_weights,
    check_served_game,
    export_agent,
    load_export,
    record_observations,
    served_from_agent,
)
from bcarena.eval.stats import wilson_interval

ANY_SKILL = "any_skill"
_OFFLINE_METRIC = re.compile(
    r"^(accuracy|balanced_accuracy|macro_f1|js_divergence"
    r"|recall_(?P<cls>\w+)|event_(precision|recall|f1)_(?P<evt>\w+))$"
)


class RequirementsError(EvalError):
    """A requirements file is missing, not YAML, or does not match the schema (the message names the key)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _context_game(info: ValidationInfo) -> Game | None:
    """The game names are checked against (validation context ``{"game": Game}``); None: checked later."""
    return info.context.get("game") if isinstance(info.context, dict) else None


class ServingSpec(_Section):
    format: Literal["torch", "onnx", "torchscript"] = "torch"
    precision: Literal["fp32", "int8"] = "fp32"  # int8: ONNX only, accepted by eval/service/quantize.py's checks
    device: Literal["cpu", "cuda"] = "cpu"
    max_model_mb: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _int8_is_onnx(self) -> ServingSpec:
        if self.precision == "int8" and self.format != "onnx":
            raise ValueError(f"precision int8 needs format onnx, got format {self.format}")
        return self


class LatencyBound(_Section):
    batch: int = Field(default=1, ge=1, le=65536)
    p50_ms: float | None = Field(default=None, gt=0)
    p99_ms: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _some_bound(self) -> LatencyBound:
        if self.p50_ms is None and self.p99_ms is None:
            raise ValueError("give p50_ms and/or p99_ms")
        return self


class ThroughputBound(_Section):
    min_decisions_per_s: float = Field(gt=0)
    batch: int = Field(default=256, ge=1, le=65536)


class QpsBound(_Section):
    rate: float = Field(gt=0, le=20_000)
    p99_ms: float = Field(default=10.0, gt=0, le=60_000)
    duration_s: float = Field(default=10.0, gt=0, le=600)


class WinRateBound(_Section):
    opponent: str
    min: float = Field(ge=0, le=1)
    matches: int = Field(default=200, ge=1, le=100_000)
    seed: int = Field(default=0, ge=0)

    @field_validator("opponent")
    @classmethod
    def _known(cls, value: str, info: ValidationInfo) -> str:
        game = _context_game(info)
        if game is not None and value not in game.opponents and not Path(value).is_dir():
            raise ValueError(
                f"{value!r} is neither a bot of game {game.name!r} (its opponents are {sorted(game.opponents)}) "
                "nor an agent folder"
            )
        return value


class OfflineBounds(_Section):
    dataset: str | None = None
    split: Literal["train", "val", "test"] = "test"
    tolerance: int = Field(default=2, ge=0, le=100)
    min: dict[str, float] = Field(default_factory=dict)
    max: dict[str, float] = Field(default_factory=dict)

    @field_validator("min", "max")
    @classmethod
    def _metric_names(cls, bounds: dict[str, float], info: ValidationInfo) -> dict[str, float]:
        game = _context_game(info)
        if game is None:
            return bounds
        actions = game.action_names
        known = {actions[a] for a in game.skill_actions} | {ANY_SKILL}  # event metrics exist for skills only
        for name in bounds:
            match = _OFFLINE_METRIC.match(name)
            if (
                match is None
                or (match["cls"] and match["cls"] not in actions)
                or (match["evt"] and match["evt"] not in known)
            ):
                raise ValueError(
                    f"unknown offline metric {name!r} for game {game.name!r}; metrics: accuracy, balanced_accuracy, "
                    "macro_f1, js_divergence, recall_<action>, "
                    f"event_<precision|recall|f1>_<{'|'.join(sorted(known))}> "
                    f"with actions {list(actions)}"
                )
        return bounds


class Requirements(_Section):
    name: str = "requirements"
    game: str | None = None  # the game the bounds are for; None: the checked agent's
    serving: ServingSpec = Field(default_factory=ServingSpec)
    latency: list[LatencyBound] = Field(default_factory=list)
    throughput: ThroughputBound | None = None
    qps: QpsBound | None = None
    win_rate: list[WinRateBound] = Field(default_factory=list)
    offline: OfflineBounds | None = None


def load_requirements(path: str | Path, game: str | None = None) -> Requirements:
    """Read and validate a requirements YAML file; errors name the file and the offending key.

    Opponents and metric names are checked against the game the file names, else ``game``, else Duel.
    """
    path = Path(path)
    try:
        data = load_yaml(path, "requirements")
    except YamlError as exc:
        raise RequirementsError(str(exc)) from None
    if not isinstance(data, dict):
        raise RequirementsError(
            f"{path}: must hold a mapping of sections (game, serving, latency, throughput, "
            f"win_rate, offline), got {type(data).__name__}"
        )
    named = data.get("game")
    try:
        played = get_game(named if isinstance(named, str) else game or "duel", f"{path}: game")
    except GameError as exc:  # an unknown game, or a plugin that fails to load
        raise RequirementsError(str(exc)) from None
    req = _validated(data, played, str(path))
    if req.offline is not None and req.offline.dataset is not None:
        dataset = Path(req.offline.dataset)
        req.offline.dataset = str(dataset if dataset.is_absolute() else path.parent / dataset)
    return req


def _validated(data: dict[str, Any], game: Game, where: str) -> Requirements:
    """``data`` as Requirements naming ``game``'s players and actions; else a RequirementsError: ``where``, then
    every problem."""
    try:
        return Requirements.model_validate(data, context={"game": game})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise RequirementsError(f"{where}: {problems}") from None


def requirements_for_game(req: Requirements, game: Game, agent: str) -> Requirements:
    """``req`` checked against ``game``, the game of ``agent``: requirements for another game, or naming opponents
    or metrics ``game`` lacks, are a RequirementsError naming the game and what it has."""
    if req.game is not None and req.game != game.name:
        raise RequirementsError(
            f"requirements {req.name!r} are for game {req.game!r}; agent {agent!r} plays {game.name!r}"
        )
    return _validated(req.model_dump(), game, f"requirements {req.name!r} for {game.name} agent {agent!r}")


# ----------------------------------------------------------------------------- measuring
def measure_latency(
    runtime: Runtime, inputs: np.ndarray, batch: int, calls: int = 1000, warmup: int = 50
) -> dict[str, float]:
    """Latency (ms) of ``calls`` model calls of ``batch`` rows cycled from ``inputs``: p50/p95/p99/mean/max."""
    rng = np.random.default_rng(0)
    batches = [inputs[rng.integers(0, len(inputs), size=batch)].astype(np.float32) for _ in range(min(calls, 64))]
    for i in range(warmup):
        runtime.actions(batches[i % len(batches)])
    times = np.empty(calls)
    for i in range(calls):
        x = batches[i % len(batches)]
        start = time.perf_counter_ns()
        runtime.actions(x)
        times[i] = time.perf_counter_ns() - start
    ms = times / 1e6
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "mean": float(ms.mean()),
        "max": float(ms.max()),
        "calls": calls,
        "batch": batch,
    }


def measure_throughput(runtime: Runtime, inputs: np.ndarray, batch: int, min_seconds: float = 1.0) -> float:
    """Decisions per second of back-to-back calls of ``batch`` rows for at least ``min_seconds``."""
    x = inputs[np.arange(batch) % len(inputs)].astype(np.float32)
    runtime.actions(x)
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < min_seconds:
        runtime.actions(x)
        calls += 1
    return calls * batch / elapsed


@dataclass
class CheckRow:
    """One requirement: its bound, what was measured, and whether it is met (``reason`` when not measured)."""

    requirement: str
    bound: str
    measured: str
    passed: bool
    value: float | str | None = None
    reason: str = ""


@dataclass
class CheckReport:
    agent: str
    requirements: str
    serving: dict[str, Any]
    rows: list[CheckRow]
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(row.passed for row in self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "requirements": self.requirements,
            "serving": self.serving,
            "passed": self.passed,
            "rows": [asdict(r) for r in self.rows],
            "details": self.details,
        }


def _not_measured(requirement: str, bound: str, reason: str) -> CheckRow:
    return CheckRow(requirement, bound, "not measured", False, None, reason)


def _served(
    agent: Agent, agent_path: Path | None, spec: ServingSpec, recording: ParityInputs, tmp: Path
) -> tuple[ServedModel | None, dict[str, Any]]:
    """The model in the serving format on the serving device (None + the reason when impossible here)."""
    info: dict[str, Any] = {}
    if spec.precision == "int8":
        return _served_int8(agent, agent_path, spec, recording, tmp)
    if spec.format == "torch":
        try:
            return served_from_agent(agent, agent_path, "torch", spec.device), info
        except ExportError as exc:
            return None, {"error": str(exc)}
    try:
        report = export_agent(
            agent,
            spec.format,
            tmp / "export",
            recording,
            required=len(recording),
            agent_source=str(agent_path) if agent_path else None,
        )
    except ExportError as exc:  # e.g. parity failed: reported as not met, the other rows still measured
        return None, {"error": str(exc), "parity_error": str(exc)}
    info["parity"] = asdict(report.parity)
    info["parity_passed"] = report.parity.passed
    info["model_bytes"] = report.model_bytes
    try:
        return load_export(report.path, spec.device), info
    except ExportError as exc:
        info["error"] = str(exc)
        return None, info


def _served_int8(
    agent: Agent, agent_path: Path | None, spec: ServingSpec, recording: ParityInputs, tmp: Path
) -> tuple[ServedModel | None, dict[str, Any]]:
    """The int8 ONNX model, if it passes its agreement and paired win-rate checks (else None + the reason)."""
    from bcarena.eval.service.quantize import export_int8

    try:
        report = export_int8(
            agent,
            tmp / "int8",
            recording,
            required=len(recording),
            agent_source=str(agent_path) if agent_path else None,
        )
    except ExportError as exc:
        return None, {"error": str(exc), "int8_error": str(exc)}
    info = {
        "model_bytes": report.model_bytes,
        "int8": {"method": report.method, "agreement": report.agreement.to_dict(), "win_rates": report.win_rates},
    }
    return load_export(report.path, spec.device), info


def _precision_rows(spec: ServingSpec, info: dict[str, Any]) -> list[CheckRow]:
    """The int8 row: action agreement with fp32 (>= 99.9%) and the paired win rate inside fp32's interval."""
    if spec.precision != "int8":
        return []
    bound = ">= 99.9% fp32 actions, win rate in fp32's 95% CI"
    if "int8" not in info:
        return [_not_measured("precision int8", bound, info.get("int8_error", "no int8 model"))]
    agreement, wins = info["int8"]["agreement"], info["int8"]["win_rates"]
    measured = (
        f"{agreement['rate']:.3%} agreement, win rate {wins['int8']['win_rate']:.1%} vs {wins['fp32']['win_rate']:.1%}"
    )
    return [CheckRow("precision int8", bound, measured, True, agreement["rate"])]


def _model_bytes(agent_path: Path | None, spec: ServingSpec, served: ServedModel | None, info: dict) -> int | None:
    if "model_bytes" in info:
        return int(info["model_bytes"])
    if spec.format == "torch" and agent_path is not None:
        return agent_weights(agent_path)[1]
    return served.model_bytes if served is not None else None


def check_requirements(
    agent: Agent,
    req: Requirements,
    agent_path: Path | None = None,
    dataset_path: Path | None = None,
    work_dir: Path | None = None,
    progress: bool = False,
    parity_observations: int = MIN_PARITY_OBSERVATIONS,
    service_url: str | None = None,
) -> CheckReport:
    """Measure ``agent`` against every requirement in ``req``; the ``qps`` bound against the server at
    ``service_url`` (open loop, see ``qps_row``), not measured without one.

    Latency and throughput are measured in-process on the serving format and device with recorded
    observations (the dataset's when given, else from matches of the agent's game); a non-torch format
    is exported first, with its action-parity check. Win rates come from the matches of the agent's
    game (``play_matches_of_game``) with the agent in-process (the served model takes the same
    actions: that is what the parity check proves). ``req`` is checked against the agent's game
    (:func:`requirements_for_game`) and its opponents loaded before anything is measured.
    """
    import tempfile

    from bcarena.eval.matches import player_for_game
    from bcarena.recordings.dataset import ActionDataset

    game = check_served_game(agent)
    req = requirements_for_game(req, game, agent.name)
    opponents = [player_for_game(bound.opponent, game) for bound in req.win_rate]
    spec = req.serving
    rows: list[CheckRow] = []
    details: dict[str, Any] = {}
    offline_dataset = dataset_path or (Path(req.offline.dataset) if req.offline and req.offline.dataset else None)
    dataset = ActionDataset.load(offline_dataset) if offline_dataset is not None else None
    recording = record_observations(agent, parity_observations, dataset)
    details["observations"] = {"count": len(recording), "source": recording.source}

    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        served, info = _served(agent, agent_path, spec, recording, Path(tmp))
        details["export"] = info
        unavailable = "the serving model/device is unavailable here (see the device row)"
        rows.append(
            CheckRow(
                "device",
                spec.device,
                served.runtime.device if served else "unavailable",
                served is not None,
                spec.device if served else None,
                info.get("error", ""),
            )
        )
        parity_label = f"action parity ({spec.format} vs torch)"
        if "parity" in info:
            parity = info["parity"]
            rows.append(
                CheckRow(
                    parity_label,
                    "0 mismatches",
                    f"{parity['mismatches']} / {parity['observations']}",
                    info["parity_passed"],
                    parity["mismatches"],
                )
            )
        elif "parity_error" in info:
            rows.append(_not_measured(parity_label, "0 mismatches", info["parity_error"]))
        rows += _precision_rows(spec, info)
        size = _model_bytes(agent_path, spec, served, info)
        if spec.max_model_mb is not None:
            rows.append(
                CheckRow(
                    f"model size ({spec.format})",
                    f"<= {spec.max_model_mb:g} MB",
                    f"{size / 1e6:.3f} MB",
                    size / 1e6 <= spec.max_model_mb,
                    size / 1e6,
                )
                if size is not None
                else _not_measured("model size", f"<= {spec.max_model_mb:g} MB", "no model file to measure")
            )
        details["model_bytes"] = size

        for bound in req.latency:
            label = f"latency batch {bound.batch}"
            if served is None:
                for key in ("p50", "p99"):
                    if getattr(bound, f"{key}_ms") is not None:
                        limit = getattr(bound, f"{key}_ms")
                        rows.append(_not_measured(f"{label} {key}", f"<= {limit:g} ms", unavailable))
                continue
            lat = measure_latency(served.runtime, recording.inputs, bound.batch)
            details[label] = lat
            for key in ("p50", "p99"):
                limit = getattr(bound, f"{key}_ms")
                if limit is not None:
                    rows.append(
                        CheckRow(
                            f"{label} {key}", f"<= {limit:g} ms", f"{lat[key]:.3f} ms", lat[key] <= limit, lat[key]
                        )
                    )
        if req.throughput is not None:
            bound_text = f">= {req.throughput.min_decisions_per_s:g} decisions/s"
            label = f"throughput batch {req.throughput.batch}"
            if served is None:
                rows.append(_not_measured(label, bound_text, unavailable))
            else:
                rate = measure_throughput(served.runtime, recording.inputs, req.throughput.batch)
                rows.append(
                    CheckRow(
                        label, bound_text, f"{rate:,.0f} decisions/s", rate >= req.throughput.min_decisions_per_s, rate
                    )
                )

    for bound, opponent in zip(req.win_rate, opponents):
        rows.append(_win_rate_row(game, agent, opponent, bound, details, progress))

    if req.qps is not None:
        row, details["qps"] = qps_row(req.qps, service_url, progress)
        rows.append(row)
    if req.offline is not None:
        rows += _offline_rows(agent, req.offline, dataset, details, progress)
    return CheckReport(agent.name, req.name, spec.model_dump(), rows, details)


def _win_rate_row(
    game: Game, agent: Agent, opponent: Any, bound: WinRateBound, details: dict[str, Any], progress: bool
) -> CheckRow:
    """The win rate of ``agent`` against ``opponent`` in ``bound.matches`` matches of ``game`` (seeds from
    ``bound.seed``), with its Wilson 95% interval; the counts go to ``details``."""
    from bcarena.eval.matches import match_seeds, play_matches_of_game

    results = play_matches_of_game(game, agent, opponent, match_seeds(bound.seed, bound.matches), progress=progress)
    wins = int(np.sum(results.winner == 0))
    rate = wins / bound.matches
    lo, hi = wilson_interval(wins, bound.matches)
    details[f"win_rate vs {bound.opponent}"] = {"wins": wins, "matches": bound.matches, "ci95": [lo, hi]}
    return CheckRow(
        f"win rate vs {bound.opponent}",
        f">= {bound.min:.0%} ({bound.matches} matches)",
        f"{rate:.1%} [{lo:.1%}, {hi:.1%}]",
        rate >= bound.min,
        rate,
    )


def qps_row(bound: QpsBound, url: str | None, progress: bool = False) -> tuple[CheckRow, dict[str, Any]]:
    """The ``qps`` requirement measured open-loop against the server at ``url`` (loopback): ``bound.rate``
    requests/s for ``bound.duration_s``, every one answered 200, p99 from the intended send time within the bound.
    (row, the run as a dict with the served model's version and hash); not measured when ``url`` is None."""
    label, text = f"open loop {bound.rate:g} req/s p99", f"<= {bound.p99_ms:g} ms, 0 failed"
    if url is None:
        return _not_measured(label, text, "needs a running server: give its --url (bcarena serve)"), {}
    from bcarena.eval.service.loadtest import run_open_loop, server_metadata

    meta = server_metadata(url)
    result = run_open_loop(url, bound.rate, bound.duration_s, progress=progress, meta=meta)
    p99 = result.latency_ms["p99"]
    measured = f"{p99:.2f} ms, {result.failed} of {result.requests} failed"
    served = {k: meta.get(k) for k in ("agent", "model_version", "model_hash")}
    return CheckRow(label, text, measured, result.meets(bound.p99_ms), p99), {**result.to_dict(), "server": served}


def _offline_rows(
    agent: Agent, bounds: OfflineBounds, dataset, details: dict[str, Any], progress: bool
) -> list[CheckRow]:
    checks = [(name, ">=", limit) for name, limit in bounds.min.items()]
    checks += [(name, "<=", limit) for name, limit in bounds.max.items()]
    if dataset is None:
        return [
            _not_measured(f"offline {name}", f"{op} {limit:g}", "no dataset given (--dataset or offline.dataset)")
            for name, op, limit in checks
        ]
    from bcarena.eval.offline import evaluate_offline

    report = evaluate_offline(agent, dataset, bounds.split, bounds.tolerance, progress=progress)
    scalars = report.scalars()
    details["offline"] = {"split": bounds.split, "frames": report.frames, "metrics": scalars}
    rows = []
    for name, op, limit in checks:
        value = scalars.get(name)
        label = f"offline {name} ({bounds.split})"
        if value is None:
            why = (
                "metric undefined on this split (e.g. the class never occurs)"
                if name in scalars
                else f"metric not reported for this dataset; available: {sorted(scalars)}"
            )
            rows.append(_not_measured(label, f"{op} {limit:g}", why))
            continue
        ok = value >= limit if op == ">=" else value <= limit
        rows.append(CheckRow(label, f"{op} {limit:g}", f"{value:.3f}", ok, value))
    return rows
