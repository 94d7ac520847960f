"""Several processes: a 1 GiB array shared without copies, and a client killed with SIGKILL.

Children are fresh interpreters (subprocess), never forks of a live client.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap

import pytest

import shmlease
from conftest import child_env, spawn_python, wait_until

GIB = 1 << 30


def _expect_line(proc: subprocess.Popen, expected: str) -> None:
    line = proc.stdout.readline().strip()
    if line != expected:
        proc.kill()
        _, err = proc.communicate(timeout=30)
        raise AssertionError(f"child said {line!r}, expected {expected!r}; stderr:\n{err}")


def test_two_processes_share_a_1gib_array(daemon, client, seg):
    name = seg()
    side = 16384  # 16384 x 16384 float32 = 1 GiB
    info = client.create(name, shape=(side, side), dtype="f")
    assert info["size"] == GIB

    writer = spawn_python(daemon, f"""
        import sys, numpy as np, shmlease
        c = shmlease.connect()
        lease = c.lease({name!r}, "w")
        a = np.asarray(lease)
        assert a.shape == ({side}, {side}) and a.dtype == np.float32 and a.flags.writeable
        a[:] = np.arange({side}, dtype=np.float32)[:, None]   # row i holds i: every page
        print("written", flush=True)
        sys.stdin.readline()          # keep the pages mapped while the reader measures
        assert a[7, 7] == -7.0        # the reader's write... through a write lease of its own
        print("seen", flush=True)
    """, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _expect_line(writer, "written")
        reader = spawn_python(daemon, f"""
            import json, numpy as np, shmlease
            c = shmlease.connect()
            lease = c.lease({name!r}, "r")
            b = np.asarray(lease)
            assert b.shape == ({side}, {side}) and not b.flags.writeable
            rows = np.arange({side}, dtype=np.float64)
            assert (b[:, 0] == rows).all() and (b[:, -1] == rows).all()
            total = float(b.sum(dtype=np.float64))          # reads every page
            assert total == {side} * rows.sum(), total
            def fields(path):
                out = {{}}
                with open(path) as f:
                    for line in f:
                        key, _, rest = line.partition(":")
                        parts = rest.split()
                        if len(parts) == 2 and parts[1] == "kB":
                            out[key] = int(parts[0]) * 1024
                return out
            smaps = fields("/proc/self/smaps_rollup")
            status = fields("/proc/self/status")
            with c.lease({name!r}, "w") as w:               # and a write the other side sees
                np.asarray(w)[7, 7] = -7.0
            print(json.dumps({{"smaps": smaps, "status": status}}), flush=True)
        """, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = reader.communicate(timeout=120)
        assert reader.returncode == 0, err
        mem = json.loads(out)
        smaps, status = mem["smaps"], mem["status"]
        # The reader's resident memory holds the segment's pages as shared memory...
        assert status["RssShmem"] >= 0.99 * GIB, status
        assert smaps["Shared_Clean"] + smaps["Shared_Dirty"] >= 0.99 * GIB, smaps
        # ...and no private copy of them.
        assert status["RssAnon"] < 0.25 * GIB, status
        assert smaps["Private_Dirty"] < 0.25 * GIB, smaps
        writer.stdin.write("go\n")
        writer.stdin.flush()
        _expect_line(writer, "seen")
        writer.stdin.close()
        assert writer.wait(timeout=60) == 0, writer.stderr.read()
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    st = client.stat(name)
    assert st["readers"] == 0 and st["writers"] == 0


def test_sigkilled_child_loses_its_leases(daemon, client, seg):
    name, gone = seg("kept"), seg("removed")
    client.create(name, shape=(256, 256), dtype="d")
    client.create(gone, 1 << 20)
    child = spawn_python(daemon, f"""
        import time, numpy as np, shmlease
        c = shmlease.connect()
        w = c.lease({name!r}, "w")
        r1, r2 = c.lease({name!r}), c.lease({gone!r})
        a = np.asarray(w)                 # live exports on two leases
        m = memoryview(r2)
        a[:] = 3.0
        print("ready", flush=True)
        time.sleep(120)
    """, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _expect_line(child, "ready")
        st = client.stat(name)
        assert (st["readers"], st["writers"]) == (1, 1)
        assert client.stat(gone)["readers"] == 1
        objects_before = len(daemon.shm_objects())
        client.remove(gone)  # freed only when the child's lease goes
        assert len(daemon.shm_objects()) == objects_before
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    wait_until(lambda: (client.stat(name)["readers"], client.stat(name)["writers"]) == (0, 0),
               what="the daemon to drop the killed child's leases")
    wait_until(lambda: len(daemon.shm_objects()) == objects_before - 1,
               what="the removed segment to be freed")
    with client.lease(name, "w", exclusive=True, timeout=0) as lease:
        assert memoryview(lease)[255, 255] == 3.0  # the child's writes are still there
    with pytest.raises(shmlease.NotFoundError):
        client.stat(gone)


def test_forked_child_leaves_the_parents_connection_alone(daemon, seg):
    # A child forked from a live client shares its socket. Dropping or closing the inherited
    # objects there must not release the parent's leases nor shut the parent's connection down.
    name = seg()
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import gc, os, shmlease
        c = shmlease.connect()
        c.create({name!r}, 64)
        lease = c.lease({name!r}, "w")
        memoryview(lease)[0] = 1
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                try:
                    c.stat({name!r})
                    code = 10            # the parent's connection must not be used
                except shmlease.ConnectionLostError as e:
                    assert "fork" in str(e), e
                assert memoryview(lease)[0] == 1   # the inherited mapping still reads
                lease.release()
                del lease
                c.close()
                del c
                gc.collect()
            except BaseException:
                code = 11
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
        c.ping()                                  # the connection survived
        st = c.stat({name!r})
        assert st["writers"] == 1, st             # and so did the lease
        lease.release()
        assert c.stat({name!r})["writers"] == 0
        print("ok")
    """)], env=child_env(daemon), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
