"""Benchmark: Duel vector env decisions/s, batched 84x84 rendering, and the SyncVectorEnv baseline.

Run: ``python -m bcarena.experiments.benchmarks.env_throughput [--out FILE.json]``.
The baseline (gymnasium's SyncVectorEnv over single ``DuelEnv``s, a Python loop per env) is
measured in the same run, so the ratio is meaningful on any machine.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import typer

from bcarena.envs.duel import NUM_ACTIONS, DuelCore, DuelEnv, DuelVectorEnv
from bcarena.envs.duel.render import gray_frames
from bcarena.experiments.benchmarks import emit


def rate(step: Callable[[], int], min_seconds: float, min_calls: int = 3) -> float:
    """Units per second of ``step`` (which returns the units it processed), timed for >= min_seconds."""
    step()  # warm-up
    done, calls, start = 0, 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < min_seconds:
        done += step()
        calls += 1
    return done / (time.perf_counter() - start)


def _stepper(env, num_envs: int, seed: int) -> Callable[[], int]:
    env.reset(seed=seed)
    actions = np.random.default_rng(seed).integers(0, NUM_ACTIONS, size=(64, num_envs))
    counter = iter(range(10**12))

    def step() -> int:
        env.step(actions[next(counter) % 64])
        return num_envs

    return step


def run(
    sizes: tuple[int, ...] = (1, 64, 1024, 4096),
    opponent: str = "pro",
    min_seconds: float = 2.0,
    render_batch: int = 1024,
) -> dict:
    results: dict = {
        "benchmark": "env_throughput",
        "opponent": opponent,
        "obs_type": "state",
        "machine": {"python": platform.python_version(), "processor": platform.processor(), "numpy": np.__version__},
        "vector_env": {},
        "sync_vector_env": {},
        "speedup": {},
    }
    for n in sizes:
        vec = DuelVectorEnv(n, opponent=opponent)
        results["vector_env"][str(n)] = rate(_stepper(vec, n, seed=0), min_seconds)
        sync = gym.vector.SyncVectorEnv(
            [lambda: DuelEnv(opponent=opponent) for _ in range(n)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
        )
        results["sync_vector_env"][str(n)] = rate(_stepper(sync, n, seed=0), min_seconds, min_calls=2)
        results["speedup"][str(n)] = results["vector_env"][str(n)] / results["sync_vector_env"][str(n)]
    core = DuelCore(render_batch)
    core.reset(np.arange(render_batch))
    results["render_gray84_frames_per_s"] = rate(lambda: gray_frames(core, 0).shape[0], min_seconds)
    results["render_batch"] = render_batch
    return results


def main(
    out: Path = typer.Option(None, help="also write the JSON here"),
    min_seconds: float = typer.Option(2.0, help="time each measurement at least this long"),
) -> None:
    """Measure and print JSON (decisions/s per N, speedup over SyncVectorEnv, frames/s)."""
    results = run(min_seconds=min_seconds)
    emit(results, out)


if __name__ == "__main__":
    typer.run(main)
