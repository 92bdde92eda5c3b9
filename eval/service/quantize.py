"""int8 ONNX models (ONNX Runtime quantization), accepted only when they still play like the fp32 agent.

The methods tried are data (``TRIED``: per observation type, in order; the first that passes is kept):

* state agents (MLPs): dynamic quantization (``quantize_dynamic``: int8 weights, activations quantized per call),
  then weight-only int8;
* pixel agents (CNNs): static QDQ (``quantize_static``, per-channel int8 weights, int8 activations with MinMax
  ranges calibrated on recorded model inputs, the first and last layers fp32), then weight-only int8, then
  weight-only int8 with the last layer fp32.

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
CALIBRATION_ROWS = 1024  # recorded model inputs a static method calibrates on, unless it asks for all of them
WEIGHTED_OPS = ("Gemm", "Conv", "MatMul")
Z95 = 1.959963984540054


class QuantizeError(ExportError):
    """An int8 model was refused (agreement or win rate below the bar) or cannot be built for this agent."""


# ----------------------------------------------------------------------------------------- methods
@dataclass(frozen=True)
class Method:
    """One way to build an int8 model from an fp32 ONNX model.

    ``kind``: ``dynamic`` (int8 weights, activations quantized per call from the batch's range), ``static`` (QDQ:
    int8 weights and activations, activation ranges calibrated on recorded model inputs) or ``weights`` (weight-only
    QDQ: int8 weights, fp32 activations). ``fp32_layers``: layers left in fp32: ``first`` (the first Conv/Gemm/MatMul
    with a weight), ``last`` (the last one and the score head after it: log-softmax, decision offsets), or an int:
    that weighted layer (0 = first).
    ``reduce_range``: 7-bit weights; on x86 CPUs without VNNI (AVX2) ONNX Runtime's u8 x s8 kernels add pairs of
    products in int16 and saturate with 8-bit weights. ``calibration_rows``: inputs calibrated on (None: all given).
    """

    name: str
    kind: str
    fp32_layers: tuple[str | int, ...] = ()
    per_channel: bool = True
    reduce_range: bool = False
    calibration_rows: int | None = CALIBRATION_ROWS
    preprocess: bool = True  # ONNX Runtime's quant_pre_process (shape inference, graph optimization) first
    unsigned: bool = False  # static only: uint8 activations and weights (u8 x u8 kernels) instead of int8

    def describe(self, calibrated: int = 0) -> str:
        """One line: what this method does (``calibrated``: how many inputs a static method calibrated on)."""
        what = {
            "dynamic": "dynamic int8 (int8 weights; activations quantized per call from the batch's range)",
            "weights": "weight-only QDQ int8 (per-output-channel int8 weights, fp32 activations)",
            "static": f"static QDQ {'uint8' if self.unsigned else 'int8'} "
            f"({'per-channel' if self.per_channel else 'per-tensor'} weights, "
            f"MinMax activations calibrated on {calibrated} inputs)",
        }[self.kind]
        notes = [f"fp32 layers: {', '.join(map(str, self.fp32_layers))}"] if self.fp32_layers else []
        notes += ["7-bit weights (reduce_range)"] if self.reduce_range else []
        notes += [] if self.preprocess or self.kind == "weights" else ["no quant_pre_process"]
        return "; ".join([what, *notes])


DYNAMIC = Method("dynamic", "dynamic", per_channel=False)
WEIGHTS = Method("weights", "weights")
# What export_int8 tries, in order, for each observation type; the first method that passes both gates is kept.
# The pixel list is what ``bcarena bench int8 --sweep`` left on two Duel pixel CNNs: static QDQ with the first and last
# layers fp32 (99.39% / 99.64%; all-int8 static is 95.1-95.4%: the first conv saturates AVX2's u8 x s8 kernels), then
# weight-only int8 (99.46% / 99.83%), then weight-only with the last layer fp32 (99.68% / 99.90%: the one that passed).
TRIED: dict[str, tuple[Method, ...]] = {
    "state": (DYNAMIC, WEIGHTS),
    "pixels": (
        Method("static-first-last-fp32", "static", fp32_layers=("first", "last")),
        WEIGHTS,
        Method("weights-last-fp32", "weights", fp32_layers=("last",)),
    ),
}


# ----------------------------------------------------------------------------------------- quantizing
class _Rows:
    """ONNX Runtime's CalibrationDataReader protocol over model inputs (n, *shape), in batches of 64."""

    def __init__(self, rows: np.ndarray, name: str = "obs") -> None:
        self.batches = iter([{name: rows[i : i + 64].astype(np.float32)} for i in range(0, len(rows), 64)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)


def weighted_layers(model: Any) -> list[int]:
    """Graph positions of the Conv/Gemm/MatMul nodes of the ONNX ``model`` that have a weight (``fp32_layers``'s
    layers), in graph order."""
    initializers = {init.name for init in model.graph.initializer}
    return [
        i
        for i, n in enumerate(model.graph.node)
        if n.op_type in WEIGHTED_OPS and len(n.input) > 1 and n.input[1] in initializers
    ]


def fp32_nodes(model: Any, layers: tuple[str | int, ...]) -> list[str]:
    """Names of the nodes of the ONNX ``model`` that ``layers`` (see :class:`Method`) keep in fp32, in graph order."""
    nodes, weighted = list(model.graph.node), weighted_layers(model)
    if not weighted:
        return []
    keep = set(range(weighted[-1], len(nodes))) if "last" in layers else set()
    keep |= {weighted[0]} if "first" in layers else set()
    keep |= {weighted[i] for i in layers if isinstance(i, int) and i < len(weighted)}
    return [nodes[i].name for i in sorted(keep)]


def quantize_onnx(fp32: Path, out: Path, method: Method, calibration: np.ndarray | None = None) -> str:
    """Write the int8 version of the ONNX model ``fp32`` to ``out`` with ``method``.

    ``calibration``: recorded model inputs (n, *shape) a static method calibrates on (``method.calibration_rows``
    of them, picked at random). Returns a one-line description of what was done.
    """
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method.kind == "weights":
        return _quantize_weights(fp32, out, method)
    if method.kind == "static" and (calibration is None or len(calibration) == 0):
        raise QuantizeError("static int8 quantization needs recorded observations to calibrate on")
    logging.getLogger("root").setLevel(logging.ERROR)  # the quantizer logs hints about pre-processing at WARNING
    with tempfile.TemporaryDirectory() as work:
        prepared = Path(work) / "prepared.onnx"
        if method.preprocess:
            quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        else:
            prepared = fp32
        keep = fp32_nodes(onnx.load(str(prepared)), method.fp32_layers)
        common = {"per_channel": method.per_channel, "reduce_range": method.reduce_range, "nodes_to_exclude": keep}
        if method.kind == "dynamic":
            quantize_dynamic(prepared, out, weight_type=QuantType.QInt8, **common)
            return method.describe()
        rows = default_calibration(calibration, rows=method.calibration_rows)
        kind = QuantType.QUInt8 if method.unsigned else QuantType.QInt8
        quantize_static(
            prepared, out, _Rows(rows), quant_format=QuantFormat.QDQ, activation_type=kind, weight_type=kind, **common
        )
        return method.describe(len(rows))


def _quantize_weights(fp32: Path, out: Path, method: Method) -> str:
    """Weight-only QDQ: every Gemm/Conv/MatMul weight (but those of ``method.fp32_layers``) stored as symmetric
    per-output-channel int8 behind a ``DequantizeLinear`` node; activations stay fp32 (no batch-dependent ranges)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(fp32))
    keep = set(fp32_nodes(model, method.fp32_layers))
    weights = {init.name: init for init in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        name = node.input[1] if node.op_type in WEIGHTED_OPS and len(node.input) > 1 else None
        if name in weights and node.name not in keep and numpy_helper.to_array(weights[name]).ndim >= 2:
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
    return method.describe()


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
    fp32: Path, out: Path, method: Method, calibration: np.ndarray | None, reference: Runtime, inputs: np.ndarray
) -> tuple[OnnxRuntime, str, Agreement]:
    """Quantize ``fp32`` into ``out`` with ``method`` (calibrating on ``calibration``, n x input shape): (the int8
    runtime, what was done, its action agreement with ``reference`` on ``inputs`` (n, *shape))."""
    description = quantize_onnx(fp32, out, method, calibration)
    candidate = OnnxRuntime(out)
    return candidate, description, action_agreement(reference, candidate, inputs)


def default_calibration(inputs: np.ndarray, seed: int = 0, rows: int | None = CALIBRATION_ROWS) -> np.ndarray:
    """``rows`` rows of recorded model inputs (n, *shape), picked at random, kept in recorded order (None: all)."""
    if rows is None or rows >= len(inputs):
        return inputs
    pick = np.random.default_rng(seed).permutation(len(inputs))[:rows]
    return inputs[np.sort(pick)]


class RuntimeAgent(LayoutAgent):
    """A runtime (e.g. an int8 ONNX model) as a player of the game of ``like``, the agent it was exported from (its
    game and action names); it keeps the frame stack the way the client does."""

    def __init__(self, runtime: Runtime, layout: ObsLayout, name: str, like: Agent) -> None:
        self.runtime, self.name = runtime, name
        self.game, self.action_names = like.game, list(like.action_names)
        self._use_layout(layout)

    def _act(self, obs: np.ndarray) -> np.ndarray:
        return self.runtime.actions(self.stack.push(obs).astype(np.float32))


def paired_win_rates(
    reference: Agent,
    candidate: Agent,
    opponent: str = "pro",
    matches: int = 200,
    seed: int = 0,
    config: Any = None,
) -> dict[str, Any]:
    """Both players meet ``opponent`` on the same ``matches`` seeds: in Duel each seed on both sides (2 * matches
    games), in a game whose opponent plays inside the match (Boxing's ``cpu``) once per seed. ``config``: the game's.

    Returns each win rate with its Wilson 95% interval, the paired difference (candidate - reference) with a normal
    95% interval over per-game differences, and ``accepted``: the candidate's rate lies in the reference's interval.
    """
    from bcarena.eval.matches import evaluate_game_matches, evaluate_matches

    check_int8_opponent(reference, opponent)
    if reference.game == "duel":
        reports = [
            evaluate_matches(player, BotAgent(opponent, seed=seed + 1, config=config), matches, seed, True, config)
            for player in (reference, candidate)
        ]
    else:
        reports = [
            evaluate_game_matches(player, opponent, matches, reference.game, seed, config)
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


def check_int8_opponent(agent: Agent, opponent: str) -> None:
    """The paired win-rate check's ``opponent`` must be one of the agent's game's: a QuantizeError before any work."""
    from bcarena.envs.games import get_game

    game = get_game(agent.game)
    if opponent not in game.opponents:
        raise QuantizeError(
            f"int8 win-rate check: {opponent!r} is not an opponent of game {game.name!r} (agent {agent.name!r}); "
            f"its opponents are {sorted(game.opponents)}"
        )


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
    config: Any = None,
    methods: tuple[Method, ...] | None = None,
) -> Int8Report:
    """Export ``agent`` as an int8 ONNX model into the folder ``out`` if it passes the three checks (module doc).

    ``methods``: tried in order (default ``TRIED[agent.obs_type]``); the first to reach the agreement bar is the
    candidate of the win-rate check. ``calibration``: recorded model inputs (n, *shape) static methods calibrate on
    (default: ``recording``'s). Raises QuantizeError (leaving nothing behind) when a check fails.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise ExportError(f"{out} already exists (pass overwrite=True / --force to replace it)")
    check_int8_opponent(agent, opponent)
    calibration = recording.inputs if calibration is None else calibration
    with tempfile.TemporaryDirectory() as work:
        fp32 = export_agent(agent, "onnx", Path(work) / "fp32", recording, required=required, agent_source=agent_source)
        with atomic_folder(out, overwrite=overwrite) as tmp:
            model_file = tmp / "model.onnx"
            method, candidate, agreement, attempts = _first_agreeing(
                fp32.model_file, model_file, methods or TRIED[agent.obs_type], calibration, recording.inputs, required
            )
            int8_player = RuntimeAgent(candidate, fp32.layout, f"{agent.name}[int8]", agent)
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
                    "method": method.name,
                    "description": attempts[-1]["description"],
                    "calibration_rows": attempts[-1]["calibration_rows"],
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
        method.name,
        agreement,
        attempts,
        wins,
        metadata,
    )


def _first_agreeing(
    fp32: Path,
    model_file: Path,
    methods: tuple[Method, ...],
    calibration: np.ndarray,
    inputs: np.ndarray,
    required: int,
) -> tuple[Method, OnnxRuntime, Agreement, list[dict[str, Any]]]:
    """The first of ``methods`` whose int8 model (written to ``model_file``) agrees with ``fp32`` often enough:
    (it, its runtime, its agreement, every attempt so far as JSON rows). Raises QuantizeError when none does."""
    reference = OnnxRuntime(fp32)
    attempts = []
    for method in methods:
        candidate, description, agreement = quantize_and_compare(
            fp32, model_file, method, calibration, reference, inputs
        )
        rows = len(default_calibration(calibration, rows=method.calibration_rows)) if method.kind == "static" else 0
        attempts.append({"method": method.name, "description": description, "calibration_rows": rows})
        attempts[-1].update(agreement.to_dict())
        if agreement.passed(required):
            return method, candidate, agreement, attempts
    tried = "; ".join(f"{a['method']}: {a['agreed']} of {a['observations']} ({a['rate']:.3%})" for a in attempts)
    raise QuantizeError(
        f"int8 export refused: the int8 model picks the fp32 action on too few recorded observations "
        f"({tried}); needs >= {MIN_AGREEMENT:.1%} of >= {required}"
    )
