"""Which training frames an epoch visits: samplers that resample INDICES, never frames.

Samplers (``SAMPLERS``): ``uniform`` (a permutation), ``weighted`` (torch.multinomial with
class weights, seeded), ``oversample`` / ``undersample`` (imbalanced-learn
``RandomOverSampler`` / ``RandomUnderSampler`` fitted on an index column, so 1M pixel frames
cost 1M int64s, not copies), ``smote`` (imbalanced-learn ``SMOTE`` on state features: the only
one that makes new rows, see ``smote_rows``). Event weights multiply on top: an epoch then
draws its indices with ``torch.multinomial`` from the sampler's pool.

Every epoch's draw is a function of (seed, epoch) only, which is what makes ``--resume`` exact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from bcarena.agents.config import EventWeighting, TrainConfig, TrainConfigError
from bcarena.agents.losses import class_weights
from bcarena.recordings.dataset import ActionDataset


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of one epoch's draw (fits numpy's and torch's seed ranges)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def event_weights(dataset: ActionDataset, cfg: EventWeighting) -> np.ndarray | None:
    """Per-frame sampling weights (n,) from event windows, or None when no events are chosen.

    Directions come from the event flags of each episode (``frames_to_<event>`` is unsigned):
    a frame d <= ``before`` frames before the next event or d <= ``after`` frames after the last
    one gets 1 + (weight - 1) * decay**d; the maximum over events wins.
    """
    if not cfg.events:
        return None
    table = dataset.table
    episodes = table["episode"].to_numpy()
    n = len(table)
    idx = np.arange(n)
    starts = np.flatnonzero(np.r_[True, episodes[1:] != episodes[:-1]]) if n else np.zeros(0, dtype=np.int64)
    first = np.repeat(starts, np.diff(np.r_[starts, n]))
    last = np.repeat(np.r_[starts[1:], n] - 1, np.diff(np.r_[starts, n]))
    weights = np.ones(n)
    for name in cfg.events:
        flags = dataset.events(name)
        prev = np.maximum.accumulate(np.where(flags, idx, -1))  # last event at or before each row
        since = np.where(prev >= first, idx - prev, np.iinfo(np.int64).max)
        nxt = np.minimum.accumulate(np.where(flags, idx, n)[::-1])[::-1]  # next event at or after
        until = np.where(nxt <= last, nxt - idx, np.iinfo(np.int64).max)
        for dist, window in ((until, cfg.before), (since, cfg.after)):
            inside = dist <= window
            weights[inside] = np.maximum(weights[inside], 1 + (cfg.weight - 1) * cfg.decay ** dist[inside])
    return weights


def _strategy(cfg: TrainConfig, action_names: list[str]) -> str | dict[int, int]:
    if isinstance(cfg.resample_strategy, str):
        return cfg.resample_strategy
    unknown = sorted(set(cfg.resample_strategy) - set(action_names))
    if unknown:
        raise TrainConfigError(f"resample_strategy: unknown class name(s) {unknown}; classes are {action_names}")
    return {action_names.index(k): int(v) for k, v in cfg.resample_strategy.items()}


def _imblearn(
    oversample: bool, labels: np.ndarray, pool: np.ndarray, cfg: TrainConfig, names: list[str], seed: int
) -> np.ndarray:
    # imbalanced-learn (and scikit-learn under it) is imported when a run asks for it: it is a third of the
    # import time of every training process otherwise
    from imblearn.over_sampling import RandomOverSampler
    from imblearn.under_sampling import RandomUnderSampler

    sampler = (RandomOverSampler if oversample else RandomUnderSampler)(
        sampling_strategy=_strategy(cfg, names), random_state=seed
    )
    try:
        rows, _ = sampler.fit_resample(pool.reshape(-1, 1), labels[pool])
    except ValueError as exc:
        raise TrainConfigError(
            f"sampler {cfg.sampler!r} with resample_strategy {cfg.resample_strategy!r}: {exc}"
        ) from None
    return rows[:, 0].astype(np.int64)


PoolFn = Callable[[np.ndarray, np.ndarray, TrainConfig, list[str], int], tuple[np.ndarray, np.ndarray | None]]


def _uniform(labels, pool, cfg, names, seed):
    return pool, None


def _weighted(labels, pool, cfg, names, seed):
    w = class_weights(np.bincount(labels[pool], minlength=len(names)), cfg.sampler_weights, cfg.effective_beta)
    assert w is not None  # sampler_weights has no "none" scheme
    return pool, w[labels[pool]]


def _oversample(labels, pool, cfg, names, seed):
    return _imblearn(True, labels, pool, cfg, names, seed), None


def _undersample(labels, pool, cfg, names, seed):
    return _imblearn(False, labels, pool, cfg, names, seed), None


SAMPLERS: dict[str, PoolFn] = {
    "uniform": _uniform,
    "weighted": _weighted,
    "oversample": _oversample,
    "undersample": _undersample,
    "smote": _uniform,
}


def smote_rows(
    features: np.ndarray, labels: np.ndarray, cfg: TrainConfig, names: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic state rows (m, F) and labels (m,) from SMOTE over training rows (labels >= 0)."""
    keep = labels >= 0
    x, y = features[keep], labels[keep]
    counts = np.bincount(y, minlength=len(names))
    present = counts[counts > 0]
    if present.min() < 2:
        rare = [names[c] for c in np.flatnonzero((counts > 0) & (counts < 2))]
        raise TrainConfigError(
            f"sampler 'smote' needs >= 2 training frames of every class it oversamples; "
            f"{rare} have 1 (use a resample_strategy dict or sampler 'oversample')"
        )
    from imblearn.over_sampling import SMOTE

    smote = SMOTE(
        sampling_strategy=_strategy(cfg, names),
        k_neighbors=min(cfg.smote_k, int(present.min()) - 1),
        random_state=cfg.seed,
    )
    try:
        x_res, y_res = smote.fit_resample(x, y)
    except ValueError as exc:
        raise TrainConfigError(f"sampler 'smote': {exc}") from None
    return x_res[len(x) :].astype(np.float32), y_res[len(x) :].astype(np.int64)


@dataclass
class SamplingReport:
    """What an epoch looks like after sampling (class mix = expected fraction of draws per class)."""

    sampler: str
    epoch_size: int
    class_mix_data: list[float]
    class_mix_sampled: list[float]
    event_weighted_frames: float  # fraction of training frames with event weight > 1
    synthetic_rows: int

    def to_dict(self) -> dict:
        return asdict(self)


class EpochSampler:
    """Draws each epoch's training row indices. ``labels`` (n,) uses -1 for rows not trained on."""

    def __init__(
        self,
        labels: np.ndarray,
        cfg: TrainConfig,
        class_names: list[str],
        frame_weights: np.ndarray | None = None,
        synthetic_rows: int = 0,
    ) -> None:
        self.labels = np.asarray(labels, dtype=np.int64)
        self.cfg, self.names = cfg, class_names
        self.frame_weights = frame_weights
        self.pool = np.flatnonzero(self.labels >= 0)
        self.synthetic_rows = synthetic_rows

    def _draw(self, epoch: int) -> tuple[np.ndarray, np.ndarray | None]:
        rows, weights = SAMPLERS[self.cfg.sampler](
            self.labels, self.pool, self.cfg, self.names, epoch_seed(self.cfg.seed, epoch) % 2**32
        )
        if self.frame_weights is not None:
            weights = self.frame_weights[rows] * (1.0 if weights is None else weights)
        return rows, weights

    def epoch(self, epoch: int) -> torch.Tensor:
        """Row indices (epoch_size,) int64 for ``epoch``, in training order."""
        rows, weights = self._draw(epoch)
        gen = torch.Generator().manual_seed(epoch_seed(self.cfg.seed, epoch))
        if weights is None:
            return torch.as_tensor(rows)[torch.randperm(len(rows), generator=gen)]
        pick = torch.multinomial(
            torch.as_tensor(weights, dtype=torch.float64), len(rows), replacement=True, generator=gen
        )
        return torch.as_tensor(rows)[pick]

    def report(self) -> SamplingReport:
        rows, weights = self._draw(0)
        k = len(self.names)
        data = np.bincount(self.labels[self.pool], minlength=k).astype(np.float64)
        sampled = np.bincount(self.labels[rows], weights=weights, minlength=k).astype(np.float64)
        fw = self.frame_weights
        return SamplingReport(
            self.cfg.sampler,
            len(rows),
            (data / data.sum()).tolist(),
            (sampled / sampled.sum()).tolist(),
            float(np.mean(fw[self.pool] > 1)) if fw is not None else 0.0,
            self.synthetic_rows,
        )
