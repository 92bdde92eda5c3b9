"""The one Agent interface every player implements, and agent folders (``agent.json`` + safetensors).

``Agent.act(obs)`` is the contract (as Stable-Baselines3's ``predict`` around ``_predict``): it checks
the observations against what the agent declares (``obs_shape``, ``obs_dtype``), calls the subclass's
``_act`` and checks the actions with :func:`bcarena.envs.play.validate_actions`. Every agent declares
``name``, ``game``, ``obs_type`` and ``action_names``; optional abilities are the Protocols of
:mod:`bcarena.agents.capabilities`.

An agent folder holds ``agent.json`` (plain data, validated field by field: :mod:`bcarena.agents.specs`)
and weights. Its ``kind`` is looked up in :mod:`bcarena.agents.registry`; no code from the folder runs.
"""

from __future__ import annotations

import functools
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, final

import numpy as np

from bcarena.agents import registry
from bcarena.agents.capabilities import Stochastic
from bcarena.agents.specs import (
    AGENT_FILE,
    FORMAT,
    FORMAT_VERSION,
    AgentFileError,
    Header,
    Seed,
    Strict,
    parse_spec,
    read_spec_file,
)
from bcarena.envs.duel.bots import BOTS, Bot, make_bot
from bcarena.envs.duel.config import DuelConfig
from bcarena.envs.errors import BcarenaError
from bcarena.envs.files import atomic_folder, package_version, write_json
from bcarena.envs.games import UnknownGameError, get_game
from bcarena.envs.play import validate_actions

OBS_DTYPES: dict[str, np.dtype] = {"state": np.dtype(np.float32), "pixels": np.dtype(np.uint8)}


class ObservationError(BcarenaError, ValueError):
    """Observations of the wrong shape or type for an agent."""


# ------------------------------------------------------------------------------------------- games
@dataclass(frozen=True)
class GameIO:
    """What an agent of a game receives and returns: one observation's shape per obs type, the action names."""

    game: str
    action_names: tuple[str, ...]
    obs_shapes: dict[str, tuple[int, ...]]


def game_io(game: str) -> GameIO:
    """The observations and actions of a registered ``game`` (``bcarena.envs.games``; an unknown one is an
    UnknownGameError listing the known games; Boxing loads ale-py on first use)."""
    found = get_game(game)
    return GameIO(found.name, found.action_names, found.obs_shapes)


# ------------------------------------------------------------------------------------------- agents
class Agent(ABC):
    """A batched policy for one game.

    ``act(obs)`` takes observations (B, *obs_shape) of ``obs_dtype`` — by default (B, STATE_DIM)
    float32 for ``obs_type == "state"`` and (B, 84, 84, 1) uint8 for ``"pixels"`` — and returns (B,)
    int64 action ids in [0, num_actions). ``reset(B)`` is called before a new batch of matches so
    agents with memory (frame stacks, sampling streams) start clean.

    Subclasses implement ``_act`` and override the declarations that differ from the defaults.
    """

    name: str = "agent"
    game: str = "duel"
    obs_type: str = "state"

    @functools.cached_property
    def action_names(self) -> list[str]:
        """The actions ``act`` chooses from, by id (default: the game's). A subclass may assign its own."""
        return list(game_io(self.game).action_names)

    @property
    def num_actions(self) -> int:
        return len(self.action_names)

    @property
    def obs_shape(self) -> tuple[int, ...]:
        """Shape of one observation ``act`` accepts (default: the game's for ``obs_type``)."""
        shapes = game_io(self.game).obs_shapes
        if self.obs_type not in shapes:
            raise ObservationError(f"agent {self.name!r} observes {self.obs_type!r}; {self.game} offers {list(shapes)}")
        return shapes[self.obs_type]

    @property
    def obs_dtype(self) -> np.dtype:
        """dtype ``act`` hands to ``_act``: float32 states (any real dtype is converted), exactly uint8 pixels."""
        return OBS_DTYPES[self.obs_type]

    def reset(self, batch_size: int) -> None:  # noqa: B027 - a no-op default, overridden by agents with memory
        """Forget per-match memory before ``batch_size`` new matches. Stateless agents ignore it."""

    @final
    def act(self, obs: np.ndarray) -> np.ndarray:
        """Actions (B,) int64 for observations (B, *obs_shape); both are checked, with the agent's name."""
        obs = self.check_observations(obs)
        return validate_actions(self._act(obs), obs.shape[0], self.num_actions, f"agent {self.name!r}")

    @abstractmethod
    def _act(self, obs: np.ndarray) -> np.ndarray:
        """Actions (B,) for observations already checked to be (B, *obs_shape) of ``obs_dtype``."""

    def check_observations(self, obs: Any) -> np.ndarray:
        """``obs`` as a (B, *obs_shape) array of ``obs_dtype``, or an ObservationError naming the agent."""
        arr = np.asarray(obs)
        shape, dtype = self.obs_shape, self.obs_dtype
        # Real-valued features convert losslessly enough to float32; pixels must already be uint8, since
        # casting floats in [0, 1] or ints above 255 would silently show the agent another picture.
        dtype_ok = arr.dtype == dtype or (dtype.kind == "f" and arr.dtype.kind in "biuf")
        if arr.shape[1:] != shape or arr.ndim != len(shape) + 1 or not dtype_ok:
            expected = "(B, " + ", ".join(str(d) for d in shape) + ")"
            raise ObservationError(
                f"agent {self.name!r}: expected {self.obs_type} observations of shape {expected} "
                f"{dtype}, got {arr.shape} {arr.dtype}"
            )
        return arr.astype(dtype, copy=False)


# -------------------------------------------------------------------------------------- agent files
class SavableAgent(Agent):
    """An Agent that can be written to and read from an agent folder.

    Subclasses set ``kind`` (their key in :mod:`bcarena.agents.registry`) and ``Spec`` (the pydantic
    model of their part of ``agent.json``), write their files in ``_save_files(folder)``, return their
    part of ``agent.json`` from ``_spec()``, and rebuild themselves in ``_from_folder(folder, header,
    spec)`` from the validated header and spec — checking weight files before building anything.
    """

    kind: ClassVar[str] = ""
    Spec: ClassVar[type[Strict]]

    def _spec(self) -> dict[str, Any]:
        raise NotImplementedError

    def _save_files(self, folder: Path) -> None:
        raise NotImplementedError

    @classmethod
    def _from_folder(cls, folder: Path, header: Header, spec: Any) -> SavableAgent:
        raise NotImplementedError

    @classmethod
    def read_folder_spec(cls, folder: str | os.PathLike) -> tuple[Header, Any]:
        """The validated header and ``Spec`` of an agent folder of this very kind; nothing is built yet."""
        folder = Path(folder)
        header, body = read_agent_header(folder)
        if header.kind != cls.kind:
            raise AgentFileError(f"{folder / AGENT_FILE}: kind {header.kind!r}, expected {cls.kind!r}")
        return header, parse_spec(cls.Spec, body, folder / AGENT_FILE)

    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> SavableAgent:
        """Load an agent folder of this very kind (an AgentFileError if it holds another kind)."""
        return cls._from_folder(Path(folder), *cls.read_folder_spec(folder))

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write this agent to folder ``path`` via a temporary sibling folder renamed into place."""
        return save_agent(self, path, overwrite=overwrite)


def save_agent(agent: SavableAgent, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``agent`` to the folder ``path`` (atomically: temp folder, then rename).

    An existing folder is an error unless ``overwrite``; it is then replaced only once the new
    folder is complete.
    """
    kinds = registry.agent_kinds()
    if not isinstance(agent, SavableAgent) or agent.kind not in kinds:
        raise AgentFileError(f"{type(agent).__name__} is not a registered savable agent kind; kinds: {sorted(kinds)}")
    path = Path(path)
    if path.exists() and not overwrite:
        raise AgentFileError(f"{path}: already exists (pass overwrite=True to replace it)")
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": agent.kind,
        "name": agent.name,
        "game": agent.game,
        "obs_type": agent.obs_type,
        "bcarena_version": package_version("bcarena"),
    }
    spec = agent._spec()  # before the folder exists: an agent that cannot be written leaves nothing behind
    with atomic_folder(path, overwrite=overwrite) as tmp:
        agent._save_files(tmp)
        write_json(tmp / AGENT_FILE, {**header, **spec})
    return path


def read_agent_header(folder: Path) -> tuple[Header, dict[str, Any]]:
    """``folder/agent.json`` split into its validated header and the kind-specific rest (not yet validated)."""
    spec = read_spec_file(folder)
    where = folder / AGENT_FILE
    if spec.get("format") != FORMAT:
        raise AgentFileError(f"{where}: 'format' is {spec.get('format')!r}, expected {FORMAT!r}")
    if spec.get("format_version") != FORMAT_VERSION:
        raise AgentFileError(
            f"{where}: format_version {spec.get('format_version')!r} is not supported "
            f"(this bcarena reads version {FORMAT_VERSION})"
        )
    kinds = registry.agent_kinds()
    if not isinstance(spec.get("kind"), str) or spec["kind"] not in kinds:
        raise AgentFileError(f"{where}: unknown agent kind {spec.get('kind')!r}; known kinds: {sorted(kinds)}")
    header = parse_spec(Header, {k: v for k, v in spec.items() if k in Header.model_fields}, where)
    try:
        game_io(header.game)
    except UnknownGameError as exc:
        raise AgentFileError(f"{where}: field 'game': {exc}") from None
    return header, {k: v for k, v in spec.items() if k not in Header.model_fields}


def agent_class(kind: str) -> type[SavableAgent]:
    """The SavableAgent subclass registered for ``kind`` (its module is imported on first use)."""
    cls = registry.resolve_agent_kind(kind)
    if not issubclass(cls, SavableAgent):
        raise registry.AgentKindError(f"agent kind {kind!r} resolves to {cls.__qualname__}, not a SavableAgent")
    return cls


def read_agent_spec(path: str | os.PathLike) -> dict[str, Any]:
    """The ``agent.json`` of an agent folder with its header checked (format, version, kind, name, game)."""
    header, body = read_agent_header(Path(path))
    return {**header.model_dump(), **body}


def load_agent(path: str | os.PathLike) -> SavableAgent:
    """Load an agent folder written by ``save_agent``. Only data is read: no code from the folder runs."""
    folder = Path(path)
    header, body = read_agent_header(folder)
    cls = agent_class(header.kind)
    return cls._from_folder(folder, header, parse_spec(cls.Spec, body, folder / AGENT_FILE))


# -------------------------------------------------------------------------------------------- bots
class BotSpec(Strict):
    bot: str
    seed: Seed = 0
    duel_config: dict[str, Any] | None = None


class BotAgent(SavableAgent, Stochastic):
    """A scripted bot as an Agent.

    Standalone (``act``) it draws its randomness from its own seeded generator. In matches it is a
    :class:`~bcarena.envs.play.NoisyPolicy`: the match loop feeds ``act_with_noise`` the match's own
    noise streams, which makes a match independent of the batch it runs in.
    """

    kind = "bot"
    Spec = BotSpec
    obs_type = "state"
    greedy = False  # bots draw noise on every decision

    def __init__(self, bot: Bot | str, seed: int = 0, config: DuelConfig | None = None) -> None:
        self.bot = make_bot(bot, config) if isinstance(bot, str) else bot
        self.name = self.bot.name
        self._seed = int(seed)
        self._rng = np.random.default_rng(seed)

    @property
    def seed(self) -> int:
        return self._seed

    def _act(self, obs: np.ndarray) -> np.ndarray:
        return self.bot.act(obs, self._rng.random((obs.shape[0], self.bot.noise_dims)))

    @property
    def noise_dims(self) -> int:
        return self.bot.noise_dims

    def act_with_noise(self, obs: np.ndarray, noise: np.ndarray) -> np.ndarray:
        return self.bot.act(obs, noise)

    def _spec(self) -> dict[str, Any]:
        # A folder names the bot; only registered bots (not perturbed ones, which eval builds) can be rebuilt.
        if BOTS.get(self.bot.name) is not type(self.bot):
            raise AgentFileError(
                f"bot {self.bot.name!r} ({type(self.bot).__name__}) is not a registered bot, so an "
                f"agent folder cannot name it; registered bots: {sorted(BOTS)}"
            )
        return {"bot": self.bot.name, "seed": self.seed, "duel_config": self.bot.config.to_dict()}

    def _save_files(self, folder: Path) -> None:
        """A bot is all data: nothing besides agent.json."""

    @classmethod
    def _from_folder(cls, folder: Path, header: Header, spec: BotSpec) -> BotAgent:
        where = folder / AGENT_FILE
        if spec.bot not in BOTS:
            raise AgentFileError(f"{where}: field 'bot': unknown bot {spec.bot!r}; registered bots: {sorted(BOTS)}")
        if header.game != "duel" or header.obs_type != "state":
            raise AgentFileError(f"{where}: bots play Duel on state observations, not {header.game} {header.obs_type}")
        try:
            config = DuelConfig.from_dict(spec.duel_config) if spec.duel_config is not None else None
        except (BcarenaError, TypeError, ValueError) as exc:
            raise AgentFileError(f"{where}: field 'duel_config': {exc}") from None
        return cls(spec.bot, spec.seed, config)
