"""DAgger with the expert in the loop: roll the clone out, relabel what it visits, aggregate, retrain.

``train_dagger(dataset, train_config, dagger_config, out_dir)``:
  0. plain BC on the expert's dataset (``train_bc``, in ``out_dir/bc``): iteration 0;
  1. each iteration i = 1..K rolls the current clone out against ``opponents`` through the one match
     loop (``bcarena.envs.play.play``). In every decision of match m, with probability
     ``beta_i = beta ** i`` the expert's action is played instead of the clone's: the coin (and the
     expert's sampled action) are counter-based uniforms of (DAgger seed, match seed, decision), so a
     rollout is the same whichever batch it runs in. Every state the clone's player sees is
     relabelled with the expert's answer there: its action probabilities (soft labels, where the
     expert gives them and ``soft_labels`` is on) or its action (one-hot);
  2. the relabelled states join the aggregate (dataset train rows, one-hot, plus every rollout so
     far) and the same network trains on it for ``epochs`` more epochs (warm start, the BC config's
     lr, weight decay and batch size) with the variant's recipe (``fit_recipe``): its loss and class
     weights (counted on the aggregate), its sampler and its event/keyframe weighting. A plain
     recipe (cross-entropy, uniform frames) is the exact soft-label update ``fit_targets``; any other
     draws (row, action) pairs with weight ``q_a`` (one pair per row for one-hot targets). Rollout
     rows take their events from the match (``skill_used`` and ``action_change`` of the expert's
     labels, ``hit_landed``/``hit_taken`` from the step; ``ko`` and ``marked`` are never set there);
  3. offline metrics on the val split and on the states just visited, and (given ``evaluate``) win
     rates, after every iteration.

The clone that plays the rollouts (and the per-round matches) decodes as ``decode(agent)`` says (the
experiments layer passes the variant's first decoding: a sampled clone explores like the agent
that will be evaluated); without it, as the trained agent's own selection.

An expert can be queried when it implements :class:`ProbabilisticExpert` (``expert_probabilities(obs)
-> (B, A)``, e.g. Duel's pro, whose chances are explicit) or :class:`ActionExpert`
(``expert_actions(obs) -> (B,)``, e.g. Boxing's RAM expert). Experts are asked once per decision, in
match order, so an expert with memory (Boxing's punch timer) follows the trajectory. A recorded human
or an agent folder cannot be queried: :class:`DaggerError`.

Outputs in ``out_dir``: ``bc/`` (the BC run), ``agent/`` (the final clone), ``history.json`` (one row
per iteration), ``dagger.json`` (config, expert, per-iteration offline and online results) and
``dagger.png``. Only state-vector MLPs without frame stacks are supported (rollout states are the
model inputs as they are).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tqdm.auto import tqdm

from bcarena.agents.config import TrainConfig
from bcarena.agents.data import split_data
from bcarena.agents.keyframes import combine, keyframe_weights
from bcarena.agents.policies import ScoreModel
from bcarena.agents.samplers import EpochSampler, event_weights, smote_rows
from bcarena.agents.threads import torch_threads
from bcarena.agents.torch_agent import TorchAgent
from bcarena.agents.train import Target, TrainResult, evaluate, make_loss, train_bc
from bcarena.agents.validation import SUMMARY_METRICS
from bcarena.envs import rng
from bcarena.envs.errors import BcarenaError
from bcarena.envs.figures import pyplot, save_figure
from bcarena.envs.files import write_json
from bcarena.envs.games import Game, MatchOptions, get_game
from bcarena.envs.limits import MAX_MATCHES, MAX_SEED
from bcarena.envs.play import Hook, MatchwisePolicy, NoisyPolicy, Policy, Step, play
from bcarena.recordings.dataset import ActionDataset

DAGGER_FILE, PLOT_FILE = "dagger.json", "dagger.png"
HIT_EVENTS = ("hit_landed", "hit_taken")  # the events a rollout takes from the match's steps
# Per-iteration online results: opponent -> {"win_rate", "win_rate_low", "win_rate_high", "matches", ...}.
Evaluator = Callable[[TorchAgent], dict[str, dict[str, Any]]]
# The clone as it plays rollouts: the trained agent with the variant's decoding (same weights).
Decoder = Callable[[TorchAgent], TorchAgent]


class DaggerError(BcarenaError, ValueError):
    """DAgger cannot run as asked: an expert that cannot be queried, an unknown opponent, a bad config."""


@runtime_checkable
class ProbabilisticExpert(Protocol):
    """An expert that says how likely each action is: ``expert_probabilities(obs (B, D)) -> (B, A)``."""

    name: str

    def reset(self, batch_size: int) -> None: ...

    def expert_probabilities(self, obs: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class ActionExpert(Protocol):
    """An expert that says what it would do: ``expert_actions(obs (B, D)) -> (B,)`` int action ids."""

    name: str

    def reset(self, batch_size: int) -> None: ...

    def expert_actions(self, obs: np.ndarray) -> np.ndarray: ...


QueryableExpert = ProbabilisticExpert | ActionExpert


class DaggerConfig(BaseModel):
    """The ``dagger:`` section of a ``kind: dagger`` variant (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    iterations: int = Field(3, ge=1, le=100, description="rollout + retrain rounds after BC")
    rollouts_per_iteration: int = Field(16, ge=1, le=MAX_MATCHES, description="matches rolled out per round")
    beta: float = Field(0.5, ge=0.0, le=1.0, description="round i plays the expert's action with chance beta**i")
    soft_labels: bool = True
    opponents: list[str] = Field(min_length=1, description="built-in opponents of the game, cycled over rollouts")
    expert: str | None = Field(None, description="a built-in expert of the game (default: its first)")
    epochs: int = Field(5, ge=1, le=1000, description="training epochs on the aggregate per round")
    max_steps: int | None = Field(None, ge=1, description="decisions per rollout (default: to the end)")
    eval_matches: int = Field(100, ge=0, le=MAX_MATCHES, description="matches per opponent per round; 0: none")
    eval_seed: int = Field(20_000, ge=0, le=MAX_SEED)
    seed: int = Field(0, ge=0, le=MAX_SEED)


def make_dagger_config(data: dict[str, Any] | None, where: str = "dagger") -> DaggerConfig:
    """Validate a ``dagger:`` mapping; errors are one :class:`DaggerError` naming ``where`` and the keys."""
    try:
        return DaggerConfig.model_validate(data or {})
    except ValidationError as exc:
        problems = [
            f"unknown key {'.'.join(map(str, e['loc']))!r}"
            if e["type"] == "extra_forbidden"
            else f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
            for e in exc.errors()
        ]
        raise DaggerError(f"{where}: invalid DAgger config: " + "; ".join(problems)) from None


# ----------------------------------------------------------------------------------------- experts
class BotExpert:
    """A Duel bot with explicit chances (``action_probabilities``) as a :class:`ProbabilisticExpert`."""

    def __init__(self, bot: Any) -> None:
        self.bot, self.name = bot, bot.name

    def reset(self, batch_size: int) -> None:
        """Bots keep no memory between decisions."""

    def expert_probabilities(self, obs: np.ndarray) -> np.ndarray:
        return self.bot.action_probabilities(obs)


class PolicyExpert:
    """A game's declared expert policy (Boxing's RAM expert) as an :class:`ActionExpert`, asked through ``act``.

    A noisy one (its noise only times its next move) is given ``noise`` (B, noise_dims) by the
    rollouts, counter-based per match, so its answers do not depend on the batch.
    """

    def __init__(self, policy: Policy | NoisyPolicy) -> None:
        self.policy, self.name = policy, policy.name
        self.noise_dims = policy.noise_dims if isinstance(policy, NoisyPolicy) else 0

    def reset(self, batch_size: int) -> None:
        self.policy.reset(batch_size)

    def expert_actions(self, obs: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        if isinstance(self.policy, NoisyPolicy) and noise is not None:
            return np.asarray(self.policy.act_with_noise(obs, noise), dtype=np.int64)
        if not isinstance(self.policy, Policy):
            raise DaggerError(f"expert {self.name!r} acts only on match noise; ask it inside rollouts")
        return np.asarray(self.policy.act(obs), dtype=np.int64)


def queryable(expert: Any, who: str = "expert") -> ProbabilisticExpert | ActionExpert:
    """``expert`` as something DAgger can ask in any state, or a one-line :class:`DaggerError` saying why not.

    Queryable: an object with ``expert_probabilities`` or ``expert_actions``, or a bot with explicit
    chances (``action_probabilities``: Duel's pro). Any other policy, an agent in particular, is not
    an expert: use a game's declared expert (:func:`game_expert`).
    """
    if isinstance(expert, (ProbabilisticExpert, ActionExpert)):
        return expert
    bot = getattr(expert, "bot", expert)  # a BotPolicy wraps its bot
    if callable(getattr(bot, "action_probabilities", None)):
        return BotExpert(bot)
    raise DaggerError(
        f"{who} {_label(expert)!r} cannot be queried: DAgger asks the expert "
        "in the states the clone visits, so it needs expert_probabilities(obs) or expert_actions(obs) "
        "(a recorded human or an agent folder cannot answer)"
    )


def _label(player: Any) -> str:
    return player.name if isinstance(player, Policy | NoisyPolicy) else type(player).__name__


def game_expert(game: Game, name: str | None, config: Any = None, seed: int = 0) -> ProbabilisticExpert | ActionExpert:
    """The built-in expert ``name`` of ``game`` (default: its first) as a queryable expert.

    A declared expert that is a plain policy without match noise (Boxing's RAM expert) is asked through
    its ``act``: it answers for the states it is shown, in match order.
    """
    name = name if name is not None else next(iter(game.experts), None)
    if name is None or name not in game.experts:
        raise DaggerError(
            f"expert {name!r} cannot be queried in game {game.name!r}: DAgger needs one of the game's "
            f"experts {sorted(game.experts)} (a recorded human or an agent folder cannot answer in new states)"
        )
    policy = game.player(name, config, seed)
    try:
        return queryable(policy, f"expert {name!r} of game {game.name!r}")
    except DaggerError:
        if isinstance(policy, Policy | NoisyPolicy):
            return PolicyExpert(policy)
        raise


# ---------------------------------------------------------------------------------------- rollouts
def _uniform(seeds: np.ndarray, decision: int, stream: int) -> np.ndarray:
    """Uniforms (n,) of (match seed, decision, stream): the same whichever batch a match is in."""
    return rng.uniform(seeds, np.full(seeds.shape, decision), np.full(seeds.shape, stream))


def _inverse_cdf(probs: np.ndarray, u: np.ndarray) -> np.ndarray:
    """One action (B,) per row of ``probs`` (B, A) for uniforms ``u`` (B,)."""
    cdf = np.cumsum(probs, axis=1)
    return np.minimum((cdf < (u * cdf[:, -1])[:, None]).sum(axis=1), probs.shape[1] - 1).astype(np.int64)


class _Rollout(Hook):
    """The clone's player slot in a rollout, and the hook that keeps what it saw.

    Each decision it asks the clone and the expert, plays the expert's action where the match's
    beta coin says so, and (``on_step``) keeps the observations and expert targets of live rows.
    """

    def __init__(
        self,
        clone: Policy | NoisyPolicy,
        expert: ProbabilisticExpert | ActionExpert,
        seeds: np.ndarray,
        beta: float,
        soft: bool,
        stream: int,
        num_actions: int,
    ) -> None:
        self.clone, self.expert, self.beta, self.soft = clone, expert, beta, soft
        self.seeds = np.asarray(seeds, dtype=np.uint64)
        self.stream, self.num_actions = stream, num_actions
        self.name, self.obs_type = f"dagger({clone.name})", clone.obs_type
        self.states: list[np.ndarray] = []
        self.targets: list[np.ndarray] = []
        self.clone_actions: list[np.ndarray] = []
        self.expert_actions: list[np.ndarray] = []
        self.match_ids: list[np.ndarray] = []
        self.hits: dict[str, list[np.ndarray]] = {name: [] for name in HIT_EVENTS}
        self.expert_played = 0
        self.decisions = 0

    def reset(self, batch_size: int) -> None:
        self.clone.reset(batch_size)
        self.expert.reset(batch_size)
        self._decision = 0

    def _clone_act(self, obs: np.ndarray, noise: np.ndarray | None) -> np.ndarray:
        return np.asarray(self.clone.act(obs), dtype=np.int64)

    def _choose(self, obs: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        seeds = self.seeds[: obs.shape[0]]
        mine = self._clone_act(obs, noise)
        if isinstance(self.expert, ProbabilisticExpert):
            probs = np.asarray(self.expert.expert_probabilities(obs), dtype=np.float64)
            theirs = _inverse_cdf(probs, _uniform(seeds, self._decision, self.stream + 1))
            target = probs if self.soft else np.eye(self.num_actions)[theirs]
        elif isinstance(self.expert, PolicyExpert) and self.expert.noise_dims:
            dims = np.arange(self.expert.noise_dims)
            noise = rng.uniform(seeds[:, None], np.full((seeds.size, 1), self._decision), self.stream + 2 + dims)
            theirs = self.expert.expert_actions(obs, noise)
            target = np.eye(self.num_actions)[theirs]
        else:
            theirs = np.asarray(self.expert.expert_actions(obs), dtype=np.int64)
            target = np.eye(self.num_actions)[theirs]
        expert_turn = _uniform(seeds, self._decision, self.stream) < self.beta
        self._pending = (np.array(obs, dtype=np.float32), target.astype(np.float32), mine, theirs, expert_turn)
        self._decision += 1
        return np.where(expert_turn, theirs, mine)

    def act(self, obs: np.ndarray) -> np.ndarray:
        return self._choose(obs)

    def on_step(self, step: Step) -> None:
        obs, target, mine, theirs, expert_turn = self._pending
        live = step.live
        self.states.append(obs[live])
        self.targets.append(target[live])
        self.clone_actions.append(mine[live])
        self.expert_actions.append(theirs[live])
        self.match_ids.append(np.flatnonzero(live))
        for name, flags in _hits(step.events).items():
            self.hits[name].append(flags[live])
        self.expert_played += int(expert_turn[live].sum())
        self.decisions += int(live.sum())


class _NoisyRollout(_Rollout):
    """A rollout slot whose clone draws the match's noise (a sampled agent): the noise is passed on."""

    @property
    def noise_dims(self) -> int:
        return self.clone.noise_dims

    def _clone_act(self, obs: np.ndarray, noise: np.ndarray | None) -> np.ndarray:
        return np.asarray(self.clone.act_with_noise(obs, noise), dtype=np.int64)

    def act_with_noise(self, obs: np.ndarray, noise: np.ndarray) -> np.ndarray:
        return self._choose(obs, noise)


def _hits(events: Any) -> dict[str, np.ndarray]:
    """The clone's (player 0's) hit flags (N,) bool in one step: Duel's StepEvents or another game's mapping."""
    if isinstance(events, Mapping):
        landed = np.asarray(events["hit_landed"])
        return {"hit_landed": landed[:, 0], "hit_taken": landed[:, 1]}
    return {
        "hit_landed": np.asarray(events.hits_landed)[:, 0] > 0,
        "hit_taken": np.asarray(events.hits_taken)[:, 0] > 0,
    }


@dataclass
class RolloutData:
    """What one round of rollouts collected: one row per live match and decision, in play order (n rows).

    ``states`` (n, D) float32, expert ``targets`` (n, A) float32 (its chances, or one-hot), its
    ``expert_actions`` (n,) (the sampled or given action), ``match_ids`` (n,) and the step's ``hits``
    ({"hit_landed", "hit_taken"}: (n,) bool) for event weighting.
    """

    states: np.ndarray
    targets: np.ndarray
    clone_actions: np.ndarray  # (n,) what the clone chose (before the beta coin)
    expert_fraction: float  # decisions in which the expert's action was played
    matches: int
    expert_actions: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    match_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    hits: dict[str, np.ndarray] = field(default_factory=dict)


def rollout_seeds(seed: int, iteration: int, count: int) -> np.ndarray:
    """Match seeds (count,) int64 of round ``iteration``: distinct per round, < 2**31 (emulators take int32)."""
    return (rng.derive_seed(seed, iteration) % 2**30 + np.arange(count)).astype(np.int64)


def collect_rollouts(
    clone: Policy | NoisyPolicy,
    expert: ProbabilisticExpert | ActionExpert,
    game: Game,
    opponents: Sequence[str],
    seeds: np.ndarray,
    beta: float,
    soft: bool = True,
    config: Any = None,
    seed: int = 0,
    max_steps: int | None = None,
) -> RolloutData:
    """Play ``clone`` (beta-mixed with ``expert``) as player 0, one match per seed, opponents cycled; relabel."""
    seeds = np.asarray(seeds, dtype=np.int64)
    cls = _NoisyRollout if isinstance(clone, NoisyPolicy) else _Rollout
    slot = cls(clone, expert, seeds, beta, soft, 2 * seed, game.num_actions)
    rivals = [game.player(name, config, seed) for name in opponents]
    policies: list[Any] = [slot]
    if game.num_players == 2:
        which = np.arange(seeds.size) % len(rivals)
        policies.append(MatchwisePolicy(rivals, which, game.num_actions))
    match = game.match(seeds.size, config, MatchOptions(obs_types=frozenset({clone.obs_type})))
    try:
        play(match, policies, seeds, hooks=[slot], max_steps=max_steps)
    finally:
        close = getattr(match, "close", None)
        if callable(close):
            close()
    return RolloutData(
        np.concatenate(slot.states),
        np.concatenate(slot.targets),
        np.concatenate(slot.clone_actions),
        slot.expert_played / max(1, slot.decisions),
        int(seeds.size),
        np.concatenate(slot.expert_actions),
        np.concatenate(slot.match_ids),
        {name: np.concatenate(flags) for name, flags in slot.hits.items()},
    )


def check_opponents(game: Game, opponents: Sequence[str], where: str = "dagger.opponents") -> None:
    """Rollout opponents must be built-in players the match loop can play (one per slot beyond the clone's)."""
    unknown = [name for name in opponents if name not in game.opponents]
    if unknown:
        raise DaggerError(
            f"{where}: {unknown} are not opponents of game {game.name!r}; its opponents are {sorted(game.opponents)}"
        )
    built_in = [name for name in opponents if game.player(name) is None]
    if game.num_players == 2 and built_in:
        raise DaggerError(f"{where}: {built_in} play inside the match; game {game.name!r} needs opponent policies")


# ---------------------------------------------------------------------------------------- training
def fit_targets(model: ScoreModel, x: torch.Tensor, q: torch.Tensor, cfg: TrainConfig, epochs: int, seed: int) -> float:
    """Train ``model`` in place on inputs ``x`` (n, D) against target distributions ``q`` (n, A).

    Cross-entropy ``-sum_a q_a log p_a`` (with one-hot ``q``: the usual NLL), AdamW with the BC config's
    lr, weight decay and batch size, shuffled by ``seed``. Returns the last epoch's mean loss (nats).
    """
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    model.train()
    mean = math.nan
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=gen)
        total = 0.0
        for begin in range(0, x.shape[0], cfg.batch_size):
            idx = order[begin : begin + cfg.batch_size]
            loss = -(q[idx] * torch.log_softmax(model.logits(x[idx]), dim=-1)).sum(dim=-1).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * idx.numel()
        mean = total / x.shape[0]
    model.eval()
    if not math.isfinite(mean):
        raise DaggerError(f"DAgger retraining diverged (loss {mean}); lower lr (now {cfg.lr:g})")
    return mean


def is_plain(cfg: TrainConfig) -> bool:
    """Cross-entropy on uniformly drawn frames, nothing reweighted: the recipe ``fit_targets`` optimizes exactly."""
    return (
        cfg.loss == "ce"
        and cfg.effective_class_weights == "none"
        and cfg.label_smoothing == 0
        and cfg.sampler == "uniform"
        and not cfg.event_weighting.events
        and cfg.keyframe_weighting is None
    )


@dataclass
class Aggregate:
    """Every row a DAgger round retrains on (n rows): inputs ``x`` (n, D), targets ``q`` (n, A) (one-hot, or
    the expert's chances), and ``weights`` (n,) from the recipe's event and keyframe weighting (1 without)."""

    x: torch.Tensor
    q: torch.Tensor
    weights: np.ndarray

    def add(self, x: np.ndarray, q: np.ndarray, weights: np.ndarray) -> None:
        self.x = torch.cat([self.x, torch.as_tensor(x)])
        self.q = torch.cat([self.q, torch.as_tensor(q)])
        self.weights = np.concatenate([self.weights, weights])


class _Frames:
    """Rollout rows as the part of an ActionDataset that event and keyframe weighting read: a table with
    ``episode`` (one per match) and ``action`` (the expert's), and ``events(name)`` flags (n,) bool.
    Its rows are ``data``'s grouped by match (``order``), in decision order, as a dataset's episodes are."""

    def __init__(self, data: RolloutData, skill_actions: Sequence[int], num_actions: int) -> None:
        self.order = np.argsort(data.match_ids, kind="stable")
        labels, ids = data.expert_actions[self.order], data.match_ids[self.order]
        first = np.r_[True, ids[1:] != ids[:-1]] if ids.size else np.zeros(0, dtype=bool)
        self.num_actions = num_actions
        self.table = pd.DataFrame({"episode": ids, "action": labels})
        self.flags = {
            "skill_used": np.isin(labels, list(skill_actions)),
            "action_change": ~first & (labels != np.r_[-1, labels[:-1]]),
            **{name: flags[self.order] for name, flags in data.hits.items()},
        }

    def events(self, name: str) -> np.ndarray:
        return self.flags.get(name, np.zeros(len(self.table), dtype=bool))  # ko, marked: not seen in rollouts

    def actions(self) -> np.ndarray:
        return self.table["action"].to_numpy(dtype=np.int64)


def row_weights(frames: Any, cfg: TrainConfig, seed: int) -> np.ndarray:
    """Per-row weights (n,) of the recipe's event and keyframe weighting (ones when it has neither)."""
    weights = combine(
        event_weights(frames, cfg.event_weighting), keyframe_weights(frames, cfg.keyframe_weighting, seed)
    )
    return np.ones(len(frames.table)) if weights is None else np.asarray(weights, dtype=np.float64)


def rollout_weights(
    data: RolloutData, cfg: TrainConfig, skill_actions: Sequence[int], num_actions: int, seed: int
) -> np.ndarray:
    """``row_weights`` of one round's rollout rows (n,), in ``data``'s row order."""
    frames = _Frames(data, skill_actions, num_actions)
    weights = np.empty(len(frames.order))
    weights[frames.order] = row_weights(frames, cfg, seed)
    return weights


def fit_recipe(
    model: ScoreModel, agg: Aggregate, cfg: TrainConfig, class_names: list[str], epochs: int, round_index: int
) -> float:
    """Train ``model`` in place on ``agg`` with the BC recipe: its loss (class weights counted on the aggregate,
    soft targets as fractional counts), its sampler and frame weights. Returns the last epoch's mean objective.

    A soft target row becomes one (row, action) pair per action with ``q_a`` > 0, weighted ``q_a``: the
    weighted draw of pairs is the soft loss in expectation (one-hot rows: one pair, weight 1). The epoch
    draws are ``EpochSampler``'s of epochs ``1000 * round_index + e``: distinct per round, reproducible.
    """
    q = agg.q.numpy()
    rows, labels = np.nonzero(q > 0)
    mass = q[rows, labels].astype(np.float64)
    x, weights = agg.x[rows], mass * agg.weights[rows]
    if cfg.sampler == "smote":
        x_new, y_new = smote_rows(x.numpy(), labels, cfg, class_names)
        x, labels = torch.cat([x, torch.as_tensor(x_new)]), np.concatenate([labels, y_new])
        weights, mass = np.concatenate([weights, np.ones(len(y_new))]), np.concatenate([mass, np.ones(len(y_new))])
    loss_fn = make_loss(cfg, np.bincount(labels, weights=mass, minlength=len(class_names)))
    sampler = EpochSampler(labels, cfg, class_names, None if np.all(weights == 1) else weights)
    y = torch.as_tensor(labels)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    model.train()
    mean = math.nan
    for epoch in range(epochs):
        order = sampler.epoch(1000 * round_index + epoch)
        total = 0.0
        for begin in range(0, len(order), cfg.batch_size):
            idx = order[begin : begin + cfg.batch_size]
            metrics = loss_fn(model.logits(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            metrics.loss.backward()
            optimizer.step()
            total += metrics.objective * idx.numel()
        mean = total / max(1, len(order))
    model.eval()
    if not math.isfinite(mean):
        raise DaggerError(f"DAgger retraining diverged (loss {mean}); lower lr (now {cfg.lr:g})")
    return mean


@torch.no_grad()
def _visited_metrics(model: ScoreModel, data: RolloutData) -> dict[str, float]:
    """How the clone that visited the states agrees with the expert there (before retraining on them)."""
    x = torch.as_tensor(data.states)
    log_p = torch.log_softmax(model.logits(x), dim=-1).numpy()
    q = data.targets
    return {
        "visited_states": int(len(x)),
        "visited_expert_agreement": float(np.mean(data.clone_actions == q.argmax(axis=1))),
        "visited_cross_entropy": float(-(q * log_p).sum(axis=1).mean()),
        "expert_action_fraction": data.expert_fraction,
    }


@dataclass
class DaggerResult:
    agent: TorchAgent
    bc: TrainResult
    iterations: list[dict[str, Any]]
    out_dir: Path | None
    extra: dict[str, Any] = field(default_factory=dict)


def _check_inputs(cfg: TrainConfig) -> None:
    if cfg.policy != "mlp" or cfg.frame_stack != 1:
        raise DaggerError(
            f"DAgger relabels the states a clone visits: it trains state MLPs without frame stacks "
            f"(got policy {cfg.policy!r}, frame_stack {cfg.frame_stack})"
        )


def train_dagger(
    dataset: ActionDataset | str | os.PathLike,
    train_config: TrainConfig,
    dagger_config: DaggerConfig,
    out_dir: str | os.PathLike | None = None,
    *,
    game_config: Any = None,
    expert: Any = None,
    evaluate_online: Evaluator | None = None,
    progress: bool = True,
    name: str = "dagger",
    decode: Decoder | None = None,
) -> DaggerResult:
    """BC, then ``dagger_config.iterations`` rounds of rollouts, relabelling and retraining (module docstring).

    ``expert`` (any object; default: the game's built-in ``dagger_config.expert``) must be queryable.
    ``evaluate_online(agent)`` gives each round's win rates (the experiments layer plays the matches).
    ``decode(agent)`` is the clone that plays rollouts and those matches (default: the agent itself).
    """
    _check_inputs(train_config)
    ds = dataset if isinstance(dataset, ActionDataset) else ActionDataset.load(dataset, pixels=False)
    game = get_game(ds.manifest["game"], str(ds.path or "dataset"))
    dc = dagger_config
    oracle = queryable(expert) if expert is not None else game_expert(game, dc.expert, game_config, dc.seed)
    check_opponents(game, dc.opponents)
    out = Path(out_dir) if out_dir is not None else None
    with torch_threads(train_config.num_threads):
        bc = train_bc(ds, train_config, out / "bc" if out else None, progress=progress, name=name)
        agent = bc.agent
        loop = _Loop(ds, game, oracle, train_config, dc, game_config, evaluate_online, decode or (lambda a: a))
        rows = _rounds(loop, agent, progress)
    extra = {
        "expert": oracle.name,
        "game": game.name,
        "round_training": "fit_targets (soft cross-entropy)" if is_plain(train_config) else "fit_recipe",
        "rollout_selection": loop.decode(agent).selection.to_dict(),
    }
    result = DaggerResult(agent, bc, rows, out, extra)
    if out is not None:
        _write_outputs(out, result, train_config, dc)
    return result


@dataclass
class _Loop:
    """What every round reads: the data, the game and expert, the configs, and how the clone plays."""

    ds: ActionDataset
    game: Game
    oracle: ProbabilisticExpert | ActionExpert
    cfg: TrainConfig
    dc: DaggerConfig
    game_config: Any
    evaluate_online: Evaluator | None
    decode: Decoder


def _rounds(loop: _Loop, agent: TorchAgent, progress: bool) -> list[dict[str, Any]]:
    """Iteration 0 (the BC clone) and every DAgger round: one result row each."""
    ds, cfg, dc = loop.ds, loop.cfg, loop.dc
    train = split_data(ds, "train", "state", 1)
    val = split_data(ds, "val", "state", 1)
    target = Target.actions(ds)
    plain = is_plain(cfg)
    one_hot = torch.nn.functional.one_hot(train.labels, ds.num_actions).float()
    agg = Aggregate(train.inputs, one_hot, np.ones(len(train)) if plain else row_weights(train.dataset, cfg, 0))
    model = agent.model
    rows = [_row(0, 1.0, model, val, target, loop, agent, {"aggregate_rows": len(train)})]
    for i in tqdm(range(1, dc.iterations + 1), desc=f"dagger {agent.name}", unit="round", disable=not progress):
        beta = dc.beta**i
        seeds = rollout_seeds(dc.seed, i, dc.rollouts_per_iteration)
        clone, game = loop.decode(agent), loop.game
        data = collect_rollouts(
            clone, loop.oracle, game, dc.opponents, seeds, beta, dc.soft_labels, loop.game_config, dc.seed, dc.max_steps
        )
        visited = _visited_metrics(model, data)
        if plain:
            agg.add(data.states, data.targets, np.ones(len(data.states)))
            loss = fit_targets(model, agg.x, agg.q, cfg, dc.epochs, rng.derive_seed(dc.seed, 1000 + i) % 2**62)
        else:
            agg.add(data.states, data.targets, rollout_weights(data, cfg, ds.skill_actions, ds.num_actions, i))
            loss = fit_recipe(model, agg, cfg, ds.action_names, dc.epochs, i)
        extra = {**visited, "aggregate_rows": int(agg.x.shape[0]), "train_loss": loss}
        rows.append(_row(i, beta, model, val, target, loop, agent, extra))
    return rows


def _row(
    iteration: int,
    beta: float,
    model: ScoreModel,
    val: Any,
    target: Target,
    loop: _Loop,
    agent: TorchAgent,
    extra: dict[str, Any],
) -> dict[str, Any]:
    metrics, nll = evaluate(model, val, target.label_map[val.labels.numpy()], target)
    online = loop.evaluate_online(loop.decode(agent)) if loop.evaluate_online is not None else {}
    return {
        "iteration": iteration,
        "beta": beta,
        **extra,
        "val_loss": nll,
        **{f"val_{k}": getattr(metrics, k) for k in SUMMARY_METRICS},
        "online": online,
    }


def _write_outputs(out: Path, result: DaggerResult, cfg: TrainConfig, dc: DaggerConfig) -> None:
    result.agent.save(out / "agent", overwrite=True)
    flat = [{k: v for k, v in row.items() if k != "online"} | _flat_online(row["online"]) for row in result.iterations]
    write_json(out / "history.json", flat)
    write_json(
        out / DAGGER_FILE,
        {"train": cfg.to_dict(), "dagger": dc.model_dump(mode="json"), **result.extra, "iterations": result.iterations},
    )
    plot_dagger(result.iterations, out / PLOT_FILE)


def _flat_online(online: dict[str, dict[str, Any]]) -> dict[str, float]:
    return {f"win_rate_{opp}": float(res["win_rate"]) for opp, res in online.items()}


def plot_dagger(rows: list[dict[str, Any]], path: Path) -> None:
    """Win rate per opponent (with its 95% interval) and val metrics per iteration (PNG)."""
    plt = pyplot()
    its = [row["iteration"] for row in rows]
    fig, (ax_win, ax_val) = plt.subplots(1, 2, figsize=(10, 4))
    for opp in dict.fromkeys(opp for row in rows for opp in row["online"]):  # rows may skip online results
        at = [row["iteration"] for row in rows if opp in row["online"]]
        res = [row["online"][opp] for row in rows if opp in row["online"]]
        ax_win.plot(at, [r["win_rate"] for r in res], marker="o", label=f"vs {opp}")
        ax_win.fill_between(at, [r["win_rate_low"] for r in res], [r["win_rate_high"] for r in res], alpha=0.2)
    ax_win.set_xlabel("DAgger iteration (0 = BC)")
    ax_win.set_ylabel("win rate")
    ax_win.set_ylim(0, 1)
    if any(row["online"] for row in rows):
        ax_win.legend()
    for metric in ("accuracy", "balanced_accuracy", "skill_frame_recall"):
        ax_val.plot(its, [row[f"val_{metric}"] for row in rows], marker="o", label=f"val {metric}")
    ax_val.set_xlabel("DAgger iteration (0 = BC)")
    ax_val.set_ylim(0, 1)
    ax_val.legend()
    save_figure(fig, path, dpi=100)
