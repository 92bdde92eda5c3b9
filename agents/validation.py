"""Offline classification metrics of predicted vs. recorded actions (scikit-learn).

``classification_metrics`` is the one function both the trainer (validation, early stopping)
and the evaluation layer (the standard part of its offline report) use.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# The headline numbers of a validation pass: the training history, the agent's info and the curves plot.
SUMMARY_METRICS: tuple[str, ...] = ("accuracy", "balanced_accuracy", "macro_f1", "skill_frame_recall")


@dataclass
class ClassificationMetrics:
    """Frame-level metrics. Per-class lists follow ``action_names``; classes absent from the
    labels get recall NaN (and are left out of balanced accuracy and macro-F1).

    ``skill_frame_recall``: of the frames where the player pressed a skill, the fraction where the
    model predicted a skill (any skill: "did it press at all"); ``skill_frame_precision`` the
    converse. Both NaN when undefined (no skill frames / no skill predictions). These count
    frames; the evaluation layer's *event* recall (``eval.offline``) also accepts a press within
    +-k frames.
    """

    accuracy: float
    balanced_accuracy: float
    macro_f1: float
    skill_frame_recall: float
    skill_frame_precision: float
    skill_exact_frame_recall: float  # predicted exactly the pressed skill
    per_class_recall: list[float]
    per_class_precision: list[float]
    per_class_support: list[int]
    predicted_counts: list[int]
    action_names: list[str]
    num_frames: int

    def to_dict(self) -> dict:
        return asdict(self)


def _nan_if_empty(num: float, den: float) -> float:
    return float(num / den) if den else float("nan")


def classification_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    action_names: list[str] | tuple[str, ...],
    skill_actions: list[int] | tuple[int, ...],
) -> ClassificationMetrics:
    """Metrics of predictions ``y_pred`` (n,) against labels ``y_true`` (n,), both int action ids."""
    y_true = np.asarray(y_true, dtype=np.int64).reshape(-1)
    y_pred = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} must have the same length")
    if y_true.size == 0:
        raise ValueError("classification_metrics needs at least one frame")
    # scikit-learn loads here, not at import: it is a third of the import time of a process that never validates
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    num = len(action_names)
    labels = np.arange(num)
    present = np.unique(y_true)
    precision, recall, _, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    recall = np.where(support > 0, recall, np.nan)
    predicted = np.bincount(y_pred, minlength=num)
    precision = np.where(predicted > 0, precision, np.nan)
    skills = np.asarray(skill_actions, dtype=np.int64)
    true_skill, pred_skill = np.isin(y_true, skills), np.isin(y_pred, skills)
    return ClassificationMetrics(
        accuracy=float(accuracy_score(y_true, y_pred)),
        # sklearn's balanced_accuracy_score: mean recall over the classes present in y_true
        balanced_accuracy=float(np.nanmean(recall)),
        macro_f1=float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        skill_frame_recall=_nan_if_empty((true_skill & pred_skill).sum(), true_skill.sum()),
        skill_frame_precision=_nan_if_empty((true_skill & pred_skill).sum(), pred_skill.sum()),
        skill_exact_frame_recall=_nan_if_empty((true_skill & (y_pred == y_true)).sum(), true_skill.sum()),
        per_class_recall=[float(r) for r in recall],
        per_class_precision=[float(p) for p in precision],
        per_class_support=[int(s) for s in support],
        predicted_counts=[int(c) for c in predicted],
        action_names=list(action_names),
        num_frames=int(y_true.size),
    )
