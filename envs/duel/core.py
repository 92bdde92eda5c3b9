"""The batched Duel simulator: N matches of two fighters, all stepped at once with numpy.

Every per-fighter quantity is an array of shape (N, 2): axis 0 is the match, axis 1 the player
(0 or 1). ``arr[:, ::-1]`` is therefore "the opponent's value" for each fighter, which is how
both players' rules are written once. One ``step`` applies one decision per fighter and runs
``config.action_repeat`` ticks of 1/``tick_rate_hz`` seconds.

The gymnasium env, the vector env and the two-player match API in ``env.py`` are thin views
of this class; it holds no opponent policy and no observation normalisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bcarena.envs import rng
from bcarena.envs.duel.config import NUM_ACTIONS, SKILL_ACTIONS, Action, DuelConfig
from bcarena.envs.errors import BcarenaError


class DuelError(BcarenaError, ValueError):
    """Invalid use of a Duel match: bad actions, stepping a finished match, bad indices."""


@dataclass
class StepEvents:
    """What happened during one decision step, per match and player. Shapes (N, 2) unless noted."""

    skill_started: np.ndarray  # bool, a skill press started a move (accepted press)
    hits_landed: np.ndarray  # int, hits this fighter connected (guarded or not)
    hits_taken: np.ndarray  # int, hits this fighter received (guarded or not)
    damage_dealt: np.ndarray  # float, HP removed from the opponent
    damage_taken: np.ndarray  # float, HP this fighter lost
    ended: np.ndarray  # (N,) bool, the match ended during this step


_FIRST_SKILL = int(SKILL_ACTIONS[0])


def validate_actions(actions: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Check that ``actions`` holds integral action ids of the given shape; return them as int64."""
    arr = np.asarray(actions)
    if arr.shape != shape:
        raise DuelError(f"actions must have shape {shape}, got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.floating) or not np.all(np.mod(arr, 1) == 0):
            raise DuelError(f"actions must be integer action ids in [0, {NUM_ACTIONS}), got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and (arr.min() < 0 or arr.max() >= NUM_ACTIONS):
        bad = arr[(arr < 0) | (arr >= NUM_ACTIONS)][:5]
        raise DuelError(
            f"actions must be in [0, {NUM_ACTIONS}) ({', '.join(a.name for a in Action)}), got {bad.tolist()}"
        )
    return arr


class DuelCore:
    """State and rules of ``num_matches`` simultaneous Duel matches.

    State arrays (public, read-only by convention; units from :class:`DuelConfig`):
      x, y, vx, vy   (N, 2) float64   position (m) and velocity (m/s); y = 0 is the floor
      facing         (N, 2) float64   +1 facing right, -1 facing left
      hp             (N, 2) float64   hit points
      guarding       (N, 2) bool      guard held this tick
      hitstun        (N, 2) int32     ticks left unable to act after being hit
      cooldown       (N, 2, 3) int32  ticks until light/heavy/special can be pressed again
      move           (N, 2) int8      0 = free, 1..3 = performing light/heavy/special
      move_tick      (N, 2) int32     ticks since the current move was pressed
      move_hit       (N, 2) bool      the current move already connected (one hit per move)
      tick           (N,) int32       ticks elapsed in the match
      decision       (N,) int64       decisions taken in the match
      done           (N,) bool        the match is over (KO or time-out)
      winner         (N,) int8        0 or 1, -1 for a draw; meaningful once done
      ko             (N,) bool        the match ended by knock-out
      seeds          (N,) uint64      the seed each match was reset with
    """

    def __init__(self, num_matches: int, config: DuelConfig | None = None) -> None:
        if not isinstance(num_matches, (int, np.integer)) or num_matches < 1:
            raise DuelError(f"num_matches must be a positive integer, got {num_matches!r}")
        self.config = config if config is not None else DuelConfig()
        if not isinstance(self.config, DuelConfig):
            raise DuelError(f"config must be a DuelConfig, got {type(self.config).__name__}")
        self.num_matches = n = int(num_matches)
        cfg = self.config
        # Skill tables indexed by move id (0 = no move), so lookups are one fancy index.
        skills = cfg.skills
        self._startup = np.array([0] + [s.startup for s in skills], dtype=np.int32)
        self._active_end = np.array([0] + [s.startup + s.active for s in skills], dtype=np.int32)
        self._total = np.array([1] + [s.total for s in skills], dtype=np.int32)
        self._reach = np.array([0.0] + [s.reach for s in skills])
        self._damage = np.array([0.0] + [s.damage for s in skills])
        self._hitstun_of = np.array([0] + [s.hitstun for s in skills], dtype=np.int32)
        self._knockback = np.array([0.0] + [s.knockback for s in skills])
        self._guard_through = np.array([1.0] + [s.guard_through for s in skills])
        self._hits_airborne = np.array([False] + [s.hits_airborne for s in skills])
        self._cooldown_of = np.array([s.cooldown for s in skills], dtype=np.int32)
        self._half_width = cfg.body_width / 2
        self._x_max = cfg.arena_width - self._half_width

        self.x = np.zeros((n, 2))
        self.y = np.zeros((n, 2))
        self.vx = np.zeros((n, 2))
        self.vy = np.zeros((n, 2))
        self.facing = np.zeros((n, 2))
        self.hp = np.zeros((n, 2))
        self.guarding = np.zeros((n, 2), dtype=bool)
        self.hitstun = np.zeros((n, 2), dtype=np.int32)
        self.cooldown = np.zeros((n, 2, len(skills)), dtype=np.int32)
        self.move = np.zeros((n, 2), dtype=np.int8)
        self.move_tick = np.zeros((n, 2), dtype=np.int32)
        self.move_hit = np.zeros((n, 2), dtype=bool)
        self.tick = np.zeros(n, dtype=np.int32)
        self.decision = np.zeros(n, dtype=np.int64)
        self.done = np.ones(n, dtype=bool)  # nothing to step until reset
        self.winner = np.full(n, -1, dtype=np.int8)
        self.ko = np.zeros(n, dtype=bool)
        self.seeds = np.zeros(n, dtype=np.uint64)
        self._rows = np.arange(n)

    # ------------------------------------------------------------------ reset
    def reset(self, seeds: np.ndarray | list[int], indices: np.ndarray | None = None) -> None:
        """Start fresh matches at ``indices`` (default: all) with one seed per match.

        The seed decides the start positions; bots draw their randomness from it too.
        """
        idx = self._rows if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
        seeds_arr = np.asarray(seeds).reshape(-1)
        if seeds_arr.shape[0] != idx.shape[0]:
            raise DuelError(
                f"reset needs one seed per match: got {seeds_arr.shape[0]} seeds for {idx.shape[0]} matches"
            )
        if seeds_arr.size and (not np.issubdtype(seeds_arr.dtype, np.integer) or seeds_arr.min() < 0):
            raise DuelError(f"seeds must be non-negative integers, got {seeds_arr[:5]!r}")
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_matches):
            raise DuelError(f"reset indices must be within [0, {self.num_matches}), got {idx[:5]!r}")
        cfg = self.config
        seeds_u = seeds_arr.astype(np.uint64)
        jitter = (rng.uniform(seeds_u[:, None], 0, np.arange(2)) * 2 - 1) * cfg.start_jitter
        centre = cfg.arena_width / 2
        self.x[idx] = np.stack([centre - cfg.start_gap / 2, centre + cfg.start_gap / 2])[None, :] + jitter
        self.y[idx] = 0.0
        self.vx[idx] = 0.0
        self.vy[idx] = 0.0
        self.facing[idx] = np.array([1.0, -1.0])
        self.hp[idx] = cfg.max_hp
        self.guarding[idx] = False
        self.hitstun[idx] = 0
        self.cooldown[idx] = 0
        self.move[idx] = 0
        self.move_tick[idx] = 0
        self.move_hit[idx] = False
        self.tick[idx] = 0
        self.decision[idx] = 0
        self.done[idx] = False
        self.winner[idx] = -1
        self.ko[idx] = False
        self.seeds[idx] = seeds_u

    # ------------------------------------------------------------------- step
    def check_actions(self, actions: np.ndarray) -> np.ndarray:
        """Validate a (N, 2) batch of action ids and return it as int64."""
        return validate_actions(actions, (self.num_matches, 2))

    def step(self, actions: np.ndarray, allow_finished: bool = False) -> StepEvents:
        """Apply one decision (N, 2) per fighter for ``action_repeat`` ticks.

        Finished matches raise unless ``allow_finished``; then they stay frozen, exactly as they ended.
        """
        actions = self.check_actions(actions)
        frozen = self.done.copy()
        if frozen.any() and not allow_finished:
            rows = np.flatnonzero(frozen)[:5].tolist()
            raise DuelError(f"match(es) {rows} are finished; reset them before stepping again")
        if frozen.all():
            raise DuelError("every match is finished; reset before stepping again")
        n = self.num_matches
        events = StepEvents(
            skill_started=np.zeros((n, 2), dtype=bool),
            hits_landed=np.zeros((n, 2), dtype=np.int32),
            hits_taken=np.zeros((n, 2), dtype=np.int32),
            damage_dealt=np.zeros((n, 2)),
            damage_taken=np.zeros((n, 2)),
            ended=np.zeros(n, dtype=bool),
        )
        is_skill = actions >= _FIRST_SKILL
        skill_index = np.where(is_skill, actions - _FIRST_SKILL, 0)
        direction = (actions == Action.RIGHT).astype(np.float64) - (actions == Action.LEFT)
        wants_guard = actions == Action.GUARD
        wants_jump = actions == Action.JUMP
        # Finished matches must stay exactly as they ended, also those ending mid-step: the
        # remaining ticks run for the whole batch, then these rows are put back.
        finals = [(np.flatnonzero(frozen), self.get_state(np.flatnonzero(frozen)))] if frozen.any() else []
        for tick_in_step in range(self.config.action_repeat):
            live = ~self.done
            if not live.any():
                break
            ended = self._tick(
                tick_in_step == 0, live, is_skill, skill_index, direction, wants_guard, wants_jump, events
            )
            if ended is not None:
                finals.append((ended, self.get_state(ended)))
        for rows, state in finals:
            self.set_state(state, rows)
        self.decision += ~frozen
        return events

    def _tick(
        self,
        first: bool,
        live: np.ndarray,
        is_skill: np.ndarray,
        skill_index: np.ndarray,
        direction: np.ndarray,
        wants_guard: np.ndarray,
        wants_jump: np.ndarray,
        events: StepEvents,
    ) -> np.ndarray | None:
        """Advance one tick; return the indices of matches that ended on it, if any."""
        cfg = self.config
        dt = cfg.dt
        live2 = live[:, None]
        grounded = self.y <= 0.0
        free = (self.move == 0) & (self.hitstun == 0) & live2
        if first:
            # A skill or jump is a key *press*: it acts on the first tick of the decision only.
            ready = np.take_along_axis(self.cooldown, skill_index[..., None], axis=2)[..., 0] == 0
            start = is_skill & free & grounded & ready
            if start.any():
                self.move[start] = skill_index[start] + 1
                self.move_tick[start] = 0
                self.move_hit[start] = False
                self.cooldown[start, skill_index[start]] = self._cooldown_of[skill_index[start]]
                free &= ~start
                events.skill_started |= start
            jump = wants_jump & free & grounded
            self.vy = np.where(jump, cfg.jump_speed, self.vy)
        walking = free & grounded
        self.guarding = walking & wants_guard

        stunned = self.hitstun > 0
        slide = np.sign(self.vx) * np.maximum(np.abs(self.vx) - cfg.friction * dt, 0.0)
        # Matches that already ended move on here too; ``step`` puts their final state back.
        self.vx = np.where(
            walking,
            direction * cfg.walk_speed * ~self.guarding,
            np.where(stunned | ~grounded, np.where(stunned, slide, self.vx), 0.0),
        )
        # Integrate, land, keep inside the arena.
        self.x = self.x + self.vx * dt
        airborne = (self.y > 0.0) | (self.vy > 0.0)
        self.vy = np.where(airborne, self.vy - cfg.gravity * dt, 0.0)
        self.y = self.y + self.vy * dt
        landed = self.y <= 0.0
        self.y[landed] = 0.0
        self.vy[landed] = 0.0
        self._separate()

        gap = self.x[:, ::-1] - self.x  # opponent minus self, m
        turn = free & grounded & (gap != 0.0)
        self.facing = np.where(turn, np.sign(gap), self.facing)

        in_move = self.move > 0
        if in_move.any():
            self._resolve_hits(live2, gap, events)
            in_move = self.move > 0
            self.move_tick += in_move
            finished = in_move & (self.move_tick >= self._total[self.move])
            self.move[finished] = 0
        np.maximum(self.hitstun - 1, 0, out=self.hitstun)
        np.maximum(self.cooldown - 1, 0, out=self.cooldown)
        self.tick += live

        knocked_out = np.minimum(self.hp[:, 0], self.hp[:, 1]) <= 0.0
        ended = live & (knocked_out | (self.tick >= cfg.round_ticks))
        if ended.any():
            lead = self.hp[:, 0] - self.hp[:, 1]
            result = np.where(lead > 0, 0, np.where(lead < 0, 1, -1)).astype(np.int8)
            self.winner = np.where(ended, result, self.winner)
            self.ko |= ended & knocked_out
            self.done |= ended
            events.ended |= ended
            return np.flatnonzero(ended)
        return None

    def _separate(self) -> None:
        """Keep fighters inside the arena and at least a body width apart."""
        lo, hi, width = self._half_width, self._x_max, self.config.body_width
        x = np.clip(self.x, lo, hi)
        gap = x[:, 1] - x[:, 0]
        overlap = width - np.abs(gap)
        if (overlap > 0).any():
            side = np.where(gap >= 0, 1.0, -1.0)  # player 1 is pushed this way
            push = np.maximum(overlap, 0.0) / 2
            x0 = np.clip(x[:, 0] - side * push, lo, hi)
            x1 = np.clip(x[:, 1] + side * push, lo, hi)
            # Against a wall only one fighter can move: give it the whole separation.
            x1 = np.where(np.abs(x1 - x0) < width - 1e-9, np.clip(x0 + side * width, lo, hi), x1)
            x0 = np.where(np.abs(x1 - x0) < width - 1e-9, np.clip(x1 - side * width, lo, hi), x0)
            x = np.stack([x0, x1], axis=1)
        self.x = x

    def _resolve_hits(self, live2: np.ndarray, gap: np.ndarray, events: StepEvents) -> None:
        move = self.move
        tick = self.move_tick
        in_active = (
            (move > 0) & (tick >= self._startup[move]) & (tick < self._active_end[move]) & ~self.move_hit & live2
        )
        if not in_active.any():
            return
        ahead = gap * self.facing  # distance to the opponent in front, m (negative: behind)
        height_ok = self._hits_airborne[move] | (self.y[:, ::-1] <= self.config.low_hit_height)
        hit = in_active & (ahead >= 0.0) & (ahead <= self._reach[move]) & height_ok
        if not hit.any():
            return
        # Both players' hits are decided from the same pre-hit state, so simultaneous hits trade.
        victim = hit[:, ::-1]
        attacker_move = move[:, ::-1]
        faces_attacker = self.facing * gap > 0
        guarded = victim & self.guarding & faces_attacker
        damage = self._damage[attacker_move] * np.where(guarded, self._guard_through[attacker_move], 1.0) * victim
        clean = victim & ~guarded
        away = -np.sign(gap)  # direction pointing away from the opponent
        self.hp = self.hp - damage
        self.hitstun = np.where(clean, self._hitstun_of[attacker_move], self.hitstun)
        knockback = self._knockback[attacker_move] * np.where(clean, 1.0, 0.3)
        self.vx = np.where(victim, knockback * away, self.vx)
        self.move[clean] = 0
        self.move_tick[clean] = 0
        self.move_hit |= hit
        events.hits_landed += hit
        events.hits_taken += victim
        events.damage_taken += damage
        events.damage_dealt += damage[:, ::-1]

    # ------------------------------------------------------------- snapshots
    _STATE_FIELDS = (
        "x",
        "y",
        "vx",
        "vy",
        "facing",
        "hp",
        "guarding",
        "hitstun",
        "cooldown",
        "move",
        "move_tick",
        "move_hit",
        "tick",
        "decision",
        "done",
        "winner",
        "ko",
        "seeds",
    )

    def get_state(self, indices: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """A copy of the full state (optionally of some matches): what a per-frame state log stores."""
        idx = self._rows if indices is None else np.asarray(indices)
        return {name: getattr(self, name)[idx].copy() for name in self._STATE_FIELDS}

    def set_state(self, state: dict[str, np.ndarray], indices: np.ndarray | None = None) -> None:
        """Restore matches from ``get_state`` output (e.g. to freeze finished matches)."""
        idx = self._rows if indices is None else np.asarray(indices)
        for name in self._STATE_FIELDS:
            getattr(self, name)[idx] = state[name]
