"""The recordings layer's own error: every problem with a recording or its parts raises a subclass."""

from bcarena.envs.errors import BcarenaError


class RecordingError(BcarenaError, ValueError):
    """A recording is missing, malformed or inconsistent (the message names the file)."""
