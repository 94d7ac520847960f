"""A private shmleased for the Python benchmarks: its own socket in a temporary directory and its own
shm-name prefix, so a benchmark never meets another daemon's segments."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time

import shmlease


def start(binary: str):
    """Starts `binary` on a socket and shm prefix of its own; returns (socket path, stop()).

    stop() sends SIGTERM, waits, removes the directory and raises if segments were left in
    /dev/shm."""
    tmp = tempfile.mkdtemp(prefix="shmlease-bench-")
    socket = os.path.join(tmp, "d.sock")
    prefix = f"shmlease-bench-py-{os.getpid()}"
    log = open(os.path.join(tmp, "daemon.log"), "wb")
    # --state-dir none: no state in $XDG_RUNTIME_DIR, so SIGTERM frees every segment.
    proc = subprocess.Popen([binary, "--socket", socket, "--shm-prefix", prefix,
                             "--state-dir", "none"],
                            stdout=log, stderr=subprocess.STDOUT)
    end = time.monotonic() + 10
    while True:
        try:
            shmlease.connect(socket).close()
            break
        except shmlease.DaemonUnavailableError:
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError("shmleased did not start") from None
            time.sleep(0.02)

    def stop():
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
        left = [n for n in os.listdir("/dev/shm") if n.startswith(prefix)]
        shutil.rmtree(tmp, ignore_errors=True)
        if left:
            raise RuntimeError(f"shmleased left {left} in /dev/shm")

    return socket, stop
