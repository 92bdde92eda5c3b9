"""Stable-Baselines3 interop: PPO experts on Duel, SB3 policies as Agents, BC weights -> PPO.

* ``DuelSB3VecEnv`` — an SB3 ``VecEnv`` over native ``DuelVectorEnv`` blocks, one block per
  opponent of a bot pool (contiguous env blocks, as even as possible): no per-env Python loop.
* ``SB3Agent`` — an ``ActorCriticPolicy`` as an Agent (kind ``sb3_ppo``). Saved as safetensors
  + JSON (net_arch, activation, normalization): SB3's own .zip unpickles objects, so it is never
  read here. Like any Agent it can be a recording source.
* ``ppo_from_bc(agent, env)`` — a PPO whose policy network carries a BC MLP's weights (same
  ``net_arch``; normalization inside the features extractor; the BC class offsets folded into
  the action bias), so at step 0 it acts exactly like the BC agent.
* ``win_rate`` — win/draw/loss rates against a bot, for PPO callbacks (the eval layer sits above this one).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import gymnasium as gym
import numpy as np
import torch
from pydantic import Field, StrictBool, StrictInt, model_validator
from safetensors.torch import save_file
from stable_baselines3 import PPO
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env.base_vec_env import VecEnv
from torch import nn

from bcarena.agents.base import AGENT_FILE, AgentFileError, BotAgent, SavableAgent
from bcarena.agents.capabilities import Exportable, FrameStacked, Stochastic
from bcarena.agents.policies import ACTIVATIONS, MAX_HIDDEN_LAYERS, MLPPolicy, linear_stack_shapes
from bcarena.agents.specs import Header, Seed, Strict, Width, check_weights, one_of
from bcarena.agents.torch_agent import WEIGHTS_FILE, TorchAgent, load_weights, unique_state
from bcarena.envs.duel import ACTION_NAMES, NUM_ACTIONS, SKILL_ACTIONS, STATE_DIM, DuelVectorEnv
from bcarena.envs.duel.env import observation_space
from bcarena.envs.errors import BcarenaError
from bcarena.envs.play import DuelBatch, play


class SB3Error(BcarenaError, ValueError):
    """An SB3 model or BC agent that cannot be converted as asked."""


class NormalizedFeatures(BaseFeaturesExtractor):
    """(x - mean) / std on state observations; the statistics are buffers saved with the policy."""

    def __init__(
        self, observation_space: gym.spaces.Box, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
    ) -> None:
        dim = int(np.prod(observation_space.shape))
        super().__init__(observation_space, features_dim=dim)
        self.register_buffer("mean", torch.as_tensor(np.zeros(dim) if mean is None else mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(np.ones(dim) if std is None else std, dtype=torch.float32))

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return (observations.flatten(1) - self.mean) / self.std


def policy_kwargs(
    hidden: Sequence[int], activation: str, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
) -> dict[str, Any]:
    """SB3 ``policy_kwargs`` of an MLP actor-critic matching an ``MLPPolicy``'s layers."""
    if activation not in ACTIVATIONS:
        raise SB3Error(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    return {
        "net_arch": {"pi": list(hidden), "vf": list(hidden)},
        "activation_fn": ACTIVATIONS[activation],
        "features_extractor_class": NormalizedFeatures,
        "features_extractor_kwargs": {
            "mean": None if mean is None else list(mean),
            "std": None if std is None else list(std),
        },
    }


class DuelSB3VecEnv(VecEnv):
    """SB3 VecEnv over ``DuelVectorEnv`` blocks (one per opponent); state observations only."""

    def __init__(self, num_envs: int, opponents: Sequence[str] = ("brawler",), config: Any = None) -> None:
        if not opponents:
            raise SB3Error("the bot pool needs at least one opponent")
        if num_envs < len(opponents):
            raise SB3Error(f"num_envs ({num_envs}) must be >= the number of opponents ({len(opponents)})")
        sizes = [len(range(j, num_envs, len(opponents))) for j in range(len(opponents))]
        self.blocks = [DuelVectorEnv(n, opponent=o, obs_type="state", config=config) for n, o in zip(sizes, opponents)]
        self.opponents = list(opponents)
        self._bounds = np.cumsum([0] + sizes)
        super().__init__(num_envs, observation_space("state"), gym.spaces.Discrete(NUM_ACTIONS))
        self._actions = np.zeros(num_envs, dtype=np.int64)

    def reset(self) -> np.ndarray:
        base = self._seeds[0] if self._seeds and self._seeds[0] is not None else 0
        obs = [b.reset(seed=int(base) + int(lo))[0] for b, lo in zip(self.blocks, self._bounds)]
        self._reset_seeds()
        return np.concatenate(obs)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions, dtype=np.int64).reshape(self.num_envs)

    def step_wait(self):
        obs, rewards, dones, infos = [], [], [], []
        for block, lo, hi in zip(self.blocks, self._bounds[:-1], self._bounds[1:]):
            o, r, term, trunc, info = block.step(self._actions[lo:hi])
            done = term | trunc
            for i in range(hi - lo):
                item: dict[str, Any] = {}
                if done[i]:
                    item["terminal_observation"] = info["final_obs"][i]
                    item["winner"] = int(info["winner"][i])
                    item["TimeLimit.truncated"] = bool(trunc[i] and not term[i])
                infos.append(item)
            obs.append(o)
            rewards.append(r)
            dones.append(done)
        return np.concatenate(obs), np.concatenate(rewards).astype(np.float32), np.concatenate(dones), infos

    def close(self) -> None:
        """Nothing to release: the blocks are plain numpy."""

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        return [
            getattr(self.blocks[int(np.searchsorted(self._bounds, i, side="right") - 1)], attr_name)
            for i in self._get_indices(indices)
        ]

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        raise SB3Error("DuelSB3VecEnv blocks share state; set_attr is not supported")

    def env_method(self, method_name: str, *args, indices=None, **kwargs) -> list[Any]:
        raise SB3Error("DuelSB3VecEnv has no per-env objects to call methods on")

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False] * len(self._get_indices(indices))


class PolicyLogits(nn.Module):
    """Export view of an ``ActorCriticPolicy``: state batch (B, 37) -> action logits (B, A)."""

    def __init__(self, policy: ActorCriticPolicy) -> None:
        super().__init__()
        self.features = policy.features_extractor if policy.share_features_extractor else policy.pi_features_extractor
        self.policy_net, self.action_net = policy.mlp_extractor.policy_net, policy.action_net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.action_net(self.policy_net(self.features(x)))


class SB3Spec(Strict):
    """The ``agent.json`` fields of a PPO expert: an MLP actor-critic on Duel state observations."""

    hidden: Annotated[list[Width], Field(min_length=1, max_length=MAX_HIDDEN_LAYERS)]
    activation: Annotated[str, one_of(ACTIVATIONS)]
    deterministic: StrictBool
    seed: Seed = 0
    input_shape: list[StrictInt] = Field(default_factory=lambda: [STATE_DIM])
    action_names: list[str] = Field(default_factory=lambda: list(ACTION_NAMES))
    skill_actions: list[StrictInt] = Field(default_factory=lambda: list(SKILL_ACTIONS))

    @model_validator(mode="after")
    def _duel(self) -> SB3Spec:
        if self.input_shape != [STATE_DIM]:
            raise ValueError(f"input_shape must be [{STATE_DIM}] (Duel state observations), got {self.input_shape}")
        if self.action_names != list(ACTION_NAMES) or self.skill_actions != list(SKILL_ACTIONS):
            raise ValueError(
                f"action_names/skill_actions must be Duel's {list(ACTION_NAMES)} / {list(SKILL_ACTIONS)}, "
                f"got {self.action_names} / {self.skill_actions}"
            )
        return self


def sb3_parameter_shapes(hidden: Sequence[int]) -> dict[str, tuple[int, ...]]:
    """State-dict shapes of the ``ActorCriticPolicy`` that ``policy_kwargs(hidden, ...)`` builds on Duel states."""
    return {
        "features_extractor.mean": (STATE_DIM,),
        "features_extractor.std": (STATE_DIM,),
        **linear_stack_shapes("mlp_extractor.policy_net", STATE_DIM, list(hidden)),
        **linear_stack_shapes("mlp_extractor.value_net", STATE_DIM, list(hidden)),
        "action_net.weight": (NUM_ACTIONS, hidden[-1]),
        "action_net.bias": (NUM_ACTIONS,),
        "value_net.weight": (1, hidden[-1]),
        "value_net.bias": (1,),
    }


class SB3Agent(SavableAgent, Exportable, FrameStacked, Stochastic):
    """An SB3 ``ActorCriticPolicy`` on Duel state observations as an Agent (greedy by default)."""

    kind = "sb3_ppo"
    Spec = SB3Spec
    obs_type = "state"
    frame_stack = 1  # the policy reads one observation: its model input is the observation itself

    def __init__(
        self,
        policy: ActorCriticPolicy,
        hidden: Sequence[int],
        activation: str,
        deterministic: bool = True,
        name: str = "ppo",
        seed: int = 0,
    ) -> None:
        if not isinstance(policy, ActorCriticPolicy) or not isinstance(policy.action_space, gym.spaces.Discrete):
            raise SB3Error("SB3Agent wraps a discrete-action ActorCriticPolicy (e.g. PPO('MlpPolicy', ...).policy)")
        self.policy = policy.eval()
        self.hidden, self.activation = [int(h) for h in hidden], activation
        self.deterministic, self.name, self._seed = deterministic, name, int(seed)
        self.action_names, self.skill_actions = list(ACTION_NAMES), list(SKILL_ACTIONS)
        self._gen = torch.Generator().manual_seed(self.seed)

    @classmethod
    def from_model(cls, model: PPO, name: str = "ppo", deterministic: bool = True) -> SB3Agent:
        """Wrap a PPO model built with ``policy_kwargs(...)`` (or SB3's default MlpPolicy)."""
        kw = model.policy_kwargs or {}
        arch = kw.get("net_arch", {"pi": [64, 64]})
        act = {v: k for k, v in ACTIVATIONS.items()}.get(kw.get("activation_fn", nn.Tanh))
        if act is None:
            raise SB3Error(f"unsupported activation {kw.get('activation_fn')}; use one of {sorted(ACTIVATIONS)}")
        if not isinstance(model.policy.features_extractor, NormalizedFeatures):
            raise SB3Error("SB3Agent saves policies built with bcarena.agents.sb3.policy_kwargs (NormalizedFeatures)")
        return cls(model.policy, arch["pi"] if isinstance(arch, dict) else arch, act, deterministic, name)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (STATE_DIM,)

    @property
    def seed(self) -> int:
        return self._seed

    @property
    def greedy(self) -> bool:
        return bool(self.deterministic)

    def reset(self, batch_size: int) -> None:
        self._gen.manual_seed(self.seed)

    def stacked(self, obs: np.ndarray) -> np.ndarray:
        return self.check_observations(obs)

    @torch.no_grad()
    def scores_stacked(self, x: np.ndarray) -> np.ndarray:
        return PolicyLogits(self.policy)(torch.as_tensor(np.array(x, dtype=np.float32))).numpy()

    @torch.no_grad()
    def act_stacked(self, x: np.ndarray) -> np.ndarray:
        logits = PolicyLogits(self.policy)(torch.as_tensor(np.array(x, dtype=np.float32)))
        if self.deterministic:
            return logits.argmax(dim=1).numpy().astype(np.int64)
        return torch.multinomial(torch.softmax(logits, 1), 1, generator=self._gen)[:, 0].numpy().astype(np.int64)

    def _act(self, obs: np.ndarray) -> np.ndarray:
        return self.act_stacked(obs)

    def export_module(self) -> nn.Module:
        return copy.deepcopy(PolicyLogits(self.policy)).eval()

    def _spec(self) -> dict[str, Any]:
        return {
            "hidden": self.hidden,
            "activation": self.activation,
            "deterministic": self.deterministic,
            "seed": self.seed,
            "input_shape": [STATE_DIM],
            "action_names": self.action_names,
            "skill_actions": self.skill_actions,
        }

    def _save_files(self, folder: Path) -> None:
        save_file(unique_state(self.policy), str(folder / WEIGHTS_FILE))

    @classmethod
    def _from_folder(cls, folder: Path, header: Header, spec: SB3Spec) -> SB3Agent:
        if (header.game, header.obs_type) != ("duel", "state"):
            raise AgentFileError(
                f"{folder / AGENT_FILE}: PPO experts play Duel on state observations, not "
                f"{header.game} {header.obs_type}"
            )
        weights = folder / WEIGHTS_FILE
        check_weights(weights, sb3_parameter_shapes(spec.hidden), f"an SB3 MLP actor-critic {spec.hidden}")
        kwargs = policy_kwargs(spec.hidden, spec.activation)
        policy = ActorCriticPolicy(
            observation_space("state"), gym.spaces.Discrete(NUM_ACTIONS), lambda _: 0.0, **kwargs
        )
        load_weights(policy, weights)
        return cls(policy, spec.hidden, spec.activation, spec.deterministic, header.name, spec.seed)


def ppo_from_bc(agent: SavableAgent, env: VecEnv, **ppo_kwargs: Any) -> PPO:
    """A PPO whose actor is ``agent``'s MLP (a state, frame_stack 1 ``TorchAgent``, else an SB3Error); the critic
    starts fresh."""
    if type(agent) is not TorchAgent or not isinstance(agent.model.policy, MLPPolicy):
        raise SB3Error(f"BC -> PPO needs a TorchAgent with an MLP policy, got {type(agent).__name__}")
    if agent.frame_stack != 1 or agent.model.num_actions != NUM_ACTIONS:
        raise SB3Error(
            f"BC -> PPO needs frame_stack 1 and {NUM_ACTIONS} actions, got {agent.frame_stack} and "
            f"{agent.model.num_actions}"
        )
    mlp = agent.model.policy
    kwargs = policy_kwargs(mlp.hidden, mlp.activation, agent.model.mean.tolist(), agent.model.std.tolist())
    model = PPO("MlpPolicy", env, policy_kwargs=kwargs, **ppo_kwargs)
    src = [m for m in mlp.body if isinstance(m, nn.Linear)]
    dst = [m for m in model.policy.mlp_extractor.policy_net if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for s, d in zip(src, dst, strict=True):
            d.weight.copy_(s.weight)
            d.bias.copy_(s.bias)
        model.policy.action_net.weight.copy_(mlp.head.weight)
        # log_softmax(z) + offsets and z + offsets have the same softmax and argmax: fold them in.
        model.policy.action_net.bias.copy_(mlp.head.bias + agent.model.class_offsets)
    return model


def random_ppo(
    env: VecEnv,
    hidden: Sequence[int] = (256, 256),
    activation: str = "relu",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **ppo_kwargs: Any,
) -> PPO:
    """A PPO with the same architecture as ``ppo_from_bc`` would build, randomly initialized."""
    return PPO("MlpPolicy", env, policy_kwargs=policy_kwargs(hidden, activation, mean, std), **ppo_kwargs)


def win_rate(agent: Any, opponent: str, seeds: Sequence[int] | np.ndarray, config: Any = None) -> dict[str, float]:
    """Win/draw/loss rates of ``agent`` (player 0) against bot ``opponent`` over one match per seed.

    Played by the one match loop, like every match; this layer sits below eval, whose
    ``play_matches`` reports far more than these rates.
    """
    seeds = np.asarray(seeds, dtype=np.int64)
    match = DuelBatch(seeds.size, config)
    play(match, (agent, BotAgent(opponent, config=config)), seeds)
    winner = match.core.winner
    return {
        "win": float(np.mean(winner == 0)),
        "draw": float(np.mean(winner < 0)),
        "loss": float(np.mean(winner == 1)),
        "matches": int(seeds.size),
    }


def train_ppo(
    model: PPO, timesteps: int, out: str | os.PathLike | None = None, name: str = "ppo", progress: bool = True
) -> SB3Agent:
    """Run PPO for ``timesteps`` and return (and save to ``out/agent``) the policy as an Agent."""
    if timesteps > 0:
        model.learn(total_timesteps=timesteps, progress_bar=progress)
    agent = SB3Agent.from_model(model, name=name)
    if out is not None:
        agent.save(Path(out) / "agent", overwrite=True)
    return agent
