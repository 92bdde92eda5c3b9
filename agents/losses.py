"""BC losses as small classes: ``loss(logits, labels) -> LossMetrics`` with every term logged.

Losses (``LOSSES``): ``ce`` cross-entropy; ``weighted_ce`` class-weighted CE; ``focal``
(Lin et al. 2017: CE scaled by (1 - p_true)^gamma, optional class weights as alpha);
``logit_adjusted`` (Menon et al. 2021: CE on logits + tau * log prior, so the model's raw
logits are pushed towards balanced-error decisions). Class weights (``CLASS_WEIGHTS``):
none, inverse frequency, sqrt inverse frequency, effective number of samples (Cui et al.
2019, ``beta``); normalized so the average weight over training frames is 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional as F


def _inverse(counts: np.ndarray, beta: float) -> np.ndarray:
    return 1.0 / counts


def _sqrt_inverse(counts: np.ndarray, beta: float) -> np.ndarray:
    return 1.0 / np.sqrt(counts)


def _effective_number(counts: np.ndarray, beta: float) -> np.ndarray:
    return (1.0 - beta) / (1.0 - np.power(beta, counts))


CLASS_WEIGHTS: dict[str, Callable[[np.ndarray, float], np.ndarray] | None] = {
    "none": None,
    "inverse": _inverse,
    "sqrt_inverse": _sqrt_inverse,
    "effective_number": _effective_number,
}


def class_weights(counts: np.ndarray, scheme: str, beta: float = 0.999) -> np.ndarray | None:
    """Per-class weights (A,) from training class counts (A,); classes with no frames get 0.

    Scaled so that sum(weights * counts) == sum(counts): the mean weight of a training frame is 1.
    """
    if scheme not in CLASS_WEIGHTS:
        raise ValueError(f"class weights must be one of {sorted(CLASS_WEIGHTS)}, got {scheme!r}")
    fn = CLASS_WEIGHTS[scheme]
    if fn is None:
        return None
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    weights = np.zeros_like(counts)
    weights[present] = fn(counts[present], beta)
    return weights * counts.sum() / (weights * counts).sum()


@dataclass
class LossMetrics:
    """One batch's loss. ``loss`` is differentiable; the floats are logged every epoch."""

    loss: torch.Tensor
    objective: float  # the value optimized (== loss.item())
    nll: float  # plain cross-entropy (no weights, no smoothing, no adjustment): comparable across losses
    p_true: float  # mean predicted probability of the labelled action
    terms: dict[str, float] = field(default_factory=dict)  # loss-specific terms

    def scalars(self) -> dict[str, float]:
        return {"objective": self.objective, "nll": self.nll, "p_true": self.p_true, **self.terms}


class Loss:
    """Base class. ``weights`` (A,) are class weights or None; ``label_smoothing`` in [0, 1)."""

    name: str = ""

    def __init__(self, weights: np.ndarray | None = None, label_smoothing: float = 0.0) -> None:
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float32)
        self.label_smoothing = float(label_smoothing)

    def to(self, device: torch.device) -> Loss:
        """Move the loss's constant tensors (weights, adjustments) to ``device``; returns self."""
        for name, value in vars(self).items():
            if isinstance(value, torch.Tensor):
                setattr(self, name, value.to(device))
        return self

    def _plain(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, float, float]:
        log_p = F.log_softmax(logits.detach(), dim=-1).gather(1, labels[:, None])[:, 0]
        return log_p, float(-log_p.mean()), float(log_p.exp().mean())

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> LossMetrics:
        raise NotImplementedError


class CrossEntropy(Loss):
    name = "ce"

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> LossMetrics:
        loss = F.cross_entropy(logits, labels, weight=self.weights, label_smoothing=self.label_smoothing)
        _, nll, p_true = self._plain(logits, labels)
        return LossMetrics(loss, float(loss.detach()), nll, p_true)


class WeightedCrossEntropy(CrossEntropy):
    """Cross-entropy with class weights (the weighted mean over the batch, as torch defines it)."""

    name = "weighted_ce"

    def __init__(self, weights: np.ndarray | None = None, label_smoothing: float = 0.0) -> None:
        if weights is None:
            raise ValueError(
                "loss 'weighted_ce' needs class weights (class_weights: inverse, sqrt_inverse or effective_number)"
            )
        super().__init__(weights, label_smoothing)


class FocalLoss(Loss):
    """Focal loss: per-frame (smoothed, optionally class-weighted) CE times (1 - p_true)^gamma."""

    name = "focal"

    def __init__(self, weights: np.ndarray | None = None, label_smoothing: float = 0.0, gamma: float = 2.0) -> None:
        super().__init__(weights, label_smoothing)
        self.gamma = float(gamma)

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> LossMetrics:
        ce = F.cross_entropy(logits, labels, reduction="none", label_smoothing=self.label_smoothing)
        p_true = F.softmax(logits, dim=-1).gather(1, labels[:, None])[:, 0]
        modulator = (1.0 - p_true).clamp(min=0.0) ** self.gamma
        per_frame = modulator * ce
        if self.weights is not None:
            alpha = self.weights[labels]
            loss = (alpha * per_frame).sum() / alpha.sum().clamp(min=1e-12)
        else:
            loss = per_frame.mean()
        _, nll, p = self._plain(logits, labels)
        return LossMetrics(loss, float(loss.detach()), nll, p, {"modulator": float(modulator.detach().mean())})


class LogitAdjustedLoss(Loss):
    """CE on logits + tau * log(class prior); inference uses the raw logits (balanced decisions)."""

    name = "logit_adjusted"

    def __init__(
        self, weights: np.ndarray | None = None, label_smoothing: float = 0.0, *, prior: np.ndarray, tau: float = 1.0
    ) -> None:
        super().__init__(weights, label_smoothing)
        prior = np.asarray(prior, dtype=np.float64)
        self.adjustment = torch.as_tensor(float(tau) * np.log(prior / prior.sum() + 1e-12), dtype=torch.float32)

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> LossMetrics:
        adjusted = logits + self.adjustment
        loss = F.cross_entropy(adjusted, labels, weight=self.weights, label_smoothing=self.label_smoothing)
        _, nll, p_true = self._plain(logits, labels)
        return LossMetrics(loss, float(loss.detach()), nll, p_true, {"adjusted_nll": float(loss.detach())})


LOSSES: dict[str, type[Loss]] = {
    cls.name: cls for cls in (CrossEntropy, WeightedCrossEntropy, FocalLoss, LogitAdjustedLoss)
}
