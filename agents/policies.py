"""Policy networks: an MLP on state features and a small CNN on stacked gray frames.

Both map an already-normalized float batch to action logits (B, A). ``ScoreModel`` wraps a
policy with the normalization statistics fitted on the training split and the per-class
score offsets of threshold selection, so one ``nn.Module`` maps RAW observations to scores:
that module is what agents export (ONNX, serving) and what their ``argmax`` action comes from.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


class PolicyConfigError(ValueError):
    """A policy name or one of its settings is invalid."""


class Policy(nn.Module):
    """Base class: ``obs_type`` says what it reads; ``config()`` is the JSON that rebuilds it."""

    name: ClassVar[str] = ""
    obs_type: ClassVar[str] = ""

    def config(self) -> dict[str, Any]:
        raise NotImplementedError

    def input_shape(self) -> tuple[int, ...]:
        """Shape of one (unbatched) input sample."""
        raise NotImplementedError


class MLPPolicy(Policy):
    """Fully connected net on (B, frame_stack * state_dim) features: hidden layers, then a linear head.

    The layer layout (``net`` = Linear, act, ..., Linear) mirrors Stable-Baselines3's
    ``policy_net`` + ``action_net`` so BC weights can be copied into an SB3 policy.
    """

    name = "mlp"
    obs_type = "state"

    def __init__(self, input_dim: int, num_actions: int, hidden: tuple[int, ...] | list[int] = (256, 256),
                 activation: str = "relu") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise PolicyConfigError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if not hidden or any(int(h) < 1 for h in hidden):
            raise PolicyConfigError(f"hidden must list positive layer widths, got {list(hidden)}")
        self.input_dim, self.num_actions = int(input_dim), int(num_actions)
        self.hidden, self.activation = [int(h) for h in hidden], activation
        layers: list[nn.Module] = []
        width = self.input_dim
        for h in self.hidden:
            layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
            width = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, self.num_actions)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    def config(self) -> dict[str, Any]:
        return {"input_dim": self.input_dim, "num_actions": self.num_actions, "hidden": self.hidden,
                "activation": self.activation}

    def input_shape(self) -> tuple[int, ...]:
        return (self.input_dim,)


class CNNPolicy(Policy):
    """Small Nature-DQN-style CNN on (B, frame_stack, 84, 84) stacked gray frames."""

    name = "cnn"
    obs_type = "pixels"

    def __init__(self, frame_stack: int, num_actions: int, channels: tuple[int, ...] | list[int] = (16, 32, 32),
                 hidden: int = 256, frame_size: int = 84) -> None:
        super().__init__()
        if len(channels) != 3 or any(int(c) < 1 for c in channels):
            raise PolicyConfigError(f"channels must list 3 positive conv widths, got {list(channels)}")
        self.frame_stack, self.num_actions = int(frame_stack), int(num_actions)
        self.channels, self.hidden, self.frame_size = [int(c) for c in channels], int(hidden), int(frame_size)
        c1, c2, c3 = self.channels
        self.conv = nn.Sequential(
            nn.Conv2d(self.frame_stack, c1, 8, stride=4), nn.ReLU(),
            nn.Conv2d(c1, c2, 4, stride=2), nn.ReLU(),
            nn.Conv2d(c2, c3, 3, stride=1), nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.conv(torch.zeros(1, self.frame_stack, self.frame_size, self.frame_size)).shape[1]
        self.fc = nn.Sequential(nn.Linear(flat, self.hidden), nn.ReLU(), nn.Linear(self.hidden, self.num_actions))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x))

    def config(self) -> dict[str, Any]:
        return {"frame_stack": self.frame_stack, "num_actions": self.num_actions, "channels": self.channels,
                "hidden": self.hidden, "frame_size": self.frame_size}

    def input_shape(self) -> tuple[int, ...]:
        return (self.frame_stack, self.frame_size, self.frame_size)


POLICIES: dict[str, type[Policy]] = {cls.name: cls for cls in (MLPPolicy, CNNPolicy)}


def build_policy(name: str, config: dict[str, Any]) -> Policy:
    """Instantiate a registered policy from its JSON config (errors name the bad key)."""
    if name not in POLICIES:
        raise PolicyConfigError(f"unknown policy {name!r}; policies: {sorted(POLICIES)}")
    try:
        return POLICIES[name](**config)
    except TypeError as exc:
        raise PolicyConfigError(f"policy {name!r}: bad config {config} ({exc})") from None


class ScoreModel(nn.Module):
    """Raw observations -> action scores: normalize, policy logits, log-softmax plus class offsets.

    Input: state (B, frame_stack * STATE_DIM) float32, or pixels (B, frame_stack, 84, 84)
    float32 in 0..255. Output: (B, A) scores; ``argmax`` is the agent's greedy action. With all
    offsets 0 the scores are log-probabilities; threshold selection tunes ``class_offsets``
    (a per-class log-threshold) on validation data.
    """

    def __init__(self, policy: Policy, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.policy = policy
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).clone())
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).clone())
        self.register_buffer("class_offsets", torch.zeros(policy.num_actions))

    @property
    def obs_type(self) -> str:
        return self.policy.obs_type

    @property
    def num_actions(self) -> int:
        return self.policy.num_actions

    def input_shape(self) -> tuple[int, ...]:
        return self.policy.input_shape()

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Unnormalized logits (B, A) of raw observations (used by the training losses)."""
        return self.policy((x - self.mean) / self.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.logits(x), dim=-1) + self.class_offsets
