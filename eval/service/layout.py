"""What a served model receives and where an export folder keeps its files.

Shared by the exporter, the server, its client and the load test; it imports nothing else of the
service, so the client (a remote Agent used by matches) never pulls in the exporter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bcarena.envs.duel import STATE_FEATURES
from bcarena.eval.errors import EvalError

EXPORT_FILE = "export.json"
AGENT_FILE = "agent.json"
JSON_TYPE, NPY_TYPE = "application/json", "application/x-npy"
# Serving formats (their writers and runtimes are in export.py, which needs torch) and the least number of
# recorded observations an export's action-parity check needs.
FORMAT_NAMES: tuple[str, ...] = ("onnx", "torchscript")
# Numeric precisions of an export: int8 is ONNX only (eval/service/quantize.py), gated by action agreement.
PRECISION_NAMES: tuple[str, ...] = ("fp32", "int8")
MIN_PARITY_OBSERVATIONS = 10_000


class ExportError(EvalError):
    """An agent cannot be exported or an exported model failed its parity check."""


@dataclass(frozen=True)
class ObsLayout:
    """What one observation sent to a served model looks like.

    ``shape`` is one model input without the batch axis: (k * len(features),) for state agents (``features``:
    the game's state features), (k, 84, 84) for pixel agents. The server is stateless: the client sends
    the k most recent observations, oldest first (at a match start the first one repeated k times),
    exactly as ``TorchAgent.stacked`` builds them. ``wire_dtype`` is what clients send: float32 state
    features, uint8 pixels.
    """

    obs_type: str
    shape: tuple[int, ...]
    wire_dtype: str
    features: tuple[str, ...] | None = None
    frame_stack: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ObsLayout:
        features = data.get("features")
        return cls(
            obs_type=data["obs_type"],
            shape=tuple(data["shape"]),
            wire_dtype=data["wire_dtype"],
            features=tuple(features) if features is not None else None,
            frame_stack=data.get("frame_stack"),
        )

    @classmethod
    def from_input_shape(
        cls, obs_type: str, shape: tuple[int, ...], features: Sequence[str] = STATE_FEATURES
    ) -> ObsLayout:
        """The layout of model inputs ``shape``; ``features`` names one state observation (the game's, default
        Duel's), so a state input of k of them is a stack of k."""
        if obs_type == "state":
            if not features or len(shape) != 1 or shape[0] % len(features):
                raise ExportError(f"a state agent's model input must be (k * {len(features)},), got {shape}")
            return cls("state", shape, "float32", features=tuple(features), frame_stack=shape[0] // len(features))
        if obs_type == "pixels":
            if len(shape) != 3:
                raise ExportError(f"a pixel agent's model input must be (k, H, W) frames, got {shape}")
            return cls("pixels", shape, "uint8", frame_stack=shape[0])
        raise ExportError(f"unknown obs_type {obs_type!r}; expected 'state' or 'pixels'")
