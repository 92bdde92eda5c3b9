"""Experiment files: YAML validated on load with pydantic.

An experiment says where the gameplay comes from, how the dataset is built, which agent variants
to train with which seeds, and how to evaluate them. Unknown keys and wrong types are errors that
name the key *and its line* in the file, so a typo never silently falls back to a default.

Everything that can be checked without doing the work is checked on load, so a run never fails
minutes in on a typo: player names (bots, perturbed bots, agent folders), the reference bot, counts
and seeds within bounds, unique seeds and opponents, and a split that gives ``train``, ``val``
(every variant validates on it) and the offline split episodes for the number of episodes recorded.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bcarena.agents.specs import AGENT_FILE
from bcarena.envs.duel import BOTS, DuelConfig
from bcarena.envs.errors import BcarenaError
from bcarena.envs.games import Game, get_game, list_games
from bcarena.envs.limits import MAX_EPISODES, MAX_FRAMES, MAX_MATCHES, MAX_SEED
from bcarena.envs.yaml_files import YamlError, load_yaml_document
from bcarena.eval.perturbed import parse_perturbed
from bcarena.recordings.converter import split_episodes
from bcarena.recordings.dataset import SPLITS
from bcarena.recordings.episode import find_episodes
from bcarena.recordings.reaction_delay import MAX_REACTION_DELAY


class ExperimentError(BcarenaError, ValueError):
    """An experiment file is unreadable or invalid."""


class KeyProblem(BcarenaError, ValueError):
    """A check across keys, raised by a model validator, with the key path it is about (``loc``).

    Pydantic places a model validator's error at the model; ``load_experiment`` adds ``loc`` to it,
    so the message names the key and line the fix goes to.
    """

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


def check_player(spec: str, game: str = "duel", role: str = "player") -> str:
    """``spec`` if it names a player of ``game`` that can be loaded; otherwise a ValueError.

    Duel: a bot name, a perturbed bot (``pro[skill_drop=0.9]``, syntax and values checked), an agent
    folder (it must hold agent.json; weights are read when it plays) or a server URL (reached when it
    plays). Another game: one of its built-in players (``role`` "opponent": its opponents only), an
    agent folder or a server URL. Cheap, so that files and flags are checked before any work starts.
    """
    if spec.startswith(("http://", "https://")):
        return spec
    if Path(spec).is_dir():
        if not (Path(spec) / AGENT_FILE).is_file():
            raise ValueError(f"{spec!r} is a folder without {AGENT_FILE}, not an agent folder")
        return spec
    if game != "duel":
        found = get_game(game)
        names = list(found.opponents) if role == "opponent" else found.players
        if spec in names:
            return spec
        raise ValueError(f"game {game!r} has {role}s {names}, not {spec!r} (or give an agent folder or a server URL)")
    if spec in BOTS or parse_perturbed(spec) is not None:  # an EvalError (a ValueError) for a bad bot or value
        return spec
    raise ValueError(
        f"unknown player {spec!r}: not a bot name (one of {sorted(BOTS)}), not a perturbed bot like "
        "'pro[skill_drop=0.9]', not an agent folder and not a server URL (http://...)"
    )


def _player_field(spec: str) -> str:
    """A player field's check: a plain name is checked against the experiment's game by ``Experiment``."""
    if re.fullmatch(r"[A-Za-z0-9_-]+", spec) and not Path(spec).exists():
        return spec
    return check_player(spec)


def game_setup(options: Mapping[str, Any]) -> tuple[Game, Any]:
    """The game an experiment's ``game:`` mapping names (Duel without a ``name``) and its config from the
    other keys: the one place an experiment's game is resolved (the runner and sweeps use it)."""
    game = get_game(str(options.get("name", "duel")))
    return game, game.make_config({k: v for k, v in options.items() if k != "name"})


def _check_reference(name: str, game: str) -> str:
    if game == "duel" and name not in BOTS:
        raise ValueError(f"unknown bot {name!r}; the reference is a bot, one of {sorted(BOTS)}")
    if game != "duel" and name not in get_game(game).experts:
        experts = list(get_game(game).experts)
        raise ValueError(f"game {game!r}: the reference is one of its experts {experts}, not {name!r}")
    return name


def _unique(values: list[Any]) -> list[Any]:
    repeated = sorted({v for v in values if values.count(v) > 1}, key=str)
    if repeated:
        raise ValueError(f"must not repeat a value, repeated: {repeated}")
    return values


# Seeds and counts are bounded as on the command line: a typo like 1e20 episodes fails on load, not hours later.
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
Player = Annotated[str, AfterValidator(_player_field)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RecordingSpec(_Strict):
    """Gameplay to learn from: a bot or agent recorded against opponents, or existing recordings."""

    player: Player = "pro"  # bot name, perturbed bot or agent folder
    opponents: list[Player] = Field(default_factory=lambda: ["brawler", "random", "turtle"], min_length=1)
    episodes: int = Field(60, ge=1, le=MAX_EPISODES)
    path: Path | None = None  # use these recordings instead of recording new ones

    @model_validator(mode="after")
    def _path_exists(self) -> RecordingSpec:
        if self.path is not None and not Path(self.path).is_dir():
            raise ValueError(f"recording path {str(self.path)!r} does not exist or is not a folder")
        return self


class DatasetSpec(_Strict):
    """How recordings become the dataset. ``reaction_delay`` (frames, or ``auto``: chosen per player in
    0..``max_reaction_delay`` by validation likelihood) pairs each observation with the action k frames
    later (``recordings/reaction_delay.py``); left out (None), the dataset and its cache key are as before."""

    alignment: Literal["window-priority", "sample"] = "window-priority"
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    pixels: bool = False
    reaction_delay: int | Literal["auto"] | None = None
    max_reaction_delay: int | None = None

    @field_validator("reaction_delay", "max_reaction_delay", mode="before")
    @classmethod
    def _frames(cls, value: Any, info: ValidationInfo) -> Any:
        auto = " or 'auto'" if info.field_name == "reaction_delay" else ""
        if value is None or (auto and value == "auto"):
            return value
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_REACTION_DELAY:
            raise ValueError(f"expected a number of frames in 0..{MAX_REACTION_DELAY}{auto}, got {value!r}")
        return value

    @model_validator(mode="after")
    def _max_delay_with_auto(self) -> DatasetSpec:
        if self.max_reaction_delay is not None and self.reaction_delay != "auto":
            raise ValueError("max_reaction_delay is the largest delay 'reaction_delay: auto' tries; set it with auto")
        return self

    @field_validator("split")
    @classmethod
    def _split_sums_to_one(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(v < 0 for v in value) or abs(sum(value) - 1.0) > 1e-6:
            raise ValueError(f"split fractions must be >= 0 and sum to 1, got {list(value)}")
        if value[0] <= 0 or value[1] <= 0:
            raise ValueError(
                f"split {list(value)}: train and val need fractions > 0 (agents learn on train and validate "
                "on val every epoch), e.g. [0.7, 0.15, 0.15]"
            )
        return value


# Decoding modes (bcarena.agents.selection.MODES, spelled here so that loading a file needs no torch)
DECODING_MODES = ("argmax", "sample", "temperature", "thresholds", "calibrated")


class DecodingSpec(_Strict):
    """How trained weights pick actions: ``argmax``, ``sample``, ``thresholds``, ``calibrated``, or
    ``{mode: temperature, temperature: 2.0}``. A plain string is the mode."""

    mode: Literal[DECODING_MODES]  # type: ignore[valid-type]
    temperature: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"mode": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _temperature_with_its_mode(self) -> DecodingSpec:
        if (self.mode == "temperature") != (self.temperature is not None):
            raise ValueError(
                "decoding 'temperature' needs a temperature, e.g. {mode: temperature, temperature: 2.0}, "
                "and only it takes one"
            )
        return self

    @property
    def label(self) -> str:
        """The row suffix: the mode, or ``T<temperature>`` (``T2``); argmax rows carry none."""
        return f"T{self.temperature:g}" if self.mode == "temperature" else self.mode


def _unique_decodings(values: list[DecodingSpec]) -> list[DecodingSpec]:
    _unique([d.label for d in values])
    return values


Decodings = Annotated[list[DecodingSpec], Field(min_length=1), AfterValidator(_unique_decodings)]


class VariantSpec(_Strict):
    """One agent recipe; ``train`` holds trainer options (validated by the trainer's own config).

    ``decoding`` (optional) replaces ``evaluation.decoding`` for this variant's agents.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    kind: Literal["bc", "composite", "dagger"] = "bc"
    train: dict[str, Any] = Field(default_factory=dict)
    decoding: Decodings | None = None
    # kind dagger: iterations, rollouts_per_iteration, beta, soft_labels, opponents (bcarena.agents.dagger)
    dagger: dict[str, Any] | None = None
    description: str = ""

    @model_validator(mode="after")
    def _dagger_section(self) -> VariantSpec:
        if (self.kind == "dagger") != (self.dagger is not None):
            raise KeyProblem(("dagger",), "a 'dagger:' section goes with kind: dagger, and kind dagger needs one")
        return self


class OfflineSpec(_Strict):
    split: Literal["train", "val", "test"] = "test"
    tolerance_frames: int = Field(2, ge=0, le=MAX_FRAMES)


class ReplaySpec(_Strict):
    side_by_side: tuple[str, str] | None = None  # two variant names
    opponent: Player = "brawler"
    seed: Seed = 0


class EvaluationSpec(_Strict):
    opponents: Annotated[list[Player], AfterValidator(_unique)] = Field(
        default_factory=lambda: ["brawler"], min_length=1
    )
    matches: int = Field(500, ge=1, le=MAX_MATCHES)
    seed: Seed = 10_000  # match seeds are seed, seed + 1, ...: every agent meets identical conditions
    reference: str | None = "pro"  # a built-in player (Duel: a bot) evaluated alongside the agents
    offline: OfflineSpec = Field(default_factory=OfflineSpec)
    replay: ReplaySpec = Field(default_factory=ReplaySpec)
    gap_report: bool = False
    workers: int = Field(1, ge=1, le=64)  # processes stepping emulators in matches of games that have them (Boxing)
    # game options of the evaluation's matches only, over the experiment's ``game:`` (recordings keep those): Boxing's
    # {repeat_action_probability: 0.25} (sticky actions) makes an argmax clone's bouts differ, which without them
    # settle into one trajectory against the deterministic console CPU
    game: dict[str, Any] = Field(default_factory=dict)
    # decodings crossing every variant: each trained agent is evaluated once per decoding, with the same weights
    decoding: Decodings = Field(default_factory=lambda: [DecodingSpec(mode="argmax")])
    # aggregates across training seeds (IQM, probability of improvement, profiles, paired tests; eval.stats):
    # None = on with >= 3 seeds; true needs >= 2 seeds
    aggregates: bool | None = None


class TrainingSpec(_Strict):
    # train every plain CPU MLP BC variant x seed with one layout and schedule at once (agents.ensemble); opt-in
    batched: bool = False


class TrackingSpec(_Strict):
    mlflow: bool = True
    uri: str | None = None  # default: a local file store under the project (mlruns/)


class Experiment(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    seed: Seed = 0
    # {name: boxing, ...game options}; without a name Duel, whose options are DuelConfig overrides ({round_seconds: 10})
    game: dict[str, Any] = Field(default_factory=dict)
    recording: RecordingSpec = Field(default_factory=RecordingSpec)
    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    variants: list[VariantSpec] = Field(min_length=1)
    seeds: Annotated[list[Seed], AfterValidator(_unique)] = Field(default_factory=lambda: [0], min_length=1)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    requirements: Path | None = None
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)

    @property
    def wants_aggregates(self) -> bool:
        """Whether the run reports aggregates across seeds (``evaluation.aggregates``; default: >= 3 seeds)."""
        asked = self.evaluation.aggregates
        return len(self.seeds) >= 3 if asked is None else asked

    @model_validator(mode="after")
    def _aggregates_need_seeds(self) -> Experiment:
        if self.evaluation.aggregates and len(self.seeds) < 2:
            raise KeyProblem(
                ("evaluation", "aggregates"),
                f"aggregate statistics across seeds need >= 2 seeds, the experiment lists {len(self.seeds)} "
                f"({self.seeds}): add seeds (3 or more turn them on by themselves) or drop aggregates",
            )
        return self

    @field_validator("game")
    @classmethod
    def _valid_game(cls, value: dict[str, Any]) -> dict[str, Any]:
        name = value.get("name", "duel")
        if not isinstance(name, str):
            raise ValueError(f"name must be a game name, one of {list_games()}, got {name!r}")
        # UnknownGameError lists the known games; the game's config error names the bad key (both ValueErrors)
        get_game(name).check_config({k: v for k, v in value.items() if k != "name"})
        return value

    @property
    def game_name(self) -> str:
        return str(self.game.get("name", "duel"))

    @property
    def game_config(self) -> Any:
        """The game's config (Duel: a DuelConfig) from the ``game:`` options."""
        return game_setup(self.game)[1]

    @property
    def evaluation_game_config(self) -> Any:
        """The game's config for evaluation matches: ``game:`` with ``evaluation.game`` over it."""
        return game_setup({**self.game, **self.evaluation.game})[1]

    @property
    def duel_config(self) -> DuelConfig:
        """The Duel rules of a Duel experiment (the defaults for any other game, whose matches ignore them)."""
        return self.game_config if self.game_name == "duel" else DuelConfig()

    def players(self) -> list[tuple[tuple[str | int, ...], str, str]]:
        """Every player the experiment names: (key path, spec, role "player"/"opponent"/"reference")."""
        rec, ev = self.recording, self.evaluation
        found = [(("recording", "player"), rec.player, "player")]
        found += [(("recording", "opponents", i), o, "opponent") for i, o in enumerate(rec.opponents)]
        found += [(("evaluation", "opponents", i), o, "opponent") for i, o in enumerate(ev.opponents)]
        found += [(("evaluation", "replay", "opponent"), ev.replay.opponent, "opponent")]
        return found + ([(("evaluation", "reference"), ev.reference, "reference")] if ev.reference else [])

    @model_validator(mode="after")
    def _evaluation_game_options(self) -> Experiment:
        if "name" in self.evaluation.game:
            raise KeyProblem(("evaluation", "game", "name"), "names no game: evaluations play the experiment's game")
        options = {k: v for k, v in {**self.game, **self.evaluation.game}.items() if k != "name"}
        try:
            get_game(self.game_name).check_config(options)
        except ValueError as exc:
            raise KeyProblem(("evaluation", "game"), str(exc)) from None
        return self

    @model_validator(mode="after")
    def _players_fit_game(self) -> Experiment:
        """Players are the game's (defaults included): Boxing's opponent is ``cpu``, not a Duel bot."""
        for loc, spec, role in self.players():
            try:
                if role == "reference":
                    _check_reference(spec, self.game_name)
                else:
                    check_player(spec, self.game_name, role)
            except ValueError as exc:
                raise KeyProblem(loc, str(exc)) from None
        return self

    @model_validator(mode="after")
    def _unique_variants(self) -> Experiment:
        names = [v.name for v in self.variants]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise KeyProblem(("variants",), f"variant names must be unique, repeated: {duplicates}")
        pair = self.evaluation.replay.side_by_side
        if pair is not None and not set(pair) <= set(names):
            raise KeyProblem(
                ("evaluation", "replay", "side_by_side"),
                f"names {sorted(set(pair) - set(names))} which are not variants ({names})",
            )
        return self

    @model_validator(mode="after")
    def _every_split_gets_episodes(self) -> Experiment:
        """Train, val and the offline split each need an episode of the recording (whole episodes are split)."""
        rec, split = self.recording, self.dataset.split
        episodes = rec.episodes if rec.path is None else len(find_episodes(rec.path))
        if rec.path is not None and episodes == 0:
            raise KeyProblem(("recording", "path"), f"{str(rec.path)!r} holds no episode folders (with meta.json)")
        counts = np.bincount(split_episodes(episodes, split, self.seed), minlength=len(SPLITS))
        offline = self.evaluation.offline.split
        empty = [name for name in dict.fromkeys(("train", "val", offline)) if counts[SPLITS.index(name)] == 0]
        if empty and split[SPLITS.index(offline)] == 0:  # train and val fractions are > 0 (DatasetSpec)
            raise KeyProblem(
                ("dataset", "split"),
                f"split {list(split)} gives {offline!r} no episodes, but the offline evaluation uses it "
                f"(evaluation.offline.split): give {offline} a fraction > 0 or evaluate offline on another split",
            )
        if empty:
            raise KeyProblem(
                ("recording", "episodes" if rec.path is None else "path"),
                f"{episodes} episode(s) split {list(split)} leave {empty} without an episode (whole episodes "
                f"are split; training needs train and val, the offline evaluation {offline!r}): record more episodes",
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
            cause = err.get("ctx", {}).get("error")
            loc = tuple(err["loc"]) + (cause.loc if isinstance(cause, KeyProblem) else ())
            key = ".".join(str(p) for p in loc) or "(top level)"
            line = _line_of(lines, loc)
            message = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
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
