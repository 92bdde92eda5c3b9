"""Keyframe weighting (Wen et al. 2021, "Keyframe-Focused Visual Imitation Learning"): event-free, no labels.

A frame is a *keyframe* when the expert's action there is badly predicted from its own previous
actions: where it changes its mind (starts a skill, turns, raises the guard) rather than keeps doing
what it did. A small model (multinomial logistic regression, scikit-learn) reads the one-hot previous
``history`` actions of each frame (frames before an episode's start are a "none" token) and predicts
its action; it is fit on the train split only. Each frame's score is the prediction error
``1 - p(actual action)``; the top ``top_fraction`` of the frames by score are sampled ``weight``
times more often (the paper's default: the top 10% by error from the previous 9 actions, x5).
The weights multiply with event weights and sampler weights (``agents/samplers.py``).
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

from bcarena.agents.config import KeyframeWeighting
from bcarena.recordings.dataset import ActionDataset


def history_features(actions: np.ndarray, episodes: np.ndarray, history: int, num_actions: int) -> np.ndarray:
    """One-hot previous actions (n, history * (num_actions + 1)) float32 of rows in episode/frame order.

    Block j (0-based) encodes the action j + 1 frames back; slot ``num_actions`` means "before the
    episode started".
    """
    n = actions.shape[0]
    starts = np.flatnonzero(np.r_[True, episodes[1:] != episodes[:-1]]) if n else np.zeros(0, dtype=np.int64)
    first = np.repeat(starts, np.diff(np.r_[starts, n]))
    width = num_actions + 1
    out = np.zeros((n, history * width), dtype=np.float32)
    rows = np.arange(n)
    for back in range(1, history + 1):
        prev = rows - back
        token = np.where(prev >= first, actions[np.maximum(prev, 0)], num_actions)
        out[rows, (back - 1) * width + token] = 1.0
    return out


def prediction_error(
    actions: np.ndarray, episodes: np.ndarray, num_actions: int, history: int, seed: int = 0
) -> np.ndarray:
    """Per-row ``1 - p(action | previous history actions)`` (n,), the predictor fit on all these rows.

    ``actions`` (n,) int and ``episodes`` (n,) are in episode/frame order (as ``split_data`` gives them).
    """
    from sklearn.linear_model import LogisticRegression

    actions = np.asarray(actions, dtype=np.int64)
    if np.unique(actions).size < 2:
        return np.zeros(actions.shape[0])
    x = history_features(actions, np.asarray(episodes), history, num_actions)
    with threadpool_limits(1):  # one BLAS/OpenMP thread, as the trainer's torch (a shared machine)
        model = LogisticRegression(max_iter=300, random_state=seed).fit(x, actions)
        probs = model.predict_proba(x)
    column = np.searchsorted(model.classes_, actions)
    return 1.0 - probs[np.arange(actions.shape[0]), column]


def keyframe_weights(dataset: ActionDataset, cfg: KeyframeWeighting | None, seed: int = 0) -> np.ndarray | None:
    """Sampling weights (n,): ``cfg.weight`` for the top ``cfg.top_fraction`` rows by prediction error, else 1.

    ``dataset`` is the train split in episode/frame order; None when keyframe weighting is off.
    Ties at the cut are broken by row order, so the count is exactly ceil(top_fraction * n).
    """
    if cfg is None:
        return None
    episodes = dataset.table["episode"].to_numpy()
    error = prediction_error(dataset.actions(), episodes, dataset.num_actions, cfg.history, seed)
    top = int(np.ceil(cfg.top_fraction * error.shape[0]))
    order = np.argsort(-error, kind="stable")
    weights = np.ones(error.shape[0])
    weights[order[:top]] = cfg.weight
    return weights


def combine(*weights: np.ndarray | None) -> np.ndarray | None:
    """The product of the per-row weights that are given (None when none is)."""
    given = [w for w in weights if w is not None]
    if not given:
        return None
    return np.prod(given, axis=0)
