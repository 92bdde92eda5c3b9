"""Agents: policies, behavior-cloning training, composite agents, SB3 interop.

Public entry points: ``Agent`` (the interface: ``act`` checks and calls ``_act``), ``BotAgent``,
``load_agent`` / ``save_agent`` (agent folders), the capability Protocols ``Exportable`` /
``FrameStacked`` / ``Stochastic``, ``register_agent_kind`` and ``AGENT_KINDS`` (kind -> entry point),
``bcarena.agents.torch_agent.TorchAgent`` (trained policies), ``bcarena.agents.train.train_bc`` with
``bcarena.agents.config.TrainConfig``, ``bcarena.agents.validation.classification_metrics``.
"""

from bcarena.agents.base import Agent, AgentFileError, BotAgent, ObservationError, load_agent, save_agent
from bcarena.agents.capabilities import Exportable, FrameStacked, Stochastic
from bcarena.agents.registry import AGENT_KINDS, register_agent_kind

__all__ = [
    "AGENT_KINDS",
    "Agent",
    "AgentFileError",
    "BotAgent",
    "Exportable",
    "FrameStacked",
    "ObservationError",
    "Stochastic",
    "load_agent",
    "register_agent_kind",
    "save_agent",
]
