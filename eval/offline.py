"""Offline evaluation: an agent's actions on held-out recorded frames against the expert's labels.

Cheap and imperfect by design. Frame accuracy rewards copying the frequent "move / do nothing"
frames, so next to it this module reports what exposes a clone that never presses a skill:
balanced accuracy, per-class recall, the action-distribution divergence and **event-timing
metrics** (a predicted skill counts if the expert pressed one within +-k frames).

For agents with a policy distribution (torch agents, whatever their decoding) the **policy
metrics** score the probabilities instead of one draw: ``expected_accuracy`` (mean probability of
the expert's action), ``expected_skill_event_recall`` (mean over expert skill frames of the
probability that the policy presses a skill within +-k frames, 1 - the product of its per-frame
non-skill probabilities, frames drawn independently), and the likelihood of the expert's actions,
``log_likelihood`` (mean nats per frame) and ``perplexity`` (exp of minus it). The expected metrics
use the probabilities the agent acts with (one-hot for argmax and thresholds, so they equal
accuracy and skill-event recall); the likelihood uses its soft policy (the sampled distribution,
or softmax(scores) for greedy agents, whose one-hot would give -inf).

A metric that cannot be computed (the expert never used a class, the agent never predicted it)
is ``None`` with the reason in ``undefined``, never a silent 0 or NaN. The standard
classification part is the agents layer's ``classification_metrics`` (the numbers training
validates on).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from bcarena.agents.base import Agent
from bcarena.agents.torch_agent import TorchAgent
from bcarena.agents.validation import ClassificationMetrics, classification_metrics
from bcarena.envs import rng
from bcarena.envs.files import write_json
from bcarena.envs.play import PolicyError, validate_actions
from bcarena.eval.errors import EvalError
from bcarena.eval.plots import figure, save_figure
from bcarena.eval.stats import js_divergence
from bcarena.recordings.dataset import ActionDataset, DatasetError, frames_to_nearest

ANY_SKILL = "any_skill"
POLICY_METRICS = ("expected_accuracy", "expected_skill_event_recall", "log_likelihood", "perplexity")


@dataclass
class ClassMetrics:
    """Precision/recall/F1 of one action class (one-vs-rest over frames)."""

    action: str
    support: int  # expert frames with this label
    predicted: int  # agent frames with this action
    precision: float | None
    recall: float | None
    f1: float | None
    undefined: dict[str, str] = field(default_factory=dict)  # metric -> why it is None


@dataclass
class EventMetrics:
    """Skill timing with a tolerance: presses matched within +-``tolerance`` frames in the same episode.

    precision = agent presses with an expert press within +-k / agent presses;
    recall = expert presses with an agent press within +-k / expert presses. Frame-level presses:
    a press held over several frames counts once per frame on both sides.
    """

    event: str  # a skill action name or ``any_skill``
    tolerance: int  # frames
    expert_presses: int
    agent_presses: int
    precision: float | None
    recall: float | None
    f1: float | None
    undefined: dict[str, str] = field(default_factory=dict)


@dataclass
class OfflineReport:
    """All offline metrics of one agent on one dataset split. JSON via ``to_dict``."""

    agent: str
    dataset: str
    split: str
    frames: int
    episodes: int
    action_names: list[str]
    accuracy: float
    balanced_accuracy: float  # mean recall over the classes the expert uses
    macro_f1: float  # mean F1 over the classes the expert uses (as in training's validation)
    macro_f1_classes: list[str]
    per_class: list[ClassMetrics]
    confusion: list[list[int]]  # [expert class][agent class] frame counts
    js_divergence: float  # Jensen-Shannon (base 2, 0..1) between agent and expert action frequencies
    expert_distribution: dict[str, float]
    agent_distribution: dict[str, float]
    tolerance: int  # +-frames for the event metrics
    events: list[EventMetrics]
    # policy metrics (module docstring); None, with the reason in policy_undefined, for agents without a distribution
    expected_accuracy: float | None = None
    expected_skill_event_recall: float | None = None
    log_likelihood: float | None = None  # mean nats per frame of the expert's actions
    perplexity: float | None = None
    policy_undefined: dict[str, str] = field(default_factory=dict)
    predictions: np.ndarray | None = field(default=None, repr=False, compare=False)

    def event(self, name: str = ANY_SKILL) -> EventMetrics:
        for metrics in self.events:
            if metrics.event == name:
                return metrics
        raise KeyError(f"no event metrics for {name!r}; have {[m.event for m in self.events]}")

    def scalars(self) -> dict[str, float | None]:
        """Flat name -> value of every scalar metric (the gap report ranks agents by these)."""
        out: dict[str, float | None] = {
            "accuracy": self.accuracy,
            "balanced_accuracy": self.balanced_accuracy,
            "macro_f1": self.macro_f1,
            "js_divergence": self.js_divergence,
            **{name: getattr(self, name) for name in POLICY_METRICS},
        }
        for m in self.events:
            for key in ("precision", "recall", "f1"):
                out[f"event_{key}_{m.event}"] = getattr(m, key)
        for c in self.per_class:
            out[f"recall_{c.action}"] = c.recall
        return out

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("predictions")
        return data

    def write(self, folder: str | os.PathLike) -> dict[str, Path]:
        """Write offline.json, confusion.json and confusion.png into ``folder``; returns their paths."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {
            "report": folder / "offline.json",
            "confusion_json": folder / "confusion.json",
            "confusion_png": folder / "confusion.png",
        }
        write_json(paths["report"], self.to_dict())
        write_json(
            paths["confusion_json"],
            {"labels": self.action_names, "rows": "expert", "columns": "agent", "matrix": self.confusion},
        )
        plot_confusion(
            np.asarray(self.confusion),
            self.action_names,
            paths["confusion_png"],
            title=f"{self.agent} on {Path(self.dataset).name} ({self.split})",
        )
        return paths


# --------------------------------------------------------------------------------------- metrics
def _ratio(num: int, den: int) -> float | None:
    return float(num / den) if den else None


def _f1(precision: float | None, recall: float | None) -> float | None:
    # A side that is undefined only because nothing happened on it cannot rescue a zero on the other:
    # with no true positives at all, F1 = 2TP / (2TP + FP + FN) is 0 whenever anything happened.
    if precision is None and recall is None:
        return None
    if precision is None or recall is None or precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def class_metrics(standard: ClassificationMetrics) -> list[ClassMetrics]:
    """Per-class precision/recall/F1 from the shared scikit-learn metrics, undefined values as None + reason."""
    out = []
    for k, name in enumerate(standard.action_names):
        support, predicted = standard.per_class_support[k], standard.predicted_counts[k]
        undefined = {}
        if predicted == 0:
            undefined["precision"] = f"the agent never chose {name!r} in this split"
        if support == 0:
            undefined["recall"] = f"the expert never chose {name!r} in this split"
        precision = None if predicted == 0 else standard.per_class_precision[k]
        recall = None if support == 0 else standard.per_class_recall[k]
        f1 = _f1(precision, recall)
        if f1 is None:
            undefined["f1"] = f"neither the expert nor the agent chose {name!r} in this split"
        out.append(
            ClassMetrics(
                action=name,
                support=support,
                predicted=predicted,
                precision=precision,
                recall=recall,
                f1=f1,
                undefined=undefined,
            )
        )
    return out


def event_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, episode: np.ndarray, actions: list[int], name: str, tolerance: int
) -> EventMetrics:
    """Timing of presses of ``actions`` (ids): matched within +-``tolerance`` frames of the same episode."""
    if tolerance < 0:
        raise EvalError(f"the event tolerance must be >= 0 frames, got {tolerance}")
    expert = np.isin(y_true, actions)
    agent = np.isin(y_pred, actions)
    n_expert, n_agent = int(expert.sum()), int(agent.sum())
    matched_agent = int((agent & (frames_to_nearest(expert, episode) <= tolerance)).sum())
    matched_expert = int((expert & (frames_to_nearest(agent, episode) <= tolerance)).sum())
    precision, recall = _ratio(matched_agent, n_agent), _ratio(matched_expert, n_expert)
    undefined = {}
    if precision is None:
        undefined["precision"] = f"the agent never pressed {name} in this split"
    if recall is None:
        undefined["recall"] = f"the expert never pressed {name} in this split"
    f1 = _f1(precision, recall)
    if f1 is None:
        undefined["f1"] = f"neither the expert nor the agent pressed {name} in this split"
    return EventMetrics(
        event=name,
        tolerance=int(tolerance),
        expert_presses=n_expert,
        agent_presses=n_agent,
        precision=precision,
        recall=recall,
        f1=f1,
        undefined=undefined,
    )


def policy_metrics(
    y_true: np.ndarray,
    probabilities: np.ndarray,
    log_policy: np.ndarray,
    episode: np.ndarray,
    skill_actions: list[int],
    tolerance: int,
) -> tuple[dict[str, float | None], dict[str, str]]:
    """The policy metrics (module docstring) and the reasons of the undefined ones.

    ``probabilities`` (n, A): the chance of each action being picked on each frame; ``log_policy``
    (n, A): the soft policy's log-probabilities; rows of one episode contiguous and in frame order.
    """
    n = y_true.size
    rows = np.arange(n)
    log_likelihood = float(log_policy[rows, y_true].mean())
    out: dict[str, float | None] = {
        "expected_accuracy": float(probabilities[rows, y_true].mean()),
        "log_likelihood": log_likelihood,
        "perplexity": float(np.exp(-log_likelihood)),
    }
    # log P(no skill on frame j); a window's product of them is a sum, taken one offset at a time
    log_none = np.log(np.clip(1.0 - probabilities[:, list(skill_actions)].sum(axis=1), 1e-300, 1.0))
    window = np.zeros(n)
    for shift in range(-tolerance, tolerance + 1):
        i = rows[max(0, -shift) : n - max(0, shift)]
        same = episode[i] == episode[i + shift]
        window[i[same]] += log_none[i[same] + shift]
    expert = np.isin(y_true, list(skill_actions))
    undefined = {}
    if expert.any():
        out["expected_skill_event_recall"] = float((1.0 - np.exp(window[expert])).mean())
    else:
        out["expected_skill_event_recall"] = None
        undefined["expected_skill_event_recall"] = "the expert never pressed a skill in this split"
    return out, undefined


def offline_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    episode: np.ndarray,
    action_names: list[str],
    skill_actions: list[int],
    tolerance: int = 2,
    agent: str = "agent",
    dataset: str = "dataset",
    split: str = "test",
    distributions: tuple[np.ndarray, np.ndarray] | None = None,
) -> OfflineReport:
    """Every offline metric from expert labels ``y_true`` (n,), agent actions ``y_pred`` (n,) and
    ``episode`` ids (n,); rows of one episode contiguous and in frame order. ``distributions``
    (probabilities (n, A), log soft policy (n, A)) give the policy metrics (:func:`policy_metrics`)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    episode = np.asarray(episode)
    if not (y_true.shape == y_pred.shape == episode.shape) or y_true.ndim != 1:
        raise EvalError(
            f"labels, predictions and episodes need one value per frame, got shapes "
            f"{y_true.shape}, {y_pred.shape}, {episode.shape}"
        )
    if y_true.size == 0:
        raise EvalError(f"{dataset}: no frames to evaluate in split {split!r}")
    k = len(action_names)
    for what, arr in (("expert labels", y_true), ("agent actions", y_pred)):
        if arr.min() < 0 or arr.max() >= k:
            raise EvalError(f"{dataset}: {what} must be action ids in [0, {k}), got {np.unique(arr)[:8].tolist()}")
    standard = classification_metrics(y_true, y_pred, action_names, skill_actions)
    per_class = class_metrics(standard)
    true_counts = np.bincount(y_true, minlength=k)
    pred_counts = np.bincount(y_pred, minlength=k)
    events = [event_metrics(y_true, y_pred, episode, list(skill_actions), ANY_SKILL, tolerance)]
    events += [event_metrics(y_true, y_pred, episode, [s], action_names[s], tolerance) for s in skill_actions]
    if distributions is None:
        policy: dict[str, float | None] = dict.fromkeys(POLICY_METRICS)
        policy_undefined = dict.fromkeys(POLICY_METRICS, f"agent {agent!r} gives actions, not a distribution")
    else:
        if any(d.shape != (y_true.size, k) for d in distributions):
            raise EvalError(
                f"policy distributions need shape ({y_true.size}, {k}), got {[d.shape for d in distributions]}"
            )
        policy, policy_undefined = policy_metrics(y_true, *distributions, episode, list(skill_actions), tolerance)
    return OfflineReport(
        agent=agent,
        dataset=dataset,
        split=split,
        frames=int(y_true.size),
        episodes=int(np.unique(episode).size),
        action_names=list(action_names),
        accuracy=standard.accuracy,
        balanced_accuracy=standard.balanced_accuracy,
        macro_f1=standard.macro_f1,
        macro_f1_classes=[c.action for c in per_class if c.support > 0],
        per_class=per_class,
        confusion=np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k).tolist(),
        js_divergence=js_divergence(pred_counts, true_counts),
        expert_distribution={n: float(c / y_true.size) for n, c in zip(action_names, true_counts)},
        agent_distribution={n: float(c / y_pred.size) for n, c in zip(action_names, pred_counts)},
        tolerance=int(tolerance),
        events=events,
        **policy,
        policy_undefined=policy_undefined,
        predictions=y_pred,
    )


# ------------------------------------------------------------------------------ agent on a dataset
def _observations(agent: Agent, data: ActionDataset) -> np.ndarray:
    """The dataset's frames as the agent observes them: (n, D) float32 states or (n, H, W, 1) uint8 pixels."""
    where = str(data.path) if data.path is not None else "dataset"
    if agent.obs_type == "state":
        if not data.state_columns:
            raise DatasetError(
                f"{where}: agent {agent.name!r} observes states, but this dataset has no "
                f"s_<feature> columns (game {data.manifest['game']!r})"
            )
        return data.states()
    if agent.obs_type == "pixels":
        if data.pixels is None:
            raise DatasetError(
                f"{where}: agent {agent.name!r} observes pixels, but this dataset stores no "
                "pixels.npy; rebuild it with frames"
            )
        return data.frames()
    raise EvalError(f"agent {agent.name!r} has unknown obs_type {agent.obs_type!r}; expected 'state' or 'pixels'")


@dataclass
class Predictions:
    """What an agent did on every frame of a dataset, in the table's row order."""

    actions: np.ndarray  # (n,) int64
    probabilities: np.ndarray | None = None  # (n, A) float64: chance of each action (torch agents only)
    log_policy: np.ndarray | None = None  # (n, A) float64: the soft policy's log-probabilities (torch agents only)


def predict_dataset(agent: Agent, data: ActionDataset, batch_episodes: int = 256, progress: bool = False) -> np.ndarray:
    """The agent's actions (n,) int64 on every frame of ``data``, in the table's row order (:func:`predict_policy`)."""
    return predict_policy(agent, data, batch_episodes, progress).actions


def predict_policy(agent: Agent, data: ActionDataset, batch_episodes: int = 256, progress: bool = False) -> Predictions:
    """The agent's actions on every frame of ``data`` and, for a torch agent, its distributions.

    Episodes are replayed in frame order, ``batch_episodes`` side by side, through the agent's
    batched ``act`` (so frame-stacking agents see the same history they would see in a match).
    An episode that is over keeps receiving its last frame until the longest one ends; those
    extra actions are dropped. A torch agent that samples draws with uniform noise of (episode,
    frame), hashed with its seed, as in a match: its actions do not depend on ``batch_episodes``.
    """
    where = str(data.path) if data.path is not None else "dataset"
    if agent.game != data.manifest["game"]:
        raise EvalError(
            f"{where}: dataset of game {data.manifest['game']!r}, agent {agent.name!r} plays {agent.game!r}"
        )
    obs_all = _observations(agent, data)
    table = data.table
    order = np.lexsort((table["frame"].to_numpy(), table["episode"].to_numpy()))
    episode = table["episode"].to_numpy()[order]
    starts = np.flatnonzero(np.r_[True, episode[1:] != episode[:-1]])
    lengths = np.diff(np.r_[starts, episode.size])
    out = Predictions(np.empty(episode.size, dtype=np.int64))
    probabilities = log_policy = np.empty((0, 0))
    if isinstance(agent, TorchAgent):
        out.probabilities = probabilities = np.empty((episode.size, agent.num_actions))
        out.log_policy = log_policy = np.empty((episode.size, agent.num_actions))
    steps = sum(int(lengths[i : i + batch_episodes].max()) for i in range(0, starts.size, batch_episodes))
    with tqdm(total=steps, desc=f"{agent.name} offline", unit="step", disable=not progress, leave=False) as bar:
        for first in range(0, starts.size, batch_episodes):
            s, n = starts[first : first + batch_episodes], lengths[first : first + batch_episodes]
            agent.reset(s.size)
            for t in range(int(n.max())):
                rows = s + np.minimum(t, n - 1)
                pos = order[rows]
                obs = obs_all[pos]
                if agent.obs_type == "pixels" and obs.ndim == 3:
                    obs = obs[..., None]
                actions, distributions = _decide(agent, obs, episode[rows], t, where)
                actions = validate_actions(actions, s.size, data.num_actions, f"agent {agent.name!r} on {where}")
                alive = t < n
                out.actions[pos[alive]] = actions[alive]
                if distributions is not None:
                    probabilities[pos[alive]], log_policy[pos[alive]] = distributions[0][alive], distributions[1][alive]
                bar.update(1)
    return out


def _decide(
    agent: Agent, obs: np.ndarray, episodes: np.ndarray, frame: int, where: str
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
    """One step of :func:`predict_policy`: actions (B,) and, for a torch agent, (probabilities, log policy) (B, A)."""
    try:
        if not isinstance(agent, TorchAgent):
            return agent.act(obs), None
        scores = agent.scores_stacked(agent.stacked(obs))
        noise = rng.uniform(episodes[:, None], frame, 0)  # (B, 1): a function of (episode, frame) only
        return agent.actions_from_scores(scores, noise), agent.policy_distributions(scores)
    except PolicyError:  # the agent acted, and its answer is what is wrong: that message says so
        raise
    except Exception as exc:  # noqa: BLE001 - report which agent/dataset do not fit
        raise EvalError(
            f"{where}: agent {agent.name!r} cannot act on this dataset's {agent.obs_type} "
            f"observations of shape {obs.shape[1:]}: {type(exc).__name__}: {exc}"
        ) from exc


def evaluate_offline(
    agent: Agent,
    data: ActionDataset,
    split: str = "test",
    tolerance: int = 2,
    batch_episodes: int = 256,
    progress: bool = False,
) -> OfflineReport:
    """Offline metrics of ``agent`` on one split of an action dataset (see :func:`offline_metrics`)."""
    part = data.split(split)
    table = part.table
    predicted = predict_policy(agent, part, batch_episodes, progress)
    order = np.lexsort((table["frame"].to_numpy(), table["episode"].to_numpy()))
    distributions = None
    if predicted.probabilities is not None and predicted.log_policy is not None:
        distributions = (predicted.probabilities[order], predicted.log_policy[order])
    return offline_metrics(
        table["action"].to_numpy()[order],
        predicted.actions[order],
        table["episode"].to_numpy()[order],
        part.action_names,
        part.skill_actions,
        tolerance,
        agent=agent.name,
        dataset=str(data.path) if data.path is not None else "dataset",
        split=split,
        distributions=distributions,
    )


# ------------------------------------------------------------------------------------------- plots
def plot_confusion(matrix: np.ndarray, labels: list[str], path: Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (rows: expert, columns: agent) with frame counts, as a PNG."""
    support = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, support, out=np.full(matrix.shape, np.nan), where=support > 0)
    fig, ax = figure(figsize=(1.0 + 0.75 * len(labels), 0.8 + 0.7 * len(labels)))
    image = ax.imshow(np.ma.masked_invalid(share), vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), [f"{name} ({n})" for name, n in zip(labels, support[:, 0])])
    ax.set_xlabel("agent action")
    ax.set_ylabel("expert action (frames)")
    for i in range(len(labels)):
        for j in range(len(labels)):
            if matrix[i, j]:
                ax.text(
                    j,
                    i,
                    str(matrix[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if share[i, j] > 0.6 else "black",
                )
    fig.colorbar(image, ax=ax, label="share of expert frames")
    ax.set_title(title or "confusion matrix")
    return save_figure(fig, path)
