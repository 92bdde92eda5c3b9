"""Reaction-delay alignment: pair each observation with the action the player took k frames later.

A person reacts to what the screen showed a few frames earlier (~150-300 ms: 1-3 frames at 10 FPS),
so the key pressed at frame t answers the observation of frame t - k. Training on (obs t, action t)
then asks the clone to foresee; training on (obs t, action t + k) asks it to react, as the player did.

* :func:`shift_episode` shifts one episode's labels by k frames: row t keeps frame t's observation
  (state features, pixels, and the events that happen *to* the player there) and takes frame t + k's
  action and the events that *are* the action (``LABEL_EVENTS``); the last k frames have no answer
  and are dropped. A delay that leaves an episode no frame is a :class:`DatasetError` naming it.
* :func:`choose_delays` picks k per player (``reaction_delay="auto"``): for every k in 0..max it
  fits a quick model (a scikit-learn random forest of 30 trees on the state features) on
  the player's train episodes and scores the mean log-likelihood of the shifted actions on its
  validation episodes, all k on the same observation frames; the best k wins.
* :class:`ReactionDelayed` makes a "human-like" source with a known delay: a bot that acts on what
  it saw ``delay`` decisions ago.

The converter records the delays in the manifest (``reaction_delay: {player: k}``, and with
``auto`` the per-k likelihoods in ``reaction_delay_search``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from bcarena.envs.play import NoisyPolicy
from bcarena.recordings.dataset import DatasetError
from bcarena.recordings.episode import META_FILE, parse_meta

# ``bcarena.recordings.converter.EpisodeData``: the converter imports this module, so it is not imported back.
EpisodeData = Any

# Events that describe the player's own action at a frame: they move with the label.
LABEL_EVENTS: tuple[str, ...] = ("skill_used", "action_change")
MAX_REACTION_DELAY = 50  # frames (5 s at 10 FPS): a larger delay is a typo, not a reaction time
DEFAULT_MAX_DELAY = 5  # frames ``auto`` tries at most (0.5 s at 10 FPS: human reaction times are 1-3 frames)
MIN_PROBABILITY = 1e-3  # floor of the quick model's probability (a forest's leaves say 0 for unseen actions)


def check_delay(reaction_delay: int | str | None, max_delay: int) -> None:
    """``reaction_delay`` must be None, an int in 0..MAX_REACTION_DELAY, or ``"auto"``; else a DatasetError."""
    if not isinstance(max_delay, int) or not 0 <= max_delay <= MAX_REACTION_DELAY:
        raise DatasetError(
            f"max reaction delay must be an integer in 0..{MAX_REACTION_DELAY} frames, got {max_delay!r}"
        )
    if reaction_delay is None or reaction_delay == "auto":
        return
    if isinstance(reaction_delay, bool) or not isinstance(reaction_delay, int) or reaction_delay < 0:
        raise DatasetError(f"reaction delay must be a number of frames >= 0 or 'auto', got {reaction_delay!r}")
    if reaction_delay > MAX_REACTION_DELAY:
        raise DatasetError(f"reaction delay {reaction_delay} frames is above {MAX_REACTION_DELAY} (5 s at 10 FPS)")


def check_lengths(folders: Sequence[Path], reaction_delay: int | str | None, max_delay: int) -> None:
    """Before any conversion: every episode (``meta.json``'s ``num_frames``) must be longer than the delay."""
    delay = max_delay if reaction_delay == "auto" else int(reaction_delay or 0)
    if delay == 0:
        return
    for folder in folders:
        meta = parse_meta((folder / META_FILE).read_bytes(), str(folder / META_FILE))
        if meta.num_frames <= delay:
            raise DatasetError(
                f"{folder}: a reaction delay of {delay} frames is larger than this episode ({meta.num_frames} "
                f"frames): no frame has an action {delay} frames later; use a smaller delay"
            )


def parse_delay(text: str) -> int | str:
    """A command-line value: ``auto`` or a number of frames."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise DatasetError(f"--reaction-delay takes a number of frames or 'auto', got {text!r}") from None


def player_name(episode: EpisodeData) -> str:
    """Who the episode's labels belong to (the recorded player's name in meta.json)."""
    return episode.meta.players[episode.meta.player].name


def _frames(episode: EpisodeData) -> np.ndarray:
    n = episode.labels.shape[0]
    return episode.frame_index if episode.frame_index is not None else np.arange(n)


def shift_episode(episode: EpisodeData, delay: int) -> EpisodeData:
    """``episode`` with row t's label (and ``LABEL_EVENTS``) taken from recorded frame t + ``delay``.

    Rows whose frame t + delay is not in the episode (its last ``delay`` frames, or frames a label
    overlay excluded) are dropped. Returns a new EpisodeData (the input is not changed).
    """
    if delay == 0:
        return episode
    frames = _frames(episode)
    answer = np.searchsorted(frames, frames + delay)
    valid = answer < frames.size
    valid[valid] = frames[answer[valid]] == frames[valid] + delay
    if not valid.any():
        raise DatasetError(
            f"{episode.folder}: a reaction delay of {delay} frames is larger than this episode "
            f"({frames.size} frames): no frame has an action {delay} frames later; use a smaller delay"
        )
    rows, later = np.flatnonzero(valid), answer[valid]
    events = {name: (flags[later] if name in LABEL_EVENTS else flags[rows]) for name, flags in episode.events.items()}
    return dataclasses.replace(
        episode,
        labels=episode.labels[later],
        events=events,
        features=episode.features[rows],
        pixels=episode.pixels[rows] if episode.pixels is not None else None,
        # rows 0..F-k-1 of an episode without excluded frames keep frames 0..F-k-1: no index needed
        frame_index=frames[rows].astype(np.int32) if episode.frame_index is not None else None,
    )


def _common_rows(episode: EpisodeData, delay: int, max_delay: int) -> tuple[np.ndarray, np.ndarray]:
    """(features, labels) of ``episode`` shifted by ``delay`` on the frames every delay up to max shares."""
    shifted = shift_episode(episode, delay)
    frames = _frames(shifted)
    keep = frames + max_delay <= _frames(episode)[-1]
    return shifted.features[keep], shifted.labels[keep]


def _log_likelihood(
    train: Sequence[EpisodeData], val: Sequence[EpisodeData], delay: int, max_delay: int, seed: int
) -> float:
    from sklearn.ensemble import RandomForestClassifier

    x, y = (np.concatenate(part) for part in zip(*[_common_rows(e, delay, max_delay) for e in train]))
    xv, yv = (np.concatenate(part) for part in zip(*[_common_rows(e, delay, max_delay) for e in val]))
    if np.unique(y).size < 2:
        return float(np.mean(np.log(np.where(yv == y[0], 1.0, MIN_PROBABILITY))))
    model = RandomForestClassifier(n_estimators=30, min_samples_leaf=2, random_state=seed, n_jobs=1)
    with threadpool_limits(1):  # one OpenMP thread: quick fits on a shared machine
        model.fit(x, y)
        probs = model.predict_proba(xv)
    column = {c: i for i, c in enumerate(model.classes_)}
    p = np.array([probs[i, column[c]] if c in column else 0.0 for i, c in enumerate(yv)])
    return float(np.mean(np.log(np.maximum(p, MIN_PROBABILITY))))


def choose_delays(
    episodes: Sequence[EpisodeData], split_of: np.ndarray, max_delay: int, seed: int = 0
) -> tuple[dict[str, int], dict[str, dict[int, float]]]:
    """Per player: the delay in 0..``max_delay`` whose shifted labels a quick model predicts best on validation.

    Train on the player's ``train`` episodes (split index 0), score on its ``val`` (1) episodes, or on
    its ``test`` (2) ones when it has no val episode. Returns ({player: k}, {player: {k: mean log-likelihood}}).
    """
    chosen: dict[str, int] = {}
    search: dict[str, dict[int, float]] = {}
    for name in dict.fromkeys(player_name(e) for e in episodes):
        mine = [i for i, e in enumerate(episodes) if player_name(e) == name]
        train = [episodes[i] for i in mine if split_of[i] == 0]
        val = [episodes[i] for i in mine if split_of[i] == 1] or [episodes[i] for i in mine if split_of[i] == 2]
        if not train or not val:
            raise DatasetError(
                f"reaction delay 'auto' for player {name!r} needs train and val (or test) episodes of that "
                f"player; it has {len(train)} train and {len(val)} held-out: set the delay, or record more"
            )
        for e in (*train, *val):
            if _frames(e).size <= max_delay:
                raise DatasetError(
                    f"{e.folder}: {_frames(e).size} frames, not more than the largest reaction delay tried "
                    f"({max_delay}): lower the max delay or leave this episode out"
                )
        search[name] = {k: _log_likelihood(train, val, k, max_delay, seed) for k in range(max_delay + 1)}
        chosen[name] = max(search[name], key=lambda k: search[name][k])
    return chosen, search


def resolve_delays(
    episodes: Sequence[EpisodeData], split_of: np.ndarray, reaction_delay: int | str | None, max_delay: int, seed: int
) -> tuple[dict[str, int], dict[str, dict[int, float]] | None]:
    """The delay of every player: ``reaction_delay`` for all (None: 0), or chosen per player (``"auto"``)."""
    if reaction_delay == "auto":
        return choose_delays(episodes, split_of, max_delay, seed)
    k = int(reaction_delay or 0)
    return {player_name(e): k for e in episodes}, None


class ReactionDelayed:
    """A noisy policy (a Duel bot) that acts on what it saw ``delay`` decisions ago: a human-like source.

    Decision t answers observation t - ``delay`` (the first observation before that), with decision
    t's noise, so the recording of ``ReactionDelayed(pro, 2)`` is the pro reacting 2 frames late.
    """

    def __init__(self, policy: NoisyPolicy, delay: int) -> None:
        if not isinstance(policy, NoisyPolicy):
            raise DatasetError(f"ReactionDelayed wraps a bot (a noisy policy), got {type(policy).__name__}")
        check_delay(delay, MAX_REACTION_DELAY)
        self.policy, self.delay = policy, int(delay)
        self.name = f"{policy.name}-delay{self.delay}"
        self.obs_type, self.noise_dims = policy.obs_type, policy.noise_dims
        self._seen: list[np.ndarray] = []

    def reset(self, batch_size: int) -> None:
        self.policy.reset(batch_size)
        self._seen = []

    def act_with_noise(self, obs: np.ndarray, noise: np.ndarray) -> np.ndarray:
        self._seen = [*self._seen[-self.delay :], np.array(obs)] if self.delay else [np.array(obs)]
        return self.policy.act_with_noise(self._seen[0], noise)


__all__ = [
    "DEFAULT_MAX_DELAY",
    "LABEL_EVENTS",
    "ReactionDelayed",
    "check_delay",
    "choose_delays",
    "parse_delay",
    "resolve_delays",
    "shift_episode",
]
