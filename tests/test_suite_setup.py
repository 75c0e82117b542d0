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


def test_other_tests_are_grouped_with_their_module(request):
    """Under `make test` every test that is not `serial` goes to its module's xdist group, so
    one worker runs the whole module and the programs its tests share are compiled once
    (tests/_session_fixtures.py; TRANSFORMER_JAX_TEST_GROUP_BY_MODULE=0 turns this off)."""
    if not (os.environ.get("PYTEST_XDIST_WORKER") and request.config.getvalue("loadgroup")):
        pytest.skip("only meaningful under pytest-xdist with --dist loadgroup")
    if os.environ.get("TRANSFORMER_JAX_TEST_GROUP_BY_MODULE", "1") == "0":
        assert "@" not in request.node.nodeid, request.node.nodeid
    else:
        assert request.node.nodeid.endswith("@test_suite_setup"), request.node.nodeid
