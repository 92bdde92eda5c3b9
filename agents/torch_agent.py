"""Trained agents: a ``ScoreModel`` (normalization + policy + class offsets) behind the Agent interface.

``TorchAgent.act`` takes the observations the game gives — state (B, STATE_DIM) float32 or pixels
(B, 84, 84, 1) uint8 — keeps a frame stack per batch row (cleared by ``reset``; the first frame after
a reset fills the whole stack, as episode starts are padded in training) and picks actions with its
``Selection``. ``export_module()`` is the ``nn.Module`` from stacked float observations to scores
whose argmax is the agent's greedy action.

A stochastic agent (sample, temperature, calibrated) is a :class:`~bcarena.envs.play.NoisyPolicy`:
in a match the loop feeds it the match's noise, hashed with the agent's seed, so its action depends
only on (agent seed, match seed, decision, player). Outside matches (``act``) it draws from its own
generator, seeded by the selection's seed and restarted by ``reset``.

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

from bcarena.agents.base import AGENT_FILE, AgentFileError, ObservationError, SavableAgent
from bcarena.agents.capabilities import Exportable, FrameStacked, Stochastic
from bcarena.agents.policies import POLICIES, PolicyConfig, ScoreModel, build_policy, policy_config
from bcarena.agents.selection import (
    Selection,
    SelectionError,
    SelectionSpec,
    action_probabilities,
    agent_uniforms,
    log_policy,
    select,
)
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
from bcarena.envs.play import validate_actions

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
    """The game an agent folder declares (folders from before games were declared are Duel's): no guessing.

    An agent whose ``action_names`` are not its game's exactly (say, Boxing's in lower case, as older
    bcarena wrote them) is refused where it would play, by ``bcarena.envs.games.check_agent_for_game``.
    """
    return header.game


def check_boosts(boosts: Any, num_actions: int) -> None:
    """A ValueError unless calibrated ``boosts`` (or None) give one value per action."""
    if boosts is not None and len(boosts) != num_actions:
        raise ValueError(f"selection.boosts has {len(boosts)} values for {num_actions} actions")


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
        check_boosts(self.selection.boosts, config.num_actions)
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
        self._check_selection()

    def _check_selection(self) -> None:
        try:
            check_boosts(self.selection.boosts, len(self.action_names))
        except ValueError as exc:
            raise SelectionError(f"agent {self.name!r}: {exc}") from None

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
        return self.selection.greedy

    @property
    def noise_dims(self) -> int:
        """Uniform numbers per decision and row it takes from the match: 1 when it samples, 0 when greedy."""
        return 0 if self.greedy else 1

    def with_selection(
        self, selection: Selection, class_offsets: np.ndarray | None = None, name: str = ""
    ) -> TorchAgent:
        """This agent (the same weights, shared) deciding by ``selection``; new ``class_offsets`` (A,) go into a
        copy of the score module. ``name`` defaults to this agent's."""
        agent = copy.copy(self)
        agent.selection, agent.name, agent.info = selection, name or self.name, copy.deepcopy(self.info)
        agent._stack, agent._gen = None, torch.Generator().manual_seed(selection.seed)
        if class_offsets is not None:
            agent.model = copy.deepcopy(self.model).eval()
            agent.model.class_offsets.copy_(torch.as_tensor(class_offsets, dtype=torch.float32))
        agent._check_selection()
        return agent

    # ----------------------------------------------------------------- acting
    def reset(self, batch_size: int) -> None:
        self._stack = None
        self._gen.manual_seed(self.selection.seed)

    def act_with_noise(self, obs: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """Actions (B,) for observations (B, *obs_shape) and the match's noise (B, noise_dims) in [0, 1)."""
        obs = self.check_observations(obs)
        actions = self.actions_from_scores(self.scores_stacked(self._push(obs)), noise)
        return validate_actions(actions, obs.shape[0], self.num_actions, f"agent {self.name!r}")

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

    def act_stacked(self, x: np.ndarray) -> np.ndarray:
        """Actions (B,) for already stacked model inputs, e.g. rows of a dataset (the agent's own generator)."""
        return self.actions_from_scores(self.scores_stacked(x))

    def actions_from_scores(self, scores: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        """Actions (B,) int64 the selection picks from scores (B, A).

        A stochastic selection draws with ``noise`` (B, >= 1) in [0, 1) (column 0, hashed with the agent's
        seed), or, without it, from the agent's own generator.
        """
        if self.greedy:
            uniforms = None
        elif noise is not None:
            uniforms = torch.from_numpy(agent_uniforms(np.asarray(noise)[:, 0], self.seed))
        else:
            uniforms = torch.rand(scores.shape[0], dtype=torch.float64, generator=self._gen)
        return select(torch.from_numpy(scores), self.selection, uniforms).numpy().astype(np.int64)

    def policy_distributions(self, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities (B, A) of each action being picked — one-hot when greedy, log-probabilities (B, A)
        of the soft policy — the sampled distribution, or log softmax(scores) when greedy), float64."""
        scores_t = torch.from_numpy(scores)
        return action_probabilities(scores_t, self.selection).numpy(), log_policy(scores_t, self.selection).numpy()

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
