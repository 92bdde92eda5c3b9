"""Benchmarks: each module measures one part against a baseline run in the same process and prints JSON.

Run any of them with ``bcarena bench NAME`` (``make bench`` runs them all).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bcarena.envs.files import write_text


def emit(results: dict[str, Any], out: Path | None) -> None:
    """Print the results as JSON and, with ``out``, also write them there atomically."""
    text = json.dumps(results, indent=2)
    print(text)
    if out:
        write_text(out, text + "\n")
