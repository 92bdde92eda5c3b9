"""Benchmark: the A/B test's false positives (two copies of one agent) and, optionally, a better challenger's H1.

Run: ``bcarena bench ab AGENT [--better AGENT2] [--runs 20] [--max-matches 400] [--round-seconds 8] [--out F.json]``.

Null runs: AGENT samples its actions (``mode: sample``); the challenger is the same agent whose sampling noise is
shifted by a constant (``ShiftedNoise``), i.e. an independent copy of equal strength. Greedy or same-noise copies
would play every pair of games as mirror images (the pair always scores 1/2), which tests nothing. Each run starts
at its own seed range (run * 100,000). A run that reaches H1 is a false positive; the SPRT bounds it by alpha
(plus the budget truncation). ``--better``: AGENT2 against ``--champion`` (default AGENT, greedy) until a
decision, same settings.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import typer

from bcarena.agents import load_agent
from bcarena.agents.base import Agent
from bcarena.agents.selection import Selection
from bcarena.envs.duel import DuelConfig
from bcarena.envs.play import NoisyPolicy
from bcarena.eval.service.ab import SprtSettings, run_ab
from bcarena.experiments.benchmarks import emit

GOLDEN = 0.6180339887498949  # an irrational shift keeps the shifted noise uniform and unrelated to the original


class ShiftedNoise(Agent):
    """``agent`` fed the match's noise shifted by ``k * GOLDEN`` (mod 1): the same policy, other dice."""

    def __init__(self, agent: Agent, k: int = 1) -> None:
        self.agent, self.shift = agent, (k * GOLDEN) % 1.0
        self.name, self.game, self.obs_type = f"{agent.name}~{k}", agent.game, agent.obs_type
        self.action_names = list(agent.action_names)
        self.noise_dims = agent.noise_dims if isinstance(agent, NoisyPolicy) else 0

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return self.agent.obs_shape

    def reset(self, batch_size: int) -> None:
        self.agent.reset(batch_size)

    def _act(self, obs: np.ndarray) -> np.ndarray:
        return self.agent.act(obs)

    def act_with_noise(self, obs: np.ndarray, noise: np.ndarray) -> np.ndarray:
        return self.agent.act_with_noise(obs, (noise + self.shift) % 1.0)


def null_runs(agent: Agent, runs: int, settings: SprtSettings, config: DuelConfig) -> dict[str, Any]:
    """``runs`` A/B tests of ``agent`` against its shifted-noise copy on disjoint seed ranges."""
    rows = []
    for run in range(runs):
        start = time.perf_counter()
        result = run_ab(agent, ShiftedNoise(agent), settings, seed=run * 100_000, config=config).to_dict()
        rows.append(
            {
                "seed": run * 100_000,
                "decision": result["decision"],
                "matches": result["matches"],
                "llr": result["llr"],
                "elo": result["elo"],
                "seconds": time.perf_counter() - start,
            }
        )
    decisions = [r["decision"] for r in rows]
    return {
        "runs": rows,
        "false_positives": decisions.count("H1"),
        "H0": decisions.count("H0"),
        "undecided": decisions.count("undecided"),
    }


def main(
    agent: Path = typer.Argument(..., exists=True, file_okay=False, help="agent folder (a torch agent)"),
    better: Path = typer.Option(None, exists=True, file_okay=False, help="a clearly better challenger"),
    champion: Path = typer.Option(None, exists=True, file_okay=False, help="the champion --better meets (AGENT)"),
    runs: int = typer.Option(20, min=1, help="null A/B runs (each on its own seed range)"),
    max_matches: int = typer.Option(400, min=2, help="match budget per run"),
    batch: int = typer.Option(100, min=2, help="games per SPRT update"),
    model: str = typer.Option("pentanomial", help="pentanomial | trinomial"),
    round_seconds: float = typer.Option(8.0, min=1.0, help="Duel round length (the default game: 30 s)"),
    out: Path = typer.Option(None, help="also write the JSON here"),
) -> None:
    """Measure and print JSON: false positives of the SPRT over null runs, and the matches a better agent needs."""
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    config = DuelConfig(round_seconds=round_seconds)
    settings = SprtSettings(model=model, max_matches=max_matches, batch=batch)
    base = load_agent(agent)
    sampler = base.with_selection(Selection(mode="sample"), name=f"{base.name}-sample")
    results: dict[str, Any] = {
        "benchmark": "ab_null",
        "agent": str(agent),
        "settings": {"max_matches": max_matches, "batch": batch, "model": model, "round_seconds": round_seconds},
        "null": null_runs(sampler, runs, settings, config),
    }
    if better is not None:
        start = time.perf_counter()
        full = SprtSettings(model=model, max_matches=max(max_matches, 2000), batch=batch)
        held = load_agent(champion) if champion is not None else base
        found = run_ab(held, load_agent(better), full, seed=0, config=config).to_dict()
        found.pop("trace")
        results["better"] = {**found, "seconds": time.perf_counter() - start}
    results["loadavg_before"], results["loadavg_after"] = load_before, os.getloadavg()
    emit(results, out)


if __name__ == "__main__":
    typer.run(main)
