"""Imports every module that registers an agent kind, so ``load_agent`` knows them all."""

from bcarena.agents import composite, sb3, torch_agent  # noqa: F401
