"""Behavior-cloning trainer: ``train_bc(dataset, config, out_dir)`` (CLI: ``bcarena train``).

The run, top to bottom (``_train``):
  1. ``_prepare_data``: the train/val/test splits as tensors, class ids, class checks, SMOTE rows,
     the epoch sampler (``samplers.py``) and the normalization fitted on train.
  2. ``_build_learner``: model, loss and optimizer on the training device.
  3. ``_start``: a fresh ``RunState``, or the one in ``checkpoint.pt`` (``resume=True``, which also
     removes the ``.partial-*`` temporaries a killed run left in ``out_dir``).
  4. per epoch: ``_train_epoch`` (the sampler's index draw in minibatches of in-memory tensors;
     index batching is about twice as fast as a DataLoader here), ``_validate`` (validation
     metrics, see ``validation.py``), early stopping on ``config.early_stop_metric`` and an
     atomic checkpoint (torch.save of plain state dicts, read back with ``weights_only=True``).
  5. ``_finish``: best weights restored, class thresholds tuned, final metrics, the agent.
Every random draw is a function of (seed, epoch), so ``resume=True`` after a kill ends with
the same weights as an uninterrupted run (bit for bit on CPU). A non-finite loss or weight stops
the run with a ``TrainError``: a diverged run never writes a checkpoint or an agent.

Outputs in ``out_dir``: ``agent/`` (the trained agent folder, ``load_agent``-able),
``config.json``, ``history.json`` (per-epoch losses and validation metrics),
``metrics.json`` (final validation/test metrics and the sampling report),
``training_curves.png`` and ``checkpoint.pt``.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from bcarena.agents.config import TrainConfig, TrainConfigError
from bcarena.agents.data import SplitData, fit_normalization, split_data
from bcarena.agents.keyframes import combine, keyframe_weights
from bcarena.agents.losses import LOSSES, Loss, class_weights
from bcarena.agents.policies import ScoreModel, build_policy
from bcarena.agents.samplers import EpochSampler, SamplingReport, event_weights, smote_rows
from bcarena.agents.selection import Selection, tune_class_offsets
from bcarena.agents.threads import torch_threads
from bcarena.agents.torch_agent import TorchAgent
from bcarena.agents.validation import SUMMARY_METRICS, ClassificationMetrics, classification_metrics
from bcarena.envs.errors import BcarenaError
from bcarena.envs.figures import pyplot, save_figure
from bcarena.envs.files import remove_partials, write_bytes, write_json
from bcarena.recordings.dataset import ActionDataset, DatasetError

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_FORMAT = "bcarena-train-checkpoint-v1"


class TrainError(BcarenaError, RuntimeError):
    """Training cannot start or continue (bad resume, inconsistent data, a diverged run)."""


@dataclass
class Target:
    """What a model learns: its class names and a map from dataset action ids to class ids.

    ``label_map[a]`` is the class of dataset action ``a``, or -1 for frames the model does not
    train on. ``action_ids[c]`` is the dataset action of class c (-1 for "none"-style classes).
    """

    class_names: list[str]
    label_map: np.ndarray
    skill_classes: list[int]
    action_ids: list[int]

    @classmethod
    def actions(cls, dataset: ActionDataset) -> Target:
        n = dataset.num_actions
        return cls(dataset.action_names, np.arange(n), dataset.skill_actions, list(range(n)))


@dataclass
class TrainResult:
    agent: TorchAgent
    history: list[dict[str, Any]]
    best_epoch: int
    val: ClassificationMetrics
    test: ClassificationMetrics | None
    sampling: SamplingReport
    out_dir: Path | None
    stopped_early: bool = False
    finished: bool = True  # False when ``stop_after_epochs`` interrupted the run
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainingData:
    """What the epochs read: the splits as model inputs, their class ids (-1: not trained on), the sampler."""

    train: SplitData  # SMOTE's synthetic rows appended, when that sampler is chosen
    val: SplitData
    test: SplitData | None  # None when the dataset has no test episodes
    y_train: np.ndarray  # (n_train,) int64 class ids, rows of ``train``
    y_val: np.ndarray
    y_test: np.ndarray | None
    class_counts: np.ndarray  # (num_classes,) training frames per class, before resampling
    mean: torch.Tensor  # input normalization fitted on train (per feature for state, a scalar for pixels)
    std: torch.Tensor
    sampler: EpochSampler
    sampling: SamplingReport
    fingerprint: str  # of labels and input shape: a checkpoint must come from the same data


@dataclass
class Learner:
    """The model being trained and what updates it, all on the training device."""

    model: ScoreModel
    loss_fn: Loss
    optimizer: torch.optim.Optimizer
    labels: torch.Tensor  # (n_train,) int64 class ids of the training rows
    device: torch.device


@dataclass
class RunState:
    """Where a run stands after its last finished epoch: what a checkpoint stores and ``resume`` restores."""

    epochs_done: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per epoch (``_validate``)
    best_value: float = -math.inf  # of the early-stopping metric, higher is better
    best_epoch: int = -1  # 1-based; -1 until an epoch scores above -inf
    bad_epochs: int = 0  # epochs since the best one
    best_state: dict[str, torch.Tensor] | None = None  # the best epoch's weights (for ``restore_best``)

    def stopped_early(self, patience: int) -> bool:
        return self.bad_epochs >= patience > 0

    def record(self, row: dict[str, Any], value: float, model: ScoreModel) -> None:
        """Append one epoch's history ``row``; keep the weights if ``value`` is the best so far."""
        self.history.append(row)
        self.epochs_done = row["epoch"]
        if value > self.best_value:
            self.best_value, self.best_epoch, self.bad_epochs = value, row["epoch"], 0
            self.best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            self.bad_epochs += 1


def lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    """Multiplier of the base learning rate in ``epoch`` (0-based)."""
    return {"constant": 1.0, "cosine": 0.5 * (1 + math.cos(math.pi * epoch / epochs)), "linear": 1.0 - epoch / epochs}[
        schedule
    ]


def make_loss(cfg: TrainConfig, counts: np.ndarray) -> Loss:
    weights = class_weights(counts, cfg.effective_class_weights, cfg.effective_beta)
    kwargs: dict[str, Any] = {}
    if cfg.loss == "focal":
        kwargs["gamma"] = cfg.focal_gamma
    if cfg.loss == "logit_adjusted":
        kwargs.update(prior=counts, tau=cfg.logit_tau)
    try:
        return LOSSES[cfg.loss](weights, cfg.label_smoothing, **kwargs)
    except ValueError as exc:
        raise TrainConfigError(str(exc)) from None


def build_model(
    cfg: TrainConfig, input_shape: tuple[int, ...], num_classes: int, mean: torch.Tensor, std: torch.Tensor
) -> ScoreModel:
    torch.manual_seed(cfg.seed)
    if cfg.policy == "mlp":
        policy = build_policy(
            "mlp",
            {
                "input_dim": input_shape[0],
                "num_actions": num_classes,
                "hidden": cfg.hidden,
                "activation": cfg.activation,
            },
        )
    else:
        policy = build_policy(
            "cnn",
            {
                "frame_stack": cfg.frame_stack,
                "num_actions": num_classes,
                "channels": cfg.cnn_channels,
                "hidden": cfg.cnn_hidden,
                "frame_size": input_shape[-1],
            },
        )
    return ScoreModel(policy, mean, std)


def training_device(choice: str) -> torch.device:
    """The torch device for ``TrainConfig.device`` ("cpu", "cuda" or "auto")."""
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise TrainError(
            "device 'cuda' was asked for but torch sees no CUDA GPU here "
            f"(torch {torch.__version__}); use device: cpu or auto"
        )
    return torch.device("cuda")


@torch.no_grad()
def predict_scores(model: ScoreModel, data: SplitData) -> np.ndarray:
    """Scores (n, A) of every row of ``data`` (on the model's device; returned on the CPU)."""
    model.eval()
    device = model.class_offsets.device
    return torch.cat([model(x.to(device)).cpu() for _, x in data.all_inputs()]).numpy()


def evaluate(
    model: ScoreModel, data: SplitData, labels: np.ndarray, target: Target
) -> tuple[ClassificationMetrics, float]:
    """(metrics, mean NLL) of ``model`` on rows with ``labels`` >= 0."""
    scores = predict_scores(model, data)
    keep = labels >= 0
    log_p = torch.log_softmax(torch.as_tensor(scores[keep] - model.class_offsets.cpu().numpy()), dim=-1)
    nll = float(-log_p.gather(1, torch.as_tensor(labels[keep])[:, None]).mean())
    metrics = classification_metrics(
        labels[keep], scores[keep].argmax(axis=1), target.class_names, target.skill_classes
    )
    return metrics, nll


def _monitor(metric: str, metrics: ClassificationMetrics, nll: float) -> float:
    """The early-stopping value, higher is better (NaN counts as worst)."""
    value = -nll if metric == "val_loss" else getattr(metrics, metric)
    return -math.inf if value is None or math.isnan(value) else float(value)


def _fingerprint(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for arr in arrays:
        digest.update(np.ascontiguousarray(arr).tobytes())
    return digest.hexdigest()[:16]


# What a checkpoint holds besides "format" (written by ``_save_run``, read back by ``_start``).
CHECKPOINT_KEYS = (
    "epoch",
    "model",
    "optimizer",
    "best_value",
    "best_epoch",
    "bad_epochs",
    "best_state",
    "history_json",
    "config_json",
    "fingerprint",
)


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` of plain state dicts, written atomically (a killed run keeps the previous checkpoint)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_bytes(path, buffer.getvalue())


def _load_checkpoint(path: Path, cfg: TrainConfig, fingerprint: str) -> dict[str, Any]:
    """The checkpoint at ``path`` if it was written for this config and data; otherwise a TrainError."""
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")  # resumable on another device
    except Exception as exc:  # torch raises several types for corrupt or foreign files
        raise TrainError(f"{path}: unreadable checkpoint ({exc})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise TrainError(f"{path}: not a bcarena training checkpoint")
    missing = [key for key in CHECKPOINT_KEYS if key not in state]
    if missing:
        raise TrainError(f"{path}: incomplete checkpoint, missing key(s) {missing}; start a new --out folder")
    try:
        saved = json.loads(state["config_json"])
    except (TypeError, json.JSONDecodeError):
        saved = None
    if not isinstance(saved, dict):
        raise TrainError(f"{path}: checkpoint's config_json is not a JSON object")
    if saved != cfg.to_dict():
        diff = sorted(k for k in set(saved) | set(cfg.to_dict()) if saved.get(k) != cfg.to_dict().get(k))
        raise TrainError(
            f"{path}: checkpoint was written with a different config (keys {diff}); resume needs "
            "the same config (or start a new --out folder)"
        )
    if state["fingerprint"] != fingerprint:
        raise TrainError(f"{path}: checkpoint was written for a different dataset or target")
    return state


def _labels(data: SplitData, target: Target) -> np.ndarray:
    return target.label_map[data.labels.numpy()]


def _check_classes(
    train: np.ndarray, others: dict[str, np.ndarray], target: Target, cfg: TrainConfig, where: str
) -> np.ndarray:
    k = len(target.class_names)
    counts = np.bincount(train[train >= 0], minlength=k)
    if (counts > 0).sum() < 2:
        raise DatasetError(f"{where}: the train split has {int((counts > 0).sum())} class(es) to learn; need >= 2")
    for split, labels in others.items():
        seen = np.bincount(labels[labels >= 0], minlength=k)
        absent = [target.class_names[c] for c in np.flatnonzero((counts == 0) & (seen > 0))]
        if absent and not cfg.allow_missing_classes:
            raise DatasetError(
                f"{where}: class(es) {absent} appear in the {split} split but never in train, so the "
                "model cannot learn them; re-split the episodes or set allow_missing_classes: true"
            )
    return counts


def _require_train_and_val(ds: ActionDataset) -> None:
    """Training learns on 'train' and validates on 'val' every epoch: say how to get both when one is empty."""
    for split in ("train", "val"):
        if not (ds.table["split"] == split).any():
            raise DatasetError(
                f"{ds._where()}: split {split!r} is empty; training learns on 'train' and validates "
                "on 'val' every epoch (val metrics, early stopping, restore_best, thresholds): rebuild "
                "the dataset with episodes in both, e.g. `bcarena dataset build --split 0.8,0.1,0.1`"
            )


def _check_out_folder(out_dir: str | os.PathLike | None, resume: bool) -> Path | None:
    """The run folder, checked against ``resume``: a resume needs a checkpoint, a fresh run must not clobber one."""
    out = Path(out_dir) if out_dir is not None else None
    if resume and (out is None or not (out / CHECKPOINT_FILE).exists()):
        raise TrainError(f"--resume: no checkpoint at {out / CHECKPOINT_FILE if out else '(no out folder)'}")
    if out is not None and not resume and (out / CHECKPOINT_FILE).exists():
        raise TrainError(f"{out}: holds a previous run's checkpoint; pass resume=True (--resume) or use a new folder")
    return out


def _check_finite_weights(model: ScoreModel, epoch: int, lr: float) -> None:
    """Refuse to keep a diverged model: every weight and buffer must be finite before it is saved."""
    bad = [name for name, value in model.state_dict().items() if not torch.isfinite(value).all()]
    if bad:
        raise TrainError(
            f"training diverged at epoch {epoch}: weights {bad[:3]} hold NaN or inf; lower lr (now {lr:g})"
        )


# ----------------------------------------------------------------------------------- the steps
def train_bc(
    dataset: ActionDataset | str | os.PathLike,
    config: TrainConfig,
    out_dir: str | os.PathLike | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    target: Target | None = None,
    stop_after_epochs: int | None = None,
    name: str = "bc",
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train a BC agent on the train split, validating on val (and reporting test when present).

    A dataset given as a folder is read without its pixels when the policy reads states.
    ``stop_after_epochs`` ends this call after that many epochs of the run (as if killed after the
    checkpoint); ``resume=True`` continues from ``out_dir/checkpoint.pt``.
    """
    with torch_threads(config.num_threads):
        return _train(dataset, config, out_dir, resume, progress, target, stop_after_epochs, name, on_epoch)


def _train(
    dataset: ActionDataset | str | os.PathLike,
    cfg: TrainConfig,
    out_dir: str | os.PathLike | None,
    resume: bool,
    progress: bool,
    target: Target | None,
    stop_after_epochs: int | None,
    name: str,
    on_epoch: Callable[[dict[str, Any]], None] | None,
) -> TrainResult:
    ds = dataset if isinstance(dataset, ActionDataset) else ActionDataset.load(dataset, pixels=cfg.obs_type == "pixels")
    target = target or Target.actions(ds)
    out = _check_out_folder(out_dir, resume)
    data = _prepare_data(ds, cfg, target)
    learner = _build_learner(cfg, data, target)
    run = _start(out, cfg, data.fingerprint, learner, resume)
    first_epoch = run.epochs_done
    bar = tqdm(
        range(first_epoch, cfg.epochs),
        desc=f"train {name}",
        unit="epoch",
        disable=not progress,
        initial=first_epoch,
        total=cfg.epochs,
    )
    for epoch in bar:
        if run.stopped_early(cfg.patience) or (
            stop_after_epochs is not None and epoch - first_epoch >= stop_after_epochs
        ):
            break
        lr, train_means = _train_epoch(learner, data, cfg, epoch, progress)
        row, value = _validate(learner.model, data, target, cfg.early_stop_metric, epoch, lr, train_means)
        run.record(row, value, learner.model)
        bar.set_postfix(
            loss=f"{row['train_objective']:.4f}",
            val_acc=f"{row['val_accuracy']:.3f}",
            skill_frame_rec=f"{row['val_skill_frame_recall']:.3f}",
            refresh=False,
        )
        if out is not None:
            _save_run(out / CHECKPOINT_FILE, run, learner, cfg, data.fingerprint)
        if on_epoch is not None:
            on_epoch(row)
    bar.close()
    return _finish(ds, cfg, target, data, learner.model, run, out, name)


def _prepare_data(ds: ActionDataset, cfg: TrainConfig, target: Target) -> TrainingData:
    """Step 1: the splits as model inputs, checked, with the sampler that draws each epoch's rows."""
    _require_train_and_val(ds)
    train, val = (split_data(ds, s, cfg.obs_type, cfg.frame_stack) for s in ("train", "val"))
    test = split_data(ds, "test", cfg.obs_type, cfg.frame_stack) if (ds.table["split"] == "test").any() else None
    y_train, y_val = _labels(train, target), _labels(val, target)
    y_test = _labels(test, target) if test is not None else None
    others = {"val": y_val, **({"test": y_test} if y_test is not None else {})}
    counts = _check_classes(y_train, others, target, cfg, ds._where())
    frame_weights = combine(
        event_weights(train.dataset, cfg.event_weighting), keyframe_weights(train.dataset, cfg.keyframe_weighting)
    )
    mean, std = fit_normalization(train, seed=cfg.seed)  # on recorded rows only, before any synthetic ones
    synthetic = 0
    if cfg.sampler == "smote":
        y_train, frame_weights, synthetic = _append_smote_rows(train, y_train, frame_weights, cfg, target)
    sampler = EpochSampler(y_train, cfg, target.class_names, frame_weights, synthetic)
    fingerprint = _fingerprint(y_train, y_val, np.asarray(train.input_shape), target.label_map)
    return TrainingData(
        train, val, test, y_train, y_val, y_test, counts, mean, std, sampler, sampler.report(), fingerprint
    )


def _append_smote_rows(
    train: SplitData, y_train: np.ndarray, frame_weights: np.ndarray | None, cfg: TrainConfig, target: Target
) -> tuple[np.ndarray, np.ndarray | None, int]:
    """SMOTE's synthetic state rows appended to ``train`` (in place): (labels, frame weights, rows added)."""
    x_new, y_new = smote_rows(train.inputs.numpy(), y_train, cfg, target.class_names)
    train.inputs = torch.cat([train.inputs, torch.as_tensor(x_new)])
    if frame_weights is not None:
        frame_weights = np.concatenate([frame_weights, np.ones(len(y_new))])
    return np.concatenate([y_train, y_new]), frame_weights, len(y_new)


def _build_learner(cfg: TrainConfig, data: TrainingData, target: Target) -> Learner:
    """Step 2: model, loss and optimizer on the training device."""
    device = training_device(cfg.device)
    if device.type != "cpu":  # hold the training rows on the GPU once instead of copying every batch
        data.train.inputs = data.train.inputs.to(device)
        if data.train.stack_index is not None:
            data.train.stack_index = data.train.stack_index.to(device)
    model = build_model(cfg, data.train.input_shape, len(target.class_names), data.mean, data.std).to(device)
    loss_fn = make_loss(cfg, data.class_counts).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return Learner(model, loss_fn, optimizer, torch.as_tensor(data.y_train).to(device), device)


def _start(out: Path | None, cfg: TrainConfig, fingerprint: str, learner: Learner, resume: bool) -> RunState:
    """Step 3: write ``config.json`` and start fresh, or restore the model, optimizer and run state to resume."""
    if out is None:
        return RunState()
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", cfg.to_dict())
    if not resume:
        return RunState()
    remove_partials(out)  # a checkpoint, agent or plot a kill cut short: the resumed run writes them anew
    state = _load_checkpoint(out / CHECKPOINT_FILE, cfg, fingerprint)
    learner.model.load_state_dict(state["model"])
    learner.optimizer.load_state_dict(state["optimizer"])
    return RunState(
        epochs_done=state["epoch"],
        history=json.loads(state["history_json"]),
        best_value=state["best_value"],
        best_epoch=state["best_epoch"],
        bad_epochs=state["bad_epochs"],
        best_state=state["best_state"],
    )


def _train_epoch(
    learner: Learner, data: TrainingData, cfg: TrainConfig, epoch: int, progress: bool
) -> tuple[float, dict[str, float]]:
    """Step 4a: one pass over ``epoch``'s draw (0-based): (learning rate, per-row mean of every loss term)."""
    model, optimizer = learner.model, learner.optimizer
    lr = cfg.lr * lr_factor(cfg.lr_schedule, epoch, cfg.epochs)
    for group in optimizer.param_groups:
        group["lr"] = lr
    model.train()
    order = data.sampler.epoch(epoch)
    sums: dict[str, float] = {}
    batches = tqdm(
        range(0, len(order), cfg.batch_size), desc=f"epoch {epoch + 1}", unit="batch", leave=False, disable=not progress
    )
    for step, begin in enumerate(batches, start=1):
        idx = order[begin : begin + cfg.batch_size].to(learner.device)
        metrics = learner.loss_fn(model.logits(data.train.batch(idx)), learner.labels[idx])
        if not math.isfinite(metrics.objective):
            raise TrainError(
                f"training diverged at epoch {epoch + 1}, step {step}: loss is {metrics.objective}; "
                f"lower lr (now {lr:g})"
            )
        optimizer.zero_grad(set_to_none=True)
        metrics.loss.backward()
        optimizer.step()
        for key, value in metrics.scalars().items():
            sums[key] = sums.get(key, 0.0) + value * len(idx)
        batches.set_postfix(loss=f"{metrics.objective:.4f}", refresh=False)
    return lr, {key: total / len(order) for key, total in sums.items()}


def _validate(
    model: ScoreModel,
    data: TrainingData,
    target: Target,
    monitor: str,
    epoch: int,
    lr: float,
    train_means: dict[str, float],
) -> tuple[dict[str, Any], float]:
    """Step 4b: the epoch's history row (1-based ``epoch``, train means, val metrics) and its early-stopping value."""
    metrics, nll = evaluate(model, data.val, data.y_val, target)
    row = {
        "epoch": epoch + 1,
        "lr": lr,
        **{f"train_{k}": v for k, v in train_means.items()},
        "val_loss": nll,
        **{f"val_{k}": getattr(metrics, k) for k in SUMMARY_METRICS},
    }
    return row, _monitor(monitor, metrics, nll)


def _save_run(path: Path, run: RunState, learner: Learner, cfg: TrainConfig, fingerprint: str) -> None:
    """Step 4c: the checkpoint after an epoch (finite weights only)."""
    _check_finite_weights(learner.model, run.epochs_done, run.history[-1]["lr"])
    _save_checkpoint(
        path,
        {
            "format": CHECKPOINT_FORMAT,
            "epoch": run.epochs_done,
            "model": learner.model.state_dict(),
            "optimizer": learner.optimizer.state_dict(),
            "best_value": run.best_value,
            "best_epoch": run.best_epoch,
            "bad_epochs": run.bad_epochs,
            "best_state": run.best_state,
            "history_json": json.dumps(run.history),
            "config_json": json.dumps(cfg.to_dict()),
            "fingerprint": fingerprint,
        },
    )


def _finish(
    ds: ActionDataset,
    cfg: TrainConfig,
    target: Target,
    data: TrainingData,
    model: ScoreModel,
    run: RunState,
    out: Path | None,
    name: str,
) -> TrainResult:
    """Step 5: the best weights on the CPU, tuned thresholds, final metrics, the agent (written when finished)."""
    model.to("cpu")  # threshold tuning, the final metrics and the agent all run on the CPU
    if cfg.restore_best and run.best_state is not None:
        model.load_state_dict(run.best_state)
    _check_finite_weights(model, run.epochs_done, run.history[-1]["lr"] if run.history else cfg.lr)
    extra = _tune_thresholds(model, data, target, cfg) if cfg.selection == "thresholds" else {}
    val_metrics, _ = evaluate(model, data.val, data.y_val, target)
    test_metrics = evaluate(model, data.test, data.y_test, target)[0] if data.test is not None else None
    selection = Selection(mode=cfg.selection, temperature=cfg.temperature, seed=cfg.seed)
    info = {
        "dataset": str(ds.path) if ds.path else None,
        "train_frames": int((data.y_train >= 0).sum()),
        "best_epoch": run.best_epoch,
        "class_names": target.class_names,
        "val": {k: getattr(val_metrics, k) for k in SUMMARY_METRICS},
    }
    agent = TorchAgent(
        model,
        target.class_names,
        target.skill_classes,
        cfg.frame_stack,
        selection,
        name=name,
        info=info,
        game=ds.manifest["game"],
    )
    stopped_early = run.stopped_early(cfg.patience)
    finished = stopped_early or len(run.history) >= cfg.epochs
    result = TrainResult(
        agent,
        run.history,
        run.best_epoch,
        val_metrics,
        test_metrics,
        data.sampling,
        out,
        stopped_early,
        finished,
        extra,
    )
    if out is not None and finished:
        _write_outputs(out, result, cfg)
    return result


def _tune_thresholds(model: ScoreModel, data: TrainingData, target: Target, cfg: TrainConfig) -> dict[str, Any]:
    """Per-class score offsets that maximize ``cfg.threshold_metric`` on val, written into the model."""
    scores = predict_scores(model, data.val)
    keep = data.y_val >= 0

    def metric(y: np.ndarray, p: np.ndarray) -> float:
        return getattr(classification_metrics(y, p, target.class_names, target.skill_classes), cfg.threshold_metric)

    offsets, tuned = tune_class_offsets(scores[keep], data.y_val[keep], metric)
    model.class_offsets.copy_(torch.as_tensor(offsets))
    return {"class_offsets": offsets.tolist(), f"val_{cfg.threshold_metric}_after_thresholds": tuned}


def _write_outputs(out: Path, result: TrainResult, cfg: TrainConfig) -> None:
    result.agent.save(out / "agent", overwrite=True)
    write_json(out / "history.json", result.history)
    write_json(
        out / "metrics.json",
        {
            "best_epoch": result.best_epoch,
            "stopped_early": result.stopped_early,
            "val": result.val.to_dict(),
            "test": result.test.to_dict() if result.test else None,
            "sampling": result.sampling.to_dict(),
            **result.extra,
        },
    )
    plot_history(result.history, out / "training_curves.png", cfg.early_stop_metric)


def plot_history(history: list[dict[str, Any]], path: Path, monitor: str) -> None:
    """Training loss and validation metrics per epoch (PNG)."""
    plt = pyplot()
    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r["train_objective"] for r in history], label="train objective")
    ax_loss.plot(epochs, [r["train_nll"] for r in history], label="train NLL")
    ax_loss.plot(epochs, [r["val_loss"] for r in history], label="val NLL")
    ax_loss.set_xlabel("epoch")
    ax_loss.legend()
    for metric in SUMMARY_METRICS:
        ax_val.plot(epochs, [r[f"val_{metric}"] for r in history], label=metric)
    ax_val.set_xlabel("epoch")
    ax_val.set_ylim(0, 1)
    ax_val.set_title(f"validation (early stop on {monitor})")
    ax_val.legend()
    save_figure(fig, path, dpi=100)
