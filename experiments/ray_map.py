"""Map a pure function over items on a Ray cluster: items go out in shards, results come back in order.

This is the plumbing shared by tournaments (``bcarena tournament --executor ray``: every pairing is a
pure call of :func:`bcarena.eval.tournament.play_pairing`) and the experiment executor
(``bcarena.experiments.ray_executor``). It lives in the eval layer because tournaments are the lowest
layer that needs it; it knows nothing about what it maps.

Ray is an optional extra (``pip install -e .[ray]``): it is imported only when a Ray map is made.
A shard is one Ray task that calls ``fn`` on each of its items in turn, so a 499,500-pairing
tournament is a few thousand tasks, not half a million (each Ray task costs ~1 ms of scheduling).
If the worker running a shard dies (killed, out of memory, node lost), Ray reruns the shard, up to
``max_retries`` times; exceptions raised by ``fn`` are *not* retried (they are bugs or bad input and
would fail again) and propagate to the caller.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from bcarena.envs.errors import BcarenaError

DEFAULT_MAX_RETRIES = 3


class RaySettingsError(BcarenaError, ValueError):
    """Ray settings that cannot work: a bad count, a local-only option with a cluster address, a relative path."""


class RayUnavailable(BcarenaError, RuntimeError):
    """Ray is not installed (it is the optional ``ray`` extra)."""


def import_ray():
    """The ``ray`` module, or a clear error naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise RayUnavailable(
            "the Ray executor needs Ray: pip install -e '.[ray]'  (or: pip install 'ray[tune]' optuna)"
        ) from None
    return ray


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to Ray once per process: ``address`` (``auto``, ``ray://host:10001``, ``host:6379``) joins an
    existing cluster; ``None`` starts a local instance with ``num_cpus`` CPUs (default: all cores).
    A Ray already initialised in this process (a test fixture, a notebook) is reused as is."""
    ray = import_ray()
    if ray.is_initialized():
        return
    if address is None:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    else:
        if num_cpus is not None:
            raise RaySettingsError("num_cpus is for a local Ray instance; a cluster's CPUs are set by `ray start`")
        ray.init(address=address, log_to_driver=False)


def cluster_cpus() -> int:
    """CPUs of the connected cluster (after :func:`init_ray`)."""
    return int(import_ray().cluster_resources().get("CPU", 0))


def _run_shard(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    return [fn(item) for item in items]


def shards(items: Sequence[Any], size: int) -> list[list[Any]]:
    """``items`` in consecutive chunks of ``size`` (the last may be shorter)."""
    if size < 1:
        raise ValueError(f"shard size must be >= 1, got {size}")
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def default_shard_size(num_items: int, workers: int, shards_per_worker: int = 4) -> int:
    """Enough shards to keep every worker busy (and balance uneven items), few enough to amortise
    the per-task overhead: ``ceil(items / (workers * shards_per_worker))``."""
    return max(1, math.ceil(num_items / max(1, workers * shards_per_worker)))


@dataclass
class RayMap:
    """A ``map``-like runner: ``RayMap(...)(fn, items)`` yields ``fn(item)`` for every item, in input order.

    ``fn`` and the items must be picklable (top-level functions, ``functools.partial`` of them, plain
    data). ``num_cpus``/``num_gpus`` are what each shard task reserves on its worker. ``shard_size``
    ``None`` picks :func:`default_shard_size` for the cluster's CPUs. Relative paths inside items are
    resolved by workers against their own working directory: on a cluster, pass absolute paths on
    storage every node mounts at the same place.
    """

    address: str | None = None
    num_cpus_local: int | None = None  # CPUs of the local instance started when address is None
    shard_size: int | None = None
    num_cpus: float = 1
    num_gpus: float = 0
    max_retries: int = DEFAULT_MAX_RETRIES

    def __call__(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        items = list(items)
        if not items:
            return iter(())
        init_ray(self.address, self.num_cpus_local)
        size = self.shard_size or default_shard_size(len(items), int(cluster_cpus() // max(self.num_cpus, 1e-9)))
        refs = submit(fn, shards(items, size), self.num_cpus, self.num_gpus, self.max_retries)
        return _in_order(refs)


def submit(
    fn: Callable[[Any], Any],
    chunks: list[list[Any]],
    num_cpus: float = 1,
    num_gpus: float = 0,
    max_retries: int = DEFAULT_MAX_RETRIES,
) -> list[Any]:
    """Start one Ray task per chunk (reserving ``num_cpus``/``num_gpus``); returns their object refs."""
    ray = import_ray()
    remote = ray.remote(_run_shard).options(
        num_cpus=num_cpus, num_gpus=num_gpus, max_retries=max_retries, retry_exceptions=False
    )
    fn_ref = ray.put(fn)  # shipped once, not once per shard
    return [remote.remote(fn_ref, chunk) for chunk in chunks]


def _in_order(refs: list[Any]) -> Iterator[Any]:
    ray = import_ray()
    for ref in refs:
        yield from ray.get(ref)
