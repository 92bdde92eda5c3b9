"""The one way figures become files: matplotlib on the Agg backend (no display), PNGs written atomically.

Every layer plots (training curves in agents/, DAgger rounds, eval plots), so the writer lives in the
lowest one. matplotlib is imported on first use: importing this module costs nothing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bcarena.envs.files import atomic_file


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (chosen before pyplot is first imported)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Lay out ``fig`` (unless it has a layout engine of its own), write it as PNG at ``path`` (temporary sibling,
    then rename) and close it; returns ``path``."""
    path = Path(path)
    try:
        if fig.get_layout_engine() is None:
            fig.tight_layout()
        with atomic_file(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        pyplot().close(fig)
    return path
