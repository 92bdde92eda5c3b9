"""The eval layer's error type."""


class EvalError(ValueError):
    """Bad input to an evaluation; the message names the agent, file or field and what was expected."""
