"""Benchmark: the Ray executor against the local one, and what a 1,000-agent tournament costs.

Run: ``bcarena bench ray [--variants 8 --seeds 2] [--out FILE.json]`` (needs ``pip install -e .[ray]``).

1. **Parity**: one experiment (``variants`` x ``seeds`` trained MLP variants, each evaluated offline and
   in matches) runs with the local executor and with Ray on this machine, from the same recordings
   and dataset. Reported: both wall times, their ratio, and whether every agent's metrics are identical
   (the latency column, a wall-clock measurement, is left out of the comparison).
2. **Tournament cost**: seconds per pairing (``matches`` seeds from both sides) between trained agents,
   measured in this process, and the Ray tournament's wall time for the same pairings; then the
   estimate for ``agents`` players: ``pairings = n (n - 1) / 2`` (499,500 for 1,000) and
   ``T(W) = pairings x t_pairing / W + pairings x 2 x matches x t_rating``, where the last term is the
   OpenSkill update of every match outcome, done in order on the driver (the serial part, Amdahl).
"""

from __future__ import annotations

import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import typer
from rich.console import Console

from bcarena.experiments.benchmarks import emit

VARIANT_RECIPES = [  # trainer options of the parity experiment's variants, cycled
    {},
    {"loss": "weighted_ce", "class_weights": "inverse"},
    {"loss": "weighted_ce", "class_weights": "sqrt_inverse"},
    {"loss": "focal"},
    {"loss": "logit_adjusted"},
    {"sampler": "weighted"},
    {"event_weighting": {"events": ["skill_used"], "weight": 10.0}},
    {"loss": "weighted_ce", "class_weights": "effective_number", "effective_beta": 0.99},
]


def experiment_yaml(variants: int, seeds: int, episodes: int, epochs: int, matches: int) -> str:
    import yaml

    data = {
        "name": "ray-parity",
        "seed": 1,
        "game": {"round_seconds": 10.0},
        "recording": {"player": "pro", "opponents": ["brawler", "random"], "episodes": episodes},
        "variants": [
            {
                "name": f"v{i}",
                "train": {"epochs": epochs, "hidden": [64, 64], **VARIANT_RECIPES[i % len(VARIANT_RECIPES)]},
            }
            for i in range(variants)
        ],
        "seeds": list(range(seeds)),
        "evaluation": {"opponents": ["brawler"], "matches": matches},
        "tracking": {"mlflow": False},
    }
    return yaml.safe_dump(data, sort_keys=False)


def _metrics(run_dir: Path) -> dict:
    from bcarena.experiments.results import load_results

    return {
        a.agent_id: {"offline": a.offline, "online": a.online, "error": a.error} for a in load_results(run_dir).agents
    }


def parity(
    variants: int = 8,
    seeds: int = 2,
    episodes: int = 24,
    epochs: int = 3,
    matches: int = 100,
    num_cpus: int | None = None,
) -> dict:
    """Run the same experiment locally and on Ray (fresh agent caches, shared data); compare and time."""
    from bcarena.experiments.ray_executor import RayExecutor
    from bcarena.experiments.runner import ExperimentRunner, load

    quiet = Console(quiet=True)
    with tempfile.TemporaryDirectory(prefix="bcarena-ray-parity-") as tmp:
        root = Path(tmp)
        path = root / "parity.yaml"
        path.write_text(experiment_yaml(variants, seeds, episodes, epochs, matches))
        exp = load(path)
        data = ExperimentRunner(exp, root / "data", path, progress=False, console=quiet)
        data.run_dir.mkdir(parents=True)
        data.prepare_dataset()  # recordings and dataset, shared by both runs so only train + evaluate are timed
        roots = {}
        for name in ("local", "ray"):
            roots[name] = root / name
            for stage in ("recordings", "datasets"):
                shutil.copytree(root / "data" / ".cache" / stage, roots[name] / ".cache" / stage)
        start = time.perf_counter()
        local_dir = ExperimentRunner(exp, roots["local"], path, progress=False, console=quiet).run()
        local_s = time.perf_counter() - start
        executor = RayExecutor(num_cpus=num_cpus, progress=False)
        start = time.perf_counter()
        ray_dir = ExperimentRunner(exp, roots["ray"], path, progress=False, console=quiet, executor=executor).run()
        ray_s = time.perf_counter() - start  # includes starting the local Ray instance
        local, remote = _metrics(local_dir), _metrics(ray_dir)
        differing = sorted(k for k in local if local[k] != remote.get(k))
    from bcarena.experiments.ray_map import cluster_cpus

    return {
        "variants": variants,
        "seeds": seeds,
        "agents": variants * seeds,
        "episodes": episodes,
        "epochs": epochs,
        "matches_per_agent": matches,
        "ray_cpus": cluster_cpus(),
        "local_seconds": round(local_s, 2),
        "ray_seconds_including_startup": round(ray_s, 2),
        "ray_over_local": round(ray_s / local_s, 3),
        "identical_metrics": not differing and set(local) == set(remote),
        "differing_agents": differing,
        "failed_agents": sorted(k for k, v in local.items() if v["error"]),
    }


def tournament_cost(
    players: int = 4,
    matches: int = 50,
    agents: int = 1000,
    workers: tuple[int, ...] = (1, 2, 16, 64, 256, 1024),
    epochs: int = 2,
) -> dict:
    """Seconds per pairing of trained MLP agents (local), the Ray tournament on the same players, and the
    estimate for ``agents`` players on ``workers`` CPUs."""
    from openskill.models import PlackettLuce

    from bcarena.eval.matches import match_seeds
    from bcarena.eval.tournament import play_pairing, run_tournament
    from bcarena.experiments.ray_map import RayMap, cluster_cpus
    from bcarena.experiments.runner import ExperimentRunner, load

    with tempfile.TemporaryDirectory(prefix="bcarena-ray-tournament-") as tmp:
        root = Path(tmp)
        path = root / "players.yaml"
        path.write_text(experiment_yaml(players, 1, 12, epochs, 10))
        run_dir = ExperimentRunner(load(path), root / "runs", path, progress=False, console=Console(quiet=True)).run()
        specs = [a.agent_path for a in _agent_results(run_dir)]
        seeds = match_seeds(0, matches)
        play_pairing(0, 1, specs, seeds[:4])  # warm-up
        start = time.perf_counter()
        pairs = [(a, b) for a in range(len(specs)) for b in range(a + 1, len(specs))]
        for a, b in pairs:
            play_pairing(a, b, specs, seeds)
        per_pairing = (time.perf_counter() - start) / len(pairs)
        start = time.perf_counter()
        run_tournament(specs, matches, runner=RayMap(shard_size=1))
        ray_s = time.perf_counter() - start
        start = time.perf_counter()
        local = run_tournament(specs, matches)
        local_s = time.perf_counter() - start
    model = PlackettLuce()
    a, b = model.rating(), model.rating()
    start = time.perf_counter()
    for _ in range(2000):
        [[a], [b]] = model.rate([[a], [b]], ranks=[1, 2])
    per_update = (time.perf_counter() - start) / 2000
    pairings = agents * (agents - 1) // 2
    games = pairings * 2 * matches
    estimate = {
        str(w): {
            "hours": round((pairings * per_pairing / w + games * per_update) / 3600, 2),
            "rating_share": round(games * per_update / (pairings * per_pairing / w + games * per_update), 3),
        }
        for w in workers
    }
    return {
        "players_measured": len(specs),
        "pairings_measured": len(pairs),
        "matches_per_side": matches,
        "seconds_per_pairing": round(per_pairing, 4),
        "seconds_per_match": round(per_pairing / (2 * matches), 6),
        "local_tournament_seconds": round(local_s, 2),
        "ray_tournament_seconds": round(ray_s, 2),
        "ray_cpus": cluster_cpus(),
        "openskill_seconds_per_update": round(per_update, 7),
        "estimate": {
            "agents": agents,
            "pairings": pairings,
            "matches": games,
            "formula": "hours(W) = (pairings * seconds_per_pairing / W + matches * "
            "openskill_seconds_per_update) / 3600",
            "cpu_hours_of_matches": round(pairings * per_pairing / 3600, 1),
            "serial_rating_hours": round(games * per_update / 3600, 2),
            "by_workers": estimate,
        },
        "ratings_top": local.ratings[0].player,
    }


def _agent_results(run_dir: Path):
    from bcarena.experiments.results import load_results

    return [a for a in load_results(run_dir).agents if a.agent_path]


def run(
    variants: int = 8,
    seeds: int = 2,
    episodes: int = 24,
    epochs: int = 3,
    matches: int = 100,
    num_cpus: int | None = None,
    tournament_players: int = 4,
    tournament_matches: int = 50,
    torch_threads: int | None = 1,
) -> dict:
    import torch

    from bcarena.experiments.ray_map import import_ray

    if torch_threads:
        # Ray gives each 1-CPU worker one thread (OMP_NUM_THREADS=1); the driver gets the same, or on a busy
        # machine its spin-waiting OpenMP threads make local matches many times slower and the ratio meaningless.
        torch.set_num_threads(torch_threads)
    ray = import_ray()
    results = {
        "benchmark": "ray_scaling",
        "machine": {
            "python": platform.python_version(),
            "processor": platform.processor(),
            "ray": ray.__version__,
            "numpy": np.__version__,
            "torch_threads": torch.get_num_threads(),
        },
        "parity": parity(variants, seeds, episodes, epochs, matches, num_cpus),
        "tournament": tournament_cost(tournament_players, tournament_matches),
    }
    return results


def main(
    out: Path = typer.Option(None, help="also write the JSON here"),
    variants: int = typer.Option(8, min=1, help="variants of the parity experiment"),
    seeds: int = typer.Option(2, min=1, help="seeds per variant"),
    episodes: int = typer.Option(24, min=2, help="recorded episodes (dataset size)"),
    epochs: int = typer.Option(3, min=1, help="training epochs per agent"),
    matches: int = typer.Option(100, min=1, help="evaluation matches per agent"),
    num_cpus: int = typer.Option(None, min=1, help="CPUs of the local Ray instance (default: all)"),
    tournament_players: int = typer.Option(4, min=2, help="trained agents in the measured tournament"),
    tournament_matches: int = typer.Option(50, min=1, help="seeds per pairing (each from both sides)"),
    torch_threads: int = typer.Option(1, min=0, help="torch threads of this process (0: torch's default)"),
) -> None:
    """Measure and print JSON: local vs Ray executor (identical metrics, wall-time ratio), and the per-pairing
    cost behind the 1,000-agent tournament estimate."""
    results = run(
        variants,
        seeds,
        episodes,
        epochs,
        matches,
        num_cpus,
        tournament_players,
        tournament_matches,
        torch_threads or None,
    )
    emit(results, out)
