"""Key moments: the expert's frames that matter, ranked by how badly a clone gets them wrong.

**Offline** (:func:`explore`): on one split of an action dataset, every frame with an event (skill
used, hit landed or taken, KO, action change, and moments people ``marked`` in a label overlay) is
a key moment of the expert. Per moment: the expert's action, the agent's chosen action, the
agent's probability of the expert's action (softmax of its scores; ``NaN`` for agents without
scores, e.g. bots), the state features, and a timing label within a +-``window`` frame window:

* ``right``  the agent picks the expert's action on that very frame;
* ``early``  it picks it within ``window`` frames before (and not on the frame);
* ``late``   within ``window`` frames after (the nearer side wins, before on a tie);
* ``missed`` not within the window.

Moments are ranked missed first, then late/early, then right, and within a label by the agent's
probability of the expert's action (lowest first). Where a game's expert reads states (``READINGS``)
each moment also carries that reading: ``opportune`` (Duel: a ready skill reaches an open opponent,
plus ``punish``; Boxing: the opponent is in punch range).

**Closed loop** (:func:`closed_loop`): the agent plays matches of its game (through the one match
loop, with a hook); at each of its decisions the game's expert (:class:`~bcarena.envs.games.Game`
``experts``: Duel's pro, Boxing's RAM boxer, a plugin's) is asked what it would do in that state,
with its noise at 0 (the pro without its hesitation: in an opportune state it presses the skill).
A moment is a decision where the agent chose otherwise. Moment *types* (expert action, agent
action, state bucket) are ranked by how often they preceded a lost exchange: the agent was hit
within the next second (``horizon`` decisions, from the game's timing) -- its own score fell (Duel:
HP) or its opponent's rose (Boxing: points) -- next to the base rate over all decisions.

Only what a page needs to show saved moments is imported with this module; agents, training data
and matches (torch, the eval layer) are imported by the functions that compute moments.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from bcarena.envs.duel.bots import ProBot
from bcarena.envs.duel.observation import FEATURE_INDEX
from bcarena.envs.files import atomic_file, write_bytes, write_json
from bcarena.envs.games import Game, MatchOptions, closing, default_opponent, get_game
from bcarena.envs.play import Hook, Match, NoisyPolicy, Policy, Step, play
from bcarena.envs.video import read_video
from bcarena.eval.errors import EvalError
from bcarena.recordings.dataset import ActionDataset
from bcarena.recordings.episode import AGENT_VIEW_FILE

if TYPE_CHECKING:  # at run time the agents layer (torch) loads only when moments are computed
    from bcarena.agents.base import Agent

LABELS: tuple[str, ...] = ("missed", "late", "early", "right")  # worst first
# The event a moment is listed under when a frame has several (the rarer, more telling one first).
EVENT_PRIORITY: tuple[str, ...] = ("marked", "ko", "skill_used", "hit_landed", "hit_taken", "action_change")
BAND = ProBot.band  # m, the pro's preferred spacing
CLOSED_LOOP_BATCH = 64  # matches played at once (Boxing: one emulator each)


# ------------------------------------------------------------------------------------- offline
def agent_choices(agent: Agent, part: ActionDataset) -> tuple[np.ndarray, np.ndarray | None]:
    """The agent's actions (n,) int64 and probabilities (n, A) float32 (None without scores) on ``part``.

    ``part``'s rows must be in (episode, frame) order. Frame-stacked agents are scored on the stacked
    dataset rows (as offline training validation does); other agents replay the episodes through ``act``.
    """
    from bcarena.agents.capabilities import FrameStacked
    from bcarena.agents.data import split_data
    from bcarena.agents.threads import torch_threads
    from bcarena.eval.offline import predict_dataset

    if agent.game != part.manifest["game"]:
        raise EvalError(
            f"{part._where()}: dataset of game {part.manifest['game']!r}, agent {agent.name!r} plays {agent.game!r}"
        )
    if not isinstance(agent, FrameStacked):
        return predict_dataset(agent, part), None
    data = split_data(part, None, agent.obs_type, agent.frame_stack)
    scores, actions = [], []
    with torch_threads(1):  # small nets on a shared machine (see agents.threads)
        for _, x in data.all_inputs():
            inputs = x.numpy()
            scores.append(agent.scores_stacked(inputs))
            actions.append(agent.act_stacked(inputs))
    logits = np.concatenate(scores).astype(np.float64)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.concatenate(actions).astype(np.int64), (probs / probs.sum(axis=1, keepdims=True)).astype(np.float32)


def timing(expert: np.ndarray, agent: np.ndarray, episode: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row: label index into ``LABELS`` (n,) and the signed offset (n,) of the nearest frame within
    +-``window`` (same episode) where the agent chose the row's expert action (0 for missed rows)."""
    if window < 0:
        raise EvalError(f"the moment window must be >= 0 frames, got {window}")
    n = expert.shape[0]
    offset = np.zeros(n, dtype=np.int64)
    found = np.zeros(n, dtype=bool)
    idx = np.arange(n)
    for d in [0] + [s * k for k in range(1, window + 1) for s in (-1, 1)]:  # nearest first, before on a tie
        j = idx + d
        ok = (j >= 0) & (j < n)
        j = np.clip(j, 0, max(n - 1, 0))
        hit = ~found & ok & (episode[j] == episode) & (agent[j] == expert)
        offset[hit], found = d, found | hit
    label = np.where(~found, 0, np.where(offset == 0, 3, np.where(offset < 0, 2, 1)))
    return label, offset


def duel_reading(states: np.ndarray) -> pd.DataFrame:
    """The pro's reading of Duel states (n, STATE_DIM): opportune, punish, the skill it would press, distance."""
    pro = ProBot()
    opportune, punish, skill = pro.opportune(states)
    return pd.DataFrame(
        {
            "opportune": opportune,
            "punish": punish & opportune,
            "pro_skill": np.asarray(skill, dtype=np.int64),
            "distance_m": states[:, FEATURE_INDEX["distance"]] * pro.config.arena_width,
        }
    )


def boxing_reading(states: np.ndarray) -> pd.DataFrame:
    """The RAM expert's reading of Boxing states (n, 9): ``opportune`` (a punch can land: the fists reach the
    face), and the gaps to the opponent ``dx_px`` / ``dy_px`` (console pixels, absolute)."""
    from bcarena.envs import boxing  # ale-py loads only for Boxing

    dx = np.abs(np.rint(states[:, boxing.STATE_FEATURES.index("dx")] * boxing._X_SCALE))
    dy = np.abs(np.rint(states[:, boxing.STATE_FEATURES.index("dy")] * boxing._Y_SCALE))
    (x0, x1), (y0, y1) = boxing.BoxingExpert.punch_dx, boxing.BoxingExpert.punch_dy
    return pd.DataFrame({"opportune": (dx >= x0) & (dx <= x1) & (dy >= y0) & (dy <= y1), "dx_px": dx, "dy_px": dy})


# The expert's reading of a game's states (n, len(state_features)), where a game has one: always an
# ``opportune`` column (the expert's skill would pay off now) and the distances the buckets use.
READINGS: dict[str, Callable[[np.ndarray], pd.DataFrame]] = {"duel": duel_reading, "boxing": boxing_reading}


def explore(
    agent: Agent, data: ActionDataset, split: str = "test", window: int = 2, events: Sequence[str] | None = None
) -> pd.DataFrame:
    """The expert's key moments on ``split`` ranked by how badly ``agent`` gets them (see the module docstring).

    One row per frame that has at least one of ``events`` (default: every event column of the dataset):
    rank, episode, frame, row (the dataset row, for pixels), opponent, event (by ``EVENT_PRIORITY``),
    events (all of them), expert_action, agent_action, p_expert, p_agent, label, offset, skill (the expert
    pressed a skill), the expert's reading where the game has one (``READINGS``: Duel's opportune/punish/
    pro_skill/distance_m, Boxing's opportune/dx_px/dy_px), and the state features ``s_*``.
    """
    part = data.split(split)
    table = part.table.sort_values(["episode", "frame"], kind="stable")
    part = ActionDataset(table, part.manifest, part.pixels, part.path)
    names = list(events) if events is not None else part.event_names
    unknown = sorted(set(names) - set(part.event_names))
    if unknown:
        raise EvalError(f"{part._where()}: unknown event(s) {unknown}; this dataset has {part.event_names}")
    actions, probs = agent_choices(agent, part)
    expert = table["action"].to_numpy(dtype=np.int64)
    episode = table["episode"].to_numpy()
    label, offset = timing(expert, actions, episode, window)
    flags = np.stack([table[f"event_{name}"].to_numpy(dtype=bool) for name in names], axis=1)
    keep = flags.any(axis=1)
    action_names = np.asarray(part.action_names)
    ordered = [n for n in EVENT_PRIORITY if n in names] + [n for n in names if n not in EVENT_PRIORITY]
    rows = np.arange(len(table))
    out = pd.DataFrame(
        {
            "episode": episode,
            "frame": table["frame"].to_numpy(),
            "row": table.index.to_numpy(),
            "opponent": _opponents(part)[episode],
            "event": _first_event(table, ordered),
            "events": [",".join(n for n, f in zip(names, row) if f) for row in flags],
            "expert_action": action_names[expert],
            "agent_action": action_names[actions],
            "p_expert": probs[rows, expert] if probs is not None else np.nan,
            "p_agent": probs[rows, actions] if probs is not None else np.nan,
            "label": np.asarray(LABELS)[label],
            "offset": offset,
            "skill": np.isin(expert, part.skill_actions),
        }
    )
    reading = READINGS.get(part.manifest["game"])
    if reading is not None and part.state_columns:
        out = pd.concat([out, reading(part.states())], axis=1)
    out = pd.concat([out, table[part.state_columns].reset_index(drop=True)], axis=1)[keep]
    out = out.assign(_severity=label[keep]).sort_values(["_severity", "p_expert"], kind="stable", na_position="last")
    out = out.drop(columns="_severity").reset_index(drop=True)
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    out.attrs.update(agent=agent.name, split=split, window=int(window), dataset=part._where())
    return out


def _opponents(part: ActionDataset) -> np.ndarray:
    """Opponent name per dataset episode id (from the manifest's sources)."""
    sources = part.manifest["sources"]
    names = np.full(max((s["episode"] for s in sources), default=-1) + 1, "?", dtype=object)
    for s in sources:
        players = s.get("players") or []
        names[s["episode"]] = players[1 - s["player"]] if len(players) == 2 else "cpu"
    return names


def _first_event(table: pd.DataFrame, ordered: list[str]) -> np.ndarray:
    out = np.full(len(table), "", dtype=object)
    for name in reversed(ordered):
        out[table[f"event_{name}"].to_numpy(dtype=bool)] = name
    return out


def filter_moments(
    moments: pd.DataFrame,
    events: Sequence[str] | None = None,
    opponents: Sequence[str] | None = None,
    episodes: Sequence[int] | None = None,
    labels: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The moments having any of ``events`` (in their ``events`` list), against ``opponents``, in ``episodes``."""
    keep = np.ones(len(moments), dtype=bool)
    if events:
        wanted = set(events)
        keep &= moments["events"].map(lambda s: bool(wanted & set(s.split(",")))).to_numpy(dtype=bool)
    for column, values in (("opponent", opponents), ("episode", episodes), ("label", labels)):
        if values:
            keep &= moments[column].isin(list(values)).to_numpy()
    return moments[keep]


def counts(moments: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Moment counts per label, for all moments (``all``) and for each event type."""
    names = sorted({n for s in moments["events"] for n in s.split(",") if n})
    out = {"all": _label_counts(moments)}
    for name in names:
        out[name] = _label_counts(filter_moments(moments, events=[name]))
    return out


def _label_counts(moments: pd.DataFrame) -> dict[str, int]:
    found = moments["label"].value_counts()
    return {label: int(found.get(label, 0)) for label in LABELS} | {"total": len(moments)}


def top_summary(moments: pd.DataFrame, top: int) -> dict[str, Any]:
    """What the ``top`` worst moments are: shares of skill presses, of presses in opportune states, by event."""
    head = moments.head(top)
    n = len(head)
    summary: dict[str, Any] = {
        "top": n,
        "missed": int((head["label"] == "missed").sum()),
        "skill_presses": _share(head["skill"].to_numpy(dtype=bool).sum(), n),
        "by_event": {k: _share(v, n) for k, v in head["event"].value_counts().items()},
        "by_expert_action": {k: _share(v, n) for k, v in head["expert_action"].value_counts().items()},
    }
    if "opportune" in head:
        summary["skill_presses_in_opportune_states"] = _share((head["skill"] & head["opportune"]).sum(), n)
    return summary


def _share(count: Any, n: int) -> float | None:
    return float(count) / n if n else None


def side_by_side(left: pd.DataFrame, right: pd.DataFrame) -> pd.DataFrame:
    """Two agents' views of the same moments (same dataset, split, events): one row per moment of ``left``
    (which may be filtered), in its order, with rank/label/agent_action/p_expert of each agent (suffixes
    ``_left``, ``_right``). A moment of ``left`` that ``right`` lacks is an EvalError."""
    agent_columns = ["rank", "agent_action", "p_expert", "p_agent", "label", "offset"]
    keys = ["episode", "frame"]
    merged = left.merge(right[keys + agent_columns], on=keys, how="inner", suffixes=("_left", "_right"))
    if len(merged) != len(left):
        raise EvalError("side by side needs the two agents' moments from the same dataset, split and events")
    return merged


# ------------------------------------------------------------------------------------- filmstrips
@functools.lru_cache(maxsize=16)
def _episode_view(path: str) -> np.ndarray:
    return read_video(path, gray=True)


def moment_frames(data: ActionDataset, episode: int, frame: int, radius: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Gray frames (k, H, W) uint8 of ``episode`` around ``frame`` (+-``radius``, clipped to the episode)
    and their frame numbers (k,): from the dataset's pixels, else decoded from the recorded agent view."""
    table = data.table
    rows = table.index[(table["episode"] == episode) & table["frame"].between(frame - radius, frame + radius)]
    numbers = table.loc[rows, "frame"].to_numpy()
    if data.pixels is not None:
        return np.asarray(data.pixels[rows.to_numpy()]), numbers
    source = next((s for s in data.manifest["sources"] if s["episode"] == episode), None)
    if source is None:
        raise EvalError(f"{data._where()}: episode {episode} is not in the manifest's sources")
    return _episode_view(str(Path(source["path"]) / AGENT_VIEW_FILE))[numbers], numbers


def filmstrip(frames: np.ndarray, centre: int, caption: str, scale: int = 2) -> np.ndarray:
    """One BGR image: ``frames`` (k, H, W) side by side, ``scale`` x larger, the ``centre``-th framed in red,
    with a caption bar above."""
    tiles = []
    for k, gray in enumerate(frames):
        big = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
        colour = (0, 0, 255) if k == centre else (90, 90, 90)
        tile = cv2.copyMakeBorder(cv2.cvtColor(big, cv2.COLOR_GRAY2BGR), 3, 3, 3, 3, cv2.BORDER_CONSTANT, value=colour)
        tiles.append(tile)
    strip = np.concatenate(tiles, axis=1)
    bar = np.full((22, strip.shape[1], 3), 255, dtype=np.uint8)
    cv2.putText(bar, caption[:110], (4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, strip], axis=0)


def moment_filmstrip(data: ActionDataset, moment: pd.Series, radius: int = 2) -> np.ndarray:
    """The filmstrip (BGR image) of one row of :func:`explore`: +-``radius`` frames around the moment."""
    frames, numbers = moment_frames(data, int(moment["episode"]), int(moment["frame"]), radius)
    p = moment["p_expert"]
    caption = (
        f"#{moment['rank']} ep {moment['episode']} f {moment['frame']} {moment['event']}: expert "
        f"{moment['expert_action']}, agent {moment['agent_action']}"
        + ("" if pd.isna(p) else f" (p={p:.2f})")
        + f" {moment['label']}"
    )
    return filmstrip(frames, int(np.flatnonzero(numbers == int(moment["frame"]))[0]), caption)


def write_moments(moments: pd.DataFrame, data: ActionDataset, out: str | os.PathLike, top: int = 50) -> dict[str, Path]:
    """``moments.parquet`` (every moment), ``moments.json`` (counts, top summary) and the top ``top``
    moments' filmstrips (``filmstrips/rank_0001.png`` ...) in ``out``; returns the paths."""
    out = Path(out)
    paths = {"table": out / "moments.parquet", "summary": out / "moments.json", "filmstrips": out / "filmstrips"}
    with atomic_file(paths["table"]) as tmp:
        moments.to_parquet(tmp, index=False)
    summary = {**moments.attrs, "counts": counts(moments), "top_summary": top_summary(moments, top)}
    write_json(paths["summary"], summary)
    for _, moment in moments.head(top).iterrows():
        ok, png = cv2.imencode(".png", moment_filmstrip(data, moment))
        if ok:
            write_bytes(paths["filmstrips"] / f"rank_{int(moment['rank']):04d}.png", png.tobytes())
    return paths


# ------------------------------------------------------------------------------------ closed loop
def duel_bucket(states: np.ndarray) -> np.ndarray:
    """A Duel state's bucket (n,) str: the pro's reading (punish / opportune / not opportune) and the
    distance to the opponent against the pro's spacing band."""
    reading = duel_reading(states)
    kind = np.where(reading["punish"], "punish", np.where(reading["opportune"], "opportune", "not opportune"))
    d = reading["distance_m"].to_numpy()
    lo, hi = BAND
    where = np.where(d < lo, f"close <{lo} m", np.where(d > hi, f"far >{hi} m", f"in band {lo}-{hi} m"))
    return np.char.add(np.char.add(kind.astype(str), ", "), where.astype(str))


def boxing_bucket(states: np.ndarray) -> np.ndarray:
    """A Boxing state's bucket (n,) str: the horizontal and vertical gaps against the expert's punch range."""
    from bcarena.envs.boxing import BoxingExpert

    reading = boxing_reading(states)
    (x0, x1), (y0, y1) = BoxingExpert.punch_dx, BoxingExpert.punch_dy
    dx, dy = reading["dx_px"].to_numpy(), reading["dy_px"].to_numpy()
    across = np.where(dx < x0, f"close |dx|<{x0}", np.where(dx > x1, f"far |dx|>{x1}", f"in reach |dx| {x0}-{x1}"))
    level = np.where(dy < y0, f"level |dy|<{y0}", np.where(dy > y1, f"apart |dy|>{y1}", f"off-centre |dy| {y0}-{y1}"))
    kind = np.where(reading["opportune"], "punch range", "out of range")
    return np.char.add(np.char.add(np.char.add(kind.astype(str), ", "), across.astype(str)), ", " + level.astype(str))


BUCKETS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"duel": duel_bucket, "boxing": boxing_bucket}


def bucket(game: str, states: np.ndarray) -> np.ndarray:
    """The closed-loop state bucket (n,) str of ``game``'s states (n, len(state_features)); a game without
    a reading (``BUCKETS``) has one bucket, ``any state``."""
    named = BUCKETS.get(game)
    return named(states) if named is not None else np.full(states.shape[0], "any state")


def expert_choice(expert: Policy | NoisyPolicy, states: np.ndarray) -> np.ndarray:
    """What the expert would do (n,) int64 in ``states`` (n, F), its noise at 0 (no hesitation, no sampling)."""
    if isinstance(expert, NoisyPolicy):
        return np.asarray(expert.act_with_noise(states, np.zeros((states.shape[0], expert.noise_dims))), np.int64)
    return np.asarray(expert.act(states), np.int64)


class _ExpertWatch(Hook):
    """At each decision of player 0: what the game's expert would have done (``expert_choice``) and both
    sides' scores (``Game.result``), for one batch of matches whose ids start at ``first``."""

    def __init__(self, game: Game, expert: Policy | NoisyPolicy, first: int) -> None:
        self.game, self.expert, self.first = game, expert, first
        self.rows: list[tuple[np.ndarray, int, np.ndarray, np.ndarray, np.ndarray]] = []
        self.live: list[np.ndarray] = []

    def on_reset(self, match: Match) -> None:
        self.expert.reset(match.num_matches)  # a stateful expert (Boxing's punch pauses) starts afresh
        self._obs = np.asarray(match.observe(0, "state")).copy()
        self.scores = [np.asarray(self.game.result(match).score, dtype=np.float64).copy()]

    def on_step(self, step: Step) -> None:
        agent = step.actions[:, 0]
        expert = expert_choice(self.expert, self._obs)
        differ = np.flatnonzero(step.live & (agent != expert))
        self.rows.append((differ, step.index, expert[differ], agent[differ], self._obs[differ]))
        self.live.append(step.live.copy())
        self.scores.append(np.asarray(self.game.result(step.match).score, dtype=np.float64).copy())
        self._obs = np.asarray(step.match.observe(0, "state")).copy()

    def lost(self, horizon: int) -> np.ndarray:
        """(T, N) bool: within ``horizon`` decisions after decision t, side 0 was hit (its score fell, or
        the opponent's rose)."""
        scores = np.stack(self.scores)  # (T + 1, N, 2) before each decision, and at the end
        ahead = scores[np.minimum(np.arange(len(self.live)) + horizon, scores.shape[0] - 1)]
        now = scores[:-1]
        return (ahead[..., 0] < now[..., 0]) | (ahead[..., 1] > now[..., 1])

    def moments(self, horizon: int) -> pd.DataFrame:
        """One row per differing decision: match, decision, expert, agent (action ids), bucket, lost."""
        match, decision, expert, agent, states = zip(*self.rows, strict=True)
        rows, decisions = np.concatenate(match), np.repeat(decision, [m.size for m in match])
        return pd.DataFrame(
            {
                "match": self.first + rows,
                "decision": decisions,
                "expert": np.concatenate(expert),
                "agent": np.concatenate(agent),
                "bucket": bucket(self.game.name, np.concatenate(states)),
                "lost": self.lost(horizon)[decisions, rows],
            }
        )


@dataclass
class ClosedLoop:
    """Closed-loop moments of one agent: every differing decision, the ranked types, and the base rate."""

    agent: str
    game: str
    expert: str
    opponents: list[str]
    matches: int
    horizon: int
    decisions: int  # decisions the agent played
    base_lost_rate: float  # share of all its decisions followed by a hit taken within ``horizon``
    moments: pd.DataFrame  # opponent, match, decision, expert_action, agent_action, bucket, lost
    types: pd.DataFrame  # expert_action, agent_action, bucket, moments, lost, lost_rate (ranked)

    def summary(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "game": self.game,
            "expert": self.expert,
            "opponents": self.opponents,
            "matches_per_opponent": self.matches,
            "horizon_decisions": self.horizon,
            "decisions": self.decisions,
            "moments": len(self.moments),
            "base_lost_rate": self.base_lost_rate,
            "moment_lost_rate": float(self.moments["lost"].mean()) if len(self.moments) else None,
            "top_types": self.types.head(10).to_dict(orient="records"),
        }

    def write(self, out: str | os.PathLike) -> dict[str, Path]:
        """closed_loop.parquet (types), closed_loop_moments.parquet and closed_loop.json in ``out``."""
        out = Path(out)
        paths = {
            "types": out / "closed_loop.parquet",
            "moments": out / "closed_loop_moments.parquet",
            "summary": out / "closed_loop.json",
        }
        for key in ("types", "moments"):
            with atomic_file(paths[key]) as tmp:
                getattr(self, key).to_parquet(tmp, index=False)
        write_json(paths["summary"], self.summary())
        return paths


def closed_loop_players(
    agent: Any, opponents: Sequence[str] | None, game: Game, config: Any, seed: int = 0
) -> tuple[Any, list]:
    """The agent and its opponents as players of ``game``, checked to fit it (EvalError naming them):
    callers check them before long work, :func:`closed_loop` plays them."""
    from bcarena.eval.matches import check_agent, fits_game, game_player, load_player

    if not game.experts:
        raise EvalError(f"game {game.name!r} has no expert to ask what it would do; closed-loop moments need one")
    names = list(opponents) if opponents else [default_opponent(game)]
    if game.name == "duel":  # Duel's bots take the config; check_agent acts once on a real observation
        me = load_player(agent, config, seed)
        check_agent(me, config)
        return me, [load_player(name, config, seed + 1) for name in names]
    me = game_player(agent, game, config, seed)
    rivals = [game_player(name, game, config, seed + 1) for name in names]
    for player in (me, *rivals):
        if isinstance(player, Policy):
            fits_game(player, game)
    return me, rivals


def closed_loop(
    agent: Agent | str,
    opponents: Sequence[str] | None = None,
    matches: int = 100,
    seed: int = 0,
    horizon: int | None = None,
    config: Any = None,
    progress: bool = False,
    game: str | None = None,
) -> ClosedLoop:
    """Play ``matches`` matches of the agent's game per opponent (agent as side 0, default opponent
    :func:`default_opponent`) and collect the closed-loop moments against the game's first expert.

    ``horizon``: decisions after a moment within which a hit taken counts as a lost exchange (default:
    one second, from the game's timing); ``game`` defaults to the agent's (a folder's ``agent.json``).
    """
    from bcarena.agents.threads import torch_threads
    from bcarena.eval.matches import BuiltInOpponent, game_of, match_seeds

    played = get_game(game or game_of(agent))
    config = played.make_config({}) if config is None else config
    horizon = round(played.timing(config)[0]) if horizon is None else horizon
    if horizon < 1:
        raise EvalError(f"the lost-exchange horizon must be >= 1 decision, got {horizon}")
    player, rivals = closed_loop_players(agent, opponents, played, config, seed)
    expert_name = next(iter(played.experts))
    seeds = match_seeds(seed, matches)
    parts, decisions, lost_decisions = [], 0, 0
    for rival in tqdm(rivals, desc=f"{player.name} closed loop", disable=not progress, leave=False):
        policies = [player] if isinstance(rival, BuiltInOpponent) else [player, rival]
        kinds = frozenset({"state", *(p.obs_type for p in policies)})
        for start in range(0, seeds.size, CLOSED_LOOP_BATCH):
            wave = seeds[start : start + CLOSED_LOOP_BATCH]
            watch = _ExpertWatch(played, played.player(expert_name, config, seed), start)
            with closing(played.match(wave.size, config, MatchOptions(kinds))) as match, torch_threads(1):
                play(match, policies, wave, hooks=[watch])  # one small batch per decision: threads only wait
            live = np.stack(watch.live)
            decisions += int(live.sum())
            lost_decisions += int((watch.lost(horizon) & live).sum())
            parts.append(watch.moments(horizon).assign(opponent=rival.name))
    moments = pd.concat(parts, ignore_index=True)
    names = np.asarray(played.action_names)
    moments["expert_action"] = names[moments.pop("expert").to_numpy()]
    moments["agent_action"] = names[moments.pop("agent").to_numpy()]
    return ClosedLoop(
        player.name,
        played.name,
        expert_name,
        [r.name for r in rivals],
        matches,
        horizon,
        decisions,
        lost_decisions / max(decisions, 1),
        moments,
        moment_types(moments),
    )


def moment_types(moments: pd.DataFrame) -> pd.DataFrame:
    """Closed-loop moments grouped by (expert action, agent action, bucket), ranked by lost exchanges, then
    by lost rate, then by how often they happened (a clone that is never hit still has its misses ranked)."""
    keys = ["expert_action", "agent_action", "bucket"]
    grouped = moments.groupby(keys, sort=False)["lost"].agg(moments="size", lost="sum").reset_index()
    grouped["lost"] = grouped["lost"].astype(np.int64)
    grouped["lost_rate"] = grouped["lost"] / grouped["moments"]
    order = ["lost", "lost_rate", "moments"]
    return grouped.sort_values(order, ascending=False, kind="stable").reset_index(drop=True)
