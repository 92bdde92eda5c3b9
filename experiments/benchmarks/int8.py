"""Benchmark: int8 vs fp32 ONNX for agent folders (an MLP and a CNN, say): for every quantization method tried, the
size ratio, latency ratio (batch 1 and 256), action agreement and paired win-rate difference with its interval,
whether or not the gate accepts that int8 model.

Run: ``bcarena bench int8 AGENT [AGENT ...] --dataset DATASET [--opponent pro] [--matches 200] [--out FILE.json]``.
Each agent is exported to fp32 ONNX (exact parity) on the dataset's recorded model inputs; the fp32 export in the
same run is the baseline of every ratio. The methods are those ``bcarena.eval.service.quantize.export_int8`` tries
(dynamic for state agents or static QDQ calibrated on the dataset's frame stacks for pixel agents, then weight-only
int8), each measured in full; ``accepted`` names the method ``export_int8`` would accept (the first to reach 99.9%
agreement, if its paired win rate lies in the fp32 agent's 95% interval), or None with the reason. The summary
holds the four numbers of the accepted method, or of the best-agreeing one when every method is refused.
Timings on a machine shared with other work are noisy: the JSON records the load average before and after.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import typer

from bcarena.agents import load_agent
from bcarena.eval.service.export import OnnxRuntime, export_agent, record_from_dataset
from bcarena.eval.service.layout import MIN_PARITY_OBSERVATIONS
from bcarena.eval.service.quantize import (
    FALLBACK_METHOD,
    FIRST_METHOD,
    MIN_AGREEMENT,
    RuntimeAgent,
    default_calibration,
    paired_win_rates,
    quantize_and_compare,
)
from bcarena.eval.service.requirements import measure_latency
from bcarena.experiments.benchmarks import emit
from bcarena.recordings.dataset import ActionDataset

BATCHES = (1, 256)


def _p50(runtime: Any, inputs: Any, calls: int) -> dict[int, float]:
    return {b: measure_latency(runtime, inputs, b, calls=calls)["p50"] for b in BATCHES}


def _measure_method(agent: Any, fp32: Any, method: str, work: Path, inputs: Any, settings: dict) -> dict[str, Any]:
    """One int8 method against the fp32 export: the four must-show numbers and both gates."""
    model_file = work / f"{method}.onnx"
    reference = OnnxRuntime(fp32.model_file)
    candidate, description, agreement = quantize_and_compare(
        fp32.model_file, model_file, method, default_calibration(inputs), reference, inputs
    )
    latency = {"fp32": settings["fp32_latency"], "int8": _p50(candidate, inputs, settings["calls"])}
    wins = paired_win_rates(
        agent, RuntimeAgent(candidate, fp32.layout, f"{agent.name}[int8]"), settings["opponent"], settings["matches"]
    )
    return {
        "method": method,
        "description": description,
        "int8_bytes": model_file.stat().st_size,
        "size_ratio": model_file.stat().st_size / fp32.model_bytes,
        "latency_p50_ms": {name: {str(b): v for b, v in lat.items()} for name, lat in latency.items()},
        "latency_p50_ratio": {str(b): latency["int8"][b] / latency["fp32"][b] for b in BATCHES},
        "agreement": agreement.rate,
        "agreement_by_batch": agreement.to_dict()["rate_by_batch"],
        "agreement_passed": agreement.passed(MIN_PARITY_OBSERVATIONS),
        "win_rate_difference": wins["difference"],
        "win_rate_difference_ci95": wins["difference_ci95"],
        "win_rates": wins,
    }


def _verdict(methods: list[dict[str, Any]]) -> tuple[str | None, str | None]:
    """(the method export_int8 accepts, or None; why not) for methods measured in export_int8's order."""
    for m in methods:
        if m["agreement_passed"]:
            if m["win_rates"]["accepted"]:
                return m["method"], None
            return None, f"{m['method']}: win rate outside the fp32 agent's 95% interval"
    tried = "; ".join(f"{m['method']} {m['agreement']:.3%}" for m in methods)
    return None, f"action agreement below {MIN_AGREEMENT:.1%} ({tried})"


def compare(agent_dir: Path, dataset: Path, opponent: str, matches: int, calls: int) -> dict[str, Any]:
    """One agent's fp32 export and every int8 method measured side by side (ratios are int8 / fp32)."""
    agent = load_agent(agent_dir)
    recording = record_from_dataset(agent, ActionDataset.load(dataset, pixels=agent.obs_type == "pixels"))
    with tempfile.TemporaryDirectory() as work:
        fp32 = export_agent(agent, "onnx", Path(work) / "fp32", recording, required=len(recording))
        settings = {
            "opponent": opponent,
            "matches": matches,
            "calls": calls,
            "fp32_latency": _p50(OnnxRuntime(fp32.model_file), recording.inputs, calls),
        }
        methods = [
            _measure_method(agent, fp32, method, Path(work), recording.inputs, settings)
            for method in (FIRST_METHOD[agent.obs_type], FALLBACK_METHOD)
        ]
    accepted, refused = _verdict(methods)
    shown = next((m for m in methods if m["method"] == accepted), None) or max(methods, key=lambda m: m["agreement"])
    return {
        "agent": str(agent_dir),
        "obs_type": agent.obs_type,
        "observations": len(recording),
        "fp32_bytes": fp32.model_bytes,
        "accepted": accepted,
        "refused": refused,
        "summary": {
            "method": shown["method"],
            **{k: shown[k] for k in ("size_ratio", "latency_p50_ratio", "agreement")},
            **{k: shown[k] for k in ("win_rate_difference", "win_rate_difference_ci95")},
        },
        "methods": methods,
    }


def main(
    agents: list[Path] = typer.Argument(..., help="agent folders (a state MLP and a pixel CNN, say)"),
    dataset: Path = typer.Option(..., exists=True, file_okay=False, help="action dataset: the recorded observations"),
    opponent: str = typer.Option("pro", help="bot of the paired win-rate check"),
    matches: int = typer.Option(200, min=1, help="seeds of that check (each on both sides)"),
    calls: int = typer.Option(2000, min=10, help="timed calls per latency measurement"),
    out: Path = typer.Option(None, help="also write the JSON here"),
) -> None:
    """Measure and print JSON: per agent and int8 method, size and latency ratios, agreement, paired win rates."""
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    rows = [compare(a, dataset, opponent, matches, calls) for a in agents]
    emit({"benchmark": "int8", "agents": rows, "loadavg_before": load_before, "loadavg_after": os.getloadavg()}, out)


if __name__ == "__main__":
    typer.run(main)
