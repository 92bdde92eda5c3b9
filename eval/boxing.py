"""ALE Boxing: bouts of an agent against the console's built-in CPU, a thin alias of the generic game matches.

The game and its conventions come from ``bcarena.envs.boxing`` (its :class:`~bcarena.envs.games.Game`):
10 decisions per second (frameskip 6), no sticky actions, a seeded number of NOOPs before each bout
(the usual Atari evaluation protocol), 2 minutes or a KO at 100 points; the winner has more points.
Bouts are played by :func:`bcarena.eval.matches.evaluate_game_matches` like any game's matches; in
its :class:`~bcarena.eval.matches.MatchReport` the HP columns hold **points** (``hp_diff`` = own
minus CPU points; ``damage_dealt`` = points scored, ``damage_taken`` = points conceded) and
"skills" are punches (actions with FIRE).
"""

from __future__ import annotations

from bcarena.envs.boxing import BoxingConfig
from bcarena.envs.play import Policy
from bcarena.eval.errors import EvalError
from bcarena.eval.matches import MatchReport, evaluate_game_matches


def evaluate_boxing(
    agent: Policy | str,
    num_matches: int,
    seed: int = 0,
    num_envs: int = 8,
    workers: int = 1,
    config: BoxingConfig | None = None,
    progress: bool = False,
) -> MatchReport:
    """``num_matches`` bouts of ``agent`` against the built-in CPU on seeds ``seed, seed + 1, ...``,
    ``num_envs`` emulators at a time stepped by ``workers`` processes."""
    if num_envs < 1 or workers < 1:
        raise EvalError(f"num_envs and workers must be >= 1, got {num_envs} and {workers}")
    return evaluate_game_matches(agent, "cpu", num_matches, "boxing", seed, config, num_envs, workers, progress)
