"""The normalized state observation: one float32 vector per fighter, from that fighter's view.

Layout (``STATE_FEATURES`` names every index): 17 features of the fighter itself, the same 17
of its opponent, then 3 relative features. Values are roughly within [-1, 1] (knockback
speeds can reach about 3).

  own/opp  x            position, -1 = left wall, +1 = right wall
           y            height / jump apex (0 on the floor, 1 at the top of a jump)
           vx, vy       velocity / walk speed, vertical velocity / jump speed
           hp           hit points / max_hp, 0..1
           facing       +1 right, -1 left
           guarding     1 while guard is up
           hitstun      ticks of hitstun left / the longest hitstun of any skill
           cd_light, cd_heavy, cd_special   cooldown left / that skill's cooldown (0 = ready)
           in_light, in_heavy, in_special   one-hot: the move being performed
           startup, active, recovery        one-hot: phase of the current move
  dx          (opponent x - own x) / arena width, signed
  distance    |dx|
  time_left   fraction of the round left, 1 -> 0
"""

from __future__ import annotations

import numpy as np

from bcarena.envs.duel.config import DuelConfig

FIGHTER_FEATURES: tuple[str, ...] = (
    "x",
    "y",
    "vx",
    "vy",
    "hp",
    "facing",
    "guarding",
    "hitstun",
    "cd_light",
    "cd_heavy",
    "cd_special",
    "in_light",
    "in_heavy",
    "in_special",
    "startup",
    "active",
    "recovery",
)
STATE_FEATURES: tuple[str, ...] = (
    tuple(f"own_{f}" for f in FIGHTER_FEATURES)
    + tuple(f"opp_{f}" for f in FIGHTER_FEATURES)
    + ("dx", "distance", "time_left")
)
STATE_DIM = len(STATE_FEATURES)
FEATURE_INDEX: dict[str, int] = {name: i for i, name in enumerate(STATE_FEATURES)}
_NF = len(FIGHTER_FEATURES)
_MOVE_IDS = np.arange(1, 4, dtype=np.int8)


def state_observations(core, rows: np.ndarray | None = None) -> np.ndarray:
    """Observations of every fighter in ``core`` (a DuelCore): float32 array (N, 2, STATE_DIM).

    ``obs[:, p]`` is player p's view: its own features first, then its opponent's. With
    ``rows``, only those matches are observed (shape (len(rows), 2, STATE_DIM)).
    """
    cfg: DuelConfig = core.config

    def pick(arr: np.ndarray) -> np.ndarray:
        return arr if rows is None else arr[rows]

    x, move, tick = pick(core.x), pick(core.move), pick(core.move_tick)
    n = x.shape[0]
    startup = tick < core._startup[move]
    active = ~startup & (tick < core._active_end[move])
    in_move = move > 0
    own = np.empty((n, 2, _NF), dtype=np.float32)
    own[..., 0] = x * (2.0 / cfg.arena_width) - 1.0
    own[..., 1] = pick(core.y) * (1.0 / cfg.jump_apex)
    own[..., 2] = pick(core.vx) * (1.0 / cfg.walk_speed)
    own[..., 3] = pick(core.vy) * (1.0 / cfg.jump_speed)
    own[..., 4] = np.maximum(pick(core.hp), 0.0) * (1.0 / cfg.max_hp)
    own[..., 5] = pick(core.facing)
    own[..., 6] = pick(core.guarding)
    own[..., 7] = pick(core.hitstun) * (1.0 / max(1, int(core._hitstun_of.max())))
    own[..., 8:11] = pick(core.cooldown) * (1.0 / np.maximum(core._cooldown_of, 1))
    own[..., 11:14] = move[..., None] == _MOVE_IDS
    own[..., 14] = in_move & startup
    own[..., 15] = in_move & active
    own[..., 16] = in_move & ~startup & ~active
    dx = (x[:, ::-1] - x) * (1.0 / cfg.arena_width)
    relative = np.empty((n, 2, 3), dtype=np.float32)
    relative[..., 0] = dx
    relative[..., 1] = np.abs(dx)
    relative[..., 2] = (1.0 - pick(core.tick) * (1.0 / cfg.round_ticks))[:, None]
    return np.concatenate([own, own[:, ::-1], relative], axis=2)
