"""The one Agent interface every player implements: batched numpy observations in, actions out."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from bcarena.envs.duel.bots import Bot, make_bot
from bcarena.envs.duel.config import DuelConfig
from bcarena.recordings.sources import RESOLVERS, resolve_source


class Agent(ABC):
    """A batched policy.

    ``act(obs)`` takes observations of shape (B, *obs_shape) — (B, STATE_DIM) float32 for
    ``obs_type == "state"``, (B, 84, 84, 1) uint8 for ``"pixels"`` — and returns (B,) int64
    action ids. ``reset(B)`` is called before a new batch of matches so agents with memory
    (frame stacks) start clean.
    """

    name: str = "agent"
    obs_type: str = "state"

    @abstractmethod
    def act(self, obs: np.ndarray) -> np.ndarray:
        """Actions (B,) int64 for a batch of observations."""

    def reset(self, batch_size: int) -> None:
        """Forget per-match memory before ``batch_size`` new matches. Stateless agents ignore it."""


# ------------------------------------------------------------------------------------------------
# Agent files: a folder with ``agent.json`` (plain data) and weights (safetensors). Loading looks
# the ``kind`` up in ``AGENT_KINDS`` and never executes code from the folder.

AGENT_FILE = "agent.json"
FORMAT = "bcarena-agent"
FORMAT_VERSION = 1


class AgentFileError(ValueError):
    """An agent folder is missing, malformed, or does not match the code asked to load it."""


class SavableAgent(Agent):
    """An Agent that can be written to and read from an agent folder.

    Subclasses set ``kind`` (their registry key), write their files in ``_save_files(folder)``
    and return the kind-specific part of ``agent.json`` from ``_spec()``; ``_from_folder``
    rebuilds the agent from that spec and the folder's files.
    """

    kind: str = ""

    def _spec(self) -> dict[str, Any]:
        raise NotImplementedError

    def _save_files(self, folder: Path) -> None:
        raise NotImplementedError

    @classmethod
    def _from_folder(cls, folder: Path, spec: dict[str, Any]) -> "SavableAgent":
        raise NotImplementedError

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write this agent to folder ``path`` via a temporary sibling folder renamed into place."""
        return save_agent(self, path, overwrite=overwrite)


AGENT_KINDS: dict[str, type[SavableAgent]] = {}


def register_agent(cls: type[SavableAgent]) -> type[SavableAgent]:
    """Class decorator: make ``cls`` loadable from agent folders whose ``kind`` is ``cls.kind``."""
    if not cls.kind:
        raise ValueError(f"{cls.__name__} needs a non-empty 'kind' to be registered")
    AGENT_KINDS[cls.kind] = cls
    return cls


def _bcarena_version() -> str:
    try:
        return importlib.metadata.version("bcarena")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_agent(agent: SavableAgent, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``agent`` to the folder ``path`` (atomically: temp folder, then rename).

    An existing folder is an error unless ``overwrite``; it is then replaced only once the new
    folder is complete.
    """
    if not isinstance(agent, SavableAgent) or type(agent).kind not in AGENT_KINDS:
        raise AgentFileError(f"{type(agent).__name__} is not a registered savable agent kind; "
                             f"kinds: {sorted(AGENT_KINDS)}")
    path = Path(path)
    if path.exists() and not overwrite:
        raise AgentFileError(f"{path}: already exists (pass overwrite=True to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    try:
        agent._save_files(tmp)
        header = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": agent.kind, "name": agent.name,
                  "obs_type": agent.obs_type, "bcarena_version": _bcarena_version(), **agent._spec()}
        (tmp / AGENT_FILE).write_text(json.dumps(header, indent=2) + "\n")
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_agent_spec(path: str | os.PathLike) -> dict[str, Any]:
    """The validated ``agent.json`` of an agent folder (format, version and kind checked)."""
    import bcarena.agents.registry  # noqa: F401  (registers every built-in agent kind)

    folder = Path(path)
    spec_path = folder / AGENT_FILE
    if not folder.is_dir():
        raise AgentFileError(f"{folder}: no agent folder here")
    try:
        spec = json.loads(spec_path.read_text())
    except FileNotFoundError:
        raise AgentFileError(f"{spec_path}: missing (not an agent folder?)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AgentFileError(f"{spec_path}: not valid JSON ({exc})") from None
    if not isinstance(spec, dict):
        raise AgentFileError(f"{spec_path}: must hold a JSON object")
    if spec.get("format") != FORMAT:
        raise AgentFileError(f"{spec_path}: 'format' is {spec.get('format')!r}, expected {FORMAT!r}")
    if spec.get("format_version") != FORMAT_VERSION:
        raise AgentFileError(f"{spec_path}: format_version {spec.get('format_version')!r} is not supported "
                             f"(this bcarena reads version {FORMAT_VERSION})")
    if spec.get("kind") not in AGENT_KINDS:
        raise AgentFileError(f"{spec_path}: unknown agent kind {spec.get('kind')!r}; known kinds: {sorted(AGENT_KINDS)}")
    return spec


def load_agent(path: str | os.PathLike) -> SavableAgent:
    """Load an agent folder written by ``save_agent``. Only data is read: no code from the folder runs."""
    folder = Path(path)
    spec = read_agent_spec(folder)
    return AGENT_KINDS[spec["kind"]]._from_folder(folder, spec)


def require_keys(spec: dict[str, Any], keys: tuple[str, ...], where: Path) -> None:
    """Raise ``AgentFileError`` naming the keys of ``agent.json`` that are missing."""
    missing = [k for k in keys if k not in spec]
    if missing:
        raise AgentFileError(f"{where / AGENT_FILE}: missing key(s) {missing}")


@register_agent
class BotAgent(SavableAgent):
    """A scripted bot as an Agent.

    Standalone it draws its randomness from its own seeded generator. Match runners that own a
    Duel core feed ``bot`` the per-match noise streams instead (``bcarena.envs.duel.bot_noise``),
    which makes a match independent of the batch it runs in.
    """

    kind = "bot"
    obs_type = "state"

    def __init__(self, bot: Bot | str, seed: int = 0, config: DuelConfig | None = None) -> None:
        self.bot = make_bot(bot, config) if isinstance(bot, str) else bot
        self.name = self.bot.name
        self.seed = int(seed)
        self._rng = np.random.default_rng(seed)

    def act(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float32)
        return self.bot.act(obs, self._rng.random((obs.shape[0], self.bot.noise_dims)))

    def _spec(self) -> dict[str, Any]:
        # Only registered bots with the default game rules can be written as a name.
        return {"bot": self.bot.name, "seed": self.seed, "duel_config": self.bot.config.to_dict()}

    def _save_files(self, folder: Path) -> None:
        """A bot is all data: nothing besides agent.json."""

    @classmethod
    def _from_folder(cls, folder: Path, spec: dict[str, Any]) -> "BotAgent":
        require_keys(spec, ("bot", "seed"), folder)
        try:
            config = DuelConfig.from_dict(spec["duel_config"]) if "duel_config" in spec else None
            return cls(str(spec["bot"]), int(spec["seed"]), config)
        except (KeyError, ValueError) as exc:
            raise AgentFileError(f"{folder / AGENT_FILE}: invalid bot agent ({exc})") from None


def _is_agent_folder(source: Any) -> bool:
    return isinstance(source, (str, os.PathLike)) and (Path(source) / AGENT_FILE).is_file()


# Agent folders are recording sources and opponents for `bcarena play`. The recordings layer sits
# below agents and cannot load them, so agents register the resolver (ahead of bot names).
RESOLVERS.insert(1, (_is_agent_folder, lambda source, config: resolve_source(load_agent(source), config)))
