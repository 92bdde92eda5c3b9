"""Matches between two Agents on the batched Duel core: every match of a batch steps together.

One Python iteration per decision step (at most ``config.max_decisions``), never per match:
each agent gets the whole batch's observations in one ``act`` call. Match seeds are explicit, so
two agents evaluated on the same seed list face the same start positions and the same bot
randomness (bots draw per-match noise from the seed, not from the batch).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from bcarena.agents.base import Agent, BotAgent, load_agent
from bcarena.envs.duel import ACTION_NAMES, BOTS, NUM_ACTIONS, SKILL_ACTIONS, DuelConfig, DuelMatch, bot_noise
from bcarena.envs.duel.env import OBS_TYPES
from bcarena.envs.duel.render import GRAY_SIZE, gray_frames
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
    side: np.ndarray | None = None  # (N,) which player the "player 0" columns really were (0 or 1)

    def __post_init__(self) -> None:
        if self.side is None:
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

    def swapped(self) -> "MatchResults":
        """The same matches seen from player 1: per-player columns and winners swapped."""
        winner = np.where(self.winner < 0, self.winner, 1 - self.winner).astype(self.winner.dtype)
        return MatchResults(seeds=self.seeds, winner=winner, ko=self.ko, hp=self.hp[:, ::-1].copy(),
                            length=self.length, damage_dealt=self.damage_dealt[:, ::-1].copy(),
                            skills_used=self.skills_used[:, ::-1].copy(),
                            action_counts=self.action_counts[:, ::-1].copy(), side=1 - self.side)

    @staticmethod
    def concat(parts: list["MatchResults"]) -> "MatchResults":
        return MatchResults(**{f: np.concatenate([getattr(p, f) for p in parts]) for f in (
            "seeds", "winner", "ko", "hp", "length", "damage_dealt", "skills_used", "action_counts", "side")})


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
    raise EvalError(f"unknown player {text!r}: not a bot name (one of {sorted(BOTS)}), not a perturbed bot "
                    "like 'pro[skill_drop=0.9]', not an agent folder and not a server URL (http://...)")


def display_names(specs: list[str | Path | Agent], agents: list[Agent]) -> list[str]:
    """One name per player for tables: the agent's name, plus its spec where two players share a name."""
    names = [a.name for a in agents]
    return [f"{n} ({s if isinstance(s, (str, Path)) else i})" if names.count(n) > 1 else n
            for i, (n, s) in enumerate(zip(names, specs))]


def check_agent(agent: Agent, config: DuelConfig | None = None) -> None:
    """Fail early, with the agent's name, if it cannot play Duel: wrong game, observation type or shape.

    The agent acts once on a real Duel observation of its declared type; whatever breaks (a network
    built for another input shape, actions outside the action set) is reported here rather than
    as a deep traceback in the middle of a batch.
    """
    name = getattr(agent, "name", type(agent).__name__)
    game = getattr(agent, "game", "duel")
    if game not in (None, "duel"):
        raise EvalError(f"agent {name!r} was trained on game {game!r}; Duel matches need a Duel agent")
    if agent.obs_type not in OBS_TYPES:
        raise EvalError(f"agent {name!r} observes {agent.obs_type!r}; Duel offers {list(OBS_TYPES)}")
    actions_known = getattr(agent, "action_names", None)
    if actions_known is not None and list(actions_known) != list(ACTION_NAMES):
        raise EvalError(f"agent {name!r} was trained on actions {list(actions_known)}; Duel's are {list(ACTION_NAMES)}")
    if isinstance(agent, BotAgent):
        return
    match = DuelMatch(1, config, obs_type=agent.obs_type)
    obs = match.reset([0])[:, 0]
    agent.reset(1)
    try:
        actions = agent.act(obs)
    except Exception as exc:  # noqa: BLE001 - any failure here means "this agent does not fit Duel"
        raise EvalError(f"agent {name!r} cannot act on Duel {agent.obs_type} observations of shape "
                        f"{obs.shape[1:]} (batch {obs.shape}): {type(exc).__name__}: {exc}") from exc
    finally:
        agent.reset(1)
    _check_actions(agent, actions, 1)


def _check_actions(agent: Agent, actions: Any, n: int) -> np.ndarray:
    arr = np.asarray(actions)
    if arr.shape != (n,) or not np.issubdtype(arr.dtype, np.integer):
        raise EvalError(f"agent {agent.name!r}: act() must return ({n},) integer action ids, "
                        f"got {arr.dtype} {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() >= NUM_ACTIONS):
        raise EvalError(f"agent {agent.name!r}: actions must be in [0, {NUM_ACTIONS}), got {np.unique(arr)[:8]}")
    return arr


def policy_actions(agent: Agent, match: DuelMatch, obs: np.ndarray, player: int) -> np.ndarray:
    """Actions (N,) of ``agent`` playing ``player`` given both players' observations ``obs`` (N, 2, ...)."""
    return own_actions(agent, match, obs[:, player], player)


def own_actions(agent: Agent, match: DuelMatch, own_obs: np.ndarray, player: int) -> np.ndarray:
    """Actions (N,) of ``agent`` playing ``player`` given its own observations (N, ...).

    Bots get the match's own noise streams, so a match plays the same in any batch.
    """
    if isinstance(agent, BotAgent):
        return agent.bot.act(own_obs, bot_noise(match.core, player, agent.bot.noise_dims))
    return _check_actions(agent, agent.act(own_obs), own_obs.shape[0])


# ----------------------------------------------------------------------------------------- playing
def match_seeds(seed: int, num_matches: int) -> np.ndarray:
    """The fixed seed list ``seed, seed + 1, ...``: every agent evaluated with it meets the same matches."""
    if num_matches < 1:
        raise EvalError(f"the number of matches must be >= 1, got {num_matches}")
    if seed < 0:
        raise EvalError(f"the seed must be >= 0, got {seed}")
    return np.arange(seed, seed + num_matches, dtype=np.int64)


class _Views:
    """What each player observes, refreshed after every step.

    State vectors come from the match (cheap, all rows). Pixels are drawn only for the players
    that need them and only for matches still running: a finished match's last frame is kept,
    since its actions are ignored anyway, so rendering cost shrinks as matches end.
    """

    def __init__(self, match: DuelMatch, agents: tuple[Agent, Agent]) -> None:
        self.match = match
        self.pixel_players = [p for p, a in enumerate(agents) if a.obs_type == "pixels"]
        n = match.num_matches
        self.pixels = {p: np.empty((n, GRAY_SIZE, GRAY_SIZE, 1), dtype=np.uint8) for p in self.pixel_players}
        self.update(np.arange(n))

    def update(self, rows: np.ndarray) -> None:
        for p in self.pixel_players:
            if rows.size:
                self.pixels[p][rows, ..., 0] = gray_frames(self.match.core, p, rows)

    def of(self, agent: Agent, player: int, state: np.ndarray) -> np.ndarray:
        """What ``agent`` playing ``player`` sees: (N, STATE_DIM) float32 or (N, 84, 84, 1) uint8."""
        return state[:, player] if agent.obs_type == "state" else self.pixels[player]


def _play_batch(agent0: Agent, agent1: Agent, seeds: np.ndarray, config: DuelConfig | None,
                bar: tqdm) -> MatchResults:
    agents = (agent0, agent1)
    match = DuelMatch(seeds.size, config, obs_type="state")
    state = match.reset(seeds)
    views = _Views(match, agents)
    n = seeds.size
    for agent in agents:
        agent.reset(n)
    length = np.zeros(n, dtype=np.int64)
    skills = np.zeros((n, 2), dtype=np.int64)
    dealt = np.zeros((n, 2))
    counts = np.zeros(n * 2 * NUM_ACTIONS, dtype=np.int64)
    slot = np.arange(n * 2).reshape(n, 2) * NUM_ACTIONS  # (match, player) -> offset of its counts
    actions = np.empty((n, 2), dtype=np.int64)
    steps = 0
    while not match.all_done:
        live = ~match.core.done
        for player, agent in enumerate(agents):
            actions[:, player] = own_actions(agent, match, views.of(agent, player, state), player)
        counts += np.bincount((slot[live] + actions[live]).ravel(), minlength=counts.size)
        state, events = match.step(actions)
        views.update(np.flatnonzero(~match.core.done))
        length += live
        skills += events.skill_started
        dealt += events.damage_dealt
        steps += 1
        bar.update(1)
    bar.update(match.config.max_decisions - steps)
    core = match.core
    return MatchResults(seeds=seeds, winner=core.winner.copy(), ko=core.ko.copy(), hp=core.hp.copy(), length=length,
                        damage_dealt=dealt, skills_used=skills, action_counts=counts.reshape(n, 2, NUM_ACTIONS))


def play_matches(agent0: Agent, agent1: Agent, seeds: np.ndarray | list[int], config: DuelConfig | None = None,
                 progress: bool = False, batch_size: int | None = None) -> MatchResults:
    """Play one match per seed between ``agent0`` (player 0) and ``agent1`` (player 1).

    Matches run ``batch_size`` at a time (default: all at once) on one batched core; each agent
    acts once per decision step for the whole batch. Results are in seed order.
    """
    seeds = np.asarray(seeds, dtype=np.int64).reshape(-1)
    if seeds.size == 0:
        raise EvalError("play_matches needs at least one seed (one match)")
    if batch_size is not None and batch_size < 1:
        raise EvalError(f"batch_size must be >= 1, got {batch_size}")
    size = seeds.size if batch_size is None else batch_size
    chunks = [seeds[i:i + size] for i in range(0, seeds.size, size)]
    max_steps = (config or DuelConfig()).max_decisions
    with tqdm(total=len(chunks) * max_steps, desc=f"{agent0.name} vs {agent1.name}", unit="step",
              disable=not progress, leave=False) as bar:
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


def summarize(results: MatchResults, agent: str, opponent: str, seed: int, config: DuelConfig | None = None,
              sides: list[int] | None = None, action_names: list[str] | tuple[str, ...] = ACTION_NAMES,
              skill_actions: list[int] | tuple[int, ...] = SKILL_ACTIONS, decision_hz: float | None = None
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
        agent=agent, opponent=opponent, matches=n, seed=int(seed),
        sides=sorted(int(s) for s in np.unique(results.side)) if sides is None else sides,
        wins=wins, draws=draws, losses=n - wins - draws, win_rate=wins / n, win_rate_ci95=wilson_interval(wins, n),
        draw_rate=draws / n, loss_rate=(n - wins - draws) / n,
        hp_diff_mean=float(hp_diff.mean()), hp_diff_std=float(hp_diff.std()),
        damage_dealt_mean=float(results.damage_dealt[:, 0].mean()),
        damage_taken_mean=float(results.damage_taken[:, 0].mean()),
        skill_use_rate=float(own_counts[list(skill_actions)].sum() / frames),
        skills_started_per_match=float(results.skills_used[:, 0].mean()),
        ko_rate=float(results.ko.mean()), ko_win_rate=float((results.ko & (results.winner == 0)).mean()),
        length_mean_frames=float(results.length.mean()),
        length_mean_seconds=float(results.length.mean() / hz),
        action_distribution={name: float(c / frames) for name, c in zip(action_names, own_counts)},
        results=results,
    )


def evaluate_matches(agent: Agent | str, opponent: Agent | str, num_matches: int, seed: int = 0,
                     both_sides: bool = False, config: DuelConfig | None = None, batch_size: int | None = None,
                     progress: bool = False) -> MatchReport:
    """``num_matches`` matches of ``agent`` against ``opponent`` on seeds ``seed, seed + 1, ...``.

    With ``both_sides`` each seed is played twice, the agent once as player 0 and once as
    player 1, which cancels any advantage of a side (2 * num_matches matches in the report).
    """
    seeds = match_seeds(seed, num_matches)
    agent_obj, opponent_obj = load_player(agent, config), load_player(opponent, config, seed=seed + 1)
    for player in (agent_obj, opponent_obj):
        check_agent(player, config)
    parts = [play_matches(agent_obj, opponent_obj, seeds, config, progress, batch_size)]
    if both_sides:
        parts.append(play_matches(opponent_obj, agent_obj, seeds, config, progress, batch_size).swapped())
    return summarize(MatchResults.concat(parts), agent_obj.name, opponent_obj.name, seed, config,
                     sides=[0, 1] if both_sides else [0])
