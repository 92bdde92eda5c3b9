"""Matches between two Agents on the batched Duel core: every match of a batch steps together.

Matches are played by the one match loop (:mod:`bcarena.envs.play`): one Python iteration per
decision step (at most ``config.max_decisions``), never per match; each agent gets the whole
batch's observations in one ``act`` call. Match seeds are explicit, so two agents evaluated on the
same seed list face the same start positions and the same bot randomness (the loop feeds bots
per-match noise from the seed, not from the batch).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from bcarena.agents.base import AGENT_FILE, Agent, BotAgent, load_agent, read_agent_spec
from bcarena.envs.duel import ACTION_NAMES, BOTS, NUM_ACTIONS, SKILL_ACTIONS, DuelConfig
from bcarena.envs.games import (
    Game,
    GameError,
    MatchOptions,
    check_agent_for_game,
    closing,
    get_game,
)
from bcarena.envs.play import DuelBatch, Hook, Policy, PolicyError, Step, play
from bcarena.eval.errors import EvalError
from bcarena.eval.perturbed import parse_perturbed
from bcarena.eval.stats import wilson_interval


@dataclass
class MatchResults:
    """Outcomes of N matches, seen from player 0 unless a field is per player (axis 1)."""

    seeds: np.ndarray  # (N,) match seeds
    winner: np.ndarray  # (N,) 0, 1 or -1 for a draw
    ko: np.ndarray  # (N,) bool, ended by knock-out
    hp: np.ndarray  # (N, 2) HP at the end
    length: np.ndarray  # (N,) decisions (10 FPS frames) played
    damage_dealt: np.ndarray  # (N, 2) HP removed from the opponent
    skills_used: np.ndarray  # (N, 2) skill presses the game accepted
    action_counts: np.ndarray  # (N, 2, NUM_ACTIONS) how often each action was chosen
    # (N,) which player the "player 0" columns really were (0 or 1); all player 0 when not given
    side: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int8))

    def __post_init__(self) -> None:
        if self.side.size == 0:
            self.side = np.zeros(self.seeds.shape[0], dtype=np.int8)

    @property
    def num_matches(self) -> int:
        return int(self.seeds.shape[0])

    @property
    def damage_taken(self) -> np.ndarray:
        """(N, 2) HP each player lost: in a duel, what the other one dealt."""
        return self.damage_dealt[:, ::-1]

    def win_rate(self, player: int = 0) -> float:
        return float(np.mean(self.winner == player))

    def swapped(self) -> MatchResults:
        """The same matches seen from player 1: per-player columns and winners swapped."""
        winner = np.where(self.winner < 0, self.winner, 1 - self.winner).astype(self.winner.dtype)
        return MatchResults(
            seeds=self.seeds,
            winner=winner,
            ko=self.ko,
            hp=self.hp[:, ::-1].copy(),
            length=self.length,
            damage_dealt=self.damage_dealt[:, ::-1].copy(),
            skills_used=self.skills_used[:, ::-1].copy(),
            action_counts=self.action_counts[:, ::-1].copy(),
            side=1 - self.side,
        )

    @staticmethod
    def concat(parts: list[MatchResults]) -> MatchResults:
        return MatchResults(
            **{
                f: np.concatenate([getattr(p, f) for p in parts])
                for f in (
                    "seeds",
                    "winner",
                    "ko",
                    "hp",
                    "length",
                    "damage_dealt",
                    "skills_used",
                    "action_counts",
                    "side",
                )
            }
        )


# ------------------------------------------------------------------------------------------ agents
def load_player(spec: str | Path | Agent, config: DuelConfig | None = None, seed: int = 0) -> Agent:
    """An Agent from a bot name (``pro``, ``brawler``, ...), a perturbed bot (``pro[skill_drop=0.9]``,
    see :mod:`bcarena.eval.perturbed`), an agent folder, or the URL of a ``bcarena serve`` server
    (played through the service); Agents pass through."""
    if isinstance(spec, Agent):
        return spec
    text = str(spec)
    if text.startswith(("http://", "https://")):
        from bcarena.eval.service.client import RemoteAgent

        return RemoteAgent(text)
    if text in BOTS:
        return BotAgent(text, seed=seed, config=config)
    perturbed = parse_perturbed(text, config, seed)
    if perturbed is not None:
        return perturbed
    if Path(text).is_dir():
        return load_agent(text)
    raise EvalError(
        f"unknown player {text!r}: not a bot name (one of {sorted(BOTS)}), not a perturbed bot "
        "like 'pro[skill_drop=0.9]', not an agent folder and not a server URL (http://...)"
    )


def declared_game(spec: str | Path | Policy) -> str | None:
    """The game an Agent or agent folder declares; None for anything else (names, URLs, plain policies)."""
    if isinstance(spec, Agent):
        return spec.game
    if isinstance(spec, (str, Path)) and (Path(spec) / AGENT_FILE).is_file():
        return str(read_agent_spec(spec).get("game", "duel"))
    return None


def game_of(spec: str | Path | Policy) -> str:
    """The game a player plays: an Agent's or agent folder's declared game; anything else is taken for Duel."""
    return declared_game(spec) or "duel"


def game_of_players(specs: Sequence[str | Path | Policy], game: str | None = None) -> Game:
    """The one game ``specs`` play together: ``game`` if given (its players are checked when loaded), else the
    game their agents declare, Duel when none does. Agents of two games are an EvalError naming both."""
    if game is not None:
        return get_game(game)
    declared: dict[str, str] = {}
    for spec in specs:
        name = declared_game(spec)
        if name is not None:
            declared.setdefault(name, spec.name if isinstance(spec, Agent) else str(spec))
    if len(declared) > 1:
        (a, first), (b, second) = list(declared.items())[:2]
        raise EvalError(f"players of two games: {first!r} plays {a!r}, {second!r} plays {b!r}; use one game's players")
    return get_game(next(iter(declared), "duel"))


def player_for_game(
    spec: str | Path | Policy, game: Game, config: Any = None, seed: int = 0
) -> Policy | BuiltInOpponent:
    """A player of ``game``, loaded and checked: Duel's as :func:`load_player` loads them (bots, perturbed bots,
    folders, URLs) and :func:`check_agent` checks them; another game's by :func:`game_player` and :func:`fits_game`.
    """
    if game.name == "duel" and isinstance(spec, (str, Path, Agent)):
        agent = load_player(spec, config, seed)
        check_agent(agent, config)
        return agent
    player = game_player(spec, game, config, seed)
    if not isinstance(player, BuiltInOpponent):
        fits_game(player, game)
    return player


def display_names(specs: Sequence[str | Path | Agent], agents: Sequence[Agent]) -> list[str]:
    """One name per player for tables: the agent's name, plus its spec where two players share a name."""
    names = [a.name for a in agents]
    return [
        f"{n} ({s if isinstance(s, (str, Path)) else i})" if names.count(n) > 1 else n
        for i, (n, s) in enumerate(zip(names, specs))
    ]


def check_agent(agent: Agent, config: DuelConfig | None = None) -> None:
    """Fail early, with the agent's name, if it cannot play Duel: wrong game, observation type or shape.

    The agent acts once on a real Duel observation of its declared type; whatever breaks (a network
    built for another input shape, actions outside the action set) is reported here rather than
    as a deep traceback in the middle of a batch.
    """
    name = agent.name
    fits_game(agent, get_game("duel"))
    if isinstance(agent, BotAgent):
        return
    match = DuelBatch(1, config)
    match.reset(np.zeros(1, dtype=np.int64))
    obs = match.observe(0, agent.obs_type)
    agent.reset(1)
    try:
        agent.act(obs)  # Agent.act checks what it returns (validate_actions)
    except PolicyError:  # the agent acted, and its answer is what is wrong: that message says so
        raise
    except Exception as exc:  # noqa: BLE001 - any failure here means "this agent does not fit Duel"
        raise EvalError(
            f"agent {name!r} cannot act on Duel {agent.obs_type} observations of shape "
            f"{obs.shape[1:]} (batch {obs.shape}): {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        agent.reset(1)


def fits_game(player: Policy, game: Game) -> None:
    """An EvalError unless ``player`` can play ``game``: an Agent's game and action names must be the game's
    exactly (:func:`bcarena.envs.games.check_agent_for_game`), and its observation kind one the game offers.
    A plain Policy (a game's built-in expert or bot) declares no game and is taken as it is."""
    if isinstance(player, Agent):
        try:
            check_agent_for_game(player.name, player.game, player.action_names, game)
        except GameError as exc:
            raise EvalError(str(exc)) from None
    if player.obs_type not in game.observation_spaces:
        raise EvalError(
            f"agent {player.name!r} observes {player.obs_type!r}; {game.name!r} offers {list(game.observation_spaces)}"
        )


# ----------------------------------------------------------------------------------------- playing
def match_seeds(seed: int, num_matches: int) -> np.ndarray:
    """The fixed seed list ``seed, seed + 1, ...``: every agent evaluated with it meets the same matches."""
    if num_matches < 1:
        raise EvalError(f"the number of matches must be >= 1, got {num_matches}")
    if seed < 0:
        raise EvalError(f"the seed must be >= 0, got {seed}")
    return np.arange(seed, seed + num_matches, dtype=np.int64)


class _Tally(Hook):
    """What :class:`MatchResults` needs beyond the final state, counted over the decisions each match played."""

    def __init__(self, n: int, bar: tqdm) -> None:
        self.bar = bar
        self.length = np.zeros(n, dtype=np.int64)
        self.skills = np.zeros((n, 2), dtype=np.int64)
        self.dealt = np.zeros((n, 2))
        self.counts = np.zeros(n * 2 * NUM_ACTIONS, dtype=np.int64)
        self.slot = np.arange(n * 2).reshape(n, 2) * NUM_ACTIONS  # (match, player) -> offset of its counts

    def on_step(self, step: Step) -> None:
        live = step.live
        self.counts += np.bincount((self.slot[live] + step.actions[live]).ravel(), minlength=self.counts.size)
        self.length += live
        self.skills += step.events.skill_started
        self.dealt += step.events.damage_dealt
        self.bar.update(1)


def _play_batch(
    agent0: Policy, agent1: Policy, seeds: np.ndarray, config: DuelConfig | None, bar: tqdm
) -> MatchResults:
    n = seeds.size
    match = DuelBatch(n, config)
    tally = _Tally(n, bar)
    steps = play(match, (agent0, agent1), seeds, hooks=[tally])
    bar.update(match.config.max_decisions - steps)
    core = match.core
    return MatchResults(
        seeds=seeds,
        winner=core.winner.copy(),
        ko=core.ko.copy(),
        hp=core.hp.copy(),
        length=tally.length,
        damage_dealt=tally.dealt,
        skills_used=tally.skills,
        action_counts=tally.counts.reshape(n, 2, NUM_ACTIONS),
    )


def play_matches(
    agent0: Policy,
    agent1: Policy,
    seeds: np.ndarray | list[int],
    config: DuelConfig | None = None,
    progress: bool = False,
    batch_size: int | None = None,
) -> MatchResults:
    """Play one match per seed between ``agent0`` (player 0) and ``agent1`` (player 1).

    Matches run ``batch_size`` at a time (default: all at once) on one batched core, through the one
    match loop (:func:`bcarena.envs.play.play`): each agent acts once per decision step for the whole
    batch. Any :class:`~bcarena.envs.play.Policy` plays; Agents are checked by ``check_agent``
    first where it matters (``evaluate_matches`` does). Results are in seed order.
    """
    seeds = np.asarray(seeds, dtype=np.int64).reshape(-1)
    if seeds.size == 0:
        raise EvalError("play_matches needs at least one seed (one match)")
    if batch_size is not None and batch_size < 1:
        raise EvalError(f"batch_size must be >= 1, got {batch_size}")
    size = seeds.size if batch_size is None else batch_size
    chunks = [seeds[i : i + size] for i in range(0, seeds.size, size)]
    max_steps = (config or DuelConfig()).max_decisions
    with tqdm(
        total=len(chunks) * max_steps,
        desc=f"{agent0.name} vs {agent1.name}",
        unit="step",
        disable=not progress,
        leave=False,
    ) as bar:
        return MatchResults.concat([_play_batch(agent0, agent1, chunk, config, bar) for chunk in chunks])


# --------------------------------------------------------------------------------------- reporting
@dataclass
class MatchReport:
    """Online results of one agent against one opponent, from the agent's side. JSON via ``to_dict``."""

    agent: str
    opponent: str
    matches: int
    seed: int  # first seed of the list seed, seed + 1, ...
    sides: list[int]  # the player slots the agent played (each seed once per side)
    wins: int
    draws: int
    losses: int
    win_rate: float
    win_rate_ci95: tuple[float, float]  # Wilson score interval
    draw_rate: float
    loss_rate: float
    hp_diff_mean: float  # HP, own minus opponent's at the end
    hp_diff_std: float
    damage_dealt_mean: float  # HP per match
    damage_taken_mean: float  # HP per match
    skill_use_rate: float  # fraction of the agent's decisions that were a skill action
    skills_started_per_match: float  # accepted skill presses per match
    ko_rate: float  # fraction of matches ending by knock-out (either side)
    ko_win_rate: float  # fraction of matches the agent won by knock-out
    length_mean_frames: float
    length_mean_seconds: float
    action_distribution: dict[str, float]  # fraction of the agent's decisions per action
    results: MatchResults | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("results")
        data["win_rate_ci95"] = list(self.win_rate_ci95)
        return data


def summarize(
    results: MatchResults,
    agent: str,
    opponent: str,
    seed: int,
    config: DuelConfig | None = None,
    sides: list[int] | None = None,
    action_names: list[str] | tuple[str, ...] = ACTION_NAMES,
    skill_actions: list[int] | tuple[int, ...] = SKILL_ACTIONS,
    decision_hz: float | None = None,
) -> MatchReport:
    """Aggregate ``results`` (agent = player 0 columns) into a :class:`MatchReport`.

    Other games pass their own ``action_names``, ``skill_actions`` and ``decision_hz``.
    """
    hz = decision_hz if decision_hz is not None else (config or DuelConfig()).decision_hz
    n = results.num_matches
    wins = int((results.winner == 0).sum())
    draws = int((results.winner < 0).sum())
    hp_diff = results.hp[:, 0] - results.hp[:, 1]
    own_counts = results.action_counts[:, 0].sum(axis=0)
    frames = max(int(own_counts.sum()), 1)
    return MatchReport(
        agent=agent,
        opponent=opponent,
        matches=n,
        seed=int(seed),
        sides=sorted(int(s) for s in np.unique(results.side)) if sides is None else sides,
        wins=wins,
        draws=draws,
        losses=n - wins - draws,
        win_rate=wins / n,
        win_rate_ci95=wilson_interval(wins, n),
        draw_rate=draws / n,
        loss_rate=(n - wins - draws) / n,
        hp_diff_mean=float(hp_diff.mean()),
        hp_diff_std=float(hp_diff.std()),
        damage_dealt_mean=float(results.damage_dealt[:, 0].mean()),
        damage_taken_mean=float(results.damage_taken[:, 0].mean()),
        skill_use_rate=float(own_counts[list(skill_actions)].sum() / frames),
        skills_started_per_match=float(results.skills_used[:, 0].mean()),
        ko_rate=float(results.ko.mean()),
        ko_win_rate=float((results.ko & (results.winner == 0)).mean()),
        length_mean_frames=float(results.length.mean()),
        length_mean_seconds=float(results.length.mean() / hz),
        action_distribution={name: float(c / frames) for name, c in zip(action_names, own_counts)},
        results=results,
    )


def evaluate_matches(
    agent: Agent | str,
    opponent: Agent | str,
    num_matches: int,
    seed: int = 0,
    both_sides: bool = False,
    config: DuelConfig | None = None,
    batch_size: int | None = None,
    progress: bool = False,
    game: str | None = None,
    workers: int = 1,
) -> MatchReport:
    """``num_matches`` matches of ``agent`` against ``opponent`` on seeds ``seed, seed + 1, ...``.

    With ``both_sides`` each seed is played twice, the agent once as player 0 and once as
    player 1, which cancels any advantage of a side (2 * num_matches matches in the report).
    ``game`` (default: the agent's) other than Duel goes to :func:`evaluate_game_matches`, with
    ``config`` that game's config and ``workers`` processes stepping its emulators.
    """
    game = game or game_of(agent)
    if game != "duel":
        if both_sides:
            raise EvalError(f"both_sides: {game} matches are played from side 0 only")
        return evaluate_game_matches(agent, opponent, num_matches, game, seed, config, batch_size, workers, progress)
    seeds = match_seeds(seed, num_matches)
    agent_obj, opponent_obj = load_player(agent, config), load_player(opponent, config, seed=seed + 1)
    for player in (agent_obj, opponent_obj):
        check_agent(player, config)
    parts = [play_matches(agent_obj, opponent_obj, seeds, config, progress, batch_size)]
    if both_sides:
        parts.append(play_matches(opponent_obj, agent_obj, seeds, config, progress, batch_size).swapped())
    return summarize(
        MatchResults.concat(parts), agent_obj.name, opponent_obj.name, seed, config, sides=[0, 1] if both_sides else [0]
    )


# ------------------------------------------------------------------------------------ any other game
@dataclass(frozen=True)
class BuiltInOpponent:
    """An opponent the match plays itself (Boxing's ``cpu``): nothing acts for it on the loop."""

    name: str
    obs_type: str = "console"


def game_player(spec: str | Path | Policy, game: Game, config: Any = None, seed: int = 0) -> Policy | BuiltInOpponent:
    """A player of ``game``: one of its built-in players by name, else whatever :func:`load_player` loads."""
    if isinstance(spec, str) and spec in game.players:
        policy = game.player(spec, config, seed)
        return BuiltInOpponent(spec) if policy is None else policy
    if isinstance(spec, (str, Path)) and str(spec) in BOTS:
        raise EvalError(f"{spec!r} is a Duel bot; game {game.name!r} has players {game.players} (or agent folders)")
    return load_player(spec, None, seed) if isinstance(spec, (str, Path)) else spec


class _GameTally(Hook):
    """Decisions, skills (the step's ``skill_used`` events) and action counts of each side, per match."""

    def __init__(self, n: int, num_actions: int) -> None:
        self.length = np.zeros(n, dtype=np.int64)
        self.skills = np.zeros((n, 2), dtype=np.int64)
        self.counts = np.zeros((n, 2, num_actions), dtype=np.int64)

    def on_step(self, step: Step) -> None:
        n = self.length.size
        live = step.live[:n]
        self.length += live
        self.skills += np.asarray(step.events["skill_used"])[:n] & live[:, None]
        rows = np.flatnonzero(live)
        for side in range(step.actions.shape[1]):
            np.add.at(self.counts[:, side], (rows, step.actions[rows, side]), 1)


def play_game_matches(
    game: Game,
    agent: Policy,
    opponent: Policy | BuiltInOpponent,
    seeds: np.ndarray,
    config: Any = None,
    batch_size: int | None = None,
    workers: int = 1,
    progress: bool = False,
) -> MatchResults:
    """One match per seed of ``agent`` (side 0) against ``opponent`` in any game but Duel, on the one loop.

    Matches run ``batch_size`` at a time (default 8) on one batched match; the score columns hold the
    game's score (Boxing: points), as ``hp`` and as ``damage_dealt``.
    """
    size = min(batch_size or 8, seeds.size)
    policies = [agent] if isinstance(opponent, BuiltInOpponent) else [agent, opponent]
    if len(policies) != game.num_players:
        raise EvalError(
            f"game {game.name!r} needs {'a built-in opponent' if game.num_players == 1 else 'an opponent policy'}; "
            f"{opponent.name!r} is not one (its players are {game.players})"
        )
    kinds = frozenset(p.obs_type for p in policies)
    parts = []
    with (
        closing(game.match(size, config, MatchOptions(kinds, workers=workers))) as match,
        tqdm(total=seeds.size, desc=f"{agent.name} vs {opponent.name}", unit="match", disable=not progress) as bar,
    ):
        for start in range(0, seeds.size, size):
            wave = seeds[start : start + size]
            tally = _GameTally(wave.size, game.num_actions)
            play(match, policies, wave, hooks=[tally])
            outcome = game.result(match)
            n = wave.size
            parts.append(
                MatchResults(
                    seeds=wave,
                    winner=outcome.winner[:n].astype(np.int8),
                    ko=outcome.ko[:n].copy(),
                    hp=outcome.score[:n].astype(np.float64),
                    length=tally.length,
                    damage_dealt=outcome.score[:n].astype(np.float64),
                    skills_used=tally.skills,
                    action_counts=tally.counts,
                )
            )
            bar.update(n)
    return MatchResults.concat(parts)


def play_matches_of_game(
    game: Game,
    agent: Policy,
    opponent: Policy | BuiltInOpponent,
    seeds: np.ndarray,
    config: Any = None,
    batch_size: int | None = None,
    progress: bool = False,
) -> MatchResults:
    """One match per seed of ``agent`` (side 0) against ``opponent`` in ``game``: Duel's by :func:`play_matches`
    (``batch_size`` default: all at once), any other game's by :func:`play_game_matches` (default 8 at a time)."""
    if game.name == "duel" and not isinstance(opponent, BuiltInOpponent):  # Duel's players all act on the loop
        return play_matches(agent, opponent, seeds, config, progress, batch_size)
    return play_game_matches(game, agent, opponent, seeds, config, batch_size, progress=progress)


def evaluate_game_matches(
    agent: Policy | str,
    opponent: Policy | str,
    num_matches: int,
    game: Game | str,
    seed: int = 0,
    config: Any = None,
    batch_size: int | None = None,
    workers: int = 1,
    progress: bool = False,
) -> MatchReport:
    """``num_matches`` matches of ``agent`` against ``opponent`` (a built-in player's name, e.g. Boxing's
    ``cpu``, an agent folder or a Policy) in ``game``, on seeds ``seed, seed + 1, ...``."""
    game = get_game(game) if isinstance(game, str) else game
    seeds = match_seeds(seed, num_matches)
    config = game.make_config({}) if config is None else config
    me = game_player(agent, game, config, seed)
    if isinstance(me, BuiltInOpponent):
        raise EvalError(f"{me.name!r} is played by the {game.name} match itself; it cannot be the evaluated agent")
    rival = game_player(opponent, game, config, seed + 1)
    for player in (me, rival):
        if not isinstance(player, BuiltInOpponent):
            fits_game(player, game)
    results = play_game_matches(game, me, rival, seeds, config, batch_size, workers, progress)
    return summarize(
        results,
        me.name,
        rival.name,
        seed,
        sides=[0],
        action_names=game.action_names,
        skill_actions=game.skill_actions,
        decision_hz=game.timing(config)[0],
    )
