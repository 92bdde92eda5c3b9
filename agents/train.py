"""Behavior-cloning trainer: ``train_bc(dataset, config, out_dir)`` (CLI: ``bcarena train``).

One epoch = the sampler's index draw, in minibatches of in-memory tensors (index batching is
about twice as fast as a DataLoader here). After each epoch: validation metrics (see
``validation.py``), early stopping on ``config.early_stop_metric``, and an atomic checkpoint
(``checkpoint.pt``: torch.save of plain state dicts, read back with ``weights_only=True``).
Every random draw is a function of (seed, epoch), so ``resume=True`` after a kill ends with
the same weights as an uninterrupted run (bit for bit on CPU).

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from bcarena.agents.base import write_atomic
from bcarena.agents.config import ConfigError, TrainConfig
from bcarena.agents.data import SplitData, fit_normalization, split_data
from bcarena.agents.losses import LOSSES, Loss, class_weights
from bcarena.agents.policies import ScoreModel, build_policy
from bcarena.agents.samplers import EpochSampler, SamplingReport, event_weights, smote_rows
from bcarena.agents.selection import Selection, tune_class_offsets
from bcarena.agents.threads import torch_threads
from bcarena.agents.torch_agent import TorchAgent
from bcarena.agents.validation import ClassificationMetrics, classification_metrics
from bcarena.recordings.dataset import ActionDataset, DatasetError

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_FORMAT = "bcarena-train-checkpoint-v1"


class TrainError(RuntimeError):
    """Training cannot start or continue (bad resume, inconsistent data)."""


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
    def actions(cls, dataset: ActionDataset) -> "Target":
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


def lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    """Multiplier of the base learning rate in ``epoch`` (0-based)."""
    return {"constant": 1.0,
            "cosine": 0.5 * (1 + math.cos(math.pi * epoch / epochs)),
            "linear": 1.0 - epoch / epochs}[schedule]


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
        raise ConfigError(str(exc)) from None


def build_model(cfg: TrainConfig, input_shape: tuple[int, ...], num_classes: int, mean: torch.Tensor,
                std: torch.Tensor) -> ScoreModel:
    torch.manual_seed(cfg.seed)
    if cfg.policy == "mlp":
        policy = build_policy("mlp", {"input_dim": input_shape[0], "num_actions": num_classes,
                                      "hidden": cfg.hidden, "activation": cfg.activation})
    else:
        policy = build_policy("cnn", {"frame_stack": cfg.frame_stack, "num_actions": num_classes,
                                      "channels": cfg.cnn_channels, "hidden": cfg.cnn_hidden,
                                      "frame_size": input_shape[-1]})
    return ScoreModel(policy, mean, std)


def training_device(choice: str) -> torch.device:
    """The torch device for ``TrainConfig.device`` ("cpu", "cuda" or "auto")."""
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise TrainError("device 'cuda' was asked for but torch sees no CUDA GPU here "
                         f"(torch {torch.__version__}); use device: cpu or auto")
    return torch.device("cuda")


@torch.no_grad()
def predict_scores(model: ScoreModel, data: SplitData) -> np.ndarray:
    """Scores (n, A) of every row of ``data`` (on the model's device; returned on the CPU)."""
    model.eval()
    device = model.class_offsets.device
    return torch.cat([model(x.to(device)).cpu() for _, x in data.all_inputs()]).numpy()


def evaluate(model: ScoreModel, data: SplitData, labels: np.ndarray, target: Target) -> tuple[ClassificationMetrics, float]:
    """(metrics, mean NLL) of ``model`` on rows with ``labels`` >= 0."""
    scores = predict_scores(model, data)
    keep = labels >= 0
    log_p = torch.log_softmax(torch.as_tensor(scores[keep] - model.class_offsets.cpu().numpy()), dim=-1)
    nll = float(-log_p.gather(1, torch.as_tensor(labels[keep])[:, None]).mean())
    metrics = classification_metrics(labels[keep], scores[keep].argmax(axis=1), target.class_names,
                                     target.skill_classes)
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


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomic(path, buffer.getvalue())


def _load_checkpoint(path: Path, cfg: TrainConfig, fingerprint: str) -> dict[str, Any]:
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")  # resumable on another device
    except Exception as exc:  # torch raises several types for corrupt or foreign files
        raise TrainError(f"{path}: unreadable checkpoint ({exc})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise TrainError(f"{path}: not a bcarena training checkpoint")
    saved = json.loads(state["config_json"])
    if saved != cfg.to_dict():
        diff = sorted(k for k in set(saved) | set(cfg.to_dict()) if saved.get(k) != cfg.to_dict().get(k))
        raise TrainError(f"{path}: checkpoint was written with a different config (keys {diff}); resume needs "
                         "the same config (or start a new --out folder)")
    if state["fingerprint"] != fingerprint:
        raise TrainError(f"{path}: checkpoint was written for a different dataset or target")
    return state


def _labels(data: SplitData, target: Target) -> np.ndarray:
    return target.label_map[data.labels.numpy()]


def _check_classes(train: np.ndarray, others: dict[str, np.ndarray], target: Target, cfg: TrainConfig,
                   where: str) -> np.ndarray:
    k = len(target.class_names)
    counts = np.bincount(train[train >= 0], minlength=k)
    if (counts > 0).sum() < 2:
        raise DatasetError(f"{where}: the train split has {int((counts > 0).sum())} class(es) to learn; need >= 2")
    for split, labels in others.items():
        seen = np.bincount(labels[labels >= 0], minlength=k)
        absent = [target.class_names[c] for c in np.flatnonzero((counts == 0) & (seen > 0))]
        if absent and not cfg.allow_missing_classes:
            raise DatasetError(f"{where}: class(es) {absent} appear in the {split} split but never in train, so the "
                               "model cannot learn them; re-split the episodes or set allow_missing_classes: true")
    return counts


def train_bc(dataset: ActionDataset | str | os.PathLike, config: TrainConfig, out_dir: str | os.PathLike | None = None,
             *, resume: bool = False, progress: bool = True, target: Target | None = None,
             stop_after_epochs: int | None = None, name: str = "bc",
             on_epoch: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train a BC agent on the train split, validating on val (and reporting test when present).

    ``stop_after_epochs`` ends this call after that many epochs of the run (as if killed after the
    checkpoint); ``resume=True`` continues from ``out_dir/checkpoint.pt``.
    """
    with torch_threads(config.num_threads):
        return _train(dataset, config, out_dir, resume, progress, target, stop_after_epochs, name, on_epoch)


def _train(dataset: ActionDataset | str | os.PathLike, cfg: TrainConfig, out_dir: str | os.PathLike | None,
           resume: bool, progress: bool, target: Target | None, stop_after_epochs: int | None, name: str,
           on_epoch: Callable[[dict[str, Any]], None] | None) -> TrainResult:
    ds = dataset if isinstance(dataset, ActionDataset) else ActionDataset.load(dataset)
    target = target or Target.actions(ds)
    where = ds._where()
    out = Path(out_dir) if out_dir is not None else None
    if resume and (out is None or not (out / CHECKPOINT_FILE).exists()):
        raise TrainError(f"--resume: no checkpoint at {out / CHECKPOINT_FILE if out else '(no out folder)'}")
    if out is not None and not resume and (out / CHECKPOINT_FILE).exists():
        raise TrainError(f"{out}: holds a previous run's checkpoint; pass resume=True (--resume) or use a new folder")

    train, val = (split_data(ds, s, cfg.obs_type, cfg.frame_stack) for s in ("train", "val"))
    test = split_data(ds, "test", cfg.obs_type, cfg.frame_stack) if (ds.table["split"] == "test").any() else None
    y_train, y_val = _labels(train, target), _labels(val, target)
    y_test = _labels(test, target) if test is not None else None
    counts = _check_classes(y_train, {"val": y_val, **({"test": y_test} if test is not None else {})}, target, cfg,
                            where)
    frame_w = event_weights(train.dataset, cfg.event_weighting)
    mean, std = fit_normalization(train, seed=cfg.seed)
    synthetic = 0
    if cfg.sampler == "smote":
        x_new, y_new = smote_rows(train.inputs.numpy(), y_train, cfg, target.class_names)
        synthetic = len(y_new)
        train.inputs = torch.cat([train.inputs, torch.as_tensor(x_new)])
        y_train = np.concatenate([y_train, y_new])
        if frame_w is not None:
            frame_w = np.concatenate([frame_w, np.ones(synthetic)])
    sampler = EpochSampler(y_train, cfg, target.class_names, frame_w, synthetic)
    sampling = sampler.report()
    device = training_device(cfg.device)
    if device.type != "cpu":  # hold the training rows on the GPU once instead of copying every batch
        train.inputs = train.inputs.to(device)
        train.stack_index = train.stack_index.to(device) if train.stack_index is not None else None
    model = build_model(cfg, train.input_shape, len(target.class_names), mean, std).to(device)
    loss_fn = make_loss(cfg, counts).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    y_train_t = torch.as_tensor(y_train).to(device)
    fingerprint = _fingerprint(y_train, y_val, np.asarray(train.input_shape), target.label_map)

    start, history, best_value, best_epoch, bad_epochs, best_state = 0, [], -math.inf, -1, 0, None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / "config.json", (json.dumps(cfg.to_dict(), indent=2) + "\n").encode())
        if resume:
            state = _load_checkpoint(out / CHECKPOINT_FILE, cfg, fingerprint)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            start, best_value, best_epoch = state["epoch"], state["best_value"], state["best_epoch"]
            bad_epochs, best_state = state["bad_epochs"], state["best_state"]
            history = json.loads(state["history_json"])

    stopped_early = bad_epochs >= cfg.patience > 0
    epochs_run = 0
    bar = tqdm(range(start, cfg.epochs), desc=f"train {name}", unit="epoch", disable=not progress,
               initial=start, total=cfg.epochs)
    for epoch in bar:
        if stopped_early or (stop_after_epochs is not None and epochs_run >= stop_after_epochs):
            break
        lr = cfg.lr * lr_factor(cfg.lr_schedule, epoch, cfg.epochs)
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        order = sampler.epoch(epoch)
        sums: dict[str, float] = {}
        inner = tqdm(range(0, len(order), cfg.batch_size), desc=f"epoch {epoch + 1}", unit="batch", leave=False,
                     disable=not progress)
        for begin in inner:
            idx = order[begin:begin + cfg.batch_size]
            idx = idx.to(device)
            metrics = loss_fn(model.logits(train.batch(idx)), y_train_t[idx])
            optimizer.zero_grad(set_to_none=True)
            metrics.loss.backward()
            optimizer.step()
            for key, value in metrics.scalars().items():
                sums[key] = sums.get(key, 0.0) + value * len(idx)
            inner.set_postfix(loss=f"{metrics.objective:.4f}", refresh=False)
        val_metrics, val_nll = evaluate(model, val, y_val, target)
        value = _monitor(cfg.early_stop_metric, val_metrics, val_nll)
        row = {"epoch": epoch + 1, "lr": lr, **{f"train_{k}": v / len(order) for k, v in sums.items()},
               "val_loss": val_nll, "val_accuracy": val_metrics.accuracy,
               "val_balanced_accuracy": val_metrics.balanced_accuracy, "val_macro_f1": val_metrics.macro_f1,
               "val_skill_recall": val_metrics.skill_recall}
        history.append(row)
        if value > best_value:
            best_value, best_epoch, bad_epochs = value, epoch + 1, 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
        stopped_early = bad_epochs >= cfg.patience > 0
        bar.set_postfix(loss=f"{row['train_objective']:.4f}", val_acc=f"{val_metrics.accuracy:.3f}",
                        skill_rec=f"{val_metrics.skill_recall:.3f}", refresh=False)
        if out is not None:
            _save_checkpoint(out / CHECKPOINT_FILE, {
                "format": CHECKPOINT_FORMAT, "epoch": epoch + 1, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "best_value": best_value, "best_epoch": best_epoch,
                "bad_epochs": bad_epochs, "best_state": best_state, "history_json": json.dumps(history),
                "config_json": json.dumps(cfg.to_dict()), "fingerprint": fingerprint})
        if on_epoch is not None:
            on_epoch(row)
        epochs_run += 1
    bar.close()
    finished = stopped_early or len(history) >= cfg.epochs
    model.to("cpu")  # threshold tuning, the final metrics and the agent all run on the CPU
    if cfg.restore_best and best_state is not None:
        model.load_state_dict(best_state)
    extra: dict[str, Any] = {}
    if cfg.selection == "thresholds":
        scores = predict_scores(model, val)
        keep = y_val >= 0

        def metric(y: np.ndarray, p: np.ndarray) -> float:
            return getattr(classification_metrics(y, p, target.class_names, target.skill_classes),
                           cfg.threshold_metric)

        offsets, tuned = tune_class_offsets(scores[keep], y_val[keep], metric)
        model.class_offsets.copy_(torch.as_tensor(offsets))
        extra["class_offsets"] = offsets.tolist()
        extra[f"val_{cfg.threshold_metric}_after_thresholds"] = tuned
    val_metrics, _ = evaluate(model, val, y_val, target)
    test_metrics = evaluate(model, test, y_test, target)[0] if test is not None else None
    selection = Selection(mode=cfg.selection, temperature=cfg.temperature, seed=cfg.seed)
    info = {"dataset": str(ds.path) if ds.path else None, "train_frames": int((y_train >= 0).sum()),
            "best_epoch": best_epoch, "class_names": target.class_names,
            "val": {k: getattr(val_metrics, k) for k in ("accuracy", "balanced_accuracy", "macro_f1", "skill_recall")}}
    agent = TorchAgent(model, target.class_names, target.skill_classes, cfg.frame_stack, selection, name=name, info=info)
    result = TrainResult(agent, history, best_epoch, val_metrics, test_metrics, sampling, out, stopped_early, finished,
                         extra)
    if out is not None and finished:
        _write_outputs(out, result, cfg)
    return result


def _write_outputs(out: Path, result: TrainResult, cfg: TrainConfig) -> None:
    result.agent.save(out / "agent", overwrite=True)
    write_atomic(out / "history.json", (json.dumps(result.history, indent=2) + "\n").encode())
    summary = {"best_epoch": result.best_epoch, "stopped_early": result.stopped_early,
               "val": result.val.to_dict(), "test": result.test.to_dict() if result.test else None,
               "sampling": result.sampling.to_dict(), **result.extra}
    write_atomic(out / "metrics.json", (json.dumps(summary, indent=2) + "\n").encode())
    plot_history(result.history, out / "training_curves.png", cfg.early_stop_metric)


def plot_history(history: list[dict[str, Any]], path: Path, monitor: str) -> None:
    """Training loss and validation metrics per epoch (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r["train_objective"] for r in history], label="train objective")
    ax_loss.plot(epochs, [r["train_nll"] for r in history], label="train NLL")
    ax_loss.plot(epochs, [r["val_loss"] for r in history], label="val NLL")
    ax_loss.set_xlabel("epoch")
    ax_loss.legend()
    for key in ("val_accuracy", "val_balanced_accuracy", "val_macro_f1", "val_skill_recall"):
        ax_val.plot(epochs, [r[key] for r in history], label=key.removeprefix("val_"))
    ax_val.set_xlabel("epoch")
    ax_val.set_ylim(0, 1)
    ax_val.set_title(f"validation (early stop on {monitor})")
    ax_val.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    write_atomic(path, buffer.getvalue())
