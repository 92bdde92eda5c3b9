"""Run an experiment's stages on Ray: ``bcarena run EXPERIMENT.yaml --executor ray [--address ADDR]``.

The runner hands its executor plain-data tasks (``runner.StageTask``) and the top-level
``runner.run_task``; each task builds or reuses one content-hashed cache folder. This executor turns
them into Ray tasks:

- **training** (one variant x seed): one Ray task each, reserving
  ``max(num_cpus_per_task, variant num_threads)`` CPUs and ``num_gpus_per_task`` GPUs. A variant
  declares its CPU need with the trainer's own ``num_threads`` option (``train: {num_threads: 4}``),
  so nothing new enters the experiment schema. The trainer computes on the CPU today; GPUs are
  reserved for scheduling (Ray sets ``CUDA_VISIBLE_DEVICES`` for the task).
- **evaluation** (one agent's offline metrics and matches): batched, several agents per Ray task
  (``eval_batch``; default: four batches per CPU of the cluster), since each is short.

Results are identical in content to the local executor: the same tasks write the same cache
entries, and the driver reads them back in task order. A worker that dies mid-task (killed, out of
memory, node lost) leaves at most a ``.partial`` temp folder in the cache; Ray reruns the task
(``max_retries``), which builds the entry from scratch. A task that fails with an error comes back as
``TaskOutcome(error=...)`` from ``run_task`` and is recorded in the run, not retried.

Where the run's files live: workers read the dataset and write agents and evaluations in the stage
cache (``<runs>/.cache``), so on a multi-node cluster ``--runs`` must be an absolute path on storage
every node mounts at the same place (NFS, a shared volume).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from bcarena.experiments.ray_map import (
    DEFAULT_MAX_RETRIES,
    RaySettingsError,
    cluster_cpus,
    default_shard_size,
    import_ray,
    init_ray,
    shards,
    submit,
)
from bcarena.experiments.runner import StageTask, TaskOutcome, variant_configs


@dataclasses.dataclass
class _Batch:
    positions: list[int]  # where each result goes in the output list
    ref: Any  # the Ray object ref of the shard's result list


class RayExecutor:
    """An executor (``name``, ``map(fn, tasks)``) that runs tasks as Ray tasks; results in input order.

    ``address``: ``None`` starts a local Ray instance (``num_cpus`` CPUs, default all cores);
    ``"auto"`` joins the cluster this machine belongs to; ``"ray://head:10001"`` connects a client.
    ``eval_batch``: evaluations per Ray task (``None``: four batches per cluster CPU).
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        num_cpus_per_task: float = 1,
        num_gpus_per_task: float = 0,
        max_retries: int = DEFAULT_MAX_RETRIES,
        num_cpus: int | None = None,
        eval_batch: int | None = None,
        progress: bool = True,
    ) -> None:
        if num_cpus_per_task <= 0 or num_gpus_per_task < 0 or max_retries < 0:
            raise RaySettingsError(
                f"need num_cpus_per_task > 0, num_gpus_per_task >= 0 and max_retries >= 0, got "
                f"{num_cpus_per_task}, {num_gpus_per_task}, {max_retries}"
            )
        if eval_batch is not None and eval_batch < 1:
            raise RaySettingsError(f"eval_batch must be >= 1, got {eval_batch}")
        self.address, self.num_cpus = address, num_cpus
        self.num_cpus_per_task, self.num_gpus_per_task = num_cpus_per_task, num_gpus_per_task
        self.max_retries, self.eval_batch, self.progress = max_retries, eval_batch, progress

    def train_resources(self, task: StageTask) -> tuple[float, float]:
        """(CPUs, GPUs) a training task reserves: its variant's torch threads, at least ``num_cpus_per_task``."""
        threads = max(cfg.num_threads for cfg in variant_configs(task.variant, task.seed).values())
        return max(float(self.num_cpus_per_task), float(threads)), float(self.num_gpus_per_task)

    def map(self, fn: Callable[[Any], Any], tasks: list[Any]) -> list[Any]:
        """``[fn(t) for t in tasks]``, computed on Ray."""
        if not tasks:
            return []
        init_ray(self.address, self.num_cpus)
        self._check_paths(tasks)
        results: list[Any] = [None] * len(tasks)
        batches = self._submit(fn, tasks, results)
        return self._gather(batches, tasks, results)

    def _submit(self, fn: Callable[[Any], Any], tasks: list[Any], results: list[Any]) -> list[_Batch]:
        """Start the Ray tasks; a training task the local instance can never schedule fails at once, in ``results``."""
        cpus = cluster_cpus()
        batches: list[_Batch] = []
        train = [i for i, t in enumerate(tasks) if isinstance(t, StageTask) and t.kind == "train"]
        for i in train:
            num_cpus, num_gpus = self.train_resources(tasks[i])
            if self.address is None and num_cpus > cpus:  # Ray would wait forever for a bigger node
                results[i] = TaskOutcome(
                    tasks[i].label,
                    None,
                    False,
                    0.0,
                    f"needs {num_cpus:g} CPUs (num_threads, num_cpus_per_task) but the local Ray "
                    f"instance has {cpus}; lower them or join a cluster with --address",
                )
                continue
            [ref] = submit(fn, [[tasks[i]]], num_cpus, num_gpus, self.max_retries)
            batches.append(_Batch([i], ref))
        rest = sorted(set(range(len(tasks))) - set(train))  # evaluations (and any other items)
        size = self.eval_batch or default_shard_size(len(rest), int(cpus))
        for chunk in shards(rest, size) if rest else []:
            [ref] = submit(fn, [[tasks[i] for i in chunk]], 1, 0, self.max_retries)
            batches.append(_Batch(chunk, ref))
        return batches

    def _gather(self, batches: list[_Batch], tasks: list[Any], results: list[Any]) -> list[Any]:
        ray = import_ray()
        by_ref = {batch.ref: batch for batch in batches}
        pending = list(by_ref)
        with tqdm(
            total=len(tasks),
            initial=len(tasks) - sum(len(b.positions) for b in batches),
            desc="ray tasks",
            unit="task",
            disable=not self.progress,
        ) as bar:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                batch = by_ref[done[0]]
                for position, result in zip(batch.positions, self._results(batch, tasks)):
                    results[position] = result
                bar.update(len(batch.positions))
        return results

    @staticmethod
    def _results(batch: _Batch, tasks: list[Any]) -> list[Any]:
        """The batch's results; a batch whose workers died more than ``max_retries`` times (or that could not be
        scheduled) becomes failed outcomes of its stage tasks, so one bad variant does not sink the run."""
        ray = import_ray()
        try:
            return ray.get(batch.ref)
        except ray.exceptions.RayError as exc:
            items = [tasks[i] for i in batch.positions]
            if not all(isinstance(t, StageTask) for t in items):
                raise
            error = f"Ray task lost after retries: {type(exc).__name__}: {str(exc).splitlines()[0]}"
            return [TaskOutcome(t.label, None, False, 0.0, error, str(exc)) for t in items]

    def _check_paths(self, tasks: list[Any]) -> None:
        if self.address is None:
            return  # a local instance's workers share this machine and working directory
        for task in tasks:
            if isinstance(task, StageTask) and not Path(task.cache_root).is_absolute():
                raise RaySettingsError(
                    f"on a Ray cluster the runs folder must be an absolute path on storage every node "
                    f"mounts (e.g. --runs /shared/runs), got the relative cache {task.cache_root!r}"
                )


__all__ = ["RayExecutor"]
