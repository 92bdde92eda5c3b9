"""``TrainConfig``: every BC training option, validated on load (unknown keys are errors).

Load from JSON/YAML with ``load_train_config(path, overrides)``; the ``bcarena train`` flags and
``--set key=value`` overrides land in the same model, so a run is fully described by the
``config.json`` written next to it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bcarena.envs.errors import BcarenaError
from bcarena.envs.limits import MAX_EPOCHS, MAX_PARALLEL, MAX_SEED
from bcarena.envs.yaml_files import YamlError, parse_yaml
from bcarena.recordings.dataset import EVENT_TYPES

# Which class weights a loss uses when the config leaves ``class_weights`` unset.
DEFAULT_CLASS_WEIGHTS = {"ce": "none", "weighted_ce": "inverse", "focal": "none", "logit_adjusted": "none"}
# Validation metrics early stopping can monitor (``ClassificationMetrics`` fields, or the val NLL).
EARLY_STOP_METRICS = ("val_loss", "accuracy", "balanced_accuracy", "macro_f1", "skill_frame_recall")


class TrainConfigError(BcarenaError, ValueError):
    """A training config is invalid; the message names the file and field."""


class _Strict(BaseModel):
    # inf/NaN are never meaningful options: ``lr: inf`` would train an all-NaN agent
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class EventWeighting(_Strict):
    """Sampling weight around events: a frame d frames before (<= ``before``) or after
    (<= ``after``) an event gets weight 1 + (weight - 1) * decay**d (the event frame itself
    weight ``weight``); overlapping windows take the maximum. Empty ``events`` disables it.
    ``marked`` (moments people marked in a label overlay) needs a dataset built with that column."""

    events: list[Literal[EVENT_TYPES]] = Field(default_factory=list)  # type: ignore[valid-type]
    before: int = Field(5, ge=0, description="frames before the event")
    after: int = Field(2, ge=0, description="frames after the event")
    weight: float = Field(10.0, ge=1.0, description="sampling weight at the event frame")
    decay: float = Field(0.8, gt=0.0, le=1.0, description="per-frame decay of the extra weight")


class KeyframeWeighting(_Strict):
    """Keyframe weighting (Wen et al. 2021; ``agents/keyframes.py``): the top ``top_fraction`` of the
    training frames by how badly the expert's action is predicted from its previous ``history``
    actions are sampled ``weight`` times more often. Event-free: needs no event labels."""

    history: int = Field(9, ge=1, le=64, description="previous actions the predictor reads")
    top_fraction: float = Field(0.1, gt=0.0, le=1.0, description="fraction of frames that are keyframes")
    weight: float = Field(5.0, ge=1.0, description="sampling weight of a keyframe")


class TrainConfig(_Strict):
    """Behavior-cloning options. All combinable; defaults reproduce the plain frame-by-frame clone."""

    policy: Literal["mlp", "cnn"] = "mlp"
    hidden: list[int] = Field(default_factory=lambda: [256, 256], description="MLP layer widths")
    activation: Literal["relu", "tanh", "gelu"] = "relu"
    cnn_channels: list[int] = Field(default_factory=lambda: [16, 32, 32])
    cnn_hidden: int = Field(256, ge=1)
    frame_stack: int = Field(1, ge=1, le=16)

    epochs: int = Field(20, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(512, ge=1)
    lr: float = Field(1e-3, gt=0)
    lr_schedule: Literal["constant", "cosine", "linear"] = "constant"
    weight_decay: float = Field(0.0, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)

    loss: Literal["ce", "weighted_ce", "focal", "logit_adjusted"] = "ce"
    class_weights: Literal["none", "inverse", "sqrt_inverse", "effective_number"] | None = None
    effective_beta: float = Field(0.999, gt=0, lt=1)
    focal_gamma: float = Field(2.0, ge=0)
    logit_tau: float = Field(1.0, gt=0)

    sampler: Literal["uniform", "weighted", "oversample", "undersample", "smote"] = "uniform"
    sampler_weights: Literal["inverse", "sqrt_inverse", "effective_number"] = "inverse"
    resample_strategy: str | dict[str, int] = "auto"
    smote_k: int = Field(5, ge=1)
    event_weighting: EventWeighting = Field(default_factory=EventWeighting)
    keyframe_weighting: KeyframeWeighting | None = None  # None: off; {} : the paper's defaults

    early_stop_metric: Literal[EARLY_STOP_METRICS] = "val_loss"  # type: ignore[valid-type]
    patience: int = Field(0, ge=0, description="epochs without improvement before stopping; 0 = never stop early")
    restore_best: bool = True

    selection: Literal["argmax", "sample", "temperature", "thresholds"] = "argmax"
    temperature: float = Field(1.0, gt=0)
    threshold_metric: Literal["balanced_accuracy", "macro_f1", "accuracy"] = "macro_f1"

    seed: int = Field(0, ge=0, le=MAX_SEED)
    num_threads: int = Field(
        1,
        ge=1,
        le=MAX_PARALLEL,
        description="torch CPU threads while training (1 is fastest for small MLPs and on a "
        "shared machine; raise it for CNNs on free cores)",
    )
    allow_missing_classes: bool = False
    # Where the network trains: small MLPs are fastest on one CPU thread; "auto" takes a GPU when
    # torch sees one (CNNs on stacked frames gain most). The saved agent always runs on the CPU.
    device: Literal["cpu", "cuda", "auto"] = "cpu"

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.sampler == "smote" and self.policy != "mlp":
            raise ValueError(
                f"sampler 'smote' interpolates state features and cannot be used with pixel "
                f"observations (policy {self.policy!r}); use 'oversample' or 'weighted'"
            )
        if self.loss == "ce" and self.class_weights not in (None, "none"):
            raise ValueError(
                f"loss 'ce' with class_weights {self.class_weights!r} is class-weighted CE: set loss: weighted_ce"
            )
        if self.loss == "weighted_ce" and self.class_weights == "none":
            raise ValueError("loss 'weighted_ce' needs class_weights inverse, sqrt_inverse or effective_number")
        if len(self.cnn_channels) != 3:
            raise ValueError(f"cnn_channels must list 3 widths, got {self.cnn_channels}")
        return self

    @property
    def obs_type(self) -> str:
        return "state" if self.policy == "mlp" else "pixels"

    @property
    def effective_class_weights(self) -> str:
        return self.class_weights or DEFAULT_CLASS_WEIGHTS[self.loss]

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def format_validation_error(exc: ValidationError, where: str) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown key {loc!r}")
        elif not loc:
            lines.append(err["msg"].removeprefix("Value error, "))
        else:
            lines.append(f"{loc}: {err['msg']} (got {err.get('input')!r})")
    return f"{where}: invalid training config: " + "; ".join(lines)


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise TrainConfigError(f"override {key!r}: {part!r} is not a section")
    node[parts[-1]] = value


def make_train_config(
    data: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None, where: str = "config"
) -> TrainConfig:
    """Validate ``data`` with dotted-key ``overrides`` (``{"event_weighting.weight": 5}``) applied."""
    merged = json.loads(json.dumps(data or {}))
    if not isinstance(merged, dict):
        raise TrainConfigError(f"{where}: a training config must be a mapping of keys to values")
    for key, value in (overrides or {}).items():
        _set_dotted(merged, key, value)
    try:
        return TrainConfig.model_validate(merged)
    except ValidationError as exc:
        raise TrainConfigError(format_validation_error(exc, where)) from None


def load_train_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a JSON or YAML training config (``None``: defaults) and apply ``overrides``."""
    if path is None:
        return make_train_config({}, overrides, "flags")
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise TrainConfigError(f"{path}: config file not found") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else parse_yaml(text, str(path))
    except json.JSONDecodeError as exc:
        raise TrainConfigError(f"{path}: not valid JSON ({exc})") from None
    except YamlError as exc:
        raise TrainConfigError(str(exc)) from None
    return make_train_config(data or {}, overrides, str(path))
