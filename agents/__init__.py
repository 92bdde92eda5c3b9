"""Agents: policies, behavior-cloning training, composite agents, SB3 interop.

Public entry points: ``Agent`` / ``BotAgent`` / ``load_agent`` / ``save_agent`` (agent folders),
``bcarena.agents.torch_agent.TorchAgent`` (trained policies, ``export_module()``),
``bcarena.agents.train.train_bc`` with ``bcarena.agents.config.TrainConfig``,
``bcarena.agents.validation.classification_metrics``.
"""

from bcarena.agents.base import AGENT_KINDS, Agent, AgentFileError, BotAgent, load_agent, save_agent

__all__ = ["AGENT_KINDS", "Agent", "AgentFileError", "BotAgent", "load_agent", "save_agent"]
