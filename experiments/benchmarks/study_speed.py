"""Benchmark: agents trained per minute for a study, batched ensemble vs one at a time (ratio in one run).

Run: ``python -m bcarena.experiments.benchmarks.study_speed [--out FILE.json]`` (``bcarena bench study``).
Both sides train the same K small MLP BC agents (the gap study's recipes, cycled, seeds 0..K-1) on
the same dataset, loaded once: the baseline with ``train_bc`` one after another, the candidate with
``agents.ensemble.train_ensemble`` (all K at once). Wall time counts everything each side does
(data preparation, epochs, validation, the final agent), nothing written to disk. The JSON also
holds the largest weight difference between the two sides' agents (float rounding, see
``agents.ensemble``) and whether their greedy actions on the validation split agree.
"""

from __future__ import annotations

import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import typer

from bcarena.agents.config import make_train_config
from bcarena.agents.data import split_data
from bcarena.agents.ensemble import train_ensemble
from bcarena.agents.train import train_bc
from bcarena.envs.duel import DuelConfig
from bcarena.experiments.benchmarks import emit
from bcarena.recordings.converter import make_duel_dataset
from bcarena.recordings.dataset import ActionDataset

# The gap study's recipes (experiments/gap_study.yaml), without layout and schedule.
RECIPES = (
    {"loss": "ce"},
    {"loss": "weighted_ce", "class_weights": "inverse"},
    {"loss": "weighted_ce", "class_weights": "sqrt_inverse"},
    {"loss": "focal", "focal_gamma": 2.0},
    {"loss": "logit_adjusted", "logit_tau": 1.0},
    {"sampler": "oversample"},
    {"event_weighting": {"events": ["skill_used"], "before": 2, "after": 0, "weight": 20.0, "decay": 0.7}},
)


def _configs(agents: int, epochs: int, hidden: list[int]):
    return [
        make_train_config({**RECIPES[k % len(RECIPES)], "epochs": epochs, "hidden": hidden, "seed": k})
        for k in range(agents)
    ]


def measure(dataset: ActionDataset, agents: int, epochs: int, hidden: list[int]) -> dict:
    """Train ``agents`` agents both ways on ``dataset``; rates, their ratio and the agreement of the results."""
    configs = _configs(agents, epochs, hidden)
    start = time.perf_counter()
    alone = [train_bc(dataset, cfg, None, progress=False) for cfg in configs]
    one_at_a_time = time.perf_counter() - start
    start = time.perf_counter()
    batched = train_ensemble(dataset, configs, progress=False)
    ensemble = time.perf_counter() - start
    val = split_data(dataset, "val", "state", 1).inputs.numpy()
    diffs, same_actions = [], []
    for a, b in zip(alone, batched.results):
        sa, sb = a.agent.model.state_dict(), b.agent.model.state_dict()
        diffs.append(max(float((sa[k] - sb[k]).abs().max()) for k in sa))
        same_actions.append(float(np.mean(a.agent.act(val) == b.agent.act(val))))
    return {
        "agents": agents,
        "epochs": epochs,
        "hidden": hidden,
        "train_frames": int((dataset.table["split"] == "train").sum()),
        "one_at_a_time_s": one_at_a_time,
        "ensemble_s": ensemble,
        "agents_per_minute_one_at_a_time": agents * 60 / one_at_a_time,
        "agents_per_minute_ensemble": agents * 60 / ensemble,
        "speedup_ensemble_vs_one_at_a_time": one_at_a_time / ensemble,
        "max_weight_difference": max(diffs),
        "min_fraction_same_greedy_actions_on_val": min(same_actions),
        "errors": [e for e in batched.errors if e],
    }


def run(dataset: Path | None = None, agents: int = 14, epochs: int = 4, hidden: int = 64, episodes: int = 40) -> dict:
    """The benchmark on ``dataset`` (a dataset folder), or on ``episodes`` freshly recorded pro episodes."""
    torch.set_num_threads(1)  # as training does (agents.threads): small nets, a shared machine
    results = {
        "benchmark": "study_speed",
        "machine": {"python": platform.python_version(), "processor": platform.processor(), "torch": torch.__version__},
    }
    if dataset is not None:
        return results | measure(ActionDataset.load(dataset, pixels=False), agents, epochs, [hidden, hidden])
    with tempfile.TemporaryDirectory(prefix="bcarena-study-speed-") as tmp:
        built = make_duel_dataset(Path(tmp) / "data", episodes=episodes, seed=0, config=DuelConfig(), pixels=False)
        return results | measure(built, agents, epochs, [hidden, hidden]) | {"episodes": episodes}


def main(
    out: Path = typer.Option(None, help="also write the JSON here"),
    dataset: Path = typer.Option(None, help="an action dataset folder (default: record --episodes pro episodes)"),
    agents: int = typer.Option(14, min=1, help="agents trained each way"),
    epochs: int = typer.Option(4, min=1, help="epochs per agent"),
    hidden: int = typer.Option(64, min=1, help="width of the MLP's two hidden layers"),
    episodes: int = typer.Option(40, min=4, help="pro episodes recorded when no --dataset is given"),
) -> None:
    """Measure and print JSON: agents trained per minute, ensemble vs one at a time, and their agreement."""
    emit(run(dataset, agents, epochs, hidden, episodes), out)


if __name__ == "__main__":
    typer.run(main)
