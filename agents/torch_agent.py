"""Trained agents: a ``ScoreModel`` (normalization + policy + class offsets) behind the Agent interface.

``TorchAgent.act`` takes the observations the game gives — state (B, STATE_DIM) float32 or
pixels (B, 84, 84, 1) / (B, 84, 84) uint8 — keeps a frame stack per batch row (cleared by
``reset``; the first frame after a reset fills the whole stack, as episode starts are padded in
training) and picks actions with its ``Selection``. ``export_module()`` is the ``nn.Module``
from stacked float observations to scores whose argmax is the agent's greedy action.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from bcarena.agents.base import AgentFileError, SavableAgent, register_agent, require_keys
from bcarena.agents.policies import POLICIES, PolicyConfigError, ScoreModel, build_policy
from bcarena.agents.selection import Selection, SelectionError, select

WEIGHTS_FILE = "model.safetensors"


def _tensor(x: np.ndarray) -> torch.Tensor:
    """float32 tensor of ``x`` (copied only where needed: other dtype or a read-only array)."""
    return torch.from_numpy(np.require(x, dtype=np.float32, requirements=["W", "C"]))


class ObservationError(ValueError):
    """Observations of the wrong shape or type for an agent."""


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


def load_policy_weights(module: torch.nn.Module, path: Path, what: str) -> None:
    """Load safetensors ``path`` (written from ``unique_state``) into ``module``; a key or shape
    mismatch names the tensors and ``what``."""
    try:
        tensors = load_file(str(path))
    except FileNotFoundError:
        raise AgentFileError(f"{path}: missing") from None
    except (SafetensorError, OSError) as exc:
        raise AgentFileError(f"{path}: unreadable safetensors ({exc})") from None
    expected = unique_state(module)
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [f"{k}: file {tuple(tensors[k].shape)} vs expected {tuple(v.shape)}"
             for k, v in expected.items() if k in tensors and tensors[k].shape != v.shape]
    if missing or unexpected or wrong:
        raise AgentFileError(f"{path}: weights are from another architecture than {what}"
                             + (f"; missing tensors {missing[:4]}" if missing else "")
                             + (f"; unexpected tensors {unexpected[:4]}" if unexpected else "")
                             + (f"; shape mismatch {wrong[:4]}" if wrong else ""))
    module.load_state_dict(tensors, strict=False)  # only aliases of loaded tensors are left out


@register_agent
class TorchAgent(SavableAgent):
    """A trained policy as an Agent (greedy, sampled, tempered or threshold selection).

    ``model`` is a ``ScoreModel`` (or any module with ``obs_type``, ``num_actions``,
    ``input_shape()`` and ``forward(x) -> scores``, as ``CompositeModel``).
    """

    kind = "torch"

    def __init__(self, model: torch.nn.Module, action_names: list[str], skill_actions: list[int], frame_stack: int = 1,
                 selection: Selection | None = None, name: str = "bc", info: dict[str, Any] | None = None) -> None:
        self.model = model.eval()
        self.name = name
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

    # ----------------------------------------------------------------- acting
    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample fed to ``export_module()`` (frames stacked)."""
        return self.model.input_shape()

    def reset(self, batch_size: int) -> None:
        self._stack = None
        self._gen.manual_seed(self.selection.seed)

    def _frame(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs)
        if self.obs_type == "state":
            dim = self.input_shape[0] // self.frame_stack
            if obs.ndim != 2 or obs.shape[1] != dim:
                raise ObservationError(f"{self.name}: expected state observations of shape (B, {dim}), got {obs.shape}")
            return obs.astype(np.float32, copy=False)
        size = self.input_shape[-1]
        if obs.ndim == 4 and obs.shape[-1] == 1:
            obs = obs[..., 0]
        if obs.ndim != 3 or obs.shape[1:] != (size, size):
            raise ObservationError(f"{self.name}: expected pixel observations of shape (B, {size}, {size}, 1) or "
                                   f"(B, {size}, {size}), got {obs.shape}")
        return obs

    def stacked(self, obs: np.ndarray) -> np.ndarray:
        """Push one observation per row onto the frame stack; return the model input (B, *input_shape)."""
        frame = self._frame(obs)
        if self.frame_stack == 1:
            stack = frame[:, None]
        else:
            if self._stack is None or self._stack.shape[0] != frame.shape[0]:
                if self._stack is not None:
                    raise ObservationError(f"{self.name}: batch of {frame.shape[0]} after a stack of "
                                           f"{self._stack.shape[0]} rows; call reset({frame.shape[0]}) between batches")
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

    def act(self, obs: np.ndarray) -> np.ndarray:
        return self.act_stacked(self.stacked(obs))

    def export_module(self) -> torch.nn.Module:
        """A copy of the score module (eval mode): float32 (B, *input_shape) -> scores (B, A)."""
        return copy.deepcopy(self.model).eval()

    # ------------------------------------------------------------------ files
    def _spec(self) -> dict[str, Any]:
        policy = self.model.policy
        return {
            "policy": policy.name, "policy_config": policy.config(), "input_shape": list(self.input_shape),
            "action_names": self.action_names, "skill_actions": self.skill_actions, "frame_stack": self.frame_stack,
            "selection": self.selection.to_dict(),
            "normalization": {"mean": self.model.mean.flatten().tolist(), "std": self.model.std.flatten().tolist(),
                              "shape": list(self.model.mean.shape)},
            "class_offsets": self.model.class_offsets.tolist(),
            "info": self.info,
        }

    def _save_files(self, folder: Path) -> None:
        save_file(unique_state(self.model.policy), str(folder / WEIGHTS_FILE))

    @classmethod
    def _from_folder(cls, folder: Path, spec: dict[str, Any]) -> "TorchAgent":
        require_keys(spec, ("policy", "policy_config", "action_names", "skill_actions", "frame_stack", "selection",
                            "normalization", "class_offsets"), folder)
        where = folder / "agent.json"
        if spec["policy"] not in POLICIES:
            raise AgentFileError(f"{where}: unknown policy {spec['policy']!r}; policies: {sorted(POLICIES)}")
        try:
            policy = build_policy(spec["policy"], spec["policy_config"])
            selection = Selection.from_dict(spec["selection"])
            norm = spec["normalization"]
            shape = tuple(norm["shape"])
            mean = torch.tensor(norm["mean"], dtype=torch.float32).reshape(shape)
            std = torch.tensor(norm["std"], dtype=torch.float32).reshape(shape)
        except (PolicyConfigError, SelectionError, KeyError, TypeError, RuntimeError, ValueError) as exc:
            raise AgentFileError(f"{where}: invalid policy, selection or normalization ({exc})") from None
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
            raise AgentFileError(f"{where}: normalization mean/std must be finite with std > 0")
        load_policy_weights(policy, folder / WEIGHTS_FILE, f"policy {spec['policy']!r} {spec['policy_config']}")
        model = ScoreModel(policy, mean, std)
        offsets = torch.tensor(spec["class_offsets"], dtype=torch.float32)
        if offsets.shape != model.class_offsets.shape:
            raise AgentFileError(f"{where}: class_offsets has {offsets.numel()} values for {policy.num_actions} actions")
        model.class_offsets.copy_(offsets)
        return cls(model, spec["action_names"], spec["skill_actions"], spec["frame_stack"], selection,
                   name=spec.get("name", "bc"), info=spec.get("info", {}))
