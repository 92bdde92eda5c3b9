"""Following a registry alias: a server polls ``models:/NAME@ALIAS`` and hot-swaps when the alias moves.

``bcarena serve models:/NAME@champion --follow-alias`` starts an ``AliasFollower`` beside the routes. Every
``poll_s`` seconds it asks the registry (in a thread: MLflow blocks) which version the alias names; when that is
not the served version it swaps through ``AgentService.swap``, the code behind ``POST /admin/model``, so the same
rules hold: the new version is loaded off to the side, no request fails, and a model of another game, layout or
action set is refused (the old one keeps serving). A refused or unloadable version is not retried until the alias
moves again. A registry that cannot be reached, or fails, costs one warning and one count: the server keeps
serving. Each poll's outcome is counted in ``/metrics`` as ``bcarena_alias_polls_total{outcome=...}``:
``unchanged``, ``swapped``, ``refused`` (the swap was refused or the version could not be loaded), ``failed``
(the registry did not answer).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from bcarena.eval.errors import EvalError
from bcarena.eval.service.models import REGISTRY_SCHEME, ModelSlot, SwapError

if TYPE_CHECKING:
    from bcarena.eval.service.metrics import ServiceMetrics

log = logging.getLogger(__name__)
MAX_POLL_S = 3600.0


class FollowError(EvalError, ValueError):
    """``--follow-alias`` with something that is not an alias URI, or a poll interval out of range."""


def check_follow(source: str | None, poll_s: float) -> None:
    """FollowError unless ``poll_s`` lies within (0, MAX_POLL_S] and ``source`` (None: not following) is a
    ``models:/NAME@ALIAS`` URI."""
    if not 0 < poll_s <= MAX_POLL_S:
        raise FollowError(f"--poll-s must be within (0, {MAX_POLL_S:g}] seconds, got {poll_s:g}")
    if source is not None and (not source.startswith(REGISTRY_SCHEME) or "@" not in source):
        raise FollowError(f"--follow-alias follows a registry alias: serve {REGISTRY_SCHEME}NAME@ALIAS, not {source!r}")


class AliasFollower:
    """Polls the version ``alias_uri`` names every ``poll_s`` seconds and swaps to it (see the module docstring).

    ``current`` gives the served slot, ``swap(source, version)`` swaps (``AgentService.swap``).
    """

    def __init__(
        self,
        alias_uri: str,
        poll_s: float,
        tracking_uri: str | None,
        current: Callable[[], ModelSlot],
        swap: Callable[[str, str | None], Awaitable[dict[str, Any]]],
        metrics: ServiceMetrics,
    ) -> None:
        check_follow(alias_uri, poll_s)
        self.alias_uri, self.poll_s, self.tracking_uri = alias_uri, poll_s, tracking_uri
        self.current, self.swap, self.metrics = current, swap, metrics
        self.given_up: str | None = None  # the last version refused or not loadable: not retried
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            await self.poll()

    async def poll(self) -> str:
        """Ask the registry once and swap when the alias names another version; the outcome (also counted)."""
        outcome = await self._poll()
        self.metrics.alias_polls.labels(outcome).inc()
        return outcome

    async def _poll(self) -> str:
        from bcarena.eval.service.registry import model_version

        try:
            name, number = await asyncio.to_thread(model_version, self.alias_uri, self.tracking_uri)
        except Exception as exc:  # noqa: BLE001 - whatever the registry raises, the server keeps serving
            log.warning("following %s: the registry did not answer (%s); still serving", self.alias_uri, exc)
            return "failed"
        target = f"{REGISTRY_SCHEME}{name}/{number}"
        if target in (self.current().pinned, self.given_up):
            return "unchanged"
        try:
            await self.swap(target, None)
        except SwapError as exc:
            log.warning("following %s: %s", self.alias_uri, exc)
            if exc.status == 404:  # the registry failed while resolving or downloading: retried next poll
                return "failed"
            self.given_up = target
            return "refused"
        log.warning("following %s: now serving %s", self.alias_uri, target)
        return "swapped"
