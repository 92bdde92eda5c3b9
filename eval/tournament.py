"""Round-robin tournaments of any two-player game: every pair of players meets on the same seed list; OpenSkill ratings.

Players are one game's: its built-in players by name (Duel: bots and perturbed bots), agent folders,
Agents or server URLs. The game is ``game`` or the one the agents declare (Duel when none does);
agents of two games are refused, naming both. A game whose match plays the opponent itself (Boxing's
console CPU) has no two-player matches, so no tournament.

Each pairing is one pure function call, :func:`play_pairing` (player specs and seeds in, a small
JSON-able result out), so a scheduler can hand pairings to workers: pass any ``map``-like
``runner`` to :func:`run_tournament` (the default is the builtin ``map``, in this process); workers
find the game by name, so a game added with ``register_game`` plays in this process only (an
entry-point plugin plays anywhere it is installed).
Ratings are then computed from all outcomes in a fixed interleaved order, so they do not depend
on which worker finished first.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from openskill.models import PlackettLuce
from tqdm.auto import tqdm

from bcarena.envs.files import write_json
from bcarena.envs.games import Game, get_game
from bcarena.envs.play import Policy
from bcarena.eval.errors import EvalError
from bcarena.eval.matches import (
    BuiltInOpponent,
    display_names,
    game_of_players,
    match_seeds,
    play_matches_of_game,
    player_for_game,
)
from bcarena.eval.plots import figure, heatmap, save_figure
from bcarena.eval.stats import wilson_interval

PlayerSpec = str | Policy  # a built-in player's name, an agent folder or URL, or a Policy (in-process only)


@dataclass
class PairingResult:
    """All matches between players ``a`` and ``b`` (indices into the tournament's player list)."""

    a: int
    b: int
    matches: int
    wins_a: int
    draws: int
    wins_b: int
    outcomes: list[int]  # per match, in play order: +1 a won, 0 draw, -1 b won

    @classmethod
    def from_winners(cls, a: int, b: int, winner: np.ndarray) -> PairingResult:
        """From per-match winners as match results give them (0: ``a`` won, 1: ``b`` won, -1: draw)."""
        outcomes = np.where(winner == 0, 1, np.where(winner == 1, -1, 0))
        return cls(
            a=a,
            b=b,
            matches=int(outcomes.size),
            wins_a=int((outcomes == 1).sum()),
            draws=int((outcomes == 0).sum()),
            wins_b=int((outcomes == -1).sum()),
            outcomes=outcomes.tolist(),
        )

    @property
    def win_rate_a(self) -> float:
        return self.wins_a / self.matches

    @property
    def win_rate_b(self) -> float:
        return self.wins_b / self.matches


def play_pairing(
    a: int,
    b: int,
    players: list[PlayerSpec],
    seeds: np.ndarray,
    both_sides: bool = True,
    config: Any = None,
    batch_size: int | None = None,
    game: Game | str = "duel",
) -> PairingResult:
    """Play ``players[a]`` against ``players[b]`` of ``game`` on ``seeds`` (each seed from both sides if asked)."""
    game = get_game(game) if isinstance(game, str) else game
    agent_a, agent_b = _player(players[a], game, config), _player(players[b], game, config)
    results = [_winners(game, agent_a, agent_b, seeds, config, batch_size)]
    if both_sides:
        winner = _winners(game, agent_b, agent_a, seeds, config, batch_size)
        results.append(np.where(winner < 0, winner, 1 - winner))  # seen from agent_a again
    return PairingResult.from_winners(a, b, np.concatenate(results))


def _player(spec: PlayerSpec, game: Game, config: Any) -> Policy:
    """A checked player of ``game`` that acts on the loop (an opponent the match plays itself cannot)."""
    player = player_for_game(spec, game, config)
    if isinstance(player, BuiltInOpponent):
        raise EvalError(
            f"{player.name!r} is played by the {game.name} match itself; it cannot take part in a tournament"
        )
    return player


def _winners(
    game: Game, agent0: Policy, agent1: Policy, seeds: np.ndarray, config: Any, batch: int | None
) -> np.ndarray:
    """(N,) winners of ``agent0`` (side 0) against ``agent1``: 0, 1 or -1 for a draw; ``batch`` matches are
    stepped together (default: all of them, in any game)."""
    return play_matches_of_game(game, agent0, agent1, seeds, config, batch or seeds.size).winner


@dataclass
class Rating:
    """OpenSkill (Plackett-Luce) rating: skill ``mu`` with uncertainty ``sigma``; ``ordinal`` = mu - 3 sigma."""

    player: str
    mu: float
    sigma: float
    ordinal: float
    rank: int  # 1 = best by ordinal (a conservative estimate: skill the player has with ~99.7% belief)


@dataclass
class TournamentResult:
    """Round-robin results: pairings, the win-rate matrix and ratings. JSON via ``to_dict``."""

    players: list[str]
    matches_per_pairing: int
    seed: int
    both_sides: bool
    pairings: list[PairingResult]
    ratings: list[Rating]  # best first
    win_rate: list[list[float | None]] = field(default_factory=list)  # [row][col]: row's win rate vs col
    game: str = "duel"

    def to_dict(self) -> dict[str, Any]:
        pairings = []
        for p in self.pairings:
            lo, hi = wilson_interval(p.wins_a, p.matches)
            pairings.append(
                {
                    "a": self.players[p.a],
                    "b": self.players[p.b],
                    "matches": p.matches,
                    "wins_a": p.wins_a,
                    "draws": p.draws,
                    "wins_b": p.wins_b,
                    "win_rate_a": p.win_rate_a,
                    "win_rate_a_ci95": [lo, hi],
                }
            )
        return {
            "game": self.game,
            "players": self.players,
            "matches_per_pairing": self.matches_per_pairing,
            "seed": self.seed,
            "both_sides": self.both_sides,
            "rating_model": "openskill PlackettLuce (default mu=25, sigma=25/3)",
            "ratings": [asdict(r) for r in self.ratings],
            "win_rate": self.win_rate,
            "pairings": pairings,
        }

    def write(self, folder: str | os.PathLike) -> dict[str, Path]:
        """tournament.json, win_rate.png (heatmap) and ratings.png (mu +- 3 sigma) in ``folder``."""
        folder = Path(folder)
        paths = {"report": write_json(folder / "tournament.json", self.to_dict())}
        matrix = np.array([[np.nan if v is None else v for v in row] for row in self.win_rate])
        paths["win_rate_png"] = heatmap(
            matrix,
            self.players,
            self.players,
            folder / "win_rate.png",
            title=f"win rate of row vs column ({self.pairings[0].matches} matches)",
            colorbar_label="win rate",
            xlabel="opponent",
            ylabel="player",
        )
        fig, ax = figure((6.0, 0.8 + 0.45 * len(self.ratings)))
        names = [r.player for r in self.ratings][::-1]
        mus = np.array([r.mu for r in self.ratings][::-1])
        sigmas = np.array([r.sigma for r in self.ratings][::-1])
        ax.errorbar(mus, range(len(names)), xerr=3 * sigmas, fmt="o", capsize=4)
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("OpenSkill mu (bars: +-3 sigma)")
        ax.set_title("ratings")
        paths["ratings_png"] = save_figure(fig, folder / "ratings.png")
        return paths


def compute_ratings(players: list[str], pairings: list[PairingResult]) -> list[Rating]:
    """Rate every player from all outcomes, replayed round-robin style (match 1 of every pairing, then
    match 2, ...), so no pairing's matches all come last and the order is fixed."""
    model = PlackettLuce()
    ratings = [model.rating(name=name) for name in players]
    ranks = {1: [1, 2], 0: [1, 1], -1: [2, 1]}
    for round_ in itertools.zip_longest(*[p.outcomes for p in pairings]):
        for pairing, outcome in zip(pairings, round_):
            if outcome is None:
                continue
            [[ratings[pairing.a]], [ratings[pairing.b]]] = model.rate(
                [[ratings[pairing.a]], [ratings[pairing.b]]], ranks=ranks[outcome]
            )
    order = sorted(range(len(players)), key=lambda i: -ratings[i].ordinal())
    return [
        Rating(
            player=players[i],
            mu=float(ratings[i].mu),
            sigma=float(ratings[i].sigma),
            ordinal=float(ratings[i].ordinal()),
            rank=rank + 1,
        )
        for rank, i in enumerate(order)
    ]


def run_tournament(
    players: Sequence[PlayerSpec],
    matches: int = 200,
    seed: int = 0,
    both_sides: bool = True,
    config: Any = None,
    batch_size: int | None = None,
    progress: bool = False,
    runner: Callable[[Callable, Iterable], Iterable] = map,
    game: str | None = None,
) -> TournamentResult:
    """Round-robin between ``players`` of one game (see the module doc): each pair plays ``matches``
    seeds (``seed, seed + 1, ...``), twice with ``both_sides``. ``config`` is the game's config."""
    if len(players) < 2:
        raise EvalError(f"a tournament needs at least 2 players, got {len(players)}")
    specs = [str(p) if isinstance(p, Path) else p for p in players]
    repeated = sorted({s for s in specs if isinstance(s, str) and specs.count(s) > 1})
    if repeated:
        raise EvalError(f"player(s) listed more than once: {repeated}")
    played = game_of_players(specs, game)
    if played.num_players != 2:
        raise EvalError(
            f"game {played.name!r} plays each agent against its built-in opponent {list(played.opponents)}, "
            "never two players against each other: a tournament needs a two-player game"
        )
    seeds = match_seeds(seed, matches)
    agents = [_player(p, played, config) for p in specs]  # fail on a bad name before any match is played
    names = display_names(specs, agents)
    # In this process the loaded agents are reused; another runner (workers) gets the specs to load.
    job_players = agents if runner is map else specs
    pairs = list(itertools.combinations(range(len(specs)), 2))
    job = partial(
        _pairing_job,
        players=job_players,
        seeds=seeds,
        both_sides=both_sides,
        config=config,
        batch_size=batch_size,
        game=played.name,
    )
    pairings = sorted(
        tqdm(runner(job, pairs), total=len(pairs), desc="tournament", unit="pairing", disable=not progress),
        key=lambda p: (p.a, p.b),
    )  # whatever order workers finish in
    table: list[list[float | None]] = [[None] * len(specs) for _ in specs]
    for p in pairings:
        table[p.a][p.b], table[p.b][p.a] = p.win_rate_a, p.win_rate_b
    return TournamentResult(
        players=names,
        matches_per_pairing=int(pairings[0].matches),
        seed=seed,
        both_sides=both_sides,
        pairings=pairings,
        ratings=compute_ratings(names, pairings),
        win_rate=table,
        game=played.name,
    )


def _pairing_job(
    pair: tuple[int, int],
    players: list[PlayerSpec],
    seeds: np.ndarray,
    both_sides: bool,
    config: Any,
    batch_size: int | None,
    game: str,
) -> PairingResult:
    return play_pairing(pair[0], pair[1], players, seeds, both_sides, config, batch_size, game)
