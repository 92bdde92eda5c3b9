"""Benchmark: recordings -> action dataset throughput, in frames/s and as a multiple of real time.

Run: ``python -m bcarena.experiments.benchmarks.dataset_build [--episodes 50] [--out FILE.json]``.
Records ``episodes`` pro-vs-mixed Duel episodes (no people video), then times ``build_dataset``
on them: with pixels on all worker threads (the default), with pixels on one thread (the
baseline, measured in the same run), and without pixels. Real time is 10 FPS, so
``x_real_time = frames_per_s / 10``; the target is >= 300x for Duel.
"""

from __future__ import annotations

import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import typer

from bcarena.experiments.benchmarks import emit
from bcarena.recordings import RecordOptions, build_dataset, record_duel
from bcarena.recordings.episode import find_episodes

TARGET_X_REAL_TIME = 300.0


def _time_build(recordings: Path, out: Path, repeats: int, **kwargs) -> float:
    """Best (fastest) wall-clock seconds over ``repeats`` builds."""
    best = float("inf")
    for _ in range(repeats):
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        build_dataset(recordings, out, progress=False, **kwargs)
        best = min(best, time.perf_counter() - start)
    shutil.rmtree(out, ignore_errors=True)
    return best


def run(episodes: int = 50, repeats: int = 3, seed: int = 0) -> dict:
    with tempfile.TemporaryDirectory(prefix="bcarena-bench-") as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        record_duel(
            "pro",
            ("brawler", "turtle", "random", "pro"),
            episodes,
            tmp / "rec",
            seed,
            options=RecordOptions(video=False, progress=False),
        )
        record_s = time.perf_counter() - start
        frames = sum(json.loads((p / "meta.json").read_text())["num_frames"] for p in find_episodes(tmp / "rec"))
        timings = {
            "pixels_threads": _time_build(tmp / "rec", tmp / "ds", repeats),
            "pixels_one_thread": _time_build(tmp / "rec", tmp / "ds", repeats, workers=1),
            "state_only": _time_build(tmp / "rec", tmp / "ds", repeats, pixels=False),
        }
    fps = {name: frames / seconds for name, seconds in timings.items()}
    return {
        "benchmark": "dataset_build",
        "game": "duel",
        "episodes": episodes,
        "frames": frames,
        "real_time_fps": 10.0,
        "machine": {"python": platform.python_version(), "processor": platform.processor(), "numpy": np.__version__},
        "record_frames_per_s": frames / record_s,
        "build_seconds": timings,
        "build_frames_per_s": fps,
        "x_real_time": {name: rate / 10.0 for name, rate in fps.items()},
        "speedup_threads_vs_one_thread": timings["pixels_one_thread"] / timings["pixels_threads"],
        "target_x_real_time": TARGET_X_REAL_TIME,
        "meets_target": fps["pixels_threads"] / 10.0 >= TARGET_X_REAL_TIME,
    }


def main(
    episodes: int = typer.Option(50, min=1, help="Duel episodes to record and convert"),
    repeats: int = typer.Option(3, min=1, help="builds per setting (the fastest counts)"),
    out: Path = typer.Option(None, help="also write the JSON here"),
) -> None:
    """Measure dataset build throughput and print JSON."""
    results = run(episodes, repeats)
    emit(results, out)


if __name__ == "__main__":
    typer.run(main)
