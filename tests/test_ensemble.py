"""Batched ensemble training (agents/ensemble.py): each member is what train_bc gives it, to float rounding."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bcarena.agents.base import load_agent
from bcarena.agents.config import TrainConfigError, make_train_config
from bcarena.agents.data import split_data
from bcarena.agents.ensemble import StackedMLP, check_ensemble, train_ensemble
from bcarena.agents.train import train_bc

# Different losses, samplers (oversampling makes a longer epoch), schedules, weight decay and seeds.
MEMBERS = [
    {"loss": "focal", "lr_schedule": "cosine", "weight_decay": 0.01},
    {"sampler": "oversample", "seed": 2},
    {"loss": "weighted_ce", "class_weights": "inverse", "event_weighting": {"events": ["skill_used"]}, "lr": 3e-3},
]


@pytest.fixture(scope="module")
def small_ds(tmp_path_factory):
    from bcarena.envs.duel import DuelConfig
    from bcarena.recordings.converter import make_duel_dataset

    short = DuelConfig(round_seconds=8.0)  # ~80 decisions per episode: a few hundred frames per split
    return make_duel_dataset(
        tmp_path_factory.mktemp("ens"), episodes=8, seed=2, split=(0.5, 0.25, 0.25), config=short, pixels=False
    )


def _cfg(**extra):
    return make_train_config(
        {"epochs": 3, "hidden": [32, 32], "batch_size": 256, "allow_missing_classes": True, **extra}
    )


def test_each_member_equals_training_it_alone(small_ds, tmp_path):
    configs = [_cfg(**m) for m in MEMBERS]
    outs = [tmp_path / f"m{k}" for k in range(len(configs))]
    ensemble = train_ensemble(small_ds, configs, outs, names=[f"m{k}" for k in range(len(configs))], progress=False)
    assert ensemble.errors == [None] * len(configs)
    val = split_data(small_ds, "val", "state", 1)
    for config, result in zip(configs, ensemble.results):
        alone = train_bc(small_ds, config, None, progress=False)
        ours, theirs = result.agent.model.state_dict(), alone.agent.model.state_dict()
        assert max(float((ours[k] - theirs[k]).abs().max()) for k in ours) < 1e-4
        assert result.best_epoch == alone.best_epoch
        assert [r["val_loss"] for r in result.history] == pytest.approx(
            [r["val_loss"] for r in alone.history], abs=1e-5
        )
        assert np.array_equal(result.agent.act(val.inputs.numpy()), alone.agent.act(val.inputs.numpy()))
    # train_bc's files, minus the checkpoint (no resume for an ensemble)
    assert sorted(p.name for p in outs[0].iterdir()) == [
        "agent",
        "config.json",
        "history.json",
        "metrics.json",
        "training_curves.png",
    ]
    assert json.loads((outs[1] / "config.json").read_text())["sampler"] == "oversample"
    assert load_agent(outs[1] / "agent").name == "m1"


def test_stacked_logits_have_member_by_batch_shape(small_ds):
    configs = [_cfg(seed=k) for k in range(3)]
    result = train_ensemble(small_ds, configs, progress=False)
    models = [r.agent.model for r in result.results]
    stack = StackedMLP(models)
    x = split_data(small_ds, "val", "state", 1).inputs[:7]
    logits = stack.logits(slice(None), torch.stack([x] * 3))
    assert logits.shape == (3, 7, small_ds.num_actions)
    for k, model in enumerate(models):
        assert torch.allclose(logits[k], model.logits(x), atol=1e-5)
    assert torch.allclose(stack.logits(torch.tensor([2]), x[None])[0], models[2].logits(x), atol=1e-5)


def test_members_must_share_layout_and_schedule():
    with pytest.raises(TrainConfigError, match=r"ensemble member 1 differs from member 0 in \['hidden'\]"):
        check_ensemble([_cfg(), _cfg(hidden=[16])])
    with pytest.raises(TrainConfigError, match="stacks plain MLPs on the CPU, got policy 'cnn'"):
        check_ensemble([make_train_config({"policy": "cnn"})])
