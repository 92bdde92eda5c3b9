"""Agent kinds by name, resolved lazily from entry-point strings (as gymnasium registers environments).

The ``kind`` field of an agent folder's ``agent.json`` is looked up here, and only here: a kind
names an entry point ``"package.module:ClassName"`` written in code (``AGENT_KINDS``), declared by an
installed distribution in the ``bcarena.agents`` entry-point group, or added with
:func:`register_agent_kind`. Nothing read from a folder is ever imported directly, and a kind's module
is imported only when an agent of that kind is loaded, so this module imports no agent code at all.

A third-party package declares its kinds in its ``pyproject.toml``::

    [project.entry-points."bcarena.agents"]
    my_kind = "my_package.agents:MyAgent"   # a bcarena.agents.base.SavableAgent subclass
"""

from __future__ import annotations

import importlib
import importlib.metadata
from functools import cache

from bcarena.envs.errors import BcarenaError

ENTRY_POINT_GROUP = "bcarena.agents"

AGENT_KINDS: dict[str, str] = {
    "bot": "bcarena.agents.base:BotAgent",
    "torch": "bcarena.agents.torch_agent:TorchAgent",
    "composite": "bcarena.agents.composite:CompositeAgent",
    "sb3_ppo": "bcarena.agents.sb3:SB3Agent",
}
"""Built-in kinds: kind -> ``"module:attribute"``. Installed entry points and ``register_agent_kind`` add more."""

_registered: dict[str, str | type] = {}


class UnknownAgentKindError(BcarenaError, KeyError):
    """No agent kind of that name is registered."""


class AgentKindError(BcarenaError, ValueError):
    """An agent kind is registered twice, or its entry point does not name a class."""


@cache
def _installed_kinds() -> dict[str, str]:
    """Kinds declared by installed distributions (read once: installing a package needs a new process)."""
    return {ep.name: ep.value for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def agent_kinds() -> dict[str, str | type]:
    """Every known kind -> its entry point (a ``"module:attribute"`` string, or a class registered directly).

    Built-in kinds win over installed ones of the same name; ``register_agent_kind`` refuses clashes.
    """
    return {**_installed_kinds(), **AGENT_KINDS, **_registered}


def register_agent_kind(kind: str, entry_point: str | type, overwrite: bool = False) -> None:
    """Make agent folders of ``kind`` loadable by ``entry_point``: ``"module:ClassName"`` or the class itself."""
    if not isinstance(kind, str) or not kind:
        raise AgentKindError(f"an agent kind must be a non-empty string, got {kind!r}")
    if isinstance(entry_point, str) and entry_point.count(":") != 1:
        raise AgentKindError(
            f"agent kind {kind!r}: entry point must look like 'package.module:ClassName', got {entry_point!r}"
        )
    if kind in agent_kinds() and not overwrite:
        raise AgentKindError(
            f"agent kind {kind!r} is already registered ({agent_kinds()[kind]}); pass overwrite=True to replace it"
        )
    _registered[kind] = entry_point
    resolve_agent_kind.cache_clear()


def unregister_agent_kind(kind: str) -> None:
    """Forget a kind added with ``register_agent_kind`` (built-in and installed kinds stay)."""
    _registered.pop(kind, None)
    resolve_agent_kind.cache_clear()


@cache
def resolve_agent_kind(kind: str) -> type:
    """The class registered for ``kind``, importing its module on first use."""
    known = agent_kinds()
    if kind not in known:
        raise UnknownAgentKindError(f"unknown agent kind {kind!r}; known kinds: {sorted(known)}")
    entry_point = known[kind]
    if isinstance(entry_point, type):
        return entry_point
    module_name, _, attribute = entry_point.partition(":")
    target: object = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    if not isinstance(target, type):
        raise AgentKindError(
            f"agent kind {kind!r}: entry point {entry_point!r} is a {type(target).__name__}, not a class"
        )
    return target
