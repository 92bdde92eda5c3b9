"""Content-addressed stage cache: a stage's output folder is named by the hash of what made it.

Re-running an experiment finds every stage whose inputs did not change and skips it; changing
one variant changes only that variant's key, so only it retrains. Outputs are built in a
temporary folder and renamed into place, so a run killed mid-stage leaves no half-written entry
and the next run simply redoes that stage. Two runs building the same key at once both finish:
the key names the content, so whichever entry lands first is kept and the other is dropped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from bcarena.envs.files import OutputExistsError, atomic_folder

CACHE_FORMAT = 2  # bump when a stage's outputs change meaning, to invalidate old entries


def _canonical(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return _canonical(value.model_dump(mode="json"))
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def content_key(stage: str, *parts: Any) -> str:
    """A short hex key for ``stage`` from JSON-able parts (pydantic models and paths allowed)."""
    payload = json.dumps([CACHE_FORMAT, stage, _canonical(list(parts))], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class StageCache:
    """Folders ``root/<stage>/<key>/``, each complete or absent."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def build(self, stage: str, key: str, make: Callable[[Path], None]) -> tuple[Path, bool]:
        """Return (folder, reused). If absent, ``make(tmp_folder)`` fills a temp folder that is renamed in.

        An entry another process finished while ``make`` ran counts as reused: ours is dropped.
        """
        final = self.path(stage, key)
        if final.is_dir():
            return final, True
        try:
            with atomic_folder(final) as tmp:
                make(tmp)
        except OutputExistsError:
            if not final.is_dir():
                raise
            return final, True
        return final, False
