"""Action maps: how a game's discrete actions become keys on a keyboard, and back.

A recording logs *keys*, not action ids. Each game declares its buttons and, for every action,
which buttons it holds and which one it taps (its ``bcarena.envs.games.InputMap``; the
:class:`ActionMap` built from it by :func:`action_map_of` adds the lookups both ways):

* **hold** buttons (movement, directions) stay down across frames: down when the action that
  needs them starts, up when the action changes;
* **tap** buttons (skills, FIRE) are short presses that may begin and end between two of the
  game's input samples.

``compose`` is the inverse: the action a game reads from the held buttons and the tapped one.
In Duel a tap *decides* the action (a skill wins over movement: ``tap_overrides``); in Boxing
the tap *combines* with the held directions (UP + FIRE = UPFIRE).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np

from bcarena.envs.games import Game, get_game
from bcarena.recordings.errors import RecordingError


class ActionMapError(RecordingError):
    """An action map is inconsistent, or names actions/buttons it does not know."""


@dataclass(frozen=True)
class ActionMap:
    """Buttons of a game and the (held buttons, tapped button) of each action.

    ``holds[a]`` is the set of hold buttons action ``a`` keeps down, or ``None`` for "leave the
    held buttons as they are" (a Duel skill is tapped while movement keys stay down).
    ``taps[a]`` is the tap button of action ``a`` or ``None``.
    """

    action_names: tuple[str, ...]
    hold_buttons: tuple[str, ...]
    tap_buttons: tuple[str, ...]
    holds: tuple[frozenset[str] | None, ...]
    taps: tuple[str | None, ...]
    tap_overrides: bool  # True: a tap alone decides the action; False: it combines with the held buttons
    _lookup: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.action_names)
        if len(self.holds) != n or len(self.taps) != n:
            raise ActionMapError(f"action map: {n} actions but {len(self.holds)} holds and {len(self.taps)} taps")
        if len(set(self.buttons)) != len(self.buttons):
            raise ActionMapError(f"action map: duplicate button names in {self.buttons}")
        # lookup[held_mask, tap_index + 1] -> action id, -1 where no action has that combination.
        lookup = np.full((2 ** len(self.hold_buttons), len(self.tap_buttons) + 1), -1, dtype=np.int64)
        for action, (held, tap) in enumerate(zip(self.holds, self.taps)):
            if tap is not None and tap not in self.tap_buttons:
                raise ActionMapError(f"action {self.action_names[action]!r} taps unknown button {tap!r}")
            if held is not None and not held <= set(self.hold_buttons):
                raise ActionMapError(
                    f"action {self.action_names[action]!r} holds unknown button(s) "
                    f"{sorted(held - set(self.hold_buttons))}"
                )
            column = 0 if tap is None else self.tap_buttons.index(tap) + 1
            masks = (
                range(lookup.shape[0])
                if held is None or (tap is not None and self.tap_overrides)
                else [self.mask(held)]
            )
            for m in masks:
                if lookup[m, column] < 0 or held is not None:
                    lookup[m, column] = action
        object.__setattr__(self, "_lookup", lookup)

    @property
    def buttons(self) -> tuple[str, ...]:
        return self.hold_buttons + self.tap_buttons

    @property
    def num_actions(self) -> int:
        return len(self.action_names)

    @property
    def skill_actions(self) -> tuple[int, ...]:
        """Actions that tap a button: the rare, decisive ones."""
        return tuple(a for a, tap in enumerate(self.taps) if tap is not None)

    def mask(self, held: frozenset[str] | set[str]) -> int:
        return sum(1 << self.hold_buttons.index(b) for b in held)

    def compose(self, held_mask: np.ndarray, tap_index: np.ndarray) -> np.ndarray:
        """Actions (F,) for held-button bitmasks (F,) and tap indices (F,) (-1 = no tap); -1 where undefined."""
        return self._lookup[np.asarray(held_mask, dtype=np.int64), np.asarray(tap_index, dtype=np.int64) + 1]

    def defined(self, held_mask: np.ndarray | int) -> np.ndarray:
        """Whether holding exactly these buttons (and tapping nothing) is an action, per mask."""
        return self._lookup[np.asarray(held_mask, dtype=np.int64), 0] >= 0

    def to_json(self) -> dict[str, Any]:
        return {
            "hold_buttons": list(self.hold_buttons),
            "tap_buttons": list(self.tap_buttons),
            "tap_overrides": self.tap_overrides,
            "actions": [
                {"name": name, "hold": None if held is None else sorted(held), "tap": tap}
                for name, held, tap in zip(self.action_names, self.holds, self.taps)
            ],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ActionMap:
        """Inverse of ``to_json``; raises ActionMapError on anything malformed."""
        try:
            actions = data["actions"]
            if not isinstance(actions, list) or not actions:
                raise ActionMapError("action map: 'actions' must be a non-empty list")
            names, holds, taps = [], [], []
            for spec in actions:
                held = spec["hold"]
                names.append(str(spec["name"]))
                holds.append(None if held is None else frozenset(str(b) for b in held))
                taps.append(None if spec["tap"] is None else str(spec["tap"]))
            return cls(
                tuple(names),
                tuple(str(b) for b in data["hold_buttons"]),
                tuple(str(b) for b in data["tap_buttons"]),
                tuple(holds),
                tuple(taps),
                bool(data["tap_overrides"]),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ActionMapError(f"action map: malformed ({type(exc).__name__}: {exc})") from None


def action_map_of(game: Game | str) -> ActionMap:
    """The recorder's action map of a registered game, from its :class:`~bcarena.envs.games.InputMap`."""
    game = get_game(game) if isinstance(game, str) else game
    return _action_map(game)


@cache
def _action_map(game: Game) -> ActionMap:
    keys = game.input_map
    return ActionMap(game.action_names, keys.hold_buttons, keys.tap_buttons, keys.holds, keys.taps, keys.tap_overrides)


DUEL_ACTION_MAP = action_map_of("duel")


def boxing_action_map() -> ActionMap:
    """The 18 actions of the ALE joystick: held directions plus a FIRE tap (loads ale-py on first use)."""
    return action_map_of("boxing")
