"""int8 ONNX models (ONNX Runtime quantization), accepted only when they still play like the fp32 agent.

* state agents (MLPs): dynamic quantization (``quantize_dynamic``: int8 weights, activations quantized per call);
* pixel agents (CNNs): static QDQ quantization (``quantize_static``, ``QuantFormat.QDQ``, per-channel int8 weights,
  int8 activations with MinMax ranges calibrated on recorded model inputs: a dataset's frame stacks).

An int8 export is written (atomically, like any export folder; ``export.json`` says ``precision: int8``) only if

1. the fp32 ONNX model passes the exact action-parity check of :func:`bcarena.eval.service.export.export_agent`;
2. the int8 model picks the fp32 model's action on >= ``MIN_AGREEMENT`` (99.9%) of >= 10,000 recorded inputs;
3. its win rate over paired matches (the fp32 agent and the int8 model meet the same opponent on the same seeds,
   both sides) lies inside the Wilson 95% interval of the fp32 agent's win rate.

The export folder is served like any ONNX export (``bcarena serve``); nothing else changes for the server.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bcarena.agents.base import Agent, BotAgent
from bcarena.envs.duel import ACTION_NAMES, DuelConfig
from bcarena.envs.files import atomic_folder, sha256_file, write_json
from bcarena.eval.service.client import LayoutAgent
from bcarena.eval.service.export import (
    EXPORT_FILE,
    ExportError,
    OnnxRuntime,
    ParityInputs,
    Runtime,
    export_agent,
)
from bcarena.eval.service.layout import MIN_PARITY_OBSERVATIONS, ObsLayout

MIN_AGREEMENT = 0.999
# The method each observation type tries first, and what is tried when that one misses the agreement bar.
METHODS = ("dynamic", "static", "weights")
FIRST_METHOD = {"state": "dynamic", "pixels": "static"}
FALLBACK_METHOD = "weights"
CALIBRATION_ROWS = 1024  # recorded model inputs the static ranges are calibrated on
Z95 = 1.959963984540054


class QuantizeError(ExportError):
    """An int8 model was refused (agreement or win rate below the bar) or cannot be built for this agent."""


# ----------------------------------------------------------------------------------------- quantizing
class _Rows:
    """ONNX Runtime's CalibrationDataReader protocol over model inputs (n, *shape), in batches of 64."""

    def __init__(self, rows: np.ndarray, name: str = "obs") -> None:
        self.batches = iter([{name: rows[i : i + 64].astype(np.float32)} for i in range(0, len(rows), 64)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)


def quantize_onnx(fp32: Path, out: Path, method: str, calibration: np.ndarray | None = None) -> str:
    """Write the int8 version of the ONNX model ``fp32`` to ``out`` with ``method`` (one of ``METHODS``).

    ``calibration``: model inputs (n, *shape) for ``static``. Returns a one-line description of what was done.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method == "weights":
        return _quantize_weights(fp32, out)
    logging.getLogger("root").setLevel(logging.ERROR)  # the quantizer logs hints about pre-processing at WARNING
    with tempfile.TemporaryDirectory() as work:
        prepared = Path(work) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        if method == "dynamic":
            quantize_dynamic(prepared, out, weight_type=QuantType.QInt8)
            return "dynamic int8 (int8 weights; activations quantized per call from the batch's range)"
        if calibration is None or len(calibration) == 0:
            raise QuantizeError("static int8 quantization needs recorded observations to calibrate on")
        quantize_static(
            prepared,
            out,
            _Rows(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
        )
        return f"static QDQ int8 (per-channel weights, MinMax activations calibrated on {len(calibration)} inputs)"


def _quantize_weights(fp32: Path, out: Path) -> str:
    """Weight-only QDQ: every Gemm/Conv/MatMul weight stored as symmetric per-output-channel int8 behind a
    ``DequantizeLinear`` node; activations stay fp32 (no batch-dependent ranges, scores within ~1e-2)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(fp32))
    weights = {init.name: init for init in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        name = node.input[1] if node.op_type in ("Gemm", "Conv", "MatMul") and len(node.input) > 1 else None
        if name in weights and numpy_helper.to_array(weights[name]).ndim >= 2:
            w = numpy_helper.to_array(weights[name]).astype(np.float32)
            trans_b = any(a.name == "transB" and a.i == 1 for a in node.attribute)
            axis = 0 if node.op_type == "Conv" or (node.op_type == "Gemm" and trans_b) else w.ndim - 1
            reduce = tuple(i for i in range(w.ndim) if i != axis)
            scale = np.maximum(np.abs(w).max(axis=reduce), 1e-12) / 127.0
            shape = [1] * w.ndim
            shape[axis] = -1
            q = np.clip(np.rint(w / scale.reshape(shape)), -127, 127).astype(np.int8)
            model.graph.initializer.remove(weights.pop(name))
            model.graph.initializer.extend(
                [
                    numpy_helper.from_array(q, f"{name}_int8"),
                    numpy_helper.from_array(scale.astype(np.float32), f"{name}_scale"),
                    numpy_helper.from_array(np.zeros(scale.shape, np.int8), f"{name}_zero"),
                ]
            )
            nodes.append(
                helper.make_node(
                    "DequantizeLinear", [f"{name}_int8", f"{name}_scale", f"{name}_zero"], [name], axis=axis
                )
            )
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.save(model, str(out))
    return "weight-only QDQ int8 (per-output-channel int8 weights, fp32 activations)"


# ----------------------------------------------------------------------------------------- judging
@dataclass
class Agreement:
    """How often the int8 model picks the fp32 model's action on recorded model inputs, at each batch size tried
    (dynamic quantization takes its activation ranges from the batch, so its actions depend on the batch)."""

    observations: int
    agreed_by_batch: dict[int, int]

    @property
    def agreed(self) -> int:
        return min(self.agreed_by_batch.values())

    @property
    def rate(self) -> float:
        return self.agreed / self.observations if self.observations else 0.0

    def passed(self, required: int = MIN_PARITY_OBSERVATIONS) -> bool:
        return self.observations >= required and self.rate >= MIN_AGREEMENT

    def to_dict(self) -> dict[str, Any]:
        return {
            "observations": self.observations,
            "agreed": self.agreed,
            "rate": self.rate,
            "rate_by_batch": {str(b): a / max(self.observations, 1) for b, a in self.agreed_by_batch.items()},
            "required_rate": MIN_AGREEMENT,
        }


def action_agreement(
    reference: Runtime, candidate: Runtime, inputs: np.ndarray, batches: tuple[int, ...] = (4096, 1)
) -> Agreement:
    """Rows of ``inputs`` (n, *shape) on which the candidate, called in batches of each size, picks the reference's
    argmax action (the reference is called in batches of 4096)."""

    def actions(runtime: Runtime, batch: int) -> np.ndarray:
        return np.concatenate(
            [runtime.actions(inputs[i : i + batch].astype(np.float32)) for i in range(0, len(inputs), batch)]
        )

    expected = actions(reference, 4096)
    return Agreement(len(inputs), {b: int(np.sum(actions(candidate, b) == expected)) for b in batches})


def quantize_and_compare(
    fp32: Path, out: Path, method: str, calibration: np.ndarray | None, reference: Runtime, inputs: np.ndarray
) -> tuple[OnnxRuntime, str, Agreement]:
    """Quantize ``fp32`` into ``out`` with ``method``: (the int8 runtime, what was done, its action agreement with
    ``reference`` on ``inputs`` (n, *shape))."""
    description = quantize_onnx(fp32, out, method, calibration)
    candidate = OnnxRuntime(out)
    return candidate, description, action_agreement(reference, candidate, inputs)


def default_calibration(inputs: np.ndarray, seed: int = 0) -> np.ndarray:
    """``CALIBRATION_ROWS`` rows of recorded model inputs (n, *shape), picked at random, kept in recorded order."""
    pick = np.random.default_rng(seed).permutation(len(inputs))[:CALIBRATION_ROWS]
    return inputs[np.sort(pick)]


class RuntimeAgent(LayoutAgent):
    """A runtime (e.g. an int8 ONNX model) as a player of Duel: it keeps the frame stack the way the client does."""

    def __init__(self, runtime: Runtime, layout: ObsLayout, name: str) -> None:
        self.runtime, self.name = runtime, name
        self.action_names = list(ACTION_NAMES)
        self._use_layout(layout)

    def _act(self, obs: np.ndarray) -> np.ndarray:
        return self.runtime.actions(self.stack.push(obs).astype(np.float32))


def paired_win_rates(
    reference: Agent,
    candidate: Agent,
    opponent: str = "pro",
    matches: int = 200,
    seed: int = 0,
    config: DuelConfig | None = None,
) -> dict[str, Any]:
    """Both players meet ``opponent`` on the same ``matches`` seeds, each seed on both sides (2 * matches games).

    Returns each win rate with its Wilson 95% interval, the paired difference (candidate - reference) with a normal
    95% interval over per-game differences, and ``accepted``: the candidate's rate lies in the reference's interval.
    """
    from bcarena.eval.matches import evaluate_matches

    reports = [
        evaluate_matches(player, BotAgent(opponent, seed=seed + 1, config=config), matches, seed, True, config)
        for player in (reference, candidate)
    ]
    wins = [r.results.winner == 0 for r in reports]
    diff = wins[1].astype(float) - wins[0].astype(float)
    half = Z95 * float(diff.std(ddof=1)) / float(np.sqrt(diff.size)) if diff.size > 1 else float("inf")
    lo, hi = reports[0].win_rate_ci95
    return {
        "opponent": opponent,
        "games": int(diff.size),
        "fp32": {"win_rate": reports[0].win_rate, "ci95": list(reports[0].win_rate_ci95)},
        "int8": {"win_rate": reports[1].win_rate, "ci95": list(reports[1].win_rate_ci95)},
        "difference": float(diff.mean()),
        "difference_ci95": [float(diff.mean()) - half, float(diff.mean()) + half],
        "games_decided_differently": int(np.sum(diff != 0)),
        "accepted": bool(lo <= reports[1].win_rate <= hi),
    }


# ----------------------------------------------------------------------------------------- exporting
@dataclass
class Int8Report:
    """What ``export_int8`` wrote and the evidence that allowed it."""

    path: Path
    model_file: Path
    model_bytes: int
    fp32_bytes: int
    sha256: str
    method: str
    agreement: Agreement
    attempts: list[dict[str, Any]]
    win_rates: dict[str, Any]
    metadata: dict[str, Any]


def export_int8(
    agent: Agent,
    out: Path,
    recording: ParityInputs,
    calibration: np.ndarray | None = None,
    opponent: str = "pro",
    matches: int = 200,
    seed: int = 0,
    overwrite: bool = False,
    required: int = MIN_PARITY_OBSERVATIONS,
    agent_source: str | None = None,
    config: DuelConfig | None = None,
) -> Int8Report:
    """Export ``agent`` as an int8 ONNX model into the folder ``out`` if it passes the three checks (module doc).

    ``calibration`` (pixel agents): recorded model inputs; default: ``CALIBRATION_ROWS`` rows of ``recording``.
    Raises QuantizeError (leaving nothing behind) when a check fails.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise ExportError(f"{out} already exists (pass overwrite=True / --force to replace it)")
    if calibration is None:
        calibration = default_calibration(recording.inputs, seed)
    with tempfile.TemporaryDirectory() as work:
        fp32 = export_agent(agent, "onnx", Path(work) / "fp32", recording, required=required, agent_source=agent_source)
        reference = OnnxRuntime(fp32.model_file)
        with atomic_folder(out, overwrite=overwrite) as tmp:
            model_file = tmp / "model.onnx"
            attempts = []
            for method in (FIRST_METHOD[agent.obs_type], FALLBACK_METHOD):
                candidate, description, agreement = quantize_and_compare(
                    fp32.model_file, model_file, method, calibration, reference, recording.inputs
                )
                attempts.append({"method": method, "description": description, **agreement.to_dict()})
                if agreement.passed(required):
                    break
            else:
                tried = "; ".join(
                    f"{a['method']}: {a['agreed']} of {a['observations']} ({a['rate']:.3%})" for a in attempts
                )
                raise QuantizeError(
                    f"int8 export refused: the int8 model picks the fp32 action on too few recorded observations "
                    f"({tried}); needs >= {MIN_AGREEMENT:.1%} of >= {required}"
                )
            int8_player = RuntimeAgent(candidate, fp32.layout, f"{agent.name}[int8]")
            wins = paired_win_rates(agent, int8_player, opponent, matches, seed, config)
            if not wins["accepted"]:
                raise QuantizeError(
                    f"int8 export refused: win rate vs {opponent} {wins['int8']['win_rate']:.1%} lies outside the "
                    f"fp32 agent's 95% interval [{wins['fp32']['ci95'][0]:.1%}, {wins['fp32']['ci95'][1]:.1%}]"
                )
            digest = sha256_file(model_file)
            metadata = {
                **fp32.metadata,
                "precision": "int8",
                "sha256": digest,
                "model_bytes": model_file.stat().st_size,
                "quantization": {
                    "method": method,
                    "description": description,
                    "calibration_rows": int(len(calibration)) if method == "static" else 0,
                    "agreement": agreement.to_dict(),
                    "attempts": attempts,
                    "win_rates": wins,
                    "fp32": {"sha256": fp32.sha256, "model_bytes": fp32.model_bytes},
                },
            }
            write_json(tmp / EXPORT_FILE, metadata)
    return Int8Report(
        out,
        out / "model.onnx",
        metadata["model_bytes"],
        fp32.model_bytes,
        digest,
        method,
        agreement,
        attempts,
        wins,
        metadata,
    )
