"""The lint gate's type check reads the layers as setuptools maps them (``make lint`` links them for mypy)."""

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]


def test_the_type_check_links_every_layer_that_setuptools_maps():
    package_dir = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    found = re.search(r"^LAYERS := (.+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert found, "the Makefile's lint target names the layers it links in LAYERS := ..."
    assert {f"bcarena.{layer}": layer for layer in found.group(1).split()} == package_dir


def test_the_type_check_covers_the_public_api():
    mypy = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    checked = set(mypy["packages"]) | set(mypy["modules"])
    public = {
        "bcarena.envs.errors", "bcarena.envs.files", "bcarena.envs.play", "bcarena.envs.yaml_files",
        "bcarena.envs.duel.core", "bcarena.envs.duel.env", "bcarena.envs.duel.config", "bcarena.envs.duel.bots",
        "bcarena.recordings.sources", "bcarena.recordings.dataset", "bcarena.agents.base",
        "bcarena.agents.capabilities", "bcarena.agents.registry", "bcarena.agents.specs", "bcarena.agents.config",
        "bcarena.eval.matches", "bcarena.eval.offline", "bcarena.eval.service.layout", "bcarena.experiments.cli",
    }  # fmt: skip
    uncovered = sorted(m for m in public if not any(m == c or m.startswith(f"{c}.") for c in checked))
    assert not uncovered, f"add these to [tool.mypy] in pyproject.toml: {uncovered}"
