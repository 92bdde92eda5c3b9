"""Versions of a served model: what a server holds (``ModelSlot``), how a new version is loaded off to the side
(``load_slot``) and when a hot swap is refused (``incompatibility``).

A slot is immutable: a swap builds a new slot completely (loaded, hashed, one warm-up call) and then the server
switches one reference, so a request that started on the old slot finishes on it. Importing this module loads
neither torch nor the serve extra (the server's JSON worker processes import the server module, which imports this).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bcarena.envs.files import sha256_file
from bcarena.eval.errors import EvalError
from bcarena.eval.service.layout import AGENT_FILE, EXPORT_FILE

if TYPE_CHECKING:
    from bcarena.eval.service.export import ServedModel

REGISTRY_SCHEME = "models:/"


class SwapError(EvalError):
    """A model that cannot be served or swapped in; ``status`` is the HTTP status the admin endpoint answers
    (404 no such model, 409 incompatible with the served one, 422 not a loadable model)."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ModelSlot:
    """One served model version: the runnable model and what every answer says about it."""

    served: ServedModel
    version: str
    model_hash: str  # sha256 over the files of the model's folder (the weights' digest for an in-memory model)
    game: str
    source: str | None = None  # the folder or models:/ URI it was loaded from
    pinned: str | None = None  # models:/NAME/N a registry URI resolved to when loaded (None for a folder)

    @classmethod
    def of(cls, served: ServedModel, version: str | None = None, game: str | None = None) -> ModelSlot:
        """A slot for an in-memory model (no folder): its hash is the weights' digest; its game the model's own."""
        return cls(served, version or served.agent_name, served.sha256, game or served.game)

    def describe(self) -> dict[str, Any]:
        return {
            "model_version": self.version,
            "model_hash": self.model_hash,
            "agent": self.served.agent_name,
            "game": self.game,
            "source": self.source,
        }


def folder_sha256(path: Path) -> str:
    """Hex SHA-256 of a folder: every file's relative path and SHA-256, in sorted order (sub-folders included)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        digest.update(bytes.fromhex(sha256_file(file)))
    return digest.hexdigest()


def resolve_source(source: str | Path, tracking_uri: str | None = None) -> tuple[Path, str]:
    """(model folder, default version label) of ``source``: a folder path (labelled by its name), or a
    ``models:/NAME@alias`` / ``models:/NAME/N`` registry URI (labelled ``NAME/N``), resolved once to a fixed
    version by ``bcarena.eval.service.registry`` so an alias moved meanwhile cannot mix two versions."""
    text = str(source)
    if text.startswith(REGISTRY_SCHEME):
        from bcarena.envs.errors import BcarenaError

        try:
            from bcarena.eval.service.registry import model_version, resolve_model
        except ImportError:
            raise SwapError(
                f"{text}: registry URIs need the registry module (bcarena[tracking]); give a folder", 404
            ) from None
        try:
            name, number = model_version(text, tracking_uri)
            return Path(resolve_model(f"{REGISTRY_SCHEME}{name}/{number}", tracking_uri)), f"{name}/{number}"
        except BcarenaError as exc:
            raise SwapError(f"{text}: {exc}", 404) from None
    path = Path(text)
    if not path.is_dir():
        raise SwapError(
            f"{text}: no such model folder (expected an agent or export folder, or {REGISTRY_SCHEME}NAME@alias)", 404
        )
    return path, path.resolve().name


def _game(path: Path, served: ServedModel) -> str:
    """The game an agent folder declares; an export folder's is the game its export.json names."""
    if (path / AGENT_FILE).is_file():
        from bcarena.agents.base import read_agent_spec

        return str(read_agent_spec(path)["game"])
    return served.game


def load_slot(
    source: str | Path,
    version: str | None = None,
    backend: str | None = None,
    device: str = "cpu",
    tracking_uri: str | None = None,
) -> ModelSlot:
    """Load, hash and warm up the model at ``source`` (a folder or ``models:/`` URI), off to the side of any server.

    ``version`` defaults to the folder's name (``NAME/N`` for a registry URI). Raises SwapError: 404 when
    ``source`` names nothing, 422 when it is not a loadable agent or export folder.
    """
    from bcarena.envs.errors import BcarenaError
    from bcarena.eval.service.export import load_served

    path, default_version = resolve_source(source, tracking_uri)
    if not (path / AGENT_FILE).is_file() and not (path / EXPORT_FILE).is_file():
        raise SwapError(f"{source}: neither an agent folder ({AGENT_FILE}) nor an export folder ({EXPORT_FILE})", 404)
    try:
        served = load_served(path, backend, device)
        game = _game(path, served)
    except BcarenaError as exc:
        raise SwapError(f"{source}: cannot be served: {exc}", 422) from None
    served.runtime.actions(np.zeros((1, *served.layout.shape), dtype=np.float32))  # the first call pays set-up costs
    slot = ModelSlot(served, version or default_version, folder_sha256(path), game, str(source))
    reason = game_mismatch(slot, game)  # the model's action names must be its game's, exactly
    if reason is not None:
        raise SwapError(f"{source}: cannot be served: {reason}", 422)
    pinned = f"{REGISTRY_SCHEME}{default_version}" if str(source).startswith(REGISTRY_SCHEME) else None
    return replace(slot, pinned=pinned)


def incompatibility(current: ModelSlot, new: ModelSlot) -> str | None:
    """Why ``new`` cannot replace ``current`` for the same clients (another game or action names, by the one exact
    check ``bcarena.envs.games.check_agent_for_game``; another observation layout), or None when it can."""
    reason = game_mismatch(new, current.game)
    if reason is not None:
        return reason
    old_layout, new_layout = current.served.layout, new.served.layout
    if new_layout != old_layout:
        return (
            f"the new model takes {new_layout.obs_type} observations of shape {list(new_layout.shape)} "
            f"({new_layout.wire_dtype}, stack {new_layout.frame_stack}); the served one takes {old_layout.obs_type} "
            f"{list(old_layout.shape)} ({old_layout.wire_dtype}, stack {old_layout.frame_stack})"
        )
    return None


def game_mismatch(slot: ModelSlot, game: str) -> str | None:
    """Why ``slot`` cannot play ``game`` (its declared game or action names differ, by the one exact check
    ``check_agent_for_game``), or None."""
    from bcarena.envs.games import GameError, check_agent_for_game

    try:
        check_agent_for_game(slot.served.agent_name, slot.game, slot.served.action_names, game)
    except GameError as exc:
        return str(exc)
    return None
