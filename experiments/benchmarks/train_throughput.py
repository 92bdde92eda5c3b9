"""Benchmark: BC training samples/s for the MLP (state) and the CNN (stacked frames), and peak memory.

Run: ``python -m bcarena.experiments.benchmarks.train_throughput [--out FILE.json]``.
Each case trains on synthetic in-memory data with the trainer's own pieces (``SplitData.batch``
index batching, ``ScoreModel``, the CE loss, AdamW) and, as the baseline measured in the same
run, the same model fed by a ``torch.utils.data.DataLoader`` over a ``TensorDataset`` holding
the already-stacked inputs. Every case runs in a fresh process, so ``peak_rss_mb`` (the
process's maximum resident memory) and ``tracemalloc_peak_mb`` (Python/numpy allocations) are
that case's own.
"""

from __future__ import annotations

import multiprocessing as mp
import platform
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch
import typer

from bcarena.agents.data import SplitData, stack_rows
from bcarena.agents.losses import CrossEntropy
from bcarena.agents.policies import CNNPolicy, MLPPolicy, ScoreModel
from bcarena.envs.duel import NUM_ACTIONS, STATE_DIM
from bcarena.experiments.benchmarks import emit


def _data(policy: str, frames: int, frame_stack: int, episode_len: int = 300) -> SplitData:
    rng = np.random.default_rng(0)
    episodes = np.arange(frames) // episode_len
    labels = torch.as_tensor(rng.integers(0, NUM_ACTIONS, frames))
    if policy == "mlp":
        inputs = torch.as_tensor(rng.standard_normal((frames, STATE_DIM), dtype=np.float32))
        return SplitData("state", 1, inputs, None, labels, episodes, None)
    pixels = torch.as_tensor(rng.integers(0, 256, (frames, 84, 84), dtype=np.uint8))
    return SplitData(
        "pixels", frame_stack, pixels, torch.as_tensor(stack_rows(episodes, frame_stack)), labels, episodes, None
    )


def _model(policy: str, frame_stack: int) -> ScoreModel:
    torch.manual_seed(0)
    if policy == "mlp":
        return ScoreModel(MLPPolicy(STATE_DIM, NUM_ACTIONS, [256, 256]), torch.zeros(STATE_DIM), torch.ones(STATE_DIM))
    return ScoreModel(CNNPolicy(frame_stack, NUM_ACTIONS), torch.tensor(128.0), torch.tensor(64.0))


def run_case(
    policy: str, loader: str, frames: int, batch_size: int, min_seconds: float, frame_stack: int, threads: int
) -> dict:
    """Train for >= ``min_seconds`` (after one warm-up batch); samples/s and memory of this process."""
    torch.set_num_threads(threads)
    tracemalloc.start()
    data = _data(policy, frames, frame_stack)
    model = _model(policy, frame_stack)
    loss_fn = CrossEntropy()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    if loader == "index":

        def batches():
            while True:
                order = torch.randperm(len(data), generator=gen)
                for begin in range(0, len(order), batch_size):
                    idx = order[begin : begin + batch_size]
                    yield data.batch(idx), data.labels[idx]
    else:  # the baseline: DataLoader over materialized (stacked) inputs
        stacked = data.batch(torch.arange(len(data)))
        dataset = torch.utils.data.TensorDataset(stacked, data.labels)

        def batches():
            while True:
                yield from torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=gen)

    it = batches()
    samples, steps, start = 0, 0, None
    while start is None or time.perf_counter() - start < min_seconds or steps < 3:
        x, y = next(it)
        metrics = loss_fn(model.logits(x), y)
        opt.zero_grad(set_to_none=True)
        metrics.loss.backward()
        opt.step()
        if start is None:  # the first batch is warm-up
            start = time.perf_counter()
            continue
        samples += len(y)
        steps += 1
    elapsed = time.perf_counter() - start
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()  # tracing would slow down (and leak its peak into) whatever runs next in this process
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    return {
        "policy": policy,
        "loader": loader,
        "frames": frames,
        "batch_size": batch_size,
        "frame_stack": frame_stack if policy == "cnn" else 1,
        "threads": threads,
        "samples_per_s": samples / elapsed,
        "steps": steps,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20,
        "tracemalloc_peak_mb": traced_peak / 2**20,
    }


def _in_fresh_process(kwargs: dict) -> dict:
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(run_case, kwds=kwargs)


def run(
    mlp_frames: int = 200_000,
    cnn_frames: int = 4_000,
    min_seconds: float = 3.0,
    threads: int = 1,
    frame_stack: int = 4,
    mlp_batch: int = 512,
    cnn_batch: int = 64,
) -> dict:
    results: dict = {
        "benchmark": "train_throughput",
        "machine": {
            "python": platform.python_version(),
            "processor": platform.processor(),
            "torch": torch.__version__,
            "cpus": mp.cpu_count(),
        },
        "cases": [],
        "speedup_index_vs_dataloader": {},
    }
    for policy, frames, batch in (("mlp", mlp_frames, mlp_batch), ("cnn", cnn_frames, cnn_batch)):
        rates = {}
        for loader in ("index", "dataloader"):
            case = _in_fresh_process(
                {
                    "policy": policy,
                    "loader": loader,
                    "frames": frames,
                    "batch_size": batch,
                    "min_seconds": min_seconds,
                    "frame_stack": frame_stack,
                    "threads": threads,
                }
            )
            results["cases"].append(case)
            rates[loader] = case["samples_per_s"]
        results["speedup_index_vs_dataloader"][policy] = rates["index"] / rates["dataloader"]
    return results


def main(
    out: Path = typer.Option(None, help="also write the JSON here"),
    min_seconds: float = typer.Option(3.0, help="time each case at least this long"),
    threads: int = typer.Option(1, help="torch CPU threads"),
    mlp_frames: int = typer.Option(200_000, help="state rows held in memory"),
    cnn_frames: int = typer.Option(4_000, help="84x84 frames held in memory"),
) -> None:
    """Measure and print JSON: samples/s (index batching and the DataLoader baseline) and peak memory."""
    results = run(mlp_frames, cnn_frames, min_seconds, threads)
    emit(results, out)


if __name__ == "__main__":
    typer.run(main)
