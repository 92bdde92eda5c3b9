"""Agents: policies, behavior-cloning training, composite agents, SB3 interop."""
