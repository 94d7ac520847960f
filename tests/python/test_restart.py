"""A Python client survives a daemon restart (SIGKILL, then a start on the same state): its numpy
view keeps working through the outage, and its next call reconnects and reclaims its lease."""

from __future__ import annotations

import signal
import subprocess

import numpy as np

import shmlease
from conftest import SHM_DIR, Daemon, _die_with_parent, daemon_binary


def kill(d: Daemon) -> None:
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait()


def start_again(d: Daemon, *extra_args: str) -> None:
    d.proc = subprocess.Popen(
        [daemon_binary(), "--socket", d.socket, "--shm-prefix", d.prefix, "--log-level", "debug",
         *extra_args],
        stdout=d._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        preexec_fn=_die_with_parent)
    d._wait_ready()


def test_numpy_view_survives_daemon_restart(own_daemon, tmp_path):
    state = ["--state-dir", str(tmp_path / "state")]
    d = own_daemon(*state)
    try:
        run_restart(d, state)
    finally:
        # A daemon with a state dir keeps its segments when stopped: if the test failed half way,
        # stop it and free what it kept, so nothing is left in /dev/shm.
        if d.shm_objects():
            d.stop()
            for name in d.shm_objects():
                (SHM_DIR / name).unlink(missing_ok=True)


def run_restart(d: Daemon, state: list[str]) -> None:
    c = shmlease.connect(d.socket)
    info = c.create("frame", shape=(64, 48), dtype=np.float32)
    lease = c.lease("frame", "w")
    a = np.asarray(lease)
    a[...] = np.arange(a.size, dtype=np.float32).reshape(a.shape)

    kill(d)
    a[0, 0] = -1.0  # the mapping works while no daemon runs
    start_again(d, *state)

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
