"""Composite agent: a movement model plus a skill-timing model, combined into one Agent.

The movement model learns the non-skill actions from non-skill frames only; the skill-timing
model learns "none / light / heavy / special" from every frame (moves count as "none"), with
its own rebalancing. Combined, they are one factorized policy over all actions:

    log p(move m) = log p_skill(none) + log p_move(m)
    log p(skill s) = log p_skill(s)

``CompositeModel`` computes exactly that (plus per-action offsets), so its argmax is the
agent's action and it exports like any other score module.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar

import numpy as np
import torch
from pydantic import Field, StrictInt, model_validator
from torch import nn

from bcarena.agents.base import AGENT_FILE, AgentFileError, read_agent_header
from bcarena.agents.config import TrainConfig, TrainConfigError
from bcarena.agents.data import split_data
from bcarena.agents.selection import Selection, SelectionSpec
from bcarena.agents.specs import (
    ActionId,
    FiniteFloat,
    FrameStack,
    Header,
    Name,
    Strict,
    check_actions,
    parse_spec,
)
from bcarena.agents.torch_agent import TorchAgent, TorchSpec, saved_game
from bcarena.agents.train import Target, TrainResult, train_bc
from bcarena.agents.validation import ClassificationMetrics, classification_metrics
from bcarena.recordings.dataset import ActionDataset

NONE = "none"
PARTS = ("movement", "skill")


def movement_target(dataset: ActionDataset) -> Target:
    """Non-skill actions only; skill frames are left out (label -1)."""
    skills = set(dataset.skill_actions)
    moves = [a for a in range(dataset.num_actions) if a not in skills]
    label_map = np.full(dataset.num_actions, -1)
    label_map[moves] = np.arange(len(moves))
    return Target([dataset.action_names[a] for a in moves], label_map, [], moves)


def skill_target(dataset: ActionDataset) -> Target:
    """ "none" (every non-skill action) plus one class per skill."""
    skills = list(dataset.skill_actions)
    label_map = np.zeros(dataset.num_actions, dtype=np.int64)
    label_map[skills] = np.arange(1, len(skills) + 1)
    return Target(
        [NONE] + [dataset.action_names[a] for a in skills], label_map, list(range(1, len(skills) + 1)), [-1] + skills
    )


class CompositeModel(nn.Module):
    """Two score models -> joint scores (B, A) over the dataset's actions (see module docstring)."""

    def __init__(
        self, movement: nn.Module, skill: nn.Module, move_actions: list[int], skill_actions: list[int]
    ) -> None:
        super().__init__()
        if movement.obs_type != skill.obs_type or movement.input_shape() != skill.input_shape():
            raise ValueError(
                f"movement ({movement.obs_type} {movement.input_shape()}) and skill "
                f"({skill.obs_type} {skill.input_shape()}) models must read the same inputs"
            )
        self.movement, self.skill = movement, skill
        order = list(move_actions) + list(skill_actions)
        self._num_actions = len(order)
        self.register_buffer("column_of_action", torch.as_tensor(np.argsort(order)))
        self.register_buffer("class_offsets", torch.zeros(self._num_actions))

    @property
    def obs_type(self) -> str:
        return self.movement.obs_type

    @property
    def num_actions(self) -> int:
        return self._num_actions

    def input_shape(self) -> tuple[int, ...]:
        return self.movement.input_shape()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        log_skill = torch.log_softmax(self.skill(x), dim=-1)
        log_move = torch.log_softmax(self.movement(x), dim=-1)
        joint = torch.cat([log_skill[:, :1] + log_move, log_skill[:, 1:]], dim=1)
        return joint[:, self.column_of_action] + self.class_offsets


class CompositeSpec(Strict):
    """The ``agent.json`` fields of a composite agent; its parts are torch agent folders ``movement/``, ``skill/``."""

    action_names: Annotated[list[Name], Field(min_length=2)]
    skill_actions: list[ActionId]
    move_actions: list[ActionId]
    frame_stack: FrameStack
    input_shape: list[StrictInt]
    selection: SelectionSpec
    class_offsets: list[FiniteFloat]
    parts: list[str] = Field(default_factory=lambda: list(PARTS))
    info: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> CompositeSpec:
        num_actions = len(self.action_names)
        check_actions(self.action_names, self.skill_actions, num_actions)
        if sorted(self.move_actions + self.skill_actions) != list(range(num_actions)):
            raise ValueError(
                f"move_actions {self.move_actions} and skill_actions {self.skill_actions} must split "
                f"the {num_actions} actions, each exactly once"
            )
        if len(self.class_offsets) != num_actions:
            raise ValueError(f"class_offsets has {len(self.class_offsets)} values for {num_actions} actions")
        if tuple(self.parts) != PARTS:
            raise ValueError(f"parts must be {list(PARTS)}, got {self.parts}")
        return self


class CompositeAgent(TorchAgent):
    """A movement TorchAgent and a skill-timing TorchAgent acting as one agent."""

    kind = "composite"
    Spec: ClassVar[type[Strict]] = CompositeSpec

    def __init__(
        self,
        movement: TorchAgent,
        skill: TorchAgent,
        action_names: list[str],
        skill_actions: list[int],
        move_actions: list[int],
        selection: Selection | None = None,
        name: str = "composite",
        info: dict[str, Any] | None = None,
        game: str | None = None,
    ) -> None:
        if movement.frame_stack != skill.frame_stack:
            raise ValueError(f"movement and skill models stack {movement.frame_stack} vs {skill.frame_stack} frames")
        model = CompositeModel(movement.model, skill.model, move_actions, skill_actions)
        super().__init__(
            model, action_names, skill_actions, movement.frame_stack, selection, name, info, game or movement.game
        )
        self.parts = {"movement": movement, "skill": skill}
        self.move_actions = list(move_actions)

    def _spec(self) -> dict[str, Any]:
        return {
            "action_names": self.action_names,
            "skill_actions": self.skill_actions,
            "move_actions": self.move_actions,
            "frame_stack": self.frame_stack,
            "input_shape": list(self.input_shape),
            "selection": self.selection.to_dict(),
            "class_offsets": self.model.class_offsets.tolist(),
            "parts": list(PARTS),
            "info": self.info,
        }

    def _save_files(self, folder: Path) -> None:
        for part in PARTS:
            self.parts[part].save(folder / part)

    @classmethod
    def _from_folder(cls, folder: Path, header: Header, spec: CompositeSpec) -> CompositeAgent:  # type: ignore[override]
        # Fixed sub-folder names: nothing in agent.json chooses a path. Both parts are checked before either is built.
        specs = {}
        for part in PARTS:
            part_header, body = read_agent_header(folder / part)
            if part_header.kind != TorchAgent.kind:
                raise AgentFileError(
                    f"{folder / part}: a composite part must be kind 'torch', got {part_header.kind!r}"
                )
            specs[part] = part_header, parse_spec(TorchSpec, body, folder / part / AGENT_FILE)
        outputs = {"movement": len(spec.move_actions), "skill": len(spec.skill_actions) + 1}  # + "none"
        for part, (_, part_spec) in specs.items():
            where = folder / part / AGENT_FILE
            if part_spec.config().num_actions != outputs[part]:
                raise AgentFileError(
                    f"{where}: the {part} model has {part_spec.config().num_actions} outputs; the "
                    f"composite's {folder / AGENT_FILE} needs {outputs[part]}"
                )
            if (part_spec.frame_stack, part_spec.input_shape) != (spec.frame_stack, spec.input_shape):
                raise AgentFileError(
                    f"{where}: frame_stack {part_spec.frame_stack} / input_shape "
                    f"{part_spec.input_shape} differ from the composite's {spec.frame_stack} / "
                    f"{spec.input_shape}"
                )
        parts = {part: TorchAgent._from_folder(folder / part, *specs[part]) for part in PARTS}
        agent = cls(
            parts["movement"],
            parts["skill"],
            spec.action_names,
            spec.skill_actions,
            spec.move_actions,
            Selection(**spec.selection.model_dump()),
            header.name,
            spec.info,
            saved_game(header, spec.action_names),
        )
        agent.model.class_offsets.copy_(torch.tensor(spec.class_offsets, dtype=torch.float32))
        return agent


@dataclass
class CompositeResult:
    agent: CompositeAgent
    movement: TrainResult
    skill: TrainResult
    val: ClassificationMetrics
    test: ClassificationMetrics | None


def _metrics(agent: CompositeAgent, dataset: ActionDataset, split: str) -> ClassificationMetrics:
    data = split_data(dataset, split, agent.obs_type, agent.frame_stack)
    preds = np.concatenate([agent.act_stacked(x.numpy()) for _, x in data.all_inputs()])
    return classification_metrics(data.labels.numpy(), preds, agent.action_names, agent.skill_actions)


def train_composite(
    dataset: ActionDataset | str | os.PathLike,
    movement_config: TrainConfig,
    skill_config: TrainConfig,
    out_dir: str | os.PathLike | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    name: str = "composite",
) -> CompositeResult:
    """Train the movement and skill-timing models (``out_dir/movement``, ``out_dir/skill``) and combine
    them into ``out_dir/agent``."""
    if (movement_config.obs_type, movement_config.frame_stack) != (skill_config.obs_type, skill_config.frame_stack):
        raise TrainConfigError(
            "movement and skill configs must use the same policy input: obs type and frame_stack "
            f"({movement_config.policy}/{movement_config.frame_stack} vs "
            f"{skill_config.policy}/{skill_config.frame_stack})"
        )
    ds = (
        dataset
        if isinstance(dataset, ActionDataset)
        else ActionDataset.load(dataset, pixels=movement_config.obs_type == "pixels")
    )  # a state model never reads pixels.npy
    out = Path(out_dir) if out_dir is not None else None
    move_t, skill_t = movement_target(ds), skill_target(ds)
    runs = {}
    for part, cfg, target in (("movement", movement_config, move_t), ("skill", skill_config, skill_t)):
        part_out = out / part if out is not None else None
        runs[part] = train_bc(
            ds,
            cfg,
            part_out,
            resume=resume and part_out is not None and (part_out / "checkpoint.pt").exists(),
            progress=progress,
            target=target,
            name=f"{name}-{part}",
        )
    selection = Selection(
        mode=skill_config.selection if skill_config.selection != "thresholds" else "argmax",
        temperature=skill_config.temperature,
        seed=skill_config.seed,
    )
    agent = CompositeAgent(
        runs["movement"].agent,
        runs["skill"].agent,
        ds.action_names,
        ds.skill_actions,
        move_t.action_ids,
        selection,
        name=name,
        info={"dataset": str(ds.path) if ds.path else None},
    )
    val = _metrics(agent, ds, "val")
    test = _metrics(agent, ds, "test") if (ds.table["split"] == "test").any() else None
    agent.info["val"] = {
        k: getattr(val, k) for k in ("accuracy", "balanced_accuracy", "macro_f1", "skill_frame_recall")
    }
    if out is not None:
        agent.save(out / "agent", overwrite=True)
    return CompositeResult(agent, runs["movement"], runs["skill"], val, test)
