"""Games behind one interface: a :class:`Game` record per game, a registry by name, the one name check.

A game is data plus a few functions: its id and version, its action names (exact strings) and
which of them are skills, its observation kinds and their gymnasium spaces, how many policies act
in a match, its built-in opponents and experts, the recorder's input map, its event names, and a
batched match on the one loop (:func:`bcarena.envs.play.play`) with the result of every match.

Observation kinds: ``state`` is a game's feature vector (float32, ``state_features`` long);
``pixels`` is an 84x84x1 uint8 gray frame. Frame stacks are an agent's business: a frame-stacked
agent keeps its last k frames and sees (B, 84, 84, k) (newest last); games never stack.

The registry holds Duel and ALE Boxing (Boxing is described by ``bcarena.envs.boxing`` and imported
only when used, since it loads ale-py), games added with :func:`register_game`, and plugins found
through the entry-point group ``bcarena.games`` (a ``name = "module:factory"`` entry whose factory
returns a :class:`Game`), loaded lazily on first use. A plugin that fails to load, or whose match
returns wrong shapes (checked once, on its first match), is a one-line :class:`GamePluginError`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np

from bcarena.envs.errors import BcarenaError

ENTRY_POINT_GROUP = "bcarena.games"
GRAY_SIZE = 84
PIXELS_SPACE = gym.spaces.Box(0, 255, (GRAY_SIZE, GRAY_SIZE, 1), np.uint8)
# Events a match reports each step (``Match.step`` returns them for generic games, see ``Game``).
EVENTS: tuple[str, ...] = ("skill_used", "hit_landed", "hit_taken", "ko")


class GameError(BcarenaError, ValueError):
    """A game was used wrongly: bad options, an agent or dataset of another game, a missing player."""


class UnknownGameError(GameError, KeyError):
    """A game name the registry does not know."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class GamePluginError(GameError):
    """A game plugin failed to load, or its matches do not keep the Match contract."""


@dataclass(frozen=True)
class InputMap:
    """The keys of a game's recordings: buttons, and the (held buttons, tapped button) of each action.

    ``holds[a]`` is the set of hold buttons action ``a`` keeps down (``None``: leave the held buttons
    as they are), ``taps[a]`` its tap button or ``None``. ``tap_overrides``: a tap alone decides the
    action (Duel's skills), or combines with the held buttons (the Atari joystick: UP + FIRE =
    UPFIRE). Key events are logged at the game's tick rate. ``bcarena.recordings.actions.ActionMap``
    is built from it.
    """

    hold_buttons: tuple[str, ...]
    tap_buttons: tuple[str, ...]
    holds: tuple[frozenset[str] | None, ...]
    taps: tuple[str | None, ...]
    tap_overrides: bool


@dataclass(frozen=True)
class MatchOptions:
    """How a match is built: the observation kinds its policies need, screens for videos, worker processes."""

    obs_types: frozenset[str] = frozenset({"state"})
    video: bool = False  # keep RGB screens for people (``Game.screen``)
    workers: int = 1  # processes stepping emulators, where a game has them


@dataclass(frozen=True)
class Outcome:
    """Results of N finished matches, from side 0 (the agent): side 1 is the opponent (a policy or built in)."""

    winner: np.ndarray  # (N,) int8: 0, 1, or -1 for a draw
    score: np.ndarray  # (N, 2) float: each side's score (Duel: HP left; Boxing: points)
    ko: np.ndarray  # (N,) bool: ended by knock-out


# A built-in player: (game config, seed) -> a Policy, or None for an opponent the match itself plays.
PlayerFactory = Callable[[Any, int], Any]


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: one record per registered game
class Game:
    """One game, as the whole pipeline sees it (see the module docstring).

    ``new_match(num_matches, config, options)`` returns a :class:`~bcarena.envs.play.Match` on the one
    loop; ``num_players`` policies act in it (2, or 1 where the opponent is built into the match,
    as the Atari CPU). Games other than Duel report, from ``Match.step``, a mapping of
    :data:`EVENTS` arrays: ``skill_used`` and ``hit_landed`` (N, 2) bool per side, ``ko`` (N,) bool
    (``hit_taken`` of a side is the other side's ``hit_landed``). ``result(match)`` reads the
    :class:`Outcome` after the loop. ``state_features`` names the ``state`` vector's entries.
    ``make_config(options)`` builds the game's config from a mapping (errors name the game and key);
    ``config_dict(config)`` is its inverse, recorded in meta.json; ``timing(config)`` is
    (decisions per second, ticks per decision, tick rate in Hz). ``screen(match, row)``, if given,
    is the RGB frame a person would see (videos).
    """

    name: str
    version: str
    action_names: tuple[str, ...]
    skill_actions: tuple[int, ...]
    state_features: tuple[str, ...]
    observation_spaces: Mapping[str, gym.spaces.Box]
    num_players: int
    opponents: Mapping[str, PlayerFactory]
    experts: Mapping[str, PlayerFactory]
    input_map: InputMap
    new_match: Callable[[int, Any, MatchOptions], Any]
    result: Callable[[Any], Outcome]
    make_config: Callable[[Mapping[str, Any]], Any]
    config_dict: Callable[[Any], dict[str, Any]]
    timing: Callable[[Any], tuple[float, int, int]]
    events: tuple[str, ...] = EVENTS
    screen: Callable[[Any, int], np.ndarray] | None = None
    description: str = ""
    _checked: list[bool] = field(default_factory=list, init=False, repr=False)  # contract checked on first match

    @property
    def num_actions(self) -> int:
        return len(self.action_names)

    @property
    def obs_shapes(self) -> dict[str, tuple[int, ...]]:
        return {kind: tuple(space.shape or ()) for kind, space in self.observation_spaces.items()}

    @property
    def players(self) -> list[str]:
        """Names of the built-in players: opponents, then experts (a name in both is listed once)."""
        return list(dict.fromkeys([*self.opponents, *self.experts]))

    def player(self, name: str, config: Any = None, seed: int = 0) -> Any:
        """The built-in opponent or expert ``name`` as a Policy (None: the match plays it itself)."""
        factory = self.opponents.get(name) or self.experts.get(name)
        if factory is None:
            raise GameError(f"game {self.name!r} has no player {name!r}; its players are {self.players}")
        return factory(self.make_config({}) if config is None else config, seed)

    def match(self, num_matches: int, config: Any = None, options: MatchOptions | None = None) -> Any:
        """A new batched match (``num_matches`` rows); a plugin's first match is checked against the contract."""
        config = self.make_config({}) if config is None else config
        match = self.new_match(num_matches, config, options or MatchOptions())
        if not self._checked:
            self._checked.append(True)
            check_match(self, match, options or MatchOptions())
        return match

    def check_config(self, options: Mapping[str, Any]) -> Any:
        """``make_config(options)``; a failure other than a BcarenaError becomes a GameError naming the game."""
        try:
            return self.make_config(options)
        except BcarenaError:  # the game's own message (Duel's and Boxing's name the key)
            raise
        except (TypeError, ValueError) as exc:
            raise GameError(f"game {self.name!r}: invalid options {dict(options)}: {exc}") from None


def check_match(game: Game, match: Any, options: MatchOptions) -> None:
    """Refuse a match that breaks the Match contract: wrong sizes, observation shapes or dtypes."""
    expected = {"num_players": game.num_players, "num_actions": game.num_actions}
    for attr, value in expected.items():
        if getattr(match, attr, None) != value:
            raise GamePluginError(
                f"game {game.name!r}: its match has {attr} {getattr(match, attr, None)!r}, expected {value}"
            )
    n = match.num_matches
    match.reset(np.arange(n, dtype=np.int64))
    for kind in sorted(options.obs_types & set(game.observation_spaces)):
        space = game.observation_spaces[kind]
        obs = np.asarray(match.observe(0, kind))
        if obs.shape != (n, *space.shape) or obs.dtype != space.dtype:
            raise GamePluginError(
                f"game {game.name!r}: {kind} observations are {obs.dtype} {obs.shape}, "
                f"expected {space.dtype} {(n, *space.shape)}"
            )
    done = np.asarray(match.done)
    if done.shape != (n,) or done.dtype != bool:
        raise GamePluginError(f"game {game.name!r}: match.done is {done.dtype} {done.shape}, expected bool ({n},)")


@contextmanager
def closing(match: Any) -> Iterator[Any]:
    """Use a match in a ``with`` block: matches with worker processes or emulators (``close()``) are closed."""
    try:
        yield match
    finally:
        close = getattr(match, "close", None)  # optional: only matches holding resources have it
        if callable(close):
            close()


# ------------------------------------------------------------------------------------ the one name check
def default_opponent(game: Game) -> str:
    """The opponent played when none is named: Duel's brawler, another game's first opponent."""
    return "brawler" if game.name == "duel" else next(iter(game.opponents))


@runtime_checkable
class DeclaresGame(Protocol):
    """A player that declares its game and action names (every bcarena Agent): checked where it plays."""

    name: str
    game: str
    action_names: Sequence[str]


def check_player_for_game(player: Any, game: Game | str) -> None:
    """:func:`check_agent_for_game` for a player that declares its game; scripted policies declare none."""
    if isinstance(player, DeclaresGame):
        check_agent_for_game(player.name, player.game, player.action_names, game)


def check_agent_for_game(agent_name: str, agent_game: str, agent_actions: Sequence[str], game: Game | str) -> Game:
    """The one action-name check: an agent of ``agent_game`` with ``agent_actions`` must fit ``game`` exactly.

    Refuses an agent of another game (naming both) and an agent whose action names differ from the
    game's in any way, case included (an agent trained on lower-case Boxing names must be retrained).
    """
    game = get_game(game) if isinstance(game, str) else game
    if agent_game != game.name:
        raise GameError(
            f"agent {agent_name!r} was trained on game {agent_game!r}, not {game.name!r}: use a {game.name} agent"
        )
    if list(agent_actions) != list(game.action_names):
        raise GameError(
            f"agent {agent_name!r} was trained on actions {_short(agent_actions)}; {game.name}'s "
            f"{game.num_actions} actions are {_short(game.action_names)} (exact names): retrain it on a "
            f"dataset built by this bcarena"
        )
    return game


def check_dataset_for_game(where: str, game_name: str, action_names: Sequence[str]) -> Game:
    """A dataset's action names must be its game's, exactly; otherwise a GameError naming the file and game."""
    game = get_game(game_name, where)
    if list(action_names) != list(game.action_names):
        raise GameError(
            f"{where}: action_names {_short(action_names)} are not game {game.name!r}'s "
            f"{_short(game.action_names)} (exact names): rebuild the dataset"
        )
    return game


def _short(names: Sequence[str], keep: int = 8) -> str:
    names = list(names)
    return str(names) if len(names) <= keep else str(names[:keep])[:-1] + f", ... ({len(names)} in all)]"


# ------------------------------------------------------------------------------------------- registry
_FACTORIES: dict[str, Callable[[], Game] | str] = {
    "duel": "bcarena.envs.games:duel_game",
    "boxing": "bcarena.envs.boxing:boxing_game",
}
_LOADED: dict[str, Game] = {}
_plugins_found = False


def register_game(name: str, game: Game | Callable[[], Game] | str, replace: bool = False) -> None:
    """Register ``game`` under ``name``: a Game, a factory returning one, or an entry point ``"module:attr"``.

    A factory or entry point is called on first use. Registering a taken name needs ``replace``.
    """
    _find_plugins()
    if name in _FACTORIES and not replace:
        raise GameError(f"game {name!r} is already registered; pass replace=True to replace it")
    _LOADED.pop(name, None)
    if isinstance(game, Game):
        _LOADED[name] = game
    _FACTORIES[name] = (lambda: game) if isinstance(game, Game) else game


def unregister_game(name: str) -> None:
    """Forget a registered game (tests register temporary ones)."""
    _FACTORIES.pop(name, None)
    _LOADED.pop(name, None)


def list_games() -> list[str]:
    """Names of every registered game (plugins included; none is imported)."""
    _find_plugins()
    return sorted(_FACTORIES)


def get_game(name: str, where: str | None = None) -> Game:
    """The Game registered as ``name``, loaded on first use; ``where`` prefixes the error (a file, a key)."""
    if name in _LOADED:
        return _LOADED[name]
    _find_plugins()
    if name not in _FACTORIES:
        prefix = f"{where}: " if where else ""
        raise UnknownGameError(f"{prefix}unknown game {name!r}; known games are {sorted(_FACTORIES)}")
    _LOADED[name] = _load(name, _FACTORIES[name])
    return _LOADED[name]


def _load(name: str, factory: Callable[[], Game] | str) -> Game:
    try:
        if isinstance(factory, str):
            module, _, attr = factory.partition(":")
            game = getattr(importlib.import_module(module), attr)()
        else:
            game = factory()
    except Exception as exc:  # noqa: BLE001 - whatever a plugin does wrong, say which game and why
        raise GamePluginError(f"game {name!r} failed to load ({type(exc).__name__}: {exc})") from None
    if not isinstance(game, Game):
        raise GamePluginError(f"game {name!r}: its factory returned {type(game).__name__}, expected a Game")
    if game.name != name:
        raise GamePluginError(f"game {name!r}: its Game is named {game.name!r}, expected {name!r}")
    return game


def _find_plugins() -> None:
    """Add the ``bcarena.games`` entry points once (names only: nothing is imported until used)."""
    global _plugins_found
    if _plugins_found:
        return
    _plugins_found = True
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        _FACTORIES.setdefault(entry.name, entry.value)


# ------------------------------------------------------------------------------------------------ Duel
def duel_game() -> Game:
    """Duel, the house game, as a Game: two policies per match; its bots are the opponents, ``pro`` the expert."""
    from bcarena.envs.duel import ACTION_NAMES, BOTS, SKILL_ACTIONS, STATE_DIM, STATE_FEATURES, DuelConfig
    from bcarena.envs.files import package_version
    from bcarena.envs.play import BotPolicy, DuelBatch

    def bot(name: str) -> PlayerFactory:
        return lambda config, seed: BotPolicy(BOTS[name](config))

    move = {"idle": frozenset(), "left": frozenset({"left"}), "right": frozenset({"right"})}
    move.update(jump=frozenset({"up"}), guard=frozenset({"down"}))
    return Game(
        name="duel",
        version=f"bcarena-duel {package_version('bcarena')}",
        action_names=tuple(ACTION_NAMES),
        skill_actions=tuple(SKILL_ACTIONS),
        state_features=tuple(STATE_FEATURES),
        observation_spaces={
            "state": gym.spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32),
            "pixels": PIXELS_SPACE,
        },
        num_players=2,
        opponents={name: bot(name) for name in BOTS},
        experts={"pro": bot("pro")},
        input_map=InputMap(
            ("left", "right", "up", "down"),
            ("light", "heavy", "special"),
            tuple(move.get(name) for name in ACTION_NAMES),
            tuple(name if a in SKILL_ACTIONS else None for a, name in enumerate(ACTION_NAMES)),
            tap_overrides=True,
        ),
        new_match=lambda n, config, options: DuelBatch(n, config),
        result=lambda match: Outcome(match.core.winner.copy(), match.core.hp.copy(), match.core.ko.copy()),
        make_config=lambda options: DuelConfig.from_dict(dict(options)),
        config_dict=lambda config: config.to_dict(),
        timing=lambda config: (config.decision_hz, config.action_repeat, config.tick_rate_hz),
        events=("skill_used", "hit_landed", "hit_taken", "ko", "action_change"),
        screen=_duel_screen,
        description="the house 1v1 side-view fighter (batched numpy core)",
    )


def _duel_screen(match: Any, row: int) -> np.ndarray:
    """Duel as people see it: the 640x360 RGB arena with HP and cooldown bars and the timer (players P1, P2)."""
    from bcarena.envs.duel.render import bgr_frame

    return np.ascontiguousarray(bgr_frame(match.core, row)[..., ::-1])
