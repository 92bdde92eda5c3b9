"""The one root of every error a user can cause, like gymnasium's ``error.py``.

Every layer raises subclasses of :class:`BcarenaError` for bad input: a missing or malformed file,
an unknown name, a value out of range. The command line prints such an error as one line on stderr
and exits with code 2; any other exception is a bug and keeps its traceback. Subclasses keep a
builtin mixin (``ValueError``, ``KeyError``, ...) where callers catch it by that type.
"""

from __future__ import annotations


class BcarenaError(Exception):
    """Base of every user-caused error; the message names the file, field or value and what was expected."""

    def __str__(self) -> str:
        # KeyError quotes its message (repr of the argument); a user should read the sentence itself.
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()
