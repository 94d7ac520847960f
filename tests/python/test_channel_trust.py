"""Channels no participant can subvert, seen from Python (issue 13; the C++ model is
tests/integration/channel_trust_test.cpp): a reader's frames are read-only memory the kernel
enforces, a reader that scribbles into the one page it may write spoils no honest reader's frame
and does not stop the writer, and a slow reader is evicted after the reader timeout and told so.

The misbehaving readers run in their own interpreters, as another uid (nobody) when the tests run
as root (then the channels are mode 0o644: nobody may read frames, not write them), so that a
crash is an exit status, not a dead pytest."""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zlib

import numpy as np
import pytest

import shmlease
from conftest import NOBODY, child_env, spawn_python, stage_for_uid, wait_until

ROOT = os.geteuid() == 0

# What every child below starts with: the channel mappings of this process, from /proc/self/maps.
MAPS = '''
import ctypes, faulthandler, os, sys, time
faulthandler.enable()  # a crash says where
import numpy as np
import shmlease

def mappings(label=""):
    """(perms, start, size, path) of each mapping whose path contains `label`."""
    out = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            path = " ".join(fields[5:])
            if label in path:
                lo, hi = (int(x, 16) for x in fields[0].split("-"))
                out.append((fields[1], lo, hi - lo, path))
    return out
'''


class OtherSide:
    """Runs Python children as a reader of another uid (nobody, when root) or, without root, as
    this uid; `daemon` is the daemon they reach."""

    def __init__(self, daemon, stage=None) -> None:
        self.daemon = daemon
        self.stage = stage

    def spawn(self, code: str, *args: str) -> subprocess.Popen:
        code = textwrap.dedent(MAPS) + textwrap.dedent(code)
        if self.stage is None:
            return subprocess.Popen([sys.executable, "-c", code, *args], env=child_env(self.daemon),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        script = self.stage / f"child{next_child()}.py"
        script.write_text(code)
        os.chown(script, NOBODY, NOBODY)
        return subprocess.Popen(
            [shutil.which("setpriv"), f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
             sys.executable, str(script), *args],
            cwd=self.stage, env=child_env(self.daemon, pythonpath=str(self.stage)),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


_children = iter(range(1 << 30))


def next_child() -> int:
    return next(_children)


@pytest.fixture
def other_side(own_daemon, daemon):
    if not ROOT:
        yield OtherSide(daemon)
        return
    assert shutil.which("setpriv"), "setpriv (util-linux) is needed to run a reader as nobody"
    d = own_daemon("--socket-mode", "0666", other_uid=NOBODY)
    with stage_for_uid(NOBODY, NOBODY) as stage:
        yield OtherSide(d, stage)


def finish(p: subprocess.Popen, timeout: float = 60) -> tuple[int, str, str]:
    try:
        out, err = p.communicate(timeout=timeout)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return p.returncode, out, err


def test_a_readers_frames_are_read_only_memory(other_side):
    d = other_side.daemon
    with shmlease.connect(d.socket) as c:
        ch = c.channel("roles", shape=(4096,), slots=4, mode=0o644)
        assert c.list() == [], "a channel makes no segments"
        w = ch.writer()
        reader = other_side.spawn('''
            c = shmlease.connect()
            ch = c.channel("roles")
            r = ch.reader()
            print("ready", flush=True)
            f = r.next(timeout=10)
            a = np.asarray(f)
            assert not a.flags.writeable and f.readonly and memoryview(f).readonly
            try:
                a.setflags(write=True)
                sys.exit("numpy made a reader's frame writable")
            except ValueError:
                pass
            assert int(a[0]) == 0x5A and int(a[-1]) == 0x5A
            frames = mappings("memfd:shmlease-channel")
            pages = mappings("memfd:shmlease-reader")
            assert [m[0] for m in frames] == ["r--s"], frames
            assert [m[0] for m in pages] == ["rw-s"], pages
            _, start, size, _ = frames[0]
            assert start <= a.ctypes.data < start + size
            # The kernel refuses to make the frames writable ...
            libc = ctypes.CDLL(None, use_errno=True)
            libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            assert libc.mprotect(start, size, 3) == -1 and ctypes.get_errno() == 13  # EACCES
            # ... to write them through /proc/self/mem ...
            try:
                with open("/proc/self/mem", "r+b", buffering=0) as mem:
                    mem.seek(a.ctypes.data)
                    mem.write(b"\\x00")
                sys.exit("wrote a reader's frame through /proc/self/mem")
            except OSError:
                pass
            # ... and, to another uid, to open them again for writing.
            if os.geteuid() != 0:
                try:
                    os.open(f"/proc/self/map_files/{start:x}-{start + size:x}", os.O_RDWR)
                    sys.exit("reopened the frames read-write")
                except OSError:
                    pass
            # A plain store through ctypes is a SIGSEGV: in a forked copy of this process.
            pid = os.fork()
            if pid == 0:
                # The kernel's default action, not faulthandler's or a sanitizer's report.
                import faulthandler, signal
                faulthandler.disable()
                signal.signal(signal.SIGSEGV, signal.SIG_DFL)
                ctypes.memset(a.ctypes.data, 0, 1)
                os._exit(0)  # not reached
            _, status = os.waitpid(pid, 0)
            # SIGSEGV; under ASan its handler reports the fault and exits 1 instead. Either way
            # the store never returned, and the byte below is unchanged.
            assert (os.WIFSIGNALED(status) and os.WTERMSIG(status) == 11) or (
                os.WIFEXITED(status) and os.WEXITSTATUS(status) != 0), status
            assert int(a[0]) == 0x5A
            print("ok", os.geteuid(), flush=True)
        ''')
        assert reader.stdout.readline().strip() == "ready", reader.stderr.read()
        w.wait_for_readers(1, timeout=10)
        f = w.claim(timeout=5)
        np.asarray(f)[:] = 0x5A
        w.publish(f)
        code, out, err = finish(reader)
        assert code == 0, (code, out, err)
        assert out.split() == ["ok", str(NOBODY if ROOT else os.geteuid())]
        # The frame the child tried to overwrite is intact for everyone.
        w.close()
        ch.remove()


VANDAL = '''
import random
name, seconds = sys.argv[1], float(sys.argv[2])
c = shmlease.connect()
ch = c.channel(name)
if os.geteuid() not in (0, ch.info()["owner_uid"]):  # another uid: mode 0o644 lets it only read
    try:
        ch.writer()
        sys.exit("became the writer with read permission only")
    except PermissionError:
        pass
rng = random.Random(os.getpid())
# Junk for its page: random bytes, and words of plausible values (holds of real slots, an old
# position), so that the writer's reader timeout has to act, not only its check of the page.
junk = [rng.randbytes(4096) for _ in range(4)]
junk += [b"".join(rng.randrange(16).to_bytes(8, "little") for _ in range(512)) for _ in range(4)]
attaches = evicted = frames = 0
until = time.monotonic() + seconds
said = False
r = held = got = None
while time.monotonic() < until:
    # The previous reader and its frame go first: their pages are unmapped then, not while it
    # writes to them.
    r = held = got = None
    try:
        r = ch.reader()
        attaches += 1
        if not said:
            print("ready", flush=True)
            said = True
        assert all(m[0] == "r--s" for m in mappings("memfd:shmlease-channel"))
        # Every shared mapping it may write: its own page, nothing else.
        writable = [m for m in mappings() if m[0] == "rw-s"]
        assert writable and all("memfd:shmlease-reader" in m[3] for m in writable), writable
        pages = [(lo, n) for _, lo, n, _ in writable]
        round_end = time.monotonic() + 0.15
        i = 0
        while time.monotonic() < round_end:
            for lo, n in pages:
                page = junk[i % len(junk)]
                for at in range(0, n, len(page)):
                    ctypes.memmove(lo + at, page, min(len(page), n - at))
            i += 1
            got = r.try_next()  # and reads along, holding what it got
            if got is not None:
                frames += 1
                held = got
    except shmlease.EvictedError:
        evicted += 1
    except shmlease.EndOfStreamError:
        break
print("ok", attaches, evicted, frames, flush=True)
'''


@pytest.mark.parametrize("policy", ["block", "latest"])
def test_a_scribbling_reader_breaks_neither_an_honest_reader_nor_the_writer(other_side, policy):
    """The issue's "done when", from Python: a reader of another uid writes junk into every
    shared mapping it has writable, again and again, while the writer publishes checksummed frames
    and an honest reader checks every one: no crash, no bad frame, the writer finishes."""
    d = other_side.daemon
    seconds = 3.0
    name = f"vandal-{policy}"
    c = shmlease.connect(d.socket)
    ch = c.channel(name, shape=(16384,), slots=4, policy=policy, reader_timeout=0.1, mode=0o644)
    vandal = other_side.spawn(VANDAL, name, str(seconds))
    assert vandal.stdout.readline().strip() == "ready", vandal.stderr.read()
    rows = np.random.default_rng(7).integers(0, 256, (64, 16384), dtype=np.uint8)
    sums = [zlib.crc32(row) for row in rows]
    honest_client = shmlease.connect(d.socket)
    honest = honest_client.channel(name).reader()
    w = ch.writer()
    published = [0]
    failures = []

    def write():
        try:
            until = time.monotonic() + seconds
            seq = 0
            while time.monotonic() < until:
                f = w.claim(timeout=5)
                seq += 1
                np.copyto(np.asarray(f), rows[seq % 64])
                assert w.publish(f, meta=struct.pack("<QI", seq, sums[seq % 64])) == seq
                published[0] = seq
        except BaseException as e:  # noqa: BLE001 - reported by the test below
            failures.append(e)
        finally:
            w.close()

    writer = threading.Thread(target=write)
    writer.start()
    good = bad = last = 0
    lost = []
    while True:
        try:
            f = honest.next(timeout=10)
        except shmlease.EndOfStreamError:
            break
        with f:
            seq, crc = struct.unpack("<QI", f.meta)
            if seq != f.seq or crc != zlib.crc32(f) or f.seq <= last:
                bad += 1
            else:
                good += 1
            if policy == "block" and f.seq != last + 1:
                lost.append((last, f.seq))
            last = f.seq
    writer.join(30)
    code, out, err = finish(vandal)
    assert not writer.is_alive() and failures == [], failures
    assert code == 0, f"the vandal crashed or found a hole: {code}\n{out}\n{err}"
    words = out.split()
    assert words[0] == "ok" and int(words[1]) >= 1, out
    assert bad == 0
    assert published[0] > 100, "the writer kept publishing"
    if policy == "block":
        assert lost == [] and good == published[0], "the honest reader got every frame"
    else:
        assert good > 0 and last == published[0], "the newest frame arrived"
    print(f"{policy}: {published[0]} frames published, {good} checked, vandal attached "
          f"{words[1]} times, evicted {words[2]} times")
    ch.remove()
    honest.close()
    honest_client.close()
    c.close()


def test_a_slow_reader_in_another_process_is_evicted_and_told_why(daemon, client, chan):
    name = chan.name()
    # Longer than the slices Python's claim() waits in: the eviction still happens.
    ch = client.channel(name, shape=(4,), dtype="I", slots=2, reader_timeout=0.25)
    assert ch.reader_timeout == 0.25 and ch.info()["reader_timeout"] == 0.25
    slow = spawn_python(daemon, f"""
        import sys, shmlease
        r = shmlease.connect().channel({name!r}).reader()
        print("ready", flush=True)
        sys.stdin.readline()  # reads nothing until told
        try:
            r.next(timeout=5)
            print("not evicted")
        except shmlease.EvictedError as e:
            assert isinstance(e, shmlease.Error) and e.errc_name == "evicted", e
            print("evicted", e)
        try:
            r.try_next()
            print("try_next after the eviction")
        except shmlease.EvictedError:
            print("still evicted")
    """, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert slow.stdout.readline().strip() == "ready"
        fast = ch.reader()
        w = ch.writer()
        w.wait_for_readers(2, timeout=5)
        got = []

        def consume():
            for f in fast:  # until the writer closes
                got.append(f.seq)
                f.release()

        consumer = threading.Thread(target=consume, daemon=True)
        t0 = time.monotonic()
        consumer.start()
        for _ in range(10):
            w.publish(w.claim(timeout=5))
        waited = time.monotonic() - t0
        w.close()
        consumer.join(10)
        assert 0.25 <= waited < 3, f"the writer waited {waited:.3f} s for the slow reader"
        assert got == list(range(1, 11)), "the other reader lost nothing"
        wait_until(lambda: ch.readers == 1, 5, "the evicted reader to be gone")
        slow.stdin.write("\n")
        slow.stdin.flush()
        out = slow.stdout.read()
        assert slow.wait(10) == 0
        lines = out.splitlines()
        assert lines[0].startswith("evicted ") and "longer than the reader timeout (250 ms)" in out
        assert lines[1] == "still evicted"
    finally:
        if slow.poll() is None:
            slow.kill()
            slow.wait()


def test_iterating_an_evicted_reader_raises_rather_than_stops(client, chan):
    ch = client.channel(chan.name(), shape=(4,), slots=2, reader_timeout=0.05)
    slow = ch.reader()
    w = ch.writer()
    for _ in range(3):  # the third claim waits for `slow`, then evicts it
        w.publish(w.claim(timeout=5))
    with pytest.raises(shmlease.EvictedError, match="reader timeout"):
        for _ in slow:
            pass
    with pytest.raises(shmlease.EvictedError):
        slow.try_next()
    assert ch.readers == 0
    w.publish(w.claim(timeout=1))  # the channel itself goes on
    slow.close()


def test_latest_never_waits_for_a_reader(client, chan):
    ch = client.channel(chan.name(), shape=(4,), slots=3, policy="latest", reader_timeout=0.05)
    idle = ch.reader()
    w = ch.writer()
    t0 = time.monotonic()
    for _ in range(50):
        w.publish(w.claim(timeout=1))
    assert time.monotonic() - t0 < 1
    f = idle.next(timeout=1)  # not evicted: it kept nobody waiting
    assert (f.seq, f.missed) == (50, 49)


def test_an_evicted_readers_frame_is_released_and_stays_mapped(client, chan):
    # Eviction frees the reader's slots for the writer: a frame it still holds says released (its
    # bytes may be overwritten) and exports no more, but an export made before stays mapped.
    ch = client.channel(chan.name(), shape=(64,), slots=2, reader_timeout=0.05)
    slow = ch.reader()
    w = ch.writer()
    f = w.claim(timeout=1)
    np.asarray(f)[:] = 1
    w.publish(f)
    held = slow.next(timeout=1)
    view = np.asarray(held)
    for _ in range(4):
        w.publish(w.claim(timeout=5))
    with pytest.raises(shmlease.EvictedError):
        slow.next(timeout=1)
    assert held.released
    with pytest.raises(ValueError, match="released or published frame"):
        np.asarray(held)
    assert view.shape == (64,) and int(view.max()) <= 255  # readable: no crash
    held.release()  # nothing left to protect: no BufferError
    del view
