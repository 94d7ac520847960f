"""Fixtures: a real shmleased per test session (and per test where a test needs its own).

CTest passes the daemon binary in $SHMLEASE_DAEMON and puts the built package on PYTHONPATH.
Every daemon gets its own socket in a fresh temporary directory and its own shm prefix starting
with "shmlease-test-", and after it stops the fixture checks that it left nothing in /dev/shm.

A test that runs a child as another uid (nobody) cannot let it read the checkout or the build tree:
a clone may sit in a directory other users cannot enter (a mode-0700 home). Such a test starts its
daemon with `own_daemon(..., other_uid=NOBODY)` (a socket directory that uid can reach) and gives
the child what it needs through `stage_for_uid`: a private copy, owned by that uid, removed after.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import shmlease

SHM_DIR = Path("/dev/shm")
# server/keeper.cpp logs this, with the daemon's pid, each time it starts the daemon.
KEEPER_STARTED = "keeper: started shmleased (pid "
_daemon_counter = itertools.count()
_name_counter = itertools.count()
NOBODY = 65534  # uid and gid of the user tests switch to


def reachable_tmp() -> str:
    """A temporary directory every user can pass through: $TMPDIR's if so, else /tmp."""
    tmp = Path(tempfile.gettempdir()).resolve()
    if all(p.stat().st_mode & 0o001 for p in (tmp, *tmp.parents)):
        return str(tmp)
    return "/tmp"


def daemon_binary() -> str:
    path = os.environ.get("SHMLEASE_DAEMON")
    if not path or not os.access(path, os.X_OK):
        pytest.fail(
            "set SHMLEASE_DAEMON to the shmleased binary (ctest does: "
            "ctest --test-dir BUILD -R python)",
            pytrace=False,
        )
    return path


def _die_with_parent() -> None:
    """In the daemon's child process: a test run that crashes must not leave its daemon running."""
    import ctypes
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Daemon:
    """One shmleased process on a private socket and shm prefix."""

    def __init__(self, *extra_args: str, other_uid: int | None = None) -> None:
        """other_uid: a uid that must reach the socket (its directory then is 0755, under a
        directory every user can pass through); the socket's own mode is the daemon's business."""
        n = next(_daemon_counter)
        self.dir = tempfile.mkdtemp(prefix="shmlease-py-",
                                    dir=reachable_tmp() if other_uid is not None else None)
        if other_uid is not None:
            os.chmod(self.dir, 0o755)
        self.socket = os.path.join(self.dir, "d.sock")
        self.prefix = f"shmlease-test-py-{os.getpid()}-{n}"
        self.log_path = os.path.join(self.dir, "daemon.log")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            # No durable state unless a test asks (a later --state-dir wins): with
            # $XDG_RUNTIME_DIR set the daemon would otherwise keep it there.
            [daemon_binary(), "--socket", self.socket, "--shm-prefix", self.prefix,
             "--log-level", "debug", "--state-dir", "none", *extra_args],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent)
        self._wait_ready()

    def _wait_ready(self, deadline_s: float = 10.0) -> None:
        end = time.monotonic() + deadline_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"shmleased exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with shmlease.connect(self.socket) as c:
                    c.ping()
                return
            except shmlease.DaemonUnavailableError:
                if time.monotonic() > end:
                    self.stop()
                    raise RuntimeError(f"shmleased not ready after {deadline_s}s:\n{self.log()}")
                time.sleep(0.02)

    @property
    def keeper_pid(self) -> int | None:
        """With a --state-dir, shmleased runs as a keeper whose child is the daemon."""
        return self.proc.pid if KEEPER_STARTED in self.log() else None

    @property
    def pid(self) -> int:
        """The daemon: the keeper's latest child (from its log line), else the process started."""
        log = self.log()
        at = log.rfind(KEEPER_STARTED)
        if at < 0:
            return self.proc.pid
        return int(log[at + len(KEEPER_STARTED):].split(")", 1)[0])

    def log(self) -> str:
        return Path(self.log_path).read_text(errors="replace")

    def shm_objects(self) -> list[str]:
        """Its segment memory that exists: names in /dev/shm under its prefix, and the memfds of
        that prefix that the daemon or its keeper holds open (the default, sealed backing)."""
        names = {p.name for p in SHM_DIR.iterdir() if p.name.startswith(self.prefix)}
        for pid in {self.pid, self.proc.pid}:
            try:
                links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
            except OSError:
                continue
            for link in links:
                if link.startswith(f"/memfd:{self.prefix}."):
                    names.add(link[len("/memfd:"):].split(" ", 1)[0])
        return sorted(names)

    def stop(self) -> int:
        """SIGTERM, wait, and return the exit code (SIGKILL after 10 s)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def close_and_check(self) -> None:
        code = self.stop()
        left = self.shm_objects()
        log = self.log()
        shutil.rmtree(self.dir, ignore_errors=True)
        assert code == 0, f"shmleased exited with {code}:\n{log}"
        # UBSan reports go to stderr, which is this log, even when the exit code says nothing.
        for marker in ("runtime error:", "Sanitizer:"):
            assert marker not in log, f"shmleased's log has a sanitizer report:\n{log}"
        assert left == [], f"shmleased left shared memory behind: {left}"


@pytest.fixture(scope="session")
def daemon():
    d = Daemon()
    yield d
    d.close_and_check()


@pytest.fixture
def own_daemon():
    """A daemon for this test alone (for tests that stop it or change its limits)."""
    daemons: list[Daemon] = []

    def start(*extra_args: str, other_uid: int | None = None) -> Daemon:
        d = Daemon(*extra_args, other_uid=other_uid)
        daemons.append(d)
        return d

    yield start
    for d in daemons:
        d.close_and_check()


@pytest.fixture
def client(daemon):
    with shmlease.connect(daemon.socket) as c:
        yield c


@pytest.fixture
def seg(request, daemon):
    """A factory of segment names unique to this test; removes them all at teardown."""
    base = re.sub(r"[^A-Za-z0-9._-]", "-", request.node.name)[:60]
    names: list[str] = []

    def make(tag: str = "s") -> str:
        name = f"{base}.{tag}.{next(_name_counter)}"
        names.append(name)
        return name

    yield make
    with shmlease.connect(daemon.socket) as c:
        for name in names:
            try:
                c.remove(name)
            except shmlease.NotFoundError:
                pass


class Channels:
    """The `chan` fixture: channels, or only their names, unique to one test; every channel made
    or named through it is removed at teardown."""

    def __init__(self, client, test_name: str) -> None:
        self._client = client
        self._base = re.sub(r"[^A-Za-z0-9_-]", "-", test_name)[:50]
        self._made: list[str] = []

    def name(self, tag: str = "c") -> str:
        name = f"{self._base}-{tag}{len(self._made)}"
        self._made.append(name)
        return name

    def __call__(self, shape=(4, 6, 3), dtype="B", slots=4, policy="block", tag="c"):
        return self._client.channel(self.name(tag), shape=shape, dtype=dtype, slots=slots,
                                    policy=policy)

    def remove_all(self) -> None:
        for name in self._made:
            try:
                self._client.channel(name).remove()
            except shmlease.NotFoundError:
                pass


@pytest.fixture
def chan(request, client):
    made = Channels(client, request.node.name)
    yield made
    made.remove_all()


def child_env(daemon: Daemon, pythonpath: str | None = None) -> dict[str, str]:
    """The environment of a child process: the daemon's socket, and the built package on
    PYTHONPATH (or only `pythonpath`, e.g. a stage_for_uid directory)."""
    env = dict(os.environ)
    env["SHMLEASE_SOCKET"] = daemon.socket
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
        return env
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(shmlease.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)
    return env


@contextlib.contextmanager
def stage_for_uid(uid: int, gid: int, files: dict[str, str] | None = None,
                  binaries: tuple[str, ...] = ()) -> Iterator[Path]:
    """A fresh directory only `uid` (and root) may enter, holding a copy of the built package
    (`shmlease/`, so the directory is the child's PYTHONPATH), the given files (name -> text) and
    binaries (copied by their base name, mode 0755), all owned by uid:gid; removed afterwards.
    The checkout and build tree may be out of that uid's reach; this copy is not."""
    stage = Path(tempfile.mkdtemp(prefix="shmlease-uid-", dir=reachable_tmp()))
    try:
        shutil.copytree(os.path.dirname(os.path.abspath(shmlease.__file__)), stage / "shmlease",
                        ignore=shutil.ignore_patterns("__pycache__"))
        for name, text in (files or {}).items():
            (stage / name).write_text(text)
        for binary in binaries:
            shutil.copy2(binary, stage / os.path.basename(binary))
            os.chmod(stage / os.path.basename(binary), 0o755)
        for path in (stage, *stage.rglob("*")):
            os.chown(path, uid, gid, follow_symlinks=False)
        os.chmod(stage, 0o700)
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def spawn_python(daemon: Daemon, code: str, **kwargs) -> subprocess.Popen:
    """Starts a fresh interpreter (not a fork of this client) running `code`."""
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)],
                            env=child_env(daemon), **kwargs)


def run_python(daemon: Daemon, code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter; returns its result (stdout and stderr captured)."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=child_env(daemon),
                          capture_output=True, text=True, timeout=timeout)


def wait_until(predicate, timeout: float = 5.0, what: str = "condition"):
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)
