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
def pro_ds(tmp_path_factory):
    """16 pro episodes (state + pixels), 60/20/20 episode split: ~4k frames, ~2-3% skill presses.

    Shared by the training and agent-parts tests (nothing writes into it: tests that break it edit copies).
    """
    from bcarena.recordings.converter import make_duel_dataset

    return make_duel_dataset(tmp_path_factory.mktemp("pro16"), episodes=16, seed=1, split=(0.6, 0.2, 0.2), pixels=True)


@pytest.fixture(scope="module")
def ray_for_module(request):
    """A local 2-CPU Ray, shared by consecutive Ray test modules (starting Ray costs ~5 s each time), with the
    requesting module shipped to workers by value: tests/ is not importable there. Shut down by
    ``pytest_runtest_teardown`` once the next test does not need it."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(request.module)
    yield ray
    ray.cloudpickle.unregister_pickle_by_value(request.module)


@pytest.hookimpl(trylast=True)  # after the module's fixtures are torn down
def pytest_runtest_teardown(item, nextitem):
    """At the end of a test module, stop Ray unless the next test uses it (modules run in file order)."""
    ray = sys.modules.get("ray")
    if ray is None or (nextitem is not None and nextitem.module is item.module):
        return
    if ray.is_initialized() and (nextitem is None or "ray_for_module" not in nextitem.fixturenames):
        ray.shutdown()
