"""The test suite's own set-up (tests/_session_fixtures.py) does what it says."""

from __future__ import annotations

import json
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


_PROBE = """
import atexit, json, os, random, sys, threading, time
import numpy as np
from jax._src import xla_bridge
atexit.register(lambda: print("atexit ran", flush=True))
threading.Thread(target=lambda: (time.sleep(0.2), print("thread joined", flush=True))).start()
print(json.dumps({"pid": os.getpid(), "cwd": os.getcwd(),
                  "argv": sys.argv, "test": os.environ.get("PYTEST_CURRENT_TEST"),
                  "path0": sys.path[0], "name": __name__, "random": random.random(),
                  "np": float(np.random.random()), "backends": len(xla_bridge._backends)}),
      flush=True)  # a killed run keeps what it flushed
print("to stderr", file=sys.stderr)
if sys.argv[1] == "kill":
    os.kill(os.getpid(), 9)
if sys.argv[1] == "raise":
    raise RuntimeError("boom")
if sys.argv[1] == "hang":
    time.sleep(600)
sys.exit(int(sys.argv[1]))
"""


def test_fork_server_runs_each_script_as_its_own_process(tmp_path):
    """tests/_forkserver.py: a run is `python SCRIPT ARGS` in a process of its own (its pid,
    argv, environment, working directory and output; exit status, signal and exception as a
    fresh interpreter reports them; non-daemon threads joined, then atexit handlers), with
    freshly seeded random generators and no JAX backend inherited from the server."""
    import subprocess
    import sys

    import _forkserver as forkserver
    import _robustness_util as U

    if not forkserver.ENABLED:
        pytest.skip("TRANSFORMER_JAX_TEST_FORKSERVER=0: every run is a fresh interpreter")
    script = tmp_path / "probe.py"
    script.write_text(_PROBE)
    runs = {mode: forkserver.run([sys.executable, str(script), mode], U.env(), U.ROOT, 60)
            for mode in ("0", "3", "kill", "raise")}  # fmt: skip
    assert {m: r.returncode for m, r in runs.items()} == {"0": 0, "3": 3, "kill": -9, "raise": 1}
    probes = {m: json.loads(r.stdout.splitlines()[0]) for m, r in runs.items()}
    for mode, probe in probes.items():
        assert probe["argv"] == [str(script), mode] and probe["name"] == "__main__"
        assert probe["cwd"] == U.ROOT and probe["path0"] == str(tmp_path)  # the script's dir
        assert probe["test"] == os.environ["PYTEST_CURRENT_TEST"]
        assert probe["backends"] == 0
        assert runs[mode].stderr.startswith("to stderr\n")
    for mode in ("0", "3", "raise"):  # the interpreter's own exit: threads, then atexit
        assert runs[mode].stdout.splitlines()[1:] == ["thread joined", "atexit ran"], mode
    assert runs["raise"].stderr.rstrip().endswith("RuntimeError: boom")
    pids = {p["pid"] for p in probes.values()}
    assert len(pids) == 4 and os.getpid() not in pids
    assert len({p["random"] for p in probes.values()}) == 4
    assert len({p["np"] for p in probes.values()}) == 4
    with pytest.raises(subprocess.TimeoutExpired) as hung:  # killed, with its output so far
        forkserver.run([sys.executable, str(script), "hang"], U.env(), U.ROOT, 2)
    assert json.loads(hung.value.output.splitlines()[0])["argv"][1] == "hang"
