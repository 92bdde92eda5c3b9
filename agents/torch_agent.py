"""Trained agents: a ``ScoreModel`` (normalization + policy + class offsets) behind the Agent interface.

``TorchAgent.act`` takes the observations the game gives — state (B, STATE_DIM) float32 or pixels
(B, 84, 84, 1) uint8 — keeps a frame stack per batch row (cleared by ``reset``; the first frame after
a reset fills the whole stack, as episode starts are padded in training) and picks actions with its
``Selection``. ``export_module()`` is the ``nn.Module`` from stacked float observations to scores
whose argmax is the agent's greedy action.

Loading checks ``agent.json`` (:class:`TorchSpec`) and the weights file's header against each other
before any module is built.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Annotated, Any, ClassVar

import numpy as np
import torch
from pydantic import Field, StrictInt, field_validator, model_validator
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from bcarena.agents.base import AGENT_FILE, AgentFileError, ObservationError, SavableAgent, game_io
from bcarena.agents.capabilities import Exportable, FrameStacked, Stochastic
from bcarena.agents.policies import POLICIES, PolicyConfig, ScoreModel, build_policy, policy_config
from bcarena.agents.selection import Selection, SelectionSpec, select
from bcarena.agents.specs import (
    MAX_LAYER_WIDTH,
    ActionId,
    FiniteFloat,
    FrameStack,
    Header,
    Name,
    Strict,
    check_actions,
    check_weights,
)

WEIGHTS_FILE = "model.safetensors"


def _tensor(x: np.ndarray) -> torch.Tensor:
    """float32 tensor of ``x`` (copied only where needed: other dtype or a read-only array)."""
    return torch.from_numpy(np.require(x, dtype=np.float32, requirements=["W", "C"]))


def unique_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``module``'s state dict without aliases (a tensor shared by several submodules appears once)."""
    seen: set[int] = set()
    out = {}
    for key, value in module.state_dict().items():
        if value.data_ptr() in seen and value.numel():
            continue
        seen.add(value.data_ptr())
        out[key] = value.contiguous()
    return out


def load_weights(module: torch.nn.Module, path: Path) -> None:
    """Load safetensors ``path`` into ``module``; call it only after ``check_weights`` accepted the header."""
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise AgentFileError(f"{path}: unreadable safetensors ({exc})") from None
    module.load_state_dict(tensors, strict=False)  # only aliases of loaded tensors are left out


def saved_game(header: Header, action_names: list[str]) -> str:
    """The game an agent folder declares; folders written before games were declared are told by their actions."""
    if "game" in header.model_fields_set:
        return header.game
    boxing = [name.upper() for name in game_io("boxing").action_names]
    return "boxing" if [name.upper() for name in action_names] == boxing else "duel"


# ------------------------------------------------------------------------------------------- spec
class Normalization(Strict):
    """Per-feature (state) or scalar (pixels) statistics, flattened, and the shape they broadcast with."""

    mean: list[FiniteFloat]
    std: list[Annotated[FiniteFloat, Field(gt=0)]]
    shape: list[Annotated[StrictInt, Field(ge=1, le=MAX_LAYER_WIDTH)]]

    @model_validator(mode="after")
    def _sizes(self) -> Normalization:
        size = math.prod(self.shape)
        if len(self.mean) != size or len(self.std) != size:
            raise ValueError(
                f"normalization shape {self.shape} needs {size} values, got {len(self.mean)} means "
                f"and {len(self.std)} stds"
            )
        return self

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        shape = tuple(self.shape)
        return (
            torch.tensor(self.mean, dtype=torch.float32).reshape(shape),
            torch.tensor(self.std, dtype=torch.float32).reshape(shape),
        )


class TorchSpec(Strict):
    """The ``agent.json`` fields of a torch agent (beyond the common header)."""

    policy: str
    policy_config: dict[str, Any]
    input_shape: list[StrictInt]
    action_names: Annotated[list[Name], Field(min_length=1)]
    skill_actions: list[ActionId]
    frame_stack: FrameStack
    selection: SelectionSpec
    normalization: Normalization
    class_offsets: list[FiniteFloat]
    info: dict[str, Any] = Field(default_factory=dict)

    @field_validator("policy")
    @classmethod
    def _known_policy(cls, name: str) -> str:
        if name not in POLICIES:
            raise ValueError(f"unknown policy {name!r}; policies: {sorted(POLICIES)}")
        return name

    @model_validator(mode="after")
    def _consistent(self) -> TorchSpec:
        config = self.config()
        check_actions(self.action_names, self.skill_actions, config.num_actions)
        if len(self.class_offsets) != config.num_actions:
            raise ValueError(f"class_offsets has {len(self.class_offsets)} values for {config.num_actions} actions")
        shape = config.input_shape()
        if tuple(self.input_shape) != shape:
            raise ValueError(f"input_shape {self.input_shape} differs from the policy's {list(shape)}")
        # A CNN stacks frames as channels; an MLP reads frame_stack state vectors end to end.
        fits = shape[0] == self.frame_stack if self.policy == "cnn" else shape[0] % self.frame_stack == 0
        if not fits:
            raise ValueError(f"frame_stack {self.frame_stack} does not fit the policy input {list(shape)}")
        try:
            np.broadcast_shapes(tuple(self.normalization.shape), shape)
        except ValueError:
            raise ValueError(
                f"normalization shape {self.normalization.shape} does not fit input {list(shape)}"
            ) from None
        return self

    def config(self) -> PolicyConfig:
        """The validated policy config."""
        return policy_config(self.policy, self.policy_config)


# ------------------------------------------------------------------------------------------ agent
class TorchAgent(SavableAgent, Exportable, FrameStacked, Stochastic):
    """A trained policy as an Agent (greedy, sampled, tempered or threshold selection).

    ``model`` is a ``ScoreModel`` (or any module with ``obs_type``, ``num_actions``,
    ``input_shape()`` and ``forward(x) -> scores``, as ``CompositeModel``).
    """

    kind = "torch"
    Spec: ClassVar[type[Strict]] = TorchSpec

    def __init__(
        self,
        model: torch.nn.Module,
        action_names: list[str],
        skill_actions: list[int],
        frame_stack: int = 1,
        selection: Selection | None = None,
        name: str = "bc",
        info: dict[str, Any] | None = None,
        game: str = "duel",
    ) -> None:
        self.model = model.eval()
        self.name = name
        self.game = game
        self.obs_type = model.obs_type
        self.action_names = list(action_names)
        self.skill_actions = list(skill_actions)
        self.frame_stack = int(frame_stack)
        self.selection = selection or Selection()
        self.info = dict(info or {})  # training provenance written to agent.json (dataset, metrics)
        self._stack: np.ndarray | None = None
        self._gen = torch.Generator().manual_seed(self.selection.seed)
        if model.num_actions != len(self.action_names):
            raise ValueError(f"model has {model.num_actions} outputs but {len(self.action_names)} action names")

    # ------------------------------------------------------------ declarations
    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample fed to ``export_module()`` (frames stacked)."""
        return self.model.input_shape()

    @property
    def obs_shape(self) -> tuple[int, ...]:
        """One frame of the model input: (state_dim,) or (84, 84, 1)."""
        if self.obs_type == "state":
            return (self.input_shape[0] // self.frame_stack,)
        return (*self.input_shape[1:], 1)

    @property
    def seed(self) -> int:
        return self.selection.seed

    @property
    def greedy(self) -> bool:
        return self.selection.mode in ("argmax", "thresholds")

    # ----------------------------------------------------------------- acting
    def reset(self, batch_size: int) -> None:
        self._stack = None
        self._gen.manual_seed(self.selection.seed)

    def stacked(self, obs: np.ndarray) -> np.ndarray:
        """Push one observation per row onto the frame stack; return the model input (B, *input_shape)."""
        return self._push(self.check_observations(obs))

    def _push(self, obs: np.ndarray) -> np.ndarray:
        frame = obs if self.obs_type == "state" else obs[..., 0]
        if self.frame_stack == 1:
            stack = frame[:, None]
        else:
            if self._stack is None or self._stack.shape[0] != frame.shape[0]:
                if self._stack is not None:
                    raise ObservationError(
                        f"{self.name}: batch of {frame.shape[0]} after a stack of "
                        f"{self._stack.shape[0]} rows; call reset({frame.shape[0]}) between batches"
                    )
                self._stack = np.repeat(frame[:, None], self.frame_stack, axis=1)
            else:
                self._stack = np.concatenate([self._stack[:, 1:], frame[:, None]], axis=1)
            stack = self._stack
        return stack.reshape(stack.shape[0], -1) if self.obs_type == "state" else stack

    @torch.no_grad()
    def scores_stacked(self, x: np.ndarray) -> np.ndarray:
        """Scores (B, A) of already stacked model inputs (B, *input_shape)."""
        return self.model(_tensor(x)).numpy()

    @torch.no_grad()
    def act_stacked(self, x: np.ndarray) -> np.ndarray:
        """Actions (B,) for already stacked model inputs, e.g. rows of a dataset (offline evaluation)."""
        scores = self.model(_tensor(x))
        return select(scores, self.selection, self._gen).numpy().astype(np.int64)

    def _act(self, obs: np.ndarray) -> np.ndarray:
        return self.act_stacked(self._push(obs))

    def export_module(self) -> torch.nn.Module:
        """A copy of the score module (eval mode): float32 (B, *input_shape) -> scores (B, A)."""
        return copy.deepcopy(self.model).eval()

    # ------------------------------------------------------------------ files
    def _spec(self) -> dict[str, Any]:
        policy = self.model.policy
        return {
            "policy": policy.name,
            "policy_config": policy.config(),
            "input_shape": list(self.input_shape),
            "action_names": self.action_names,
            "skill_actions": self.skill_actions,
            "frame_stack": self.frame_stack,
            "selection": self.selection.to_dict(),
            "normalization": {
                "mean": self.model.mean.flatten().tolist(),
                "std": self.model.std.flatten().tolist(),
                "shape": list(self.model.mean.shape),
            },
            "class_offsets": self.model.class_offsets.tolist(),
            "info": self.info,
        }

    def _save_files(self, folder: Path) -> None:
        save_file(unique_state(self.model.policy), str(folder / WEIGHTS_FILE))

    @classmethod
    def _from_folder(cls, folder: Path, header: Header, spec: TorchSpec) -> TorchAgent:
        policy_cls, config = POLICIES[spec.policy], spec.config()
        if header.obs_type != policy_cls.obs_type:
            raise AgentFileError(
                f"{folder / AGENT_FILE}: field 'obs_type': {header.obs_type!r}, but policy "
                f"{spec.policy!r} reads {policy_cls.obs_type!r}"
            )
        weights = folder / WEIGHTS_FILE
        check_weights(weights, policy_cls.parameter_shapes(config), f"policy {spec.policy!r} {spec.policy_config}")
        policy = build_policy(spec.policy, spec.policy_config)
        load_weights(policy, weights)
        model = ScoreModel(policy, *spec.normalization.tensors())
        model.class_offsets.copy_(torch.tensor(spec.class_offsets, dtype=torch.float32))
        return cls(
            model,
            spec.action_names,
            spec.skill_actions,
            spec.frame_stack,
            Selection(**spec.selection.model_dump()),
            header.name,
            spec.info,
            saved_game(header, spec.action_names),
        )
