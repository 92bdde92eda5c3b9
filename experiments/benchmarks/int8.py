"""Benchmark: int8 vs fp32 ONNX for agent folders (an MLP and a CNN, say): for every quantization method that
``bcarena.eval.service.quantize.export_int8`` tries, the size ratio, latency ratio (batch 1 and 256, ONNX Runtime on
one thread) and action agreement; the paired win-rate difference with its interval for the method the agreement gate
lets through (or for the best-agreeing one when none does); with ``--sweep`` (pixel agents), the agreement of every
static and weight-only variant of ``SWEEP`` and of weight-only int8 for one layer at a time.

Run: ``bcarena bench int8 AGENT [AGENT ...] --dataset DATASET [--opponent brawler] [--matches 200] [--sweep]
[--out FILE.json]``. Each agent is exported to fp32 ONNX (exact parity) on the dataset's recorded model inputs (every
split); the fp32 export in the same run is the baseline of every ratio. Static methods calibrate on the train split's
inputs. ``accepted`` names the method ``export_int8`` would keep (the first of ``TRIED`` to reach 99.9% agreement at
batch 1 and 4096, if its paired win rate lies in the fp32 agent's 95% interval), or None with the reason; the summary
holds the numbers of the accepted method, or of the best-agreeing one when every method is refused. Sweep variants
are judged at batch 4096 only (their activation ranges are fixed, so the batch does not change their actions), on
size and agreement only. Timings on a machine shared with other work are noisy: the JSON records the load average
before and after.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import typer

from bcarena.agents import load_agent
from bcarena.eval.service.export import OnnxRuntime, export_agent, record_from_dataset
from bcarena.eval.service.layout import MIN_PARITY_OBSERVATIONS
from bcarena.eval.service.quantize import (
    MIN_AGREEMENT,
    TRIED,
    Method,
    RuntimeAgent,
    action_agreement,
    paired_win_rates,
    quantize_and_compare,
    quantize_onnx,
    weighted_layers,
)
from bcarena.eval.service.requirements import measure_latency
from bcarena.experiments.benchmarks import emit
from bcarena.recordings.dataset import ActionDataset

BATCHES = (1, 256)
_STATIC, _WEIGHTS = Method("static", "static"), Method("weights", "weights")
# Variants of the two CNN methods, one change at a time from per-channel int8 with 1,024 calibration inputs.
SWEEP: tuple[Method, ...] = (
    _STATIC,
    Method("static-all-train", "static", calibration_rows=None),
    Method("static-per-tensor", "static", per_channel=False),
    Method("static-no-preprocess", "static", preprocess=False),
    Method("static-reduce-range", "static", reduce_range=True),
    Method("static-uint8", "static", unsigned=True),
    Method("static-first-fp32", "static", fp32_layers=("first",)),
    Method("static-last-fp32", "static", fp32_layers=("last",)),
    Method("static-first-last-fp32", "static", fp32_layers=("first", "last")),
    Method("static-first-last-fp32-all-train", "static", fp32_layers=("first", "last"), calibration_rows=None),
    Method("static-reduce-range-last-fp32", "static", fp32_layers=("last",), reduce_range=True),
    Method("static-reduce-range-first-last-fp32", "static", fp32_layers=("first", "last"), reduce_range=True),
    _WEIGHTS,
    Method("weights-first-fp32", "weights", fp32_layers=("first",)),
    Method("weights-last-fp32", "weights", fp32_layers=("last",)),
    Method("weights-first-last-fp32", "weights", fp32_layers=("first", "last")),
)


def _p50(runtime: Any, inputs: Any, calls: int) -> dict[int, float]:
    """p50 latency (ms) at each batch size; batch 256 makes ``calls // 8`` calls (a CNN call there takes ~0.1 s)."""
    return {
        b: measure_latency(runtime, inputs, b, calls=calls if b == 1 else max(10, calls // 8))["p50"] for b in BATCHES
    }


def _measure_method(method: Method, fp32: Any, work: Path, data: dict[str, Any], settings: dict) -> dict[str, Any]:
    """One method of ``TRIED`` against the fp32 export: size, latency and agreement ratios (games come later)."""
    model_file = work / f"{method.name}.onnx"
    candidate, description, agreement = quantize_and_compare(
        fp32.model_file, model_file, method, data["calibration"], data["reference"], data["inputs"]
    )
    latency = {"fp32": settings["fp32_latency"], "int8": _p50(candidate, data["inputs"], settings["calls"])}
    return {
        "method": method.name,
        "description": description,
        "int8_bytes": model_file.stat().st_size,
        "size_ratio": model_file.stat().st_size / fp32.model_bytes,
        "latency_p50_ms": {name: {str(b): v for b, v in lat.items()} for name, lat in latency.items()},
        "latency_p50_ratio": {str(b): latency["int8"][b] / latency["fp32"][b] for b in BATCHES},
        "agreement": agreement.rate,
        "mismatches": agreement.observations - agreement.agreed,
        "agreement_by_batch": agreement.to_dict()["rate_by_batch"],
        "agreement_passed": agreement.passed(MIN_PARITY_OBSERVATIONS),
        "runtime": candidate,
    }


def _sweep_row(method: Method, fp32: Any, work: Path, data: dict[str, Any]) -> dict[str, Any]:
    """One sweep variant: its size and its agreement with fp32 at batch 4096."""
    model_file = work / f"sweep-{method.name}.onnx"
    description = quantize_onnx(fp32.model_file, model_file, method, data["calibration"])
    agreement = action_agreement(data["reference"], OnnxRuntime(model_file), data["inputs"], batches=(4096,))
    return {
        "method": method.name,
        "description": description,
        "size_ratio": model_file.stat().st_size / fp32.model_bytes,
        "agreement": agreement.rate,
        "mismatches": agreement.observations - agreement.agreed,
        "passes_agreement": agreement.passed(MIN_PARITY_OBSERVATIONS),
    }


def _play(agent: Any, fp32: Any, methods: list[dict[str, Any]], settings: dict) -> tuple[str | None, str | None]:
    """export_int8's decision over the measured methods (in ``TRIED`` order): paired games for the first that agrees
    often enough (or, when none does, for the best-agreeing one, to show what the refused model would cost);
    (the accepted method or None, why not)."""
    passed = [m for m in methods if m["agreement_passed"]]
    m = passed[0] if passed else max(methods, key=lambda m: m["agreement"])
    player = RuntimeAgent(m["runtime"], fp32.layout, f"{agent.name}[int8]", agent)
    wins = paired_win_rates(agent, player, settings["opponent"], settings["matches"])
    m.update(win_rate_difference=wins["difference"], win_rate_difference_ci95=wins["difference_ci95"], win_rates=wins)
    if not passed:
        tried = "; ".join(f"{m['method']} {m['agreement']:.3%}" for m in methods)
        return None, f"action agreement below {MIN_AGREEMENT:.1%} ({tried})"
    if not wins["accepted"]:
        return None, f"{m['method']}: win rate outside the fp32 agent's 95% interval"
    return m["method"], None


def _one_layer_methods(fp32_file: Path) -> tuple[Method, ...]:
    """Weight-only int8 of one weighted layer at a time (all others fp32): which layer's rounding flips actions."""
    import onnx

    count = len(weighted_layers(onnx.load(str(fp32_file))))
    return tuple(
        Method(f"weights-only-layer-{i}", "weights", fp32_layers=tuple(j for j in range(count) if j != i))
        for i in range(count)
    )


def compare(
    agent_dir: Path, dataset: Path, opponent: str, matches: int, calls: int, sweep: bool = False
) -> dict[str, Any]:
    """One agent's fp32 export and every int8 method measured side by side (ratios are int8 / fp32)."""
    agent = load_agent(agent_dir)
    data_set = ActionDataset.load(dataset, pixels=agent.obs_type == "pixels")
    recording = record_from_dataset(agent, data_set)
    with tempfile.TemporaryDirectory() as work:
        fp32 = export_agent(agent, "onnx", Path(work) / "fp32", recording, required=len(recording))
        reference = OnnxRuntime(fp32.model_file)
        data = {
            "inputs": recording.inputs,
            "calibration": record_from_dataset(agent, data_set.split("train")).inputs,
            "reference": reference,
        }
        settings = {
            "opponent": opponent,
            "matches": matches,
            "calls": calls,
            "fp32_latency": _p50(reference, recording.inputs, calls),
        }
        methods = [_measure_method(m, fp32, Path(work), data, settings) for m in TRIED[agent.obs_type]]
        accepted, refused = _play(agent, fp32, methods, settings)
        variants = SWEEP + _one_layer_methods(fp32.model_file) if sweep else ()
        swept = [_sweep_row(m, fp32, Path(work), data) for m in variants]
    for m in methods:
        del m["runtime"]
    shown = next(m for m in methods if "win_rates" in m)
    return {
        "agent": str(agent_dir),
        "obs_type": agent.obs_type,
        "observations": len(recording),
        "calibration_inputs": len(data["calibration"]),
        "fp32_bytes": fp32.model_bytes,
        "accepted": accepted,
        "refused": refused,
        "summary": {
            "method": shown["method"],
            **{k: shown[k] for k in ("size_ratio", "latency_p50_ratio", "agreement", "mismatches")},
            **{k: shown[k] for k in ("win_rate_difference", "win_rate_difference_ci95")},
        },
        "methods": methods,
        "sweep": swept,
        "fp32_score_margins": _margins(reference, recording.inputs),
    }


def _margins(reference: Any, inputs: np.ndarray) -> dict[str, int]:
    """How many inputs have the fp32 model's top two scores closer than each bound: the frames any rounding flips."""
    scores = np.concatenate([reference.scores(inputs[i : i + 4096]) for i in range(0, len(inputs), 4096)])
    top = np.sort(scores, axis=1)
    margin = top[:, -1] - top[:, -2]
    return {f"below_{bound}": int(np.sum(margin < bound)) for bound in (0.001, 0.002, 0.005, 0.01, 0.02, 0.05)}


def main(
    agents: list[Path] = typer.Argument(..., help="agent folders (a state MLP and a pixel CNN, say)"),
    dataset: Path = typer.Option(..., exists=True, file_okay=False, help="action dataset: the recorded observations"),
    opponent: str = typer.Option("brawler", help="bot of the paired win-rate check"),
    matches: int = typer.Option(200, min=1, help="seeds of that check (each on both sides)"),
    calls: int = typer.Option(2000, min=10, help="timed calls per latency measurement at batch 1 (1/8 at 256)"),
    sweep: bool = typer.Option(False, help="also measure every variant of SWEEP (agreement and size)"),
    out: Path = typer.Option(None, help="also write the JSON here"),
) -> None:
    """Measure and print JSON: per agent and int8 method, size and latency ratios, agreement, paired win rates."""
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    rows = [compare(a, dataset, opponent, matches, calls, sweep) for a in agents]
    emit({"benchmark": "int8", "agents": rows, "loadavg_before": load_before, "loadavg_after": os.getloadavg()}, out)


if __name__ == "__main__":
    typer.run(main)
