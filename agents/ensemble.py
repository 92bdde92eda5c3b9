"""Train many small MLP BC agents at once: ``train_ensemble(dataset, configs, out_dirs)``.

A study trains dozens of small MLPs on one dataset. One at a time, every minibatch pays the
per-call costs of three small matmuls, autograd and the optimizer; here the K members' layers are
stacked into (K, out, in) tensors, one ``baddbmm`` per layer runs all members' minibatches at
once, one backward pass computes every member's gradients (members share no weights, so the sum
of their losses has each member's own gradient), and one AdamW update runs over the stacks.

Each member is what ``train_bc`` would give it, step for step:
  - the same data (``train._prepare_data`` on the one loaded dataset: splits, class checks, SMOTE,
    the member's own sampler, event weights and normalization);
  - the same initial weights (``build_model`` seeds torch with the member's seed);
  - the same rows in the same minibatches (the member's ``EpochSampler`` draw of each epoch);
  - its own loss object (``make_loss``: loss kind, class weights, focal gamma, logit adjustment);
  - the same AdamW update (torch's formula, the member's learning rate, schedule and weight decay,
    its own step count; a member whose epoch is shorter simply sits out the remaining steps);
  - the same validation, early stopping, best-weight restore, thresholds and output files
    (``train._validate``, ``RunState``, ``train._finish``).
How it differs: the stacked matmuls round differently from ``nn.Linear``'s, so weights agree with
``train_bc``'s to float32 rounding, not bit for bit, and the rounding differences grow with training
(``tests/test_ensemble.py``, ~1k frames: max weight difference below 1e-4 after 3 epochs, identical
greedy actions on validation; ``bcarena bench study`` on the gap study's 26,727 training frames:
1.2e-3 after 3 epochs, 99.96% identical greedy actions on validation). No ``checkpoint.pt``
is written and there is no resume (a killed ensemble starts over; the experiment cache keeps
finished members). A member whose loss turns non-finite fails alone (its ``TrainError`` is in
``EnsembleResult.errors``); the others train on.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from bcarena.agents.config import TrainConfig, TrainConfigError
from bcarena.agents.policies import ACTIVATIONS, ScoreModel
from bcarena.agents.threads import torch_threads
from bcarena.agents.train import (
    RunState,
    Target,
    TrainError,
    TrainingData,
    TrainResult,
    _check_out_folder,
    _finish,
    _prepare_data,
    _validate,
    build_model,
    lr_factor,
    make_loss,
)
from bcarena.envs.files import write_json
from bcarena.recordings.dataset import ActionDataset

BETAS, EPS = (0.9, 0.999), 1e-8  # torch.optim.AdamW's defaults, as train_bc uses them
# Options that must agree for members to share one stack of matmuls and one minibatch schedule.
SHARED_OPTIONS = ("policy", "hidden", "activation", "frame_stack", "epochs", "batch_size", "device")


def ensemble_key(cfg: TrainConfig) -> tuple[Any, ...]:
    """Configs with equal keys can train in one ensemble (a plain MLP on the CPU; same layout and schedule)."""
    return tuple(str(getattr(cfg, name)) for name in SHARED_OPTIONS)


def check_ensemble(configs: Sequence[TrainConfig]) -> None:
    """A TrainConfigError unless every config is a CPU MLP with the same ``SHARED_OPTIONS``."""
    if not configs:
        raise TrainConfigError("an ensemble needs at least one training config")
    for index, cfg in enumerate(configs):
        if cfg.policy != "mlp" or cfg.device != "cpu":
            raise TrainConfigError(
                f"ensemble member {index}: batched training stacks plain MLPs on the CPU, got policy "
                f"{cfg.policy!r} on device {cfg.device!r}; train it with train_bc"
            )
        if ensemble_key(cfg) != ensemble_key(configs[0]):
            diff = [n for n in SHARED_OPTIONS if getattr(cfg, n) != getattr(configs[0], n)]
            raise TrainConfigError(
                f"ensemble member {index} differs from member 0 in {diff}; members share "
                f"{list(SHARED_OPTIONS)} (group configs by ensemble_key)"
            )


class StackedMLP:
    """K MLPs of one layout as stacked leaf tensors: weights (K, out, in), biases (K, out), normalization (K, 1, D)."""

    def __init__(self, models: Sequence[ScoreModel]) -> None:
        policies = [m.policy for m in models]
        layers = [*[m for m in policies[0].body if isinstance(m, torch.nn.Linear)], policies[0].head]
        names = [name for name, p in policies[0].named_parameters()]
        self.names = names  # policy parameter names, (weight, bias) per layer in order
        params = [dict(p.named_parameters()) for p in policies]
        self.params = [torch.stack([p[n].detach() for p in params]).requires_grad_(True) for n in names]
        self.mean = torch.stack([m.mean for m in models])[:, None, :]
        self.std = torch.stack([m.std for m in models])[:, None, :]
        self.activation = ACTIVATIONS[policies[0].activation]()
        self.num_layers = len(layers)

    def logits(self, rows: torch.Tensor | slice, x: torch.Tensor) -> torch.Tensor:
        """Logits (K', B, A) of members ``rows`` for their raw inputs ``x`` (K', B, D)."""
        h = (x - self.mean[rows]) / self.std[rows]
        for layer in range(self.num_layers):
            weight, bias = self.params[2 * layer][rows], self.params[2 * layer + 1][rows]
            h = torch.baddbmm(bias[:, None, :], h, weight.transpose(1, 2))
            if layer < self.num_layers - 1:
                h = self.activation(h)
        return h

    @torch.no_grad()
    def copy_into(self, k: int, model: ScoreModel) -> None:
        """Member ``k``'s current weights into its own ``model`` (for validation and the saved agent)."""
        own = dict(model.policy.named_parameters())
        for name, stacked in zip(self.names, self.params):
            own[name].copy_(stacked[k])


class StackedAdamW:
    """torch.optim.AdamW's update (amsgrad off) on stacked tensors, per member lr, weight decay and step count."""

    def __init__(self, params: list[torch.Tensor], weight_decay: torch.Tensor) -> None:
        self.params = params
        self.weight_decay = weight_decay  # (K,) float64
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        self.steps = torch.zeros(len(weight_decay), dtype=torch.float64)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def update(self, members: list[int], lr: torch.Tensor) -> None:
        """One update of ``members`` (the others keep weights and moments) at learning rates ``lr`` (K,)."""
        rows: torch.Tensor | slice = slice(None) if len(members) == len(self.steps) else torch.as_tensor(members)
        self.steps[rows] += 1
        steps, lr_rows = self.steps[rows], lr[rows]
        bias1, bias2 = 1 - BETAS[0] ** steps, 1 - BETAS[1] ** steps
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq):
            shape = (-1,) + (1,) * (p.dim() - 1)
            grad, weights, m_k, v_k = p.grad[rows], p[rows], m[rows], v[rows]
            weights.mul_((1 - lr_rows * self.weight_decay[rows]).to(p.dtype).view(shape))
            m_k.lerp_(grad, 1 - BETAS[0])
            v_k.mul_(BETAS[1]).addcmul_(grad, grad, value=1 - BETAS[1])
            denom = (v_k.sqrt() / bias2.sqrt().to(p.dtype).view(shape)).add_(EPS)
            weights.addcdiv_(m_k * (lr_rows / bias1).to(p.dtype).view(shape), denom, value=-1.0)
            if isinstance(rows, torch.Tensor):  # advanced indexing copied the rows: write them back
                p[rows], m[rows], v[rows] = weights, m_k, v_k


@dataclass
class Member:
    """One agent being trained in the ensemble: what ``train_bc`` would hold for it."""

    cfg: TrainConfig
    name: str
    out: Path | None
    data: TrainingData
    model: ScoreModel
    loss_fn: Any
    labels: torch.Tensor  # (n_train,) int64 class ids of the training rows
    target: Target
    run: RunState = field(default_factory=RunState)
    error: str | None = None
    means: dict[str, float] = field(default_factory=dict)  # the running epoch's loss-term sums


@dataclass
class EnsembleResult:
    """Per member (config order): its TrainResult, or None and the error that stopped it."""

    results: list[TrainResult | None]
    errors: list[str | None]
    seconds: float = 0.0


def _member(ds: ActionDataset, cfg: TrainConfig, target: Target, out: Path | None, name: str) -> Member:
    data = _prepare_data(ds, cfg, target)
    model = build_model(cfg, data.train.input_shape, len(target.class_names), data.mean, data.std)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", cfg.to_dict())
    loss_fn = make_loss(cfg, data.class_counts)
    return Member(cfg, name, out, data, model, loss_fn, torch.as_tensor(data.y_train), target)


def _step(
    members: list[Member], active: list[int], orders: list[torch.Tensor], begin: int, stack: StackedMLP
) -> tuple[list[int], torch.Tensor | None]:
    """Forward and loss of every active member with rows left at ``begin``: (members stepped, summed loss)."""
    batch = members[0].cfg.batch_size
    groups: dict[int, list[int]] = {}
    for k in active:
        size = min(batch, len(orders[k]) - begin)
        if size > 0:
            groups.setdefault(size, []).append(k)
    total, stepped = None, []
    for ks in groups.values():  # one group unless epochs differ in length (resampling)
        idx = [orders[k][begin : begin + batch] for k in ks]
        x = torch.stack([members[k].data.train.batch(i) for k, i in zip(ks, idx)])
        rows = slice(None) if len(ks) == len(members) else torch.as_tensor(ks)
        logits = stack.logits(rows, x)
        for j, (k, i) in enumerate(zip(ks, idx)):
            member = members[k]
            metrics = member.loss_fn(logits[j], member.labels[i])
            if not math.isfinite(metrics.objective):
                member.error = f"TrainError: training diverged: loss is {metrics.objective}; lower lr"
                continue
            total = metrics.loss if total is None else total + metrics.loss
            stepped.append(k)
            for key, value in metrics.scalars().items():
                member.means[key] = member.means.get(key, 0.0) + value * len(i)
    return stepped, total


def _epoch(members: list[Member], stack: StackedMLP, adam: StackedAdamW, epoch: int) -> None:
    """One epoch of every member still training, then each one's validation row (as ``train_bc``)."""
    active = [k for k, m in enumerate(members) if m.error is None and not m.run.stopped_early(m.cfg.patience)]
    if not active:
        return
    lr = torch.tensor([m.cfg.lr * lr_factor(m.cfg.lr_schedule, epoch, m.cfg.epochs) for m in members])
    orders = [
        m.data.sampler.epoch(epoch) if k in active else torch.zeros(0, dtype=torch.int64) for k, m in enumerate(members)
    ]
    for k in active:
        members[k].means = {}
    for begin in range(0, max(len(orders[k]) for k in active), members[0].cfg.batch_size):
        adam.zero_grad()
        stepped, total = _step(members, active, orders, begin, stack)
        active = [k for k in active if members[k].error is None]
        if total is not None:
            total.backward()
            adam.update(stepped, lr)
    for k in active:
        member = members[k]
        stack.copy_into(k, member.model)
        means = {key: value / len(orders[k]) for key, value in member.means.items()}
        row, value = _validate(
            member.model, member.data, member.target, member.cfg.early_stop_metric, epoch, float(lr[k]), means
        )
        member.run.record(row, value, member.model)


def train_ensemble(
    dataset: ActionDataset | str | os.PathLike,
    configs: Sequence[TrainConfig],
    out_dirs: Sequence[str | os.PathLike | None] | None = None,
    names: Sequence[str] | None = None,
    progress: bool = True,
) -> EnsembleResult:
    """Train one BC agent per config at once (see the module docstring); outputs as ``train_bc``'s per folder.

    ``configs`` must pass :func:`check_ensemble`; ``out_dirs`` (optional, one per config) get each
    member's ``agent/``, ``config.json``, ``history.json``, ``metrics.json`` and ``training_curves.png``.
    """
    check_ensemble(configs)
    outs = [None if o is None else _check_out_folder(o, False) for o in (out_dirs or [None] * len(configs))]
    labels = list(names or [f"bc-{k}" for k in range(len(configs))])
    if len(outs) != len(configs) or len(labels) != len(configs):
        raise TrainConfigError(f"{len(configs)} configs need as many out_dirs and names")
    start = time.perf_counter()
    with torch_threads(max(c.num_threads for c in configs)):
        ds = dataset if isinstance(dataset, ActionDataset) else ActionDataset.load(dataset, pixels=False)
        target = Target.actions(ds)
        members = [_member(ds, cfg, target, out, name) for cfg, out, name in zip(configs, outs, labels)]
        stack = StackedMLP([m.model for m in members])
        adam = StackedAdamW(stack.params, torch.tensor([c.weight_decay for c in configs], dtype=torch.float64))
        for epoch in tqdm(
            range(configs[0].epochs), desc=f"train {len(members)} agents at once", unit="epoch", disable=not progress
        ):
            _epoch(members, stack, adam, epoch)
        results: list[TrainResult | None] = []
        for m in members:
            if m.error is None:
                try:
                    results.append(_finish(ds, m.cfg, target, m.data, m.model, m.run, m.out, m.name))
                    continue
                except TrainError as exc:
                    m.error = f"TrainError: {exc}"
            results.append(None)
    return EnsembleResult(results, [m.error for m in members], time.perf_counter() - start)
