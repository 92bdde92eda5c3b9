"""Decoding as its own axis: the same trained weights deciding by another :class:`Selection`.

:func:`decode_agent` turns a trained agent into its ``argmax``, ``sample``, ``temperature``,
``thresholds`` or ``calibrated`` version without retraining. The last two are fitted on the
dataset's validation split:

* ``thresholds``: per-class score offsets maximizing ``threshold_metric`` (coordinate ascent,
  :func:`~bcarena.agents.selection.tune_class_offsets`), written into a copy of the score module;
* ``calibrated``: per-class log boosts such that the policy's *expected* action rates on the
  validation frames match the expert's class frequencies (fixed-point iteration on the
  log-offsets, :func:`~bcarena.agents.selection.calibrate_boosts`), stored in the selection.

Rows of an experiment are named by :func:`decoding_label`: ``argmax``, ``sample``, ``T2``,
``thresholds``, ``calibrated``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from bcarena.agents.base import Agent
from bcarena.agents.data import split_data
from bcarena.agents.selection import MODES, Selection, calibrate_boosts, tune_class_offsets
from bcarena.agents.torch_agent import TorchAgent
from bcarena.agents.validation import classification_metrics
from bcarena.envs.errors import BcarenaError
from bcarena.recordings.dataset import ActionDataset

FITTED = ("thresholds", "calibrated")  # modes fitted on the validation split
THRESHOLD_METRICS = ("macro_f1", "balanced_accuracy", "accuracy")


class DecodingError(BcarenaError, ValueError):
    """A decoding that cannot be built: unknown mode, bad temperature, or no validation data to fit on."""


def decoding_label(mode: str, temperature: float = 1.0) -> str:
    """The short name of a decoding: the mode, or ``T<temperature>`` (``T2``, ``T0.5``) for temperature sampling."""
    check_decoding(mode, temperature)
    return f"T{temperature:g}" if mode == "temperature" else mode


def check_decoding(mode: str, temperature: float = 1.0) -> None:
    """A one-line DecodingError for an unknown mode or a temperature that is not a finite number > 0."""
    if mode not in MODES:
        raise DecodingError(f"unknown decoding {mode!r}; decodings: {list(MODES)}")
    if not (isinstance(temperature, (int, float)) and np.isfinite(temperature) and temperature > 0):
        raise DecodingError(f"decoding temperature must be a number > 0, got {temperature!r}")


def validation_scores(agent: TorchAgent, dataset: ActionDataset) -> tuple[np.ndarray, np.ndarray]:
    """The agent's scores (N, A) on the dataset's validation frames and the expert's actions (N,)."""
    where = str(dataset.path) if dataset.path is not None else "dataset"
    if list(dataset.action_names) != list(agent.action_names):
        raise DecodingError(
            f"{where}: actions {list(dataset.action_names)} differ from agent {agent.name!r}'s {agent.action_names}"
        )
    if not (dataset.table["split"] == "val").any():
        raise DecodingError(
            f"{where}: no 'val' split: thresholds and calibrated decodings are fitted on validation episodes "
            "(build the dataset with a val fraction > 0)"
        )
    data = split_data(dataset, "val", agent.obs_type, agent.frame_stack)
    scores = np.concatenate([agent.scores_stacked(x.numpy()) for _, x in data.all_inputs()])
    return scores, data.labels.numpy()


def decode_agent(
    agent: Agent,
    mode: str,
    temperature: float = 1.0,
    dataset: ActionDataset | None = None,
    *,
    threshold_metric: str = "macro_f1",
    name: str = "",
) -> TorchAgent:
    """``agent`` with the decoding ``mode`` (same weights, same seed); ``dataset`` (its val split) fits
    ``thresholds`` and ``calibrated``. ``name`` defaults to ``<agent name>@<label>`` (argmax: the name).

    The fit is described in the new agent's ``info["decoding"]``.
    """
    label = decoding_label(mode, temperature)
    if not isinstance(agent, TorchAgent):
        raise DecodingError(
            f"agent {agent.name!r} ({type(agent).__name__}) has no scores to decode: decodings need a torch agent"
        )
    if mode in FITTED and dataset is None:
        raise DecodingError(f"decoding {mode!r} is fitted on a validation split: give the dataset")
    if threshold_metric not in THRESHOLD_METRICS:
        raise DecodingError(f"threshold_metric must be one of {list(THRESHOLD_METRICS)}, got {threshold_metric!r}")
    seed = agent.selection.seed
    fit: dict[str, Any] = {}
    offsets = boosts = None
    if mode in FITTED:
        assert dataset is not None  # checked above
        scores, labels = validation_scores(agent, dataset)
        if mode == "thresholds":
            offsets, fit = _thresholds(agent, scores, labels, threshold_metric)
        else:
            boosts, fit = _calibration(agent, scores, labels)
    selection = Selection(
        mode=mode, temperature=temperature if mode == "temperature" else 1.0, seed=seed, boosts=boosts
    )
    decoded = agent.with_selection(
        selection, offsets, name or (agent.name if mode == "argmax" else f"{agent.name}@{label}")
    )
    decoded.info["decoding"] = {"mode": mode, "label": label, "from": agent.selection.to_dict(), **fit}
    return decoded


def _thresholds(
    agent: TorchAgent, scores: np.ndarray, labels: np.ndarray, metric_name: str
) -> tuple[np.ndarray, dict[str, Any]]:
    metric = frame_metric(metric_name, agent.num_actions)
    before = classification_metrics(labels, scores.argmax(axis=1), agent.action_names, agent.skill_actions)
    tuned, _ = tune_class_offsets(scores, labels, metric)
    after = classification_metrics(labels, (scores + tuned).argmax(axis=1), agent.action_names, agent.skill_actions)
    current = torch.as_tensor(agent.model.class_offsets).numpy()
    offsets = current + tuned  # on top of any the agent already had
    scores_before, scores_after = getattr(before, metric_name), getattr(after, metric_name)
    return offsets, {
        "threshold_metric": metric_name,
        f"val_{metric_name}": [scores_before, scores_after],
        "class_offsets": offsets.tolist(),
    }


def frame_metric(name: str, num_actions: int) -> Callable[[np.ndarray, np.ndarray], float]:
    """``metric(labels, predictions)`` for ``name`` in ``THRESHOLD_METRICS``, as ``classification_metrics``
    defines it (macro-F1 and balanced accuracy over the classes in ``labels``), from one confusion matrix:
    threshold tuning evaluates it hundreds of times."""

    def metric(y: np.ndarray, p: np.ndarray) -> float:
        confusion = np.bincount(y * num_actions + p, minlength=num_actions * num_actions)
        confusion = confusion.reshape(num_actions, num_actions)
        hits, support, predicted = np.diag(confusion), confusion.sum(axis=1), confusion.sum(axis=0)
        present = support > 0
        if name == "accuracy":
            return float(hits.sum() / y.size)
        if name == "balanced_accuracy":
            return float((hits[present] / support[present]).mean())
        return float((2 * hits[present] / (support[present] + predicted[present])).mean())

    return metric


def _calibration(agent: TorchAgent, scores: np.ndarray, labels: np.ndarray) -> tuple[tuple[float, ...], dict[str, Any]]:
    fit = calibrate_boosts(scores, labels, agent.num_actions)
    return tuple(fit.boosts.tolist()), {
        "method": "fixed-point iteration b <- b + log(expert rate / expected rate) on validation frames",
        "iterations": fit.iterations,
        "max_rate_error": fit.max_rate_error,
        "expert_rates": fit.target_rates.tolist(),
        "expected_rates": fit.rates.tolist(),
        "boosts": fit.boosts.tolist(),
    }
