"""A fork server for the suite's `train.py` processes: each run is its own process, without
paying for the interpreter's start and the imports again.

A `python train.py` process of the robustness tests spends about 2 s of its 6 starting Python
and importing JAX, Flax, optax, orbax, TFDS and the library before it does anything the tests
check, and the suite starts a few dozen of them (every SIGKILL, SIGTERM, Ctrl-C, exception or
NaN ends its process). A server process imports those modules once, creating no JAX backend
(it checks), and forks one child per run. The child takes the run's environment, working
directory, argv and output files and runs the script as `python SCRIPT ARGS...` does (`runpy`
as `__main__`, with the script's directory first on sys.path), ending through the
interpreter's normal shutdown (non-daemon threads joined, atexit handlers run). So each run
still has its own pid, JAX backend (XLA_FLAGS are read when it is created), signal
dispositions, exit status and files, and a SIGKILL ends it alone; `Child` is a Popen-like handle
on it.

A child shares with its siblings only what exists before the fork: the imported modules and
the interpreter's string-hash seed. Python's and NumPy's global random generators are reseeded
in each child. The runs are compared with a reference run started as a fresh interpreter
(`fresh=True` in tests/_robustness_util.py), so a result that depended on import-time state or
on the hash seed would show as a mismatch. One server per distinct environment (modules read
some variables at import, e.g. JAX's options); TRANSFORMER_JAX_TEST_FORKSERVER=0 runs every
process as a fresh interpreter instead.

Protocol (one Unix socket per server): a client connects and sends its request as one JSON
line; the server forks a waiter for the connection, which forks the run, sends {"pid": ...},
waits for it and sends {"status": ...} (os.waitpid's status).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ENABLED = os.environ.get("TRANSFORMER_JAX_TEST_FORKSERVER", "1") != "0"
# What train.py (and the fault runner) import before their first step; nothing of it starts a
# thread or a JAX backend at import.
PRELOAD = (
    "jax.numpy",
    "flax.linen",
    "optax",
    "orbax.checkpoint",
    "tensorflow_datasets",
    "ml_collections.config_flags",
    "absl.app",
    "transformer_jax.train.loop",
    "transformer_jax.train.run_config",
    "transformer_jax.data",
    "transformer_jax.models",
)
_VOLATILE = ("PYTEST_CURRENT_TEST",)  # differs per test; read by nothing at import


# ----------------------------------------------------------------------------- server side


def _send(conn: socket.socket, message: dict) -> None:
    conn.sendall(json.dumps(message).encode() + b"\n")


def _read_request(conn: socket.socket) -> dict:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            raise EOFError("client went away")
        data += chunk
    return json.loads(data)


def _become(request: dict) -> None:
    """In the forked child: become `python SCRIPT ARGS` with the request's environment."""
    import random
    import runpy

    import numpy as np

    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    fds = [
        os.open(os.devnull, os.O_RDONLY),
        os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
        os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
    ]
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    sys.argv = list(request["argv"])
    sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))
    random.seed()
    np.random.seed()  # noqa: NPY002 - the legacy global generator, as a fresh process has it
    runpy.run_path(sys.argv[0], run_name="__main__")


def serve(path: str) -> None:
    """The server's main: preload, listen on `path`, fork a waiter per connection."""
    import importlib

    from transformer_jax import console, runtime

    runtime.tune_gc()  # as train.py does before its imports
    console.quiet_environment(False)
    for name in PRELOAD:
        importlib.import_module(name)
    from jax._src import xla_bridge

    if xla_bridge._backends:  # a child must create its own (its XLA_FLAGS, its threads)
        raise RuntimeError(f"a JAX backend exists before the fork: {list(xla_bridge._backends)}")

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    listener.settimeout(0.5)
    parent = os.getppid()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stderr.flush()
    while True:
        # Finished waiters are reaped here (not by SIGCHLD=SIG_IGN), so that their CPU time and
        # their run's add up in this process's children, as a subprocess's do in its parent's.
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            if os.getppid() != parent:  # the test process is gone
                return
            continue
        if os.fork() == 0:  # the waiter
            listener.close()
            request = _read_request(conn)
            pid = os.fork()
            if pid == 0:  # the run
                conn.close()
                # SystemExit and exceptions from the script leave through here to the
                # interpreter's own exit, as in `python SCRIPT`.
                _become(request)
                return
            _send(conn, {"pid": pid})
            _, status = os.waitpid(pid, 0)
            _send(conn, {"status": status})
            os._exit(0)
        conn.close()


# ----------------------------------------------------------------------------- client side


class _Server:
    def __init__(self, env: dict[str, str], cwd: str):
        # A Unix socket's path must stay under ~100 bytes: a long TMPDIR falls back to /tmp.
        short = len(tempfile.gettempdir()) < 60 or not os.path.isdir("/tmp")
        self.dir = tempfile.mkdtemp(prefix="transformer_jax-forkserver-",
                                    dir=None if short else "/tmp")  # fmt: skip
        self.path = os.path.join(self.dir, "socket")
        self._log = os.path.join(self.dir, "server.log")
        with open(self._log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), self.path],
                env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
            )  # fmt: skip
        self._ready = False
        self._count = 0

    def ready(self) -> None:
        if not self._ready:
            line = self.proc.stdout.readline()
            if line != b"ready\n":
                with open(self._log) as f:
                    raise RuntimeError(f"the fork server did not start:\n{f.read()[-3000:]}")
            self._ready = True

    def new_output_paths(self) -> tuple[str, str]:
        self._count += 1
        return (os.path.join(self.dir, f"{self._count}.out"),
                os.path.join(self.dir, f"{self._count}.err"))  # fmt: skip

    def close(self) -> None:
        self.proc.terminate()  # its waiters are done: the server's CPU time and theirs add up
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


_SERVERS: dict[tuple, _Server] = {}


def _key(env: dict[str, str], cwd: str) -> tuple:
    return (cwd, tuple(sorted((k, v) for k, v in env.items() if k not in _VOLATILE)))


def _server(env: dict[str, str], cwd: str) -> _Server:
    key = _key(env, cwd)
    if key not in _SERVERS:
        if not _SERVERS:
            atexit.register(lambda: [s.close() for s in _SERVERS.values()])
        _SERVERS[key] = _Server(env, cwd)
    return _SERVERS[key]


def prestart(env: dict[str, str], cwd: str) -> None:
    """Starts the server for (env, cwd) now, so that its imports overlap other work."""
    if ENABLED:
        _server(env, cwd)


class Child:
    """A Popen-like handle on one run: `pid`, `args`, `returncode`, `poll`, `wait`, `kill`,
    `communicate` (text)."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: str):
        server = _server(env, cwd)
        server.ready()
        self.args = argv  # [sys.executable, SCRIPT, ARGS...]
        self.pid: int | None = None  # until the waiter has forked the run
        self.returncode: int | None = None
        self._stdout, self._stderr = server.new_output_paths()
        self._buffer = b""
        self._lock = threading.Lock()  # one reader of the connection at a time
        self._conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._conn.connect(server.path)
        request = {"argv": [os.path.abspath(argv[1]), *argv[2:]], "env": env, "cwd": cwd,
                   "stdout": self._stdout, "stderr": self._stderr}  # fmt: skip
        _send(self._conn, request)
        self.pid = self._message(None)["pid"]

    def _message(self, timeout: float | None) -> dict | None:
        """The next message, waiting up to `timeout` seconds (None: no limit)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self._conn], [], [], left)[0]:
                return None
            chunk = self._conn.recv(65536)
            if not chunk:
                raise RuntimeError(f"the fork server's waiter for pid {self.pid} went away")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def poll(self) -> int | None:
        if not self._lock.acquire(blocking=False):  # another thread is in wait()
            return self.returncode
        try:
            return self._wait(0.0)
        finally:
            self._lock.release()

    def wait(self, timeout: float | None = None) -> int:
        with self._lock:
            if self._wait(timeout) is None:
                raise subprocess.TimeoutExpired(self.args, timeout)
            return self.returncode

    def _wait(self, timeout: float | None) -> int | None:
        if self.returncode is None:
            message = self._message(timeout)
            if message is None:
                return None
            self._conn.close()
            self.returncode = os.waitstatus_to_exitcode(message["status"])
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def output(self) -> tuple[str, str]:
        outputs = []
        for path in (self._stdout, self._stderr):
            with open(path, errors="replace") as f:
                outputs.append(f.read())
        return outputs[0], outputs[1]

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self.wait(timeout)
        return self.output()


def run(
    argv: list[str], env: dict[str, str], cwd: str, timeout: float
) -> subprocess.CompletedProcess:
    """subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    with `argv` = [sys.executable, SCRIPT, ARGS...], through the fork server where it is
    enabled."""
    if not ENABLED:
        return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip
    child = Popen(argv, env, cwd)
    try:
        child.wait(timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        raise subprocess.TimeoutExpired(argv, timeout, *child.output()) from None
    return subprocess.CompletedProcess(argv, child.returncode, *child.output())


def Popen(argv: list[str], env: dict[str, str], cwd: str):  # noqa: N802 - subprocess's name
    """subprocess.Popen(argv, env=env, cwd=cwd, stdout=PIPE, stderr=PIPE, text=True) with
    `argv` = [sys.executable, SCRIPT, ARGS...]: through the fork server where it is enabled."""
    if argv[0] != sys.executable:
        raise ValueError(f"the fork server runs Python scripts, not {argv[0]!r}")
    if not ENABLED:
        return subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
    return Child(argv, env, cwd)


if __name__ == "__main__":
    serve(sys.argv[1])
