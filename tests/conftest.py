"""Shared fixtures: built once per session so the default suite stays within a few minutes (issue 15, item 24).

Long versions of the fast checks are parametrized twins marked ``slow`` (``pytest -m slow`` runs them).
"""

import os
import sys

import pytest

# Tests never open windows: make any accidental cv2.imshow fail loudly instead of aborting.
os.environ.pop("DISPLAY", None)
os.environ.pop("WAYLAND_DISPLAY", None)

# Seconds per Duel round in the fast twins: 80 decisions instead of 300, long enough for KOs, time-outs and
# several skill presses, so replays, recordings and autoresets are exercised on a quarter of the frames.
SHORT_ROUND_SECONDS = 8.0


@pytest.fixture(scope="session")
def short_round():
    """A Duel config with 8-second rounds (the default is 30 s): the same rules on fewer frames."""
    from bcarena.envs.duel import DuelConfig

    return DuelConfig(round_seconds=SHORT_ROUND_SECONDS)


@pytest.fixture(scope="session")
def ray_session():
    """One local 2-CPU Ray instance for every Ray test module: starting Ray costs ~5 s each time."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def ray_for_module(request, ray_session):
    """The session's Ray, with the requesting test module shipped to workers by value (tests/ is not importable
    there, so functions defined in a test module travel pickled by value)."""
    module = sys.modules[request.module.__name__]
    ray_session.cloudpickle.register_pickle_by_value(module)
    yield ray_session
    ray_session.cloudpickle.unregister_pickle_by_value(module)
