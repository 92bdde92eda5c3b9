"""Policy networks: an MLP on state features and a small CNN on stacked gray frames.

Both map an already-normalized float batch to action logits (B, A). ``ScoreModel`` wraps a
policy with the normalization statistics fitted on the training split and the per-class
score offsets of threshold selection, so one ``nn.Module`` maps RAW observations to scores:
that module is what agents export (ONNX, serving) and what their ``argmax`` action comes from.

Each policy's JSON config has a pydantic model (``Policy.Config``) and ``parameter_shapes(config)``
gives the tensor shapes it implies by arithmetic alone, so an agent folder's weights can be checked
against the config before a single parameter is allocated.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import torch
from pydantic import Field, StrictInt, ValidationError
from torch import nn
from torch.nn import functional as F

from bcarena.agents.specs import FrameStack, Strict, Width, describe_errors, one_of
from bcarena.envs.errors import BcarenaError

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}
MAX_HIDDEN_LAYERS = 16
CNN_KERNELS = ((8, 4), (4, 2), (3, 1))  # (kernel size, stride) of the three conv layers
MIN_FRAME_SIZE = 36  # the smallest frame the three convs reduce to at least 1x1
MAX_FRAME_SIZE = 1024


class PolicyConfigError(BcarenaError, ValueError):
    """A policy name or one of its settings is invalid."""


class PolicyConfig(Strict):
    """The validated JSON config of a policy; every policy has ``num_actions`` outputs."""

    num_actions: Width

    def input_shape(self) -> tuple[int, ...]:
        """Shape of one (unbatched) input sample of the policy this config builds."""
        raise NotImplementedError


class Policy(nn.Module):
    """Base class: ``obs_type`` says what it reads; ``config()`` is the JSON that rebuilds it."""

    name: ClassVar[str] = ""
    obs_type: ClassVar[str] = ""
    Config: ClassVar[type[PolicyConfig]]  # the validated form of ``config()``

    def config(self) -> dict[str, Any]:
        raise NotImplementedError

    def input_shape(self) -> tuple[int, ...]:
        """Shape of one (unbatched) input sample."""
        raise NotImplementedError

    @staticmethod
    def parameter_shapes(config: Any) -> dict[str, tuple[int, ...]]:
        """State-dict tensor name -> shape of the policy ``Config`` instance ``config`` describes."""
        raise NotImplementedError


class MLPConfig(PolicyConfig):
    input_dim: Width
    hidden: Annotated[list[Width], Field(min_length=1, max_length=MAX_HIDDEN_LAYERS)] = Field(
        default_factory=lambda: [256, 256]
    )
    activation: Annotated[str, one_of(ACTIVATIONS)] = "relu"

    def input_shape(self) -> tuple[int, ...]:
        return (self.input_dim,)


class MLPPolicy(Policy):
    """Fully connected net on (B, frame_stack * state_dim) features: hidden layers, then a linear head.

    The layer layout (``net`` = Linear, act, ..., Linear) mirrors Stable-Baselines3's
    ``policy_net`` + ``action_net`` so BC weights can be copied into an SB3 policy.
    """

    name = "mlp"
    obs_type = "state"
    Config = MLPConfig

    def __init__(
        self,
        input_dim: int,
        num_actions: int,
        hidden: tuple[int, ...] | list[int] = (256, 256),
        activation: str = "relu",
    ) -> None:
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
        return {
            "input_dim": self.input_dim,
            "num_actions": self.num_actions,
            "hidden": self.hidden,
            "activation": self.activation,
        }

    def input_shape(self) -> tuple[int, ...]:
        return (self.input_dim,)

    @staticmethod
    def parameter_shapes(config: MLPConfig) -> dict[str, tuple[int, ...]]:
        return linear_stack_shapes("body", config.input_dim, config.hidden) | {
            "head.weight": (config.num_actions, config.hidden[-1]),
            "head.bias": (config.num_actions,),
        }


def linear_stack_shapes(prefix: str, input_dim: int, hidden: list[int]) -> dict[str, tuple[int, ...]]:
    """Shapes of ``nn.Sequential(Linear, activation, Linear, activation, ...)`` named ``prefix``."""
    shapes: dict[str, tuple[int, ...]] = {}
    width = input_dim
    for i, h in enumerate(hidden):
        shapes[f"{prefix}.{2 * i}.weight"], shapes[f"{prefix}.{2 * i}.bias"] = (h, width), (h,)
        width = h
    return shapes


def conv_output_size(frame_size: int) -> int:
    """Side of the feature map the three convs leave of a ``frame_size`` x ``frame_size`` frame (7 for 84)."""
    size = frame_size
    for kernel, stride in CNN_KERNELS:
        size = (size - kernel) // stride + 1
    return size


class CNNConfig(PolicyConfig):
    frame_stack: FrameStack
    channels: Annotated[list[Width], Field(min_length=3, max_length=3)] = Field(default_factory=lambda: [16, 32, 32])
    hidden: Width = 256
    frame_size: Annotated[StrictInt, Field(ge=MIN_FRAME_SIZE, le=MAX_FRAME_SIZE)] = 84

    def input_shape(self) -> tuple[int, ...]:
        return (self.frame_stack, self.frame_size, self.frame_size)


class CNNPolicy(Policy):
    """Small Nature-DQN-style CNN on (B, frame_stack, 84, 84) stacked gray frames."""

    name = "cnn"
    obs_type = "pixels"
    Config = CNNConfig

    def __init__(
        self,
        frame_stack: int,
        num_actions: int,
        channels: tuple[int, ...] | list[int] = (16, 32, 32),
        hidden: int = 256,
        frame_size: int = 84,
    ) -> None:
        super().__init__()
        if len(channels) != 3 or any(int(c) < 1 for c in channels):
            raise PolicyConfigError(f"channels must list 3 positive conv widths, got {list(channels)}")
        if int(frame_size) < MIN_FRAME_SIZE:
            raise PolicyConfigError(f"frame_size must be >= {MIN_FRAME_SIZE}, got {frame_size}")
        self.frame_stack, self.num_actions = int(frame_stack), int(num_actions)
        self.channels, self.hidden, self.frame_size = [int(c) for c in channels], int(hidden), int(frame_size)
        widths = [self.frame_stack, *self.channels]
        convs: list[nn.Module] = []
        for (kernel, stride), c_in, c_out in zip(CNN_KERNELS, widths, widths[1:]):
            convs += [nn.Conv2d(c_in, c_out, kernel, stride=stride), nn.ReLU()]
        self.conv = nn.Sequential(*convs, nn.Flatten())
        flat = self.channels[-1] * conv_output_size(self.frame_size) ** 2
        self.fc = nn.Sequential(nn.Linear(flat, self.hidden), nn.ReLU(), nn.Linear(self.hidden, self.num_actions))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x))

    def config(self) -> dict[str, Any]:
        return {
            "frame_stack": self.frame_stack,
            "num_actions": self.num_actions,
            "channels": self.channels,
            "hidden": self.hidden,
            "frame_size": self.frame_size,
        }

    def input_shape(self) -> tuple[int, ...]:
        return (self.frame_stack, self.frame_size, self.frame_size)

    @staticmethod
    def parameter_shapes(config: CNNConfig) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {}
        widths = [config.frame_stack, *config.channels]
        for i, ((kernel, _), c_in, c_out) in enumerate(zip(CNN_KERNELS, widths, widths[1:])):
            shapes[f"conv.{2 * i}.weight"], shapes[f"conv.{2 * i}.bias"] = (c_out, c_in, kernel, kernel), (c_out,)
        flat = config.channels[-1] * conv_output_size(config.frame_size) ** 2
        return shapes | {
            "fc.0.weight": (config.hidden, flat),
            "fc.0.bias": (config.hidden,),
            "fc.2.weight": (config.num_actions, config.hidden),
            "fc.2.bias": (config.num_actions,),
        }


POLICIES: dict[str, type[Policy]] = {cls.name: cls for cls in (MLPPolicy, CNNPolicy)}


def policy_config(name: str, config: Any) -> PolicyConfig:
    """The validated config of policy ``name`` (a PolicyConfigError names the bad field and value)."""
    if name not in POLICIES:
        raise PolicyConfigError(f"unknown policy {name!r}; policies: {sorted(POLICIES)}")
    try:
        return POLICIES[name].Config.model_validate(config)
    except ValidationError as exc:
        raise PolicyConfigError(f"policy {name!r}: {describe_errors(exc)}") from None


def build_policy(name: str, config: dict[str, Any]) -> Policy:
    """Instantiate a registered policy from its JSON config (errors name the bad key)."""
    return POLICIES[name](**policy_config(name, config).model_dump())


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
