"""The eval layer's error type."""

from bcarena.envs.errors import BcarenaError


class EvalError(BcarenaError, ValueError):
    """Bad input to an evaluation; the message names the agent, file or field and what was expected."""
