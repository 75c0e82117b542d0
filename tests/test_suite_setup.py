"""The test suite's own set-up (tests/_session_fixtures.py) does what it says."""

from __future__ import annotations

import os

import pytest


@pytest.mark.serial
def test_serial_tests_share_one_xdist_group(request):
    """Under `make test` (xdist, --dist loadgroup) a `serial` test carries the group in its
    node id, which is how xdist sends the whole group to one worker: signals, ports and
    timings never compete with each other, and a module fixture of serial tests is built once.
    (pytest 9.2 moved node ids where pytest-xdist 3.8 no longer rewrites them: the groups were
    silently ignored. requirements.lock pins a pair where they work.)"""
    if not (os.environ.get("PYTEST_XDIST_WORKER") and request.config.getvalue("loadgroup")):
        pytest.skip("only meaningful under pytest-xdist with --dist loadgroup")
    assert request.node.nodeid.endswith("@serial"), request.node.nodeid
