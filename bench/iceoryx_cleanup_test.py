#!/usr/bin/python3
"""channel_bench's iceoryx peer leaves nothing behind when the bench is stopped mid-measurement.

    /usr/bin/python3 bench/iceoryx_cleanup_test.py CHANNEL_BENCH

1. SIGTERM while an iceoryx measurement runs: channel_bench dies of the signal, and its RouDi,
   RouDi's shared memory (/dev/shm/iceoryx_mgmt, the segment) and sockets in /tmp, the runtimes'
   sockets and the config directory are all gone.
2. SIGKILL (nothing of the bench runs any more): RouDi goes through PR_SET_PDEATHSIG; the next run
   of channel_bench removes the dead run's files and measures iceoryx normally.
The checks run under the lock every channel_bench takes around its RouDi, so a benchmark running
elsewhere on the machine cannot make them pass or fail."""

from __future__ import annotations

import fcntl
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

LOCK = "/tmp/shmlease-bench-iceoryx.lock"
ROUDI_FILES = ["/dev/shm/iceoryx_mgmt", "/tmp/roudi", "/tmp/roudi.lock",
               "/tmp/iox-unique-roudi.lock"]


def leftovers(pid: int, tmpdir: str) -> list[str]:
    found = [p for p in ROUDI_FILES if os.path.exists(p)]
    found += glob.glob(f"/tmp/shmlease-bench-*-{pid}-*")
    found += glob.glob(os.path.join(tmpdir, "shmlease-iceoryx-*"))  # tmpdir is this test's
    return found


def roudi_children(pid: int) -> list[int]:
    out = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(stat.replace("stat", "comm")) as f:
                comm = f.read().strip()
        except OSError:
            continue
        if comm == "iox-roudi" and int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(stat.split("/")[2]))
    return out


def start_and_wait_for_iceoryx(bench: str, env: dict) -> subprocess.Popen:
    """Starts a long channel_bench and returns once an iceoryx measurement is running (its
    subscriber's socket is in /tmp)."""
    proc = subprocess.Popen([bench, "3000", "1"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not glob.glob(f"/tmp/shmlease-bench-sub-{proc.pid}-*"):
        if proc.poll() is not None:
            sys.exit(f"FAIL: channel_bench exited ({proc.returncode}) before measuring iceoryx:\n"
                     f"{proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            sys.exit("FAIL: no iceoryx measurement started within 120 s")
        time.sleep(0.02)
    if not roudi_children(proc.pid):
        proc.kill()
        sys.exit("FAIL: an iceoryx measurement runs but channel_bench has no iox-roudi child")
    return proc


def main() -> int:
    bench = sys.argv[1]
    tmpdir = tempfile.mkdtemp(prefix="shmlease-iceoryx-test-")
    # The bench's daemon and config directories go here, so nothing of a killed bench stays in /tmp.
    env = dict(os.environ, TMPDIR=tmpdir)
    failures = []
    try:
        # 1. SIGTERM mid-measurement.
        proc = start_and_wait_for_iceoryx(bench, env)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        if proc.returncode != -signal.SIGTERM:
            failures.append(f"SIGTERM: channel_bench exited with {proc.returncode}, "
                            "not by the signal")
        with open(LOCK) as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            left = leftovers(proc.pid, tmpdir)
            if left:
                failures.append(f"SIGTERM: left behind {left}")
            else:
                print(f"ok: SIGTERM mid-measurement left nothing ({proc.pid})")

        # 2. SIGKILL mid-measurement, then one more (short) run.
        proc = start_and_wait_for_iceoryx(bench, env)
        proc.kill()
        proc.wait(timeout=30)
        after = subprocess.run([bench, "40", "1"], env=env, capture_output=True, text=True,
                               timeout=300)
        values = json.loads([l for l in after.stdout.splitlines() if l.startswith("{")][-1])
        if after.returncode != 0 or values["iceoryx"]["error"]:
            failures.append(f"the run after a SIGKILL failed ({after.returncode}): "
                            f"{values['iceoryx']['error']}\n{after.stderr}")
        missing = [k for k, r in values["results"].items() if k.startswith("iceoryx") and not r]
        if missing:
            failures.append(f"the run after a SIGKILL has no samples for {missing}")
        with open(LOCK) as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            left = leftovers(proc.pid, tmpdir)
            if left:
                failures.append(f"SIGKILL: left behind {left}")
            else:
                print(f"ok: after a SIGKILL ({proc.pid}) the next run measured iceoryx and "
                      "nothing is left")
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    for f in failures:
        print(f"FAIL: {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
