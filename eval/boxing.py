"""ALE Boxing: matches of an Agent against the console's built-in CPU, reported like Duel matches.

The game and its conventions come from ``bcarena.envs.boxing``: 10 decisions per second
(frameskip 6), no sticky actions, a seeded number of NOOPs before each bout (the usual Atari
evaluation protocol), 2 minutes or a KO at 100 points; the winner has more points. The agent
observes what the recordings store: ``pixels`` = ``agent_view`` of the screen, (B, 84, 84, 1)
uint8; ``state`` = ``ram_features`` (B, len(STATE_FEATURES)) float32.

Bouts run ``num_envs`` at a time on a :class:`~bcarena.envs.boxing.BoxingBatch` (a gymnasium
vector env; ``workers`` > 1: emulators in worker processes, which is how ALE uses several cores),
played by the one match loop: the agent acts once per step for the whole wave. The report is a
:class:`~bcarena.eval.matches.MatchReport` in which, as Boxing has no hit points, the HP columns
hold **points** (``hp_diff`` = own minus CPU points; ``damage_dealt`` = points scored,
``damage_taken`` = points conceded) and "skills" are punches (actions with FIRE).
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from bcarena.agents.base import Agent
from bcarena.envs.boxing import ACTION_NAMES, KO_SCORE, BoxingBatch, BoxingConfig
from bcarena.envs.play import Hook, Policy, Step, play
from bcarena.eval.errors import EvalError
from bcarena.eval.matches import MatchReport, MatchResults, match_seeds, summarize


def _check_boxing_agent(agent: Policy, names: list[str]) -> None:
    if agent.obs_type not in ("pixels", "state"):
        raise EvalError(f"agent {agent.name!r} observes {agent.obs_type!r}; Boxing offers 'pixels' or 'state'")
    if not isinstance(agent, Agent):  # a plain Policy (the scripted expert) declares no game
        return
    known = list(agent.action_names)
    if [n.upper() for n in known] != names:  # datasets spell the console's actions in lower case
        raise EvalError(
            f"agent {agent.name!r} was trained on actions {known[:8]}...; "
            f"Boxing's {len(names)} actions are {names[:8]}..."
        )
    if agent.game != "boxing":
        raise EvalError(f"agent {agent.name!r} declares game {agent.game!r}; Boxing bouts need a Boxing agent")


def evaluate_boxing(
    agent: Policy,
    num_matches: int,
    seed: int = 0,
    num_envs: int = 8,
    workers: int = 1,
    config: BoxingConfig | None = None,
    progress: bool = False,
) -> MatchReport:
    """``num_matches`` bouts of ``agent`` against the built-in CPU on seeds ``seed, seed + 1, ...``."""
    seeds = match_seeds(seed, num_matches)
    if num_envs < 1 or workers < 1:
        raise EvalError(f"num_envs and workers must be >= 1, got {num_envs} and {workers}")
    names = list(ACTION_NAMES)
    _check_boxing_agent(agent, names)
    size = min(num_envs, seeds.size)
    fire = np.array(["FIRE" in name for name in names])
    parts = []
    with (
        BoxingBatch(size, agent.obs_type == "pixels", config, workers) as match,
        tqdm(total=seeds.size, desc=f"{agent.name} vs Boxing CPU", unit="bout", disable=not progress) as bar,
    ):
        for start in range(0, seeds.size, size):
            wave = seeds[start : start + size]
            parts.append(_play_wave(agent, match, wave, fire))
            bar.update(wave.size)
    results = MatchResults.concat(parts)
    return summarize(
        results,
        agent.name,
        "boxing-cpu",
        seed,
        sides=[0],
        action_names=names,
        skill_actions=np.flatnonzero(fire).tolist(),
        decision_hz=(config or BoxingConfig()).fps,
    )


class _ActionCounts(Hook):
    """How often the agent chose each action, per bout, over the decisions each bout played."""

    def __init__(self, num_matches: int, num_actions: int) -> None:
        self.counts = np.zeros((num_matches, num_actions), dtype=np.int64)

    def on_step(self, step: Step) -> None:
        rows = np.flatnonzero(step.live)
        np.add.at(self.counts, (rows, step.actions[rows, 0]), 1)


def _play_wave(agent: Policy, match: BoxingBatch, seeds: np.ndarray, fire: np.ndarray) -> MatchResults:
    """One bout per seed (the wave may be smaller than the pool of emulators: the spare ones sit out)."""
    n = seeds.size
    counter = _ActionCounts(match.num_matches, match.num_actions)
    play(match, [agent], seeds, hooks=[counter])
    score, length, counts = match.score[:n].copy(), match.decisions[:n].copy(), counter.counts[:n]
    winner = np.where(score[:, 0] > score[:, 1], 0, np.where(score[:, 1] > score[:, 0], 1, -1))
    action_counts = np.zeros((n, 2, match.num_actions), dtype=np.int64)  # the CPU's inputs are not observable
    action_counts[:, 0] = counts
    return MatchResults(
        seeds=seeds,
        winner=winner.astype(np.int8),
        ko=np.any(score >= KO_SCORE, axis=1),
        hp=score.astype(np.float64),
        length=length,
        damage_dealt=score.astype(np.float64),
        skills_used=np.stack([(counts * fire).sum(axis=1), np.zeros(n, dtype=np.int64)], axis=1),
        action_counts=action_counts,
    )
