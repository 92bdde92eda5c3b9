"""Benchmark: matches per second of batched evaluation vs a per-match loop, for an MLP and a CNN agent.

Run: ``python -m bcarena.experiments.benchmarks.match_throughput [--out FILE.json]``.

* batched: ``bcarena.eval.matches.play_matches`` — all matches of a batch on one Duel core, one
  ``act`` call per decision step for the whole batch (batch 256 and 1024);
* baseline: one gymnasium ``DuelEnv`` (bot inside), one match at a time, ``act`` on a batch of 1
  per step — how one would evaluate an agent without a batched core. Measured in the same run
  on fewer matches and reported per match, so the ratio holds on any machine.

Agents are loaded from ``--mlp-agent`` / ``--cnn-agent`` folders when given; otherwise freshly
initialised networks of the default architectures are used (throughput does not depend on the
weights, but match length does: the JSON says which was used and reports decisions/s too).
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import numpy as np
import torch
import typer

from bcarena.agents.base import Agent, load_agent
from bcarena.agents.policies import ScoreModel, build_policy
from bcarena.agents.torch_agent import TorchAgent
from bcarena.envs.duel import ACTION_NAMES, NUM_ACTIONS, SKILL_ACTIONS, STATE_DIM, DuelConfig, DuelEnv
from bcarena.eval.matches import check_agent, load_player, match_seeds, play_matches
from bcarena.experiments.benchmarks import emit


def untrained_agent(policy: str = "mlp", frame_stack: int = 4, seed: int = 0, state_dim: int = STATE_DIM) -> TorchAgent:
    """A freshly initialised TorchAgent with the default MLP (state) or CNN (pixels) architecture."""
    torch.manual_seed(seed)
    if policy == "mlp":
        net = build_policy("mlp", {"input_dim": state_dim * frame_stack, "num_actions": NUM_ACTIONS})
        mean, std = torch.zeros(state_dim * frame_stack), torch.ones(state_dim * frame_stack)
    else:
        net = build_policy(policy, {"frame_stack": frame_stack, "num_actions": NUM_ACTIONS})
        mean, std = torch.zeros(1), torch.full((1,), 255.0)
    return TorchAgent(
        ScoreModel(net, mean, std), list(ACTION_NAMES), list(SKILL_ACTIONS), frame_stack, name=f"untrained-{policy}"
    )


def per_match_loop(agent: Agent, opponent: str, seeds: np.ndarray, config: DuelConfig | None = None) -> int:
    """Play ``seeds`` one match at a time in a gymnasium DuelEnv; returns the decisions played."""
    env = DuelEnv(opponent=opponent, obs_type=agent.obs_type, config=config)
    decisions = 0
    for seed in seeds:
        obs, _ = env.reset(seed=int(seed))
        agent.reset(1)
        done = False
        while not done:
            action = int(agent.act(obs[None])[0])
            obs, _, done, _, _ = env.step(action)
            decisions += 1
    return decisions


def measure(
    agent: Agent, opponent: str, batch_sizes: tuple[int, ...], matches: int, loop_matches: int, seed: int = 0
) -> dict:
    """Seconds and matches/s of ``matches`` batched matches per batch size, and of the per-match loop."""
    check_agent(agent)
    rival = load_player(opponent)
    seeds = match_seeds(seed, matches)
    play_matches(agent, rival, seeds[:8])  # warm-up: torch kernels, caches
    out: dict = {
        "agent": agent.name,
        "obs_type": agent.obs_type,
        "opponent": opponent,
        "matches": matches,
        "batched": {},
    }
    for size in batch_sizes:
        start = time.perf_counter()
        results = play_matches(agent, rival, seeds, batch_size=size)
        seconds = time.perf_counter() - start
        out["batched"][str(size)] = {
            "seconds": seconds,
            "matches_per_s": matches / seconds,
            "decisions_per_s": float(results.length.sum()) / seconds,
            "mean_length": float(results.length.mean()),
            "win_rate": results.win_rate(0),
        }
    start = time.perf_counter()
    decisions = per_match_loop(agent, opponent, seeds[:loop_matches])
    seconds = time.perf_counter() - start
    out["per_match_loop"] = {
        "matches": loop_matches,
        "seconds": seconds,
        "matches_per_s": loop_matches / seconds,
        "decisions_per_s": decisions / seconds,
    }
    best = max(v["matches_per_s"] for v in out["batched"].values())
    out["speedup_vs_loop"] = {
        k: v["matches_per_s"] / out["per_match_loop"]["matches_per_s"] for k, v in out["batched"].items()
    }
    out["seconds_per_1000_matches"] = 1000 / best
    return out


def run(
    mlp_agent: Path | None = None,
    cnn_agent: Path | None = None,
    opponent: str = "brawler",
    matches: int = 1000,
    cnn_matches: int = 256,
    batch_sizes: tuple[int, ...] = (256, 1024),
    loop_matches: int = 20,
    cnn_loop_matches: int = 4,
    target_seconds: float = 5.0,
    target_speedup: float = 20.0,
    torch_threads: int | None = 1,
) -> dict:
    if torch_threads:
        # Batches of small nets gain little from intra-op threads, and on a shared machine OpenMP
        # threads that spin-wait for a busy core make each step many times slower.
        torch.set_num_threads(torch_threads)
    mlp = load_agent(mlp_agent) if mlp_agent else untrained_agent("mlp")
    cnn = load_agent(cnn_agent) if cnn_agent else untrained_agent("cnn")
    results: dict = {
        "benchmark": "match_throughput",
        "machine": {
            "python": platform.python_version(),
            "processor": platform.processor(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "numpy": np.__version__,
        },
        "weights": {
            "mlp": str(mlp_agent) if mlp_agent else "untrained (random init)",
            "cnn": str(cnn_agent) if cnn_agent else "untrained (random init)",
        },
        "mlp": measure(mlp, opponent, batch_sizes, matches, loop_matches),
        "cnn": measure(cnn, opponent, batch_sizes, cnn_matches, cnn_loop_matches),
    }
    mlp_res = results["mlp"]
    results["targets"] = {
        "mlp_1000_matches_seconds": mlp_res["seconds_per_1000_matches"],
        "mlp_1000_matches_within_target": mlp_res["seconds_per_1000_matches"] <= target_seconds,
        "mlp_speedup_vs_loop": max(mlp_res["speedup_vs_loop"].values()),
        "mlp_speedup_within_target": max(mlp_res["speedup_vs_loop"].values()) >= target_speedup,
        "target_seconds": target_seconds,
        "target_speedup": target_speedup,
    }
    return results


def main(
    out: Path = typer.Option(None, help="also write the JSON here"),
    mlp_agent: Path = typer.Option(None, help="MLP agent folder (default: an untrained MLP)"),
    cnn_agent: Path = typer.Option(None, help="CNN agent folder (default: an untrained CNN)"),
    opponent: str = typer.Option("brawler", help="bot the agents play against"),
    matches: int = typer.Option(1000, min=1, help="batched MLP matches per batch size"),
    cnn_matches: int = typer.Option(256, min=1, help="batched CNN matches per batch size"),
    loop_matches: int = typer.Option(20, min=1, help="MLP matches in the per-match loop baseline"),
    torch_threads: int = typer.Option(1, min=0, help="torch intra-op threads (0: leave torch's default)"),
) -> None:
    """Measure and print JSON: matches/s batched (256, 1024) vs the per-match loop, MLP and CNN agents."""
    results = run(
        mlp_agent,
        cnn_agent,
        opponent,
        matches,
        cnn_matches,
        loop_matches=loop_matches,
        torch_threads=torch_threads or None,
    )
    emit(results, out)


if __name__ == "__main__":
    typer.run(main)
