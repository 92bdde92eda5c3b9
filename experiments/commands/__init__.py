"""The ``bcarena`` command tree: one module per command group, assembled by ``bcarena.experiments.cli``.

Each module defines ``app``, a Typer app holding its top-level commands and sub-groups (``record.py``:
``record`` and ``play``; ``eval.py``: the ``eval`` group and ``tournament``; ...). The root app imports a
module only when one of its commands runs or shows its help, so ``bcarena --help`` stays fast and a
module may import its registries at the top. Commands raise :class:`bcarena.envs.errors.BcarenaError`
(or a click usage error) for a user's mistake and never print it themselves: the root app turns it into
one line on stderr and exit code 2.
"""

from __future__ import annotations

import typer
from rich.console import Console


def command_app(help: str | None = None) -> typer.Typer:
    """A Typer app with the settings every part of the tree shares.

    ``rich_markup_mode=None``: help texts are shown as written, so ``pro[skill_drop=0.9]`` and
    ``.[ray]`` are never eaten as rich markup.
    """
    return typer.Typer(help=help, no_args_is_help=True, add_completion=False, rich_markup_mode=None)


def _console(markup: bool) -> Console:
    # A fixed width off a terminal keeps tables readable in logs and CI output.
    return Console(markup=markup, emoji=False, highlight=False, width=None if Console().is_terminal else 200)


# What commands print: player names, file names and file content are shown literally, never as
# markup (``[skill_drop=0.9]``) or emoji codes (``:x:``).
console = _console(markup=False)
# Handed to library code that styles its own progress lines with markup (the runner, the sweep);
# that code escapes the text it interpolates.
styled_console = _console(markup=True)
