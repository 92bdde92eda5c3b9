"""Benchmark: int8 vs fp32 ONNX for agent folders: size ratio, latency ratio (batch 1 and 256), action agreement,
paired win-rate difference with its interval.

Run: ``bcarena bench int8 AGENT [AGENT ...] --dataset DATASET [--opponent pro] [--matches 200] [--out FILE.json]``.
Each agent is exported to fp32 ONNX (exact parity) and int8 (``bcarena.eval.service.quantize.export_int8``: dynamic
for state agents, static QDQ calibrated on the dataset's frame stacks for pixel agents, weight-only int8 when the
first method misses 99.9% agreement) on the dataset's recorded model inputs; the fp32 export in the same run is the
baseline of every ratio. An agent whose int8 model is refused is reported with the reason and its agreement.
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
from bcarena.eval.service.export import export_agent, load_export, record_from_dataset
from bcarena.eval.service.quantize import QuantizeError, export_int8
from bcarena.eval.service.requirements import measure_latency
from bcarena.experiments.benchmarks import emit
from bcarena.recordings.dataset import ActionDataset

BATCHES = (1, 256)


def compare(agent_dir: Path, dataset: Path, opponent: str, matches: int, calls: int) -> dict[str, Any]:
    """One agent's fp32 and int8 exports measured side by side (ratios are int8 / fp32)."""
    agent = load_agent(agent_dir)
    recording = record_from_dataset(agent, ActionDataset.load(dataset, pixels=agent.obs_type == "pixels"))
    row: dict[str, Any] = {"agent": str(agent_dir), "obs_type": agent.obs_type, "observations": len(recording)}
    with tempfile.TemporaryDirectory() as work:
        fp32 = export_agent(agent, "onnx", Path(work) / "fp32", recording, required=len(recording))
        try:
            int8 = export_int8(agent, Path(work) / "int8", recording, opponent=opponent, matches=matches)
        except QuantizeError as exc:
            return {**row, "accepted": False, "refused": str(exc), "fp32_bytes": fp32.model_bytes}
        served = {"fp32": load_export(fp32.path), "int8": load_export(int8.path)}
        latency = {
            name: {b: measure_latency(model.runtime, recording.inputs, b, calls=calls) for b in BATCHES}
            for name, model in served.items()
        }
    wins = int8.win_rates
    return {
        **row,
        "accepted": True,
        "method": int8.method,
        "attempts": [{k: a[k] for k in ("method", "rate", "rate_by_batch")} for a in int8.attempts],
        "fp32_bytes": fp32.model_bytes,
        "int8_bytes": int8.model_bytes,
        "size_ratio": int8.model_bytes / fp32.model_bytes,
        "latency_ms": {name: {str(b): lat[b]["p50"] for b in BATCHES} for name, lat in latency.items()},
        "latency_p50_ratio": {str(b): latency["int8"][b]["p50"] / latency["fp32"][b]["p50"] for b in BATCHES},
        "agreement": int8.agreement.rate,
        "win_rates": wins,
    }


def main(
    agents: list[Path] = typer.Argument(..., help="agent folders (a state MLP and a pixel CNN, say)"),
    dataset: Path = typer.Option(..., exists=True, file_okay=False, help="action dataset: the recorded observations"),
    opponent: str = typer.Option("pro", help="bot of the paired win-rate check"),
    matches: int = typer.Option(200, min=1, help="seeds of that check (each on both sides)"),
    calls: int = typer.Option(2000, min=10, help="timed calls per latency measurement"),
    out: Path = typer.Option(None, help="also write the JSON here"),
) -> None:
    """Measure and print JSON: int8 vs fp32 size, latency, action agreement and paired win rates per agent."""
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    rows = [compare(a, dataset, opponent, matches, calls) for a in agents]
    emit({"benchmark": "int8", "agents": rows, "loadavg_before": load_before, "loadavg_after": os.getloadavg()}, out)


if __name__ == "__main__":
    typer.run(main)
