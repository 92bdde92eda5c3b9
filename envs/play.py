"""The one batched match loop, and the Policy protocol every player satisfies.

:func:`play` runs one match per seed, all at once, on a batched :class:`Match` (N matches stepped
together). Each decision step it asks every policy once for the whole batch, steps the match, and
shows the step to the hooks; that is all::

    match.reset(seeds)                                  # N matches, one seed each
    policy.reset(N) for every policy; hook.on_reset(match)
    while some match is running (and fewer than max_steps steps were played):
        actions[:, p] = policy_p.act(match.observe(p, policy_p.obs_type))   # (N,) per player p
        events = match.step(actions)                                         # finished matches stay frozen
        hook.on_step(Step(...))
    hook.on_end(match)

Callers count actions, collect events, render frames, write recordings or record model inputs in
hooks; none of them steps a match itself. Two rules live here and nowhere else:

* **Per-match noise.** A policy whose randomness is noise (a Duel bot) declares it as a
  :class:`NoisyPolicy`; the loop feeds it the match's own noise streams (a function of match seed,
  decision and player), so a match plays the same whichever batch it runs in.
* **What a policy returned** is checked once per step by :func:`validate_actions`: a bad batch is a
  one-line :class:`PolicyError` naming the policy.

Observations are the match's job, asked per player and kind, so a match renders pixels only for the
players that need them: :class:`DuelBatch` is Duel's match (the batched core), and
``bcarena.envs.boxing.BoxingBatch`` is ALE Boxing's (emulators in a gymnasium vector env).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from bcarena.envs.duel import NUM_ACTIONS, Bot, DuelConfig, DuelCore, StepEvents, bot_noise
from bcarena.envs.duel.observation import state_observations
from bcarena.envs.duel.render import gray_frames
from bcarena.envs.errors import BcarenaError


class PolicyError(BcarenaError, ValueError):
    """A policy returned something that is not a batch of valid action ids, or cannot play this match."""


@runtime_checkable
class Policy(Protocol):
    """Anything that plays: ``reset(n)`` before n new matches, ``act(obs (n, *obs_shape)) -> (n,) int actions``."""

    name: str
    obs_type: str

    def reset(self, batch_size: int) -> None: ...

    def act(self, obs: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class NoisyPolicy(Protocol):
    """A policy whose randomness is uniform noise the loop provides: the match's own streams.

    ``act_with_noise(obs (n, *obs_shape), noise (n, noise_dims) in [0, 1)) -> (n,) int actions``.
    Its ``act`` (without noise) is for use outside matches, e.g. labelling a dataset.
    """

    name: str
    obs_type: str
    noise_dims: int

    def reset(self, batch_size: int) -> None: ...

    def act_with_noise(self, obs: np.ndarray, noise: np.ndarray) -> np.ndarray: ...


def validate_actions(actions: object, batch_size: int, num_actions: int, who: str) -> np.ndarray:
    """``actions`` as (batch_size,) int64 ids in [0, num_actions), or a :class:`PolicyError` naming ``who``."""
    arr = np.asarray(actions)
    if arr.shape != (batch_size,) or not np.issubdtype(arr.dtype, np.integer):
        raise PolicyError(f"{who}: act() must return ({batch_size},) integer action ids, got {arr.dtype} {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() >= num_actions):
        raise PolicyError(f"{who}: actions must be in [0, {num_actions}), got {np.unique(arr)[:8].tolist()}")
    return arr.astype(np.int64, copy=False)


class Match(Protocol):
    """N matches stepped together: what :func:`play` drives.

    Rows are matches, ``num_players`` policies act in each (Duel: 2; Boxing: 1, against the
    console's CPU). Adapters over a fixed pool of emulators may be reset with fewer seeds than
    rows: the spare rows are then over (``done``) from the start.
    """

    num_matches: int
    num_players: int
    num_actions: int

    @property
    def done(self) -> np.ndarray:
        """(num_matches,) bool: the match is over (its actions are ignored, its state frozen)."""

    def reset(self, seeds: np.ndarray) -> None: ...

    def observe(self, player: int, obs_type: str) -> np.ndarray:
        """What ``player`` sees in every row, of kind ``obs_type`` ("state" or "pixels")."""

    def noise(self, player: int, dims: int) -> np.ndarray:
        """Uniform noise (num_matches, dims) for ``player``: a function of match seed, decision and player only."""

    def step(self, actions: np.ndarray) -> Any:
        """Apply one decision (num_matches, num_players) of every player; returns the step's events."""


@dataclass
class Step:
    """One decision step as hooks see it, after the match stepped."""

    match: Match
    index: int  # decisions played before this one in this batch (0, 1, ...)
    live: np.ndarray  # (N,) bool: matches running when the policies acted; only their actions were played
    actions: np.ndarray  # (N, num_players) int64: what each policy chose (also for finished rows, ignored)
    events: Any  # what match.step returned (Duel: StepEvents)


class Hook:
    """Watches a batch of matches being played. Override what you need; the defaults do nothing."""

    def on_reset(self, match: Match) -> None:
        """After the reset: the first observations are ready, nobody has acted yet."""

    def on_step(self, step: Step) -> None:
        """After each decision step."""

    def on_end(self, match: Match) -> None:
        """After the last step: every match is over, or ``max_steps`` steps were played."""


def play(
    match: Match,
    policies: Sequence[Policy | NoisyPolicy],
    seeds: np.ndarray | Sequence[int],
    hooks: Sequence[Hook] = (),
    max_steps: int | None = None,
) -> int:
    """Play one match per seed on ``match``, ``policies[p]`` as player p; returns the decision steps played.

    Every policy acts once per step on the whole batch (finished rows included: their actions are
    ignored), so a policy's batch size is ``match.num_matches`` throughout. Results are read from
    ``match`` afterwards or collected by ``hooks``.
    """
    if len(policies) != match.num_players:
        raise PolicyError(f"this match needs {match.num_players} policies (one per player), got {len(policies)}")
    match.reset(np.asarray(seeds))
    n = match.num_matches
    actors = [_actor(match, player, policy) for player, policy in enumerate(policies)]  # decided once: hot path
    who = [f"policy {policy.name!r} (player {player})" for player, policy in enumerate(policies)]
    for policy in policies:
        policy.reset(n)
    for hook in hooks:
        hook.on_reset(match)
    steps = 0
    while not match.done.all() and (max_steps is None or steps < max_steps):
        live = ~match.done
        actions = np.empty((n, len(policies)), dtype=np.int64)
        for player, policy in enumerate(policies):
            chosen = actors[player](match.observe(player, policy.obs_type))
            actions[:, player] = validate_actions(chosen, n, match.num_actions, who[player])
        events = match.step(actions)
        step = Step(match, steps, live, actions, events)
        for hook in hooks:
            hook.on_step(step)
        steps += 1
    for hook in hooks:
        hook.on_end(match)
    return steps


def _actor(match: Match, player: int, policy: Policy | NoisyPolicy) -> Callable[[np.ndarray], np.ndarray]:
    """``policy``'s observations -> actions in ``match``; a noisy policy is fed the match's noise for ``player``."""
    if isinstance(policy, NoisyPolicy):
        noisy = policy
        return lambda obs: noisy.act_with_noise(obs, match.noise(player, noisy.noise_dims))
    return policy.act


class MatchwisePolicy:
    """Several policies sharing one player slot: row i of the batch is played by ``policies[which[i]]``.

    Each policy acts on the whole batch (so its own batch bookkeeping, e.g. frame stacks, is that of
    the match) and only its rows are kept; a policy with no rows is not asked. As a noisy policy it
    passes the match's noise on to the noisy ones (the first ``noise_dims`` of each stream).
    """

    def __init__(self, policies: Sequence[Policy | NoisyPolicy], which: np.ndarray, num_actions: int) -> None:
        self.policies = list(policies)
        self.which = np.asarray(which, dtype=np.int64)
        self.num_actions = num_actions
        self.name = "+".join(p.name for p in self.policies)
        kinds = {p.obs_type for p in self.policies}
        if len(kinds) != 1:
            raise PolicyError(f"policies sharing a player slot must observe the same kind, got {sorted(kinds)}")
        self.obs_type = kinds.pop()
        self.noise_dims = max([p.noise_dims for p in self.policies if isinstance(p, NoisyPolicy)], default=0)
        self._acts = [_noise_taker(p) for p in self.policies]

    def reset(self, batch_size: int) -> None:
        for policy in self.policies:
            policy.reset(batch_size)

    def act_with_noise(self, obs: np.ndarray, noise: np.ndarray) -> np.ndarray:
        actions = np.zeros(obs.shape[0], dtype=np.int64)
        for k, (policy, act) in enumerate(zip(self.policies, self._acts, strict=True)):
            rows = self.which == k
            if rows.any():
                who = f"policy {policy.name!r}"
                actions[rows] = validate_actions(act(obs, noise), obs.shape[0], self.num_actions, who)[rows]
        return actions


def _noise_taker(policy: Policy | NoisyPolicy) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``policy`` as (observations, noise) -> actions: a noisy one takes the first ``noise_dims`` noise columns."""
    if isinstance(policy, NoisyPolicy):
        noisy = policy
        return lambda obs, noise: noisy.act_with_noise(obs, noise[:, : noisy.noise_dims])
    return lambda obs, noise: policy.act(obs)


# ------------------------------------------------------------------------------------------ Duel
class BotPolicy:
    """A Duel bot as a :class:`NoisyPolicy`: state observations and the match's noise in."""

    obs_type = "state"

    def __init__(self, bot: Bot) -> None:
        self.bot, self.name, self.noise_dims = bot, bot.name, bot.noise_dims

    def reset(self, batch_size: int) -> None:
        """Bots keep no memory between decisions."""

    def act_with_noise(self, obs: np.ndarray, noise: np.ndarray) -> np.ndarray:
        return self.bot.act(obs, noise)


class DuelBatch:
    """Duel as a :class:`Match`: N matches on one batched core, observations made once per step, on demand.

    State vectors (N, STATE_DIM) float32 are computed for all rows (cheap). Pixels (N, 84, 84, 1)
    uint8 are drawn per player on first request after a step, and only for matches still running: a
    finished match keeps the last frame drawn while it ran (its actions are ignored anyway), so
    rendering cost shrinks as matches end.
    """

    num_players = 2
    num_actions = NUM_ACTIONS

    def __init__(self, num_matches: int, config: DuelConfig | None = None) -> None:
        self.core = DuelCore(num_matches, config)
        self.config = self.core.config
        self.num_matches = self.core.num_matches
        self._state: np.ndarray | None = None  # (N, 2, STATE_DIM) of the current decision
        self._pixels: dict[int, np.ndarray] = {}  # player -> (N, 84, 84, 1)
        self._pixels_stale: set[int] = set()

    @property
    def done(self) -> np.ndarray:
        return self.core.done

    def reset(self, seeds: np.ndarray) -> None:
        self.core.reset(seeds)
        self._state = None
        self._pixels.clear()
        self._pixels_stale.clear()

    def observe(self, player: int, obs_type: str) -> np.ndarray:
        if obs_type == "state":
            if self._state is None:
                self._state = state_observations(self.core)
            return self._state[:, player]
        if obs_type == "pixels":
            if player not in self._pixels:
                self._pixels[player] = gray_frames(self.core, player)[..., None]
            elif player in self._pixels_stale:
                rows = np.flatnonzero(~self.core.done)
                if rows.size:
                    self._pixels[player][rows, ..., 0] = gray_frames(self.core, player, rows)
            self._pixels_stale.discard(player)
            return self._pixels[player]
        raise PolicyError(f"Duel observations are 'state' or 'pixels', got {obs_type!r}")

    def noise(self, player: int, dims: int) -> np.ndarray:
        return bot_noise(self.core, player, dims)

    def step(self, actions: np.ndarray) -> StepEvents:
        events = self.core.step(actions, allow_finished=True)
        self._state = None
        self._pixels_stale = set(self._pixels)
        return events
