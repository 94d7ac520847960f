"""A Python client survives a daemon restart (SIGKILL, then a start on the same state): its numpy
view keeps working through the outage, and its next call reconnects and reclaims its lease."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np

import shmlease
from conftest import SHM_DIR, Daemon, _die_with_parent, daemon_binary


READY = " ready: listening on "


def kill(d: Daemon) -> None:
    """A crash: SIGKILL to the daemon, the keeper's child. The keeper, which holds the segments'
    descriptors, is paused meanwhile so that the daemon stays down until start_again()."""
    if d.keeper_pid is None:  # no state dir: no keeper, the daemon is the process started
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
        return
    daemon = d.pid
    os.kill(d.proc.pid, signal.SIGSTOP)
    os.kill(daemon, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{daemon}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            break
        if state in ("Z", "X"):
            break
        time.sleep(0.005)


def start_again(d: Daemon, *extra_args: str) -> None:
    """The keeper goes on: it starts the daemon again with every descriptor it kept. Without a
    keeper: a new daemon on the same socket and prefix, with `extra_args`."""
    if d.proc.poll() is not None:
        if d._log.closed:  # stop() closed it
            d._log = open(d.log_path, "ab")
        d.proc = subprocess.Popen(
            [daemon_binary(), "--socket", d.socket, "--shm-prefix", d.prefix, "--log-level",
             "debug", *extra_args],
            stdout=d._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent)
        d._wait_ready()
        return
    ready = d.log().count(READY)
    os.kill(d.proc.pid, signal.SIGCONT)
    deadline = time.monotonic() + 20
    while d.log().count(READY) <= ready:
        assert d.proc.poll() is None, d.log()
        assert time.monotonic() < deadline, d.log()
        time.sleep(0.01)


def test_numpy_view_survives_daemon_restart(own_daemon, tmp_path):
    state = ["--state-dir", str(tmp_path / "state")]
    d = own_daemon(*state)
    try:
        run_restart(d)
    finally:
        # A paused keeper (a failure between kill and start_again) would never stop.
        if d.proc.poll() is None:
            os.kill(d.proc.pid, signal.SIGCONT)


def test_named_backing_keeps_its_objects_over_a_clean_stop(own_daemon, tmp_path):
    # --backing named with --keeper=no: the POSIX shm objects themselves outlive the daemon, and
    # the next one re-adopts them by name (docs/RESTART.md).
    state = ["--state-dir", str(tmp_path / "state"), "--backing", "named", "--keeper", "no"]
    d = own_daemon(*state)
    assert d.keeper_pid is None
    try:
        with shmlease.connect(d.socket) as c:
            c.create("kept", shape=(8,), dtype=np.int64)
            with c.lease("kept", "w") as w:
                np.asarray(w)[...] = np.arange(8)
        names = d.shm_objects()
        assert len(names) == 1 and (SHM_DIR / names[0]).exists()
        assert d.stop() == 0
        assert d.shm_objects() == names, "a clean stop keeps named objects for the next daemon"
        start_again(d, *state)
        with shmlease.connect(d.socket) as c, c.lease("kept", "r") as r:
            np.testing.assert_array_equal(np.asarray(r), np.arange(8))
            c.remove("kept")
    finally:
        if d.proc.poll() is not None:
            for name in d.shm_objects():
                (SHM_DIR / name).unlink(missing_ok=True)


def run_restart(d: Daemon) -> None:
    c = shmlease.connect(d.socket)
    info = c.create("frame", shape=(64, 48), dtype=np.float32)
    lease = c.lease("frame", "w")
    a = np.asarray(lease)
    a[...] = np.arange(a.size, dtype=np.float32).reshape(a.shape)

    kill(d)
    a[0, 0] = -1.0  # the mapping works while no daemon runs
    start_again(d)

    stat = c.stat("frame")  # reconnects and reclaims the lease
    assert stat["id"] == info["id"] and stat["shape"] == (64, 48)
    assert stat["writers"] == 1
    expected = np.arange(a.size, dtype=np.float32).reshape(a.shape)
    expected[0, 0] = -1.0
    with shmlease.connect(d.socket) as other, other.lease("frame", "r") as r:
        np.testing.assert_array_equal(np.asarray(r), expected)
    a[1, 1] = 7.0
    assert np.asarray(lease)[1, 1] == 7.0
    del a
    lease.release()
    c.remove("frame")
    c.close()
