"""Experiment files: YAML validated on load with pydantic.

An experiment says where the gameplay comes from, how the dataset is built, which agent variants
to train with which seeds, and how to evaluate them. Unknown keys and wrong types are errors that
name the key *and its line* in the file, so a typo never silently falls back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bcarena.envs.duel import DuelConfig
from bcarena.envs.errors import BcarenaError
from bcarena.envs.limits import MAX_EPISODES, MAX_MATCHES, MAX_SEED
from bcarena.envs.yaml_files import YamlError, load_yaml_document


class ExperimentError(BcarenaError, ValueError):
    """An experiment file is unreadable or invalid."""


# Seeds and counts are bounded as on the command line: a typo like 1e20 episodes fails on load, not hours later.
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RecordingSpec(_Strict):
    """Gameplay to learn from: a bot or agent recorded against opponents, or existing recordings."""

    player: str = "pro"  # bot name or agent folder
    opponents: list[str] = Field(default_factory=lambda: ["brawler", "random", "turtle"])
    episodes: int = Field(60, ge=1, le=MAX_EPISODES)
    path: Path | None = None  # use these recordings instead of recording new ones

    @model_validator(mode="after")
    def _path_exists(self) -> RecordingSpec:
        if self.path is not None and not Path(self.path).is_dir():
            raise ValueError(f"recording path {str(self.path)!r} does not exist or is not a folder")
        return self


class DatasetSpec(_Strict):
    alignment: Literal["window-priority", "sample"] = "window-priority"
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    pixels: bool = False

    @field_validator("split")
    @classmethod
    def _split_sums_to_one(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(v < 0 for v in value) or abs(sum(value) - 1.0) > 1e-6:
            raise ValueError(f"split fractions must be >= 0 and sum to 1, got {list(value)}")
        return value


class VariantSpec(_Strict):
    """One agent recipe; ``train`` holds trainer options (validated by the trainer's own config)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    kind: Literal["bc", "composite"] = "bc"
    train: dict[str, Any] = Field(default_factory=dict)
    description: str = ""


class OfflineSpec(_Strict):
    split: Literal["train", "val", "test"] = "test"
    tolerance_frames: int = Field(2, ge=0)


class ReplaySpec(_Strict):
    side_by_side: tuple[str, str] | None = None  # two variant names
    opponent: str = "brawler"
    seed: Seed = 0


class EvaluationSpec(_Strict):
    opponents: list[str] = Field(default_factory=lambda: ["brawler"])
    matches: int = Field(500, ge=1, le=MAX_MATCHES)
    seed: Seed = 10_000  # match seeds are seed, seed + 1, ...: every agent meets identical conditions
    reference: str | None = "pro"  # a bot evaluated alongside the agents (the player being cloned)
    offline: OfflineSpec = Field(default_factory=OfflineSpec)
    replay: ReplaySpec = Field(default_factory=ReplaySpec)
    gap_report: bool = False


class TrackingSpec(_Strict):
    mlflow: bool = True
    uri: str | None = None  # default: a local file store under the project (mlruns/)


class Experiment(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    seed: Seed = 0
    game: dict[str, Any] = Field(default_factory=dict)  # DuelConfig overrides, e.g. {round_seconds: 10}
    recording: RecordingSpec = Field(default_factory=RecordingSpec)
    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    variants: list[VariantSpec] = Field(min_length=1)
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    requirements: Path | None = None
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)

    @field_validator("game")
    @classmethod
    def _valid_game(cls, value: dict[str, Any]) -> dict[str, Any]:
        DuelConfig.from_dict(value)  # DuelConfigError (a ValueError) names the bad key
        return value

    @property
    def duel_config(self) -> DuelConfig:
        return DuelConfig.from_dict(self.game)

    @model_validator(mode="after")
    def _unique_variants(self) -> Experiment:
        names = [v.name for v in self.variants]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"variant names must be unique, repeated: {duplicates}")
        pair = self.evaluation.replay.side_by_side
        if pair is not None and not set(pair) <= set(names):
            raise ValueError(
                f"evaluation.replay.side_by_side names {sorted(set(pair) - set(names))} "
                f"which are not variants ({names})"
            )
        return self


def _key_lines(node: yaml.Node, prefix: tuple = ()) -> dict[tuple, int]:
    """Map every key path in a YAML document to its 1-based line number."""
    lines: dict[tuple, int] = {prefix: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = prefix + (key.value,)
            lines.update(_key_lines(value, path))
            lines[path] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines.update(_key_lines(item, prefix + (index,)))
    return lines


def _line_of(lines: dict[tuple, int], loc: tuple) -> int | None:
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def load_experiment(path: str | Path, validate_variant=None) -> Experiment:
    """Read and validate an experiment YAML file.

    ``validate_variant(variant)`` (optional) checks each variant's trainer options with the
    trainer's own config class; its errors are reported with the variant's line too.
    """
    path = Path(path)
    try:
        document = load_yaml_document(path, "experiment")
    except YamlError as exc:
        raise ExperimentError(str(exc)) from None
    data, node = document.data, document.node
    if not isinstance(data, dict):
        raise ExperimentError(f"{path}: an experiment must be a YAML mapping (key: value), got {type(data).__name__}")
    lines = _key_lines(node) if node is not None else {}
    try:
        experiment = Experiment.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            key = ".".join(str(p) for p in loc) or "(top level)"
            line = _line_of(lines, loc)
            message = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(f"{path}:{line}: {key}: {message}" if line else f"{path}: {key}: {message}")
        raise ExperimentError("invalid experiment:\n  " + "\n  ".join(problems)) from None
    if validate_variant is not None:
        for index, variant in enumerate(experiment.variants):
            try:
                validate_variant(variant)
            except ValueError as exc:
                line = _line_of(lines, ("variants", index, "train"))
                raise ExperimentError(f"{path}:{line}: variants.{index} ({variant.name}).train: {exc}") from None
    return experiment
