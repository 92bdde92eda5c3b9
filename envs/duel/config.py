"""Duel game parameters: one frozen dataclass, every field with its unit.

Positions are in metres along a flat arena, speeds in m/s, times in *ticks* of the internal
60 Hz clock unless a name says seconds. Agents decide every ``action_repeat`` ticks, so the
default 60 Hz / 6 gives the 10 FPS decision and recording rate the project is about.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from bcarena.envs.errors import BcarenaError


class Action(IntEnum):
    """Discrete actions. LEFT/RIGHT are absolute screen directions, as keys on a pad are."""

    IDLE = 0
    LEFT = 1
    RIGHT = 2
    JUMP = 3
    GUARD = 4
    LIGHT = 5
    HEAVY = 6
    SPECIAL = 7


ACTION_NAMES: tuple[str, ...] = tuple(a.name.lower() for a in Action)
NUM_ACTIONS = len(Action)
SKILL_ACTIONS: tuple[int, ...] = (Action.LIGHT, Action.HEAVY, Action.SPECIAL)


class DuelConfigError(BcarenaError, ValueError):
    """A game configuration value is missing, unknown or out of range."""


@dataclass(frozen=True)
class SkillSpec:
    """One attack. Frame data follows fighting-game convention: startup, active, recovery."""

    startup: int  # ticks after the press before the hitbox appears
    active: int  # ticks the hitbox can connect
    recovery: int  # ticks after the active window before the fighter can act again
    reach: float  # m, from the attacker's centre in its facing direction
    damage: float  # HP removed on an unguarded hit
    cooldown: int  # ticks from the press until this skill can be pressed again
    hitstun: int  # ticks the victim cannot act after an unguarded hit
    knockback: float  # m/s the victim is pushed away (decays with ``DuelConfig.friction``)
    guard_through: float  # fraction of damage that still lands on a guarding victim, 0..1
    hits_airborne: bool  # whether the hitbox reaches a jumping victim

    @property
    def total(self) -> int:
        """Ticks from press until the attacker is free again."""
        return self.startup + self.active + self.recovery


def _default_skills() -> tuple[SkillSpec, SkillSpec, SkillSpec]:
    light = SkillSpec(
        startup=4,
        active=3,
        recovery=8,
        reach=1.2,
        damage=6.0,
        cooldown=18,
        hitstun=14,
        knockback=2.0,
        guard_through=0.15,
        hits_airborne=False,
    )
    heavy = SkillSpec(
        startup=9,
        active=4,
        recovery=16,
        reach=1.6,
        damage=12.0,
        cooldown=48,
        hitstun=22,
        knockback=5.0,
        guard_through=0.2,
        hits_airborne=False,
    )
    special = SkillSpec(
        startup=12,
        active=6,
        recovery=24,
        reach=2.6,
        damage=24.0,
        cooldown=420,
        hitstun=30,
        knockback=8.0,
        guard_through=0.5,
        hits_airborne=True,
    )
    return (light, heavy, special)


@dataclass(frozen=True)
class DuelConfig:
    """All rules of a Duel match. Validated on construction; build from dicts with ``from_dict``."""

    tick_rate_hz: int = 60  # internal simulation clock
    action_repeat: int = 6  # ticks per decision: 60 / 6 = 10 decisions (and recorded frames) per second
    round_seconds: float = 30.0  # a match ends by time-out after this long (HP lead wins)
    arena_width: float = 10.0  # m, fighters' centres stay within [body_width / 2, arena_width - body_width / 2]
    start_gap: float = 4.0  # m between the fighters at the start
    start_jitter: float = 0.5  # m, uniform random shift of the start positions (seeded)
    body_width: float = 0.6  # m, fighters cannot overlap closer than this
    max_hp: float = 100.0  # HP at the start; a fighter at <= 0 HP is knocked out (KO)
    walk_speed: float = 3.0  # m/s
    jump_speed: float = 7.0  # m/s, initial upward speed of a jump
    gravity: float = 25.0  # m/s^2
    friction: float = 30.0  # m/s^2, deceleration of knockback sliding
    low_hit_height: float = 0.5  # m, a jumping fighter above this height dodges non-airborne hitboxes
    skills: tuple[SkillSpec, SkillSpec, SkillSpec] = field(default_factory=_default_skills)

    def __post_init__(self) -> None:
        given: Sequence[Any] = self.skills  # from_dict and YAML give mappings here; they become SkillSpecs
        if isinstance(given, (list, tuple)) and given and isinstance(given[0], Mapping):
            object.__setattr__(self, "skills", tuple(_skill_from_dict(i, s) for i, s in enumerate(given)))
        for name in ("tick_rate_hz", "action_repeat"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise DuelConfigError(f"DuelConfig.{name} must be a positive integer, got {value!r}")
        for name in (
            "round_seconds",
            "arena_width",
            "body_width",
            "max_hp",
            "walk_speed",
            "jump_speed",
            "gravity",
            "friction",
            "low_hit_height",
        ):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise DuelConfigError(f"DuelConfig.{name} must be a number > 0, got {value!r}")
        for name in ("start_gap", "start_jitter"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value >= 0:
                raise DuelConfigError(f"DuelConfig.{name} must be a number >= 0, got {value!r}")
        if self.start_gap + 2 * self.start_jitter + self.body_width > self.arena_width:
            raise DuelConfigError(
                f"DuelConfig.start_gap ({self.start_gap}) + 2*start_jitter + body_width must fit in "
                f"arena_width ({self.arena_width})"
            )
        if self.start_gap < self.body_width:
            raise DuelConfigError(
                f"DuelConfig.start_gap must be >= body_width ({self.body_width}), got {self.start_gap}"
            )
        if len(self.skills) != len(SKILL_ACTIONS):
            raise DuelConfigError(
                f"DuelConfig.skills must list {len(SKILL_ACTIONS)} skills (light, heavy, special), "
                f"got {len(self.skills)}"
            )
        for index, skill in enumerate(self.skills):
            _check_skill(index, skill)
        if self.round_ticks < 1:
            raise DuelConfigError(f"DuelConfig.round_seconds ({self.round_seconds}) is shorter than one tick")

    @property
    def dt(self) -> float:
        """Seconds per tick."""
        return 1.0 / self.tick_rate_hz

    @property
    def decision_hz(self) -> float:
        """Decisions (and recorded frames) per second."""
        return self.tick_rate_hz / self.action_repeat

    @property
    def round_ticks(self) -> int:
        return int(round(self.round_seconds * self.tick_rate_hz))

    @property
    def max_decisions(self) -> int:
        """Decisions in a match that runs to time-out."""
        return -(-self.round_ticks // self.action_repeat)

    @property
    def jump_apex(self) -> float:
        """m, the height a jump reaches."""
        return self.jump_speed**2 / (2 * self.gravity)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DuelConfig:
        """Build from plain data (JSON/YAML). Unknown keys are errors, not silently ignored."""
        if not isinstance(data, Mapping):
            raise DuelConfigError(f"DuelConfig must be a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DuelConfigError(f"DuelConfig: unknown key(s) {unknown}; valid keys are {sorted(known)}")
        return cls(**dict(data))


_SKILL_NAMES = ("light", "heavy", "special")


def _skill_from_dict(index: int, data: Mapping[str, Any]) -> SkillSpec:
    known = {f.name for f in dataclasses.fields(SkillSpec)}
    unknown = sorted(set(data) - known)
    missing = sorted(known - set(data))
    where = f"DuelConfig.skills[{index}] ({_SKILL_NAMES[index] if index < 3 else '?'})"
    if unknown:
        raise DuelConfigError(f"{where}: unknown key(s) {unknown}; valid keys are {sorted(known)}")
    if missing:
        raise DuelConfigError(f"{where}: missing key(s) {missing}")
    return SkillSpec(**dict(data))


def _check_skill(index: int, skill: SkillSpec) -> None:
    where = f"DuelConfig.skills[{index}] ({_SKILL_NAMES[index]})"
    if not isinstance(skill, SkillSpec):
        raise DuelConfigError(f"{where} must be a SkillSpec or a mapping, got {type(skill).__name__}")
    for name in ("startup", "active", "recovery", "cooldown", "hitstun"):
        value = getattr(skill, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < (1 if name in ("startup", "active") else 0):
            raise DuelConfigError(
                f"{where}.{name} must be an integer >= {1 if name in ('startup', 'active') else 0}, got {value!r}"
            )
    for name in ("reach", "damage"):
        value = getattr(skill, name)
        if not isinstance(value, (int, float)) or not value > 0:
            raise DuelConfigError(f"{where}.{name} must be a number > 0, got {value!r}")
    if not isinstance(skill.knockback, (int, float)) or skill.knockback < 0:
        raise DuelConfigError(f"{where}.knockback must be a number >= 0, got {skill.knockback!r}")
    if not isinstance(skill.guard_through, (int, float)) or not 0 <= skill.guard_through <= 1:
        raise DuelConfigError(f"{where}.guard_through must be within [0, 1], got {skill.guard_through!r}")
