"""The recordings layer's own error: every problem with a recording or its parts raises a subclass."""


class RecordingError(ValueError):
    """A recording is missing, malformed or inconsistent (the message names the file)."""
