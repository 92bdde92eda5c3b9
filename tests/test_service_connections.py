"""The agent server's connections (request deadlines per server) and its import boundary."""

import subprocess
import sys

import pytest


def test_the_server_module_loads_neither_the_serve_extra_nor_torch():
    # JSON worker processes import it to decode large bodies; the serve extra and torch load only when serving.
    code = (
        "import sys, bcarena.eval.service.server\n"
        "print(sorted({'fastapi', 'starlette', 'uvicorn', 'torch'} & set(sys.modules)))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_each_server_gets_a_protocol_class_with_its_own_deadline():
    pytest.importorskip("uvicorn")
    from bcarena.eval.service.connections import DeadlineProtocol, deadline_protocol

    fast, slow = deadline_protocol(0.5), deadline_protocol(2.0)
    assert issubclass(fast, DeadlineProtocol) and issubclass(slow, DeadlineProtocol) and fast is not slow
    # Two servers in one process (tests, benchmarks) keep their own timeouts: the base class is never changed.
    assert (fast.request_timeout_s, slow.request_timeout_s, DeadlineProtocol.request_timeout_s) == (0.5, 2.0, 30.0)
