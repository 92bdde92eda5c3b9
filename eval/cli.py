"""Command-line commands of the eval layer, added to the `bcarena` app by `register`."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this layer's commands and sub-apps to the root `bcarena` app."""
