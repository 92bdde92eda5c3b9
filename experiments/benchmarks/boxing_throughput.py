"""Benchmark: ALE Boxing bouts/s, batched across emulator processes vs one bout at a time.

Run: ``bcarena bench boxing [--bouts 8] [--out FILE.json]``.

The RAM expert (``bcarena.envs.boxing.BoxingExpert``) boxes the console's CPU, through the one match
loop (``bcarena.envs.play.play``) in both cases:

* baseline: one ``BoxingBatch(1)`` emulator in this process, the bouts played one after another;
* batched: one ``BoxingBatch(bouts, workers=...)``: every bout in its own emulator worker process
  (gymnasium's ``AsyncVectorEnv``), the expert acting once per decision for the whole batch; and the
  same batch in this process (``SyncVectorEnv``), which isolates what batching alone gives.

The bouts are the same seeds in every case, and the JSON says whether their scores agree
(``identical_scores``): batching must not change a bout. Creating the worker processes is timed apart
(``startup_seconds``) and left out of the rates; ``--max-decisions`` cuts every bout short (for quick
checks; full bouts last up to 2 minutes of game time, 1,200 decisions at 10 FPS).
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import typer

from bcarena.envs.boxing import BoxingBatch, BoxingConfig, BoxingExpert
from bcarena.envs.play import play
from bcarena.experiments.benchmarks import emit


def _play_batch(match: BoxingBatch, seeds: np.ndarray, max_decisions: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Play ``seeds`` at once on ``match``: (scores (n, 2), decisions (n,)) of the bouts."""
    play(match, [BoxingExpert()], seeds, max_steps=max_decisions)
    n = len(seeds)
    return match.score[:n].copy(), match.decisions[:n].copy()


def one_at_a_time(seeds: np.ndarray, max_decisions: int | None) -> dict[str, Any]:
    """The baseline: a single emulator, the bouts one after another."""
    start = time.perf_counter()
    with BoxingBatch(1, pixels=False) as match:
        startup = time.perf_counter() - start
        start = time.perf_counter()
        played = [_play_batch(match, seeds[i : i + 1], max_decisions) for i in range(len(seeds))]
        seconds = time.perf_counter() - start
    scores = np.concatenate([s for s, _ in played])
    decisions = np.concatenate([d for _, d in played])
    return _rates(len(seeds), seconds, startup, scores, decisions, processes=1)


def batched(seeds: np.ndarray, max_decisions: int | None, processes: bool) -> dict[str, Any]:
    """All bouts at once: one emulator per bout, in worker processes (``processes``) or in this process."""
    start = time.perf_counter()
    with BoxingBatch(len(seeds), pixels=False, workers=len(seeds) if processes else 1) as match:
        startup = time.perf_counter() - start
        start = time.perf_counter()
        scores, decisions = _play_batch(match, seeds, max_decisions)
        seconds = time.perf_counter() - start
    return _rates(len(seeds), seconds, startup, scores, decisions, processes=len(seeds) if processes else 1)


def _rates(
    bouts: int, seconds: float, startup: float, scores: np.ndarray, decisions: np.ndarray, processes: int
) -> dict[str, Any]:
    return {
        "bouts": bouts,
        "emulator_processes": processes,
        "startup_seconds": startup,
        "seconds": seconds,
        "bouts_per_s": bouts / seconds,
        "decisions_per_s": float(decisions.sum()) / seconds,
        "emulator_frames_per_s": float(decisions.sum()) * BoxingConfig().frameskip / seconds,  # 60 Hz frames
        "mean_decisions": float(decisions.mean()),
        "expert_win_rate": float((scores[:, 0] > scores[:, 1]).mean()),
        "scores": scores.tolist(),
    }


def run(bouts: int = 8, max_decisions: int | None = None, seed: int = 0) -> dict[str, Any]:
    seeds = seed + np.arange(bouts)
    baseline = one_at_a_time(seeds, max_decisions)
    in_process = batched(seeds, max_decisions, processes=False)
    workers = batched(seeds, max_decisions, processes=True)
    return {
        "benchmark": "boxing_throughput",
        "machine": {"python": platform.python_version(), "processor": platform.processor(), "cpus": os.cpu_count()},
        "bouts": bouts,
        "max_decisions": max_decisions,
        "one_at_a_time": baseline,
        "batched_in_process": in_process,
        "batched_processes": workers,
        "speedup_processes_vs_one_at_a_time": workers["bouts_per_s"] / baseline["bouts_per_s"],
        "speedup_in_process_vs_one_at_a_time": in_process["bouts_per_s"] / baseline["bouts_per_s"],
        "identical_scores": baseline["scores"] == in_process["scores"] == workers["scores"],
    }


def main(
    out: Path = typer.Option(None, help="also write the JSON here"),
    bouts: int = typer.Option(8, min=1, max=256, help="bouts per case (the batched cases run one emulator per bout)"),
    max_decisions: int = typer.Option(0, min=0, help="cut every bout after this many decisions (0: full bouts)"),
    seed: int = typer.Option(0, min=0, help="first bout seed (bouts use seed, seed + 1, ...)"),
) -> None:
    """Measure and print JSON: Boxing bouts/s in emulator worker processes vs one bout at a time."""
    emit(run(bouts, max_decisions or None, seed), out)


if __name__ == "__main__":
    typer.run(main)
