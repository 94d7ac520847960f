"""Frame channels from Python: the API of issue 4, export rules on frames, both policies,
fileno() with select/asyncio, and the faults (a reader or the writer killed)."""

from __future__ import annotations

import asyncio
import os
import ctypes
import select
import signal
import subprocess
import threading
import time

import numpy as np
import pytest

import shmlease
from conftest import spawn_python


def test_issue_example_zero_copy_in_order(client, chan):
    ch = chan(shape=(8, 16, 3))
    r = client.channel(ch.name).reader()
    w = ch.writer()
    for i in range(3):
        f = w.claim(timeout=1.0)
        np.asarray(f)[:] = i + 1
        assert w.publish(f, meta=b"frame %d" % i) == i + 1
    w.close()
    got = []
    for f in r:
        x = np.asarray(f)
        assert x.shape == (8, 16, 3) and x.dtype == np.uint8
        assert not x.flags.writeable
        got.append((f.seq, int(x[0, 0, 0]), f.meta, f.missed))
        del x
        f.release()
    assert got == [(1, 1, b"frame 0", 0), (2, 2, b"frame 1", 0), (3, 3, b"frame 2", 0)]


def test_frame_export_rules(client, chan):
    ch = chan(dtype="f", shape=(2, 3))
    r = ch.reader()
    w = ch.writer()
    f = w.claim(timeout=1.0)
    assert not f.readonly
    a = np.asarray(f)
    a[:] = 1.5
    with pytest.raises(BufferError):
        w.publish(f)  # a live export could still change what readers see
    del a
    w.publish(f)
    assert f.released
    with pytest.raises(ValueError):
        memoryview(f)
    g = r.next(timeout=1.0)
    assert g.readonly and g.format == "f" and g.shape == (2, 3) and g.nbytes == 24
    assert not np.frombuffer(g, dtype=np.float32).flags.writeable
    view = (ctypes.c_byte * 128)()  # room for a Py_buffer
    with pytest.raises(BufferError, match="not writable"):
        ctypes.pythonapi.PyObject_GetBuffer(ctypes.py_object(g), view, 1)  # PyBUF_WRITABLE
    assert g.exports == 0
    m = memoryview(g)
    assert m.readonly and m.tolist() == [[1.5] * 3] * 2
    assert g.exports == 1
    with pytest.raises(BufferError):
        g.release()
    m.release()
    with g:
        b = np.asarray(g)
    assert g.released is True  # closed: no new export
    with pytest.raises(ValueError):
        memoryview(g)
    assert float(b.sum()) == 9.0  # still mapped and held while the array lives
    del b


def test_block_policy_backpressure(client, chan):
    ch = chan(slots=2)
    r = ch.reader()
    w = ch.writer()
    for _ in range(2):
        w.publish(w.claim(timeout=1.0))
    with pytest.raises(shmlease.LeaseTimeoutError):
        w.claim(timeout=0.05)
    assert r.next(timeout=1.0).seq == 1  # released at once (garbage)
    w.publish(w.claim(timeout=1.0))
    assert [r.next(timeout=1.0).seq for _ in range(2)] == [2, 3]
    with pytest.raises(TimeoutError):
        r.next(timeout=0.02)
    assert r.try_next() is None


def test_latest_policy_reports_missed(client, chan):
    ch = chan(policy="latest", slots=3)
    r = ch.reader()
    w = ch.writer()
    for i in range(10):
        f = w.claim(timeout=0)
        np.asarray(f)[:] = i
        w.publish(f)
    f = r.next(timeout=1.0)
    assert (f.seq, f.missed, int(np.asarray(f)[0, 0, 0])) == (10, 9, 9)


def test_second_writer_fails_clearly(client, chan):
    ch = chan()
    w = ch.writer()
    with pytest.raises(shmlease.LeaseTimeoutError, match="already has a writer"):
        ch.writer()
    w.close()
    ch.writer(timeout=1.0).close()


def test_open_mismatch_and_missing(client, chan):
    ch = chan(shape=(4,))
    with pytest.raises(shmlease.InvalidArgumentError):
        client.channel(ch.name, shape=(5,))
    with pytest.raises(ValueError):
        client.channel("x", shape=(4,), policy="fastest")
    with pytest.raises(shmlease.NotFoundError):
        client.channel("no-such-channel")
    opened = client.channel(ch.name)
    assert (opened.shape, opened.dtype, opened.slots, opened.policy) == ((4,), "B", 4, "block")


def test_fileno_select_and_asyncio(client, chan):
    ch = chan()
    r = ch.reader()
    w = ch.writer()
    fd = r.fileno()
    assert select.select([fd], [], [], 0.02)[0] == []
    w.publish(w.claim(timeout=1.0), meta=b"x")
    assert select.select([fd], [], [], 2.0)[0] == [fd]
    assert r.try_next().meta == b"x"
    assert select.select([fd], [], [], 0.02)[0] == []

    async def consume():
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        loop.add_reader(fd, ready.set)
        try:
            loop.call_later(0.05, lambda: w.publish(w.claim(timeout=1.0), meta=b"y"))
            await asyncio.wait_for(ready.wait(), 5)
            return r.try_next()
        finally:
            loop.remove_reader(fd)

    assert asyncio.run(consume()).meta == b"y"


def test_many_readers_in_other_processes(daemon, client, chan):
    ch = chan(slots=4)
    w = ch.writer()
    code = f"""
        import shmlease, numpy as np
        r = shmlease.connect().channel({ch.name!r}).reader()
        print("ready", flush=True)
        seqs = []
        for f in r:
            with f:
                assert int(np.asarray(f)[0, 0, 0]) == f.seq % 256
                seqs.append(f.seq)
        assert seqs == list(range(1, 201)), seqs[:10]
        print("ok", len(seqs))
    """
    procs = [spawn_python(daemon, code, stdout=subprocess.PIPE, text=True) for _ in range(3)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    w.wait_for_readers(3, timeout=5)
    for i in range(1, 201):
        f = w.claim(timeout=5)
        np.asarray(f)[:] = i % 256
        w.publish(f)
    w.close()
    for p in procs:
        out, _ = p.communicate(timeout=30)
        assert p.returncode == 0 and out.strip() == "ok 200"


def test_killed_writer_ends_stream_and_new_writer_takes_over(daemon, client, chan):
    ch = chan(slots=3)
    r = ch.reader()
    p = spawn_python(daemon, f"""
        import shmlease, numpy as np, time
        w = shmlease.connect().channel({ch.name!r}).writer()
        f = w.claim(timeout=1); np.asarray(f)[:] = 7; w.publish(f)
        half = w.claim(timeout=1); np.asarray(half)[:] = 99   # never published
        print("ready", flush=True); time.sleep(60)
    """, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    p.send_signal(signal.SIGKILL)
    p.wait()
    f = r.next(timeout=2)
    assert f.seq == 1 and int(np.asarray(f).max()) == 7
    f.release()
    t0 = time.monotonic()
    with pytest.raises(shmlease.EndOfStreamError):
        r.next(timeout=5)
    assert time.monotonic() - t0 < 1
    w = ch.writer(timeout=2)
    for _ in range(3):  # the half-written slot is free again
        w.publish(w.claim(timeout=1))
    assert [r.next(timeout=1).seq for _ in range(3)] == [2, 3, 4]


def test_killed_reader_does_not_stall_writer(daemon, client, chan):
    ch = chan(slots=2)
    w = ch.writer()
    p = spawn_python(daemon, f"""
        import shmlease, time
        r = shmlease.connect().channel({ch.name!r}).reader()
        print("ready", flush=True)
        held = [r.next(), r.next()]
        print("holding", flush=True); time.sleep(60)
    """, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    w.publish(w.claim(timeout=1))
    w.publish(w.claim(timeout=1))
    assert p.stdout.readline().strip() == "holding"
    p.send_signal(signal.SIGKILL)
    p.wait()
    for _ in range(5):
        w.publish(w.claim(timeout=2))
    assert w.readers == 0


def test_a_reader_waiting_for_the_channel_gets_the_first_frame(client, chan):
    name = chan.name()
    got = []

    def read():
        r = client.channel(name, wait=5.0).reader()
        got.append(r.next(timeout=5.0).seq)

    t = threading.Thread(target=read)
    t.start()
    time.sleep(0.05)  # the reader waits: the channel does not exist yet
    ch = client.channel(name, shape=(4,), slots=4)
    w = ch.writer()
    w.wait_for_readers(1, timeout=5.0)
    w.publish(w.claim(timeout=1.0))
    t.join(10)
    assert got == [1]


def test_wait_for_a_missing_channel_times_out(client, chan):
    name = chan.name()
    start = time.monotonic()
    with pytest.raises(TimeoutError, match=repr(name)):
        client.channel(name, wait=0.05)
    assert 0.05 <= time.monotonic() - start < 1.0
    with pytest.raises(shmlease.NotFoundError):
        client.channel(name, wait=0)


@pytest.mark.parametrize("wait,exc", [(-1, shmlease.InvalidArgumentError),
                                      (float("nan"), shmlease.InvalidArgumentError),
                                      ("1", TypeError), (True, TypeError)])
def test_bad_waits_raise_as_bad_lease_timeouts(client, chan, wait, exc):
    with pytest.raises(exc):
        client.channel(chan.name(), wait=wait)


def test_slots_and_policy_are_checked_only_when_given(client, chan):
    ch = chan(shape=(4,), slots=4, policy="latest")
    opened = client.channel(ch.name, shape=(4,))
    assert (opened.slots, opened.policy) == (4, "latest")
    assert client.channel(ch.name, shape=(4,), slots=None, policy=None).slots == 4
    with pytest.raises(shmlease.InvalidArgumentError, match="4 slots.*8 slots"):
        client.channel(ch.name, shape=(4,), slots=8)
    with pytest.raises(shmlease.InvalidArgumentError, match="latest.*block"):
        client.channel(ch.name, shape=(4,), policy="block")


def test_a_channel_cannot_take_a_segments_name(client, seg):
    # One namespace: the segment is refused, kept as it was, and nothing of the channel is left.
    name = seg()
    client.create(name, 64, dtype="B")
    with client.lease(name, "w") as lease:
        np.asarray(lease)[:] = 7
    with pytest.raises(shmlease.ExistsError, match=rf"a segment named '{name}' exists"):
        client.channel(name, shape=(4,))
    with pytest.raises(shmlease.ExistsError, match=rf"a segment named '{name}' exists"):
        client.channel(name, max_frame_bytes=64)
    assert [s["name"] for s in client.list()] == [name]
    assert [c["name"] for c in client.channels()] == []
    with client.lease(name) as lease:
        assert (np.asarray(lease) == 7).all()


def test_a_segment_cannot_take_a_channels_name(client, chan):
    ch = chan(shape=(4,))
    with pytest.raises(shmlease.ExistsError, match=rf"a channel named '{ch.name}' exists"):
        client.create(ch.name, 64)
    with pytest.raises(shmlease.ExistsError, match=rf"a channel named '{ch.name}' exists"):
        client.create(ch.name, 64, exist_ok=True)
    for call in (lambda: client.lease(ch.name), lambda: client.stat(ch.name),
                 lambda: client.remove(ch.name)):
        with pytest.raises(shmlease.NotFoundError, match=rf"\('{ch.name}' is a channel\)"):
            call()
    assert client.list() == []
    assert [c["name"] for c in client.channels()] == [ch.name]
    w = ch.writer()  # the channel is untouched
    w.publish(w.claim(timeout=1))


def test_a_segment_is_not_opened_or_removed_as_a_channel(client, seg):
    name = seg()
    client.create(name, 64)
    with pytest.raises(shmlease.NotFoundError, match=rf"no channel named '{name}' \('{name}' is a "
                                                     r"segment\)"):
        client.channel(name)
    # A channel removed by name while a segment took the name meanwhile: the segment stays.
    other = seg()
    ch = client.channel(other, shape=(4,))
    ch.remove()
    client.create(other, 64)
    with pytest.raises(shmlease.NotFoundError, match=rf"\('{other}' is a segment\)"):
        ch.remove()
    assert sorted(s["name"] for s in client.list()) == sorted([name, other])


def test_segments_named_like_the_old_channel_parts_are_ordinary(client, seg, chan):
    # Channels once made NAME.data and NAME.writer segments, and adopted (and removed) a user's.
    # Now they are names like any other: they neither disturb a channel NAME nor are touched by it.
    name = chan.name()
    parts = [f"{name}.data", f"{name}.writer"]
    for part in parts:
        client.create(part, 64, dtype="B")
        with client.lease(part, "w") as lease:
            np.asarray(lease)[:] = 7
    ch = client.channel(name, shape=(64,), slots=2)
    r = ch.reader()
    w = ch.writer()
    for i in range(4):
        f = w.claim(timeout=1)
        np.asarray(f)[:] = i
        w.publish(f)
        with r.next(timeout=1) as got:
            assert (np.asarray(got) == i).all()
    w.close()
    ch.remove()
    assert sorted(s["name"] for s in client.list()) == parts
    for part in parts:
        with client.lease(part) as lease:
            assert (np.asarray(lease) == 7).all()
        client.remove(part)


def test_variable_size_frames_carry_their_length(client, chan):
    name = chan.name()
    ch = client.channel(name, max_frame_bytes=1 << 20, slots=2)
    assert (ch.variable, ch.max_frame_nbytes, ch.frame_nbytes) == (True, 1 << 20, 1 << 20)
    assert (ch.shape, ch.dtype) == ((), "B")
    assert repr(ch).startswith(f"<shmlease.Channel '{name}' max_frame_nbytes=1048576 ")
    r = ch.reader()
    w = ch.writer()
    for length in (0, 1, 1000, 1 << 20):
        f = w.claim(timeout=1)
        assert (f.nbytes, len(f), f.shape) == (1 << 20, 1 << 20, (1 << 20,))  # the whole slot
        np.asarray(f)[:length] = length % 251
        w.publish(f, meta=b"%d" % length, length=length)
        with r.next(timeout=1) as got:
            a = np.asarray(got)
            assert (len(got), got.nbytes, got.shape, got.format) == (length, length, (length,), "B")
            assert a.dtype == np.uint8 and a.shape == (length,) and not a.flags.writeable
            assert (a == length % 251).all() and got.meta == b"%d" % length
            assert bytes(memoryview(got)) == bytes([length % 251]) * length
            del a
    f = w.claim(timeout=1)
    w.publish(f)  # length=None: the whole slot
    assert r.next(timeout=1).nbytes == 1 << 20
    # Opened by name it is the same kind of channel; a fixed shape over it is refused.
    opened = client.channel(name)
    assert (opened.variable, opened.max_frame_nbytes) == (True, 1 << 20)
    assert client.channel(name, max_frame_bytes=1 << 20).variable
    with pytest.raises(shmlease.InvalidArgumentError, match="frames of up to 1048576 bytes"):
        client.channel(name, shape=(16,))
    with pytest.raises(shmlease.InvalidArgumentError):
        client.channel(name, max_frame_bytes=1000)


def test_fixed_frames_take_only_their_own_length(client, chan):
    ch = chan(shape=(4, 4), dtype="f")
    assert (ch.variable, ch.max_frame_nbytes, ch.frame_nbytes) == (False, None, 64)
    r = ch.reader()
    w = ch.writer()
    f = w.claim(timeout=1)
    assert len(f) == 4  # as a memoryview: the first dimension
    for bad in (0, 8, 65):
        with pytest.raises(shmlease.InvalidArgumentError, match="not the channel's frame size"):
            w.publish(f, length=bad)
    assert not f.released  # a refused publish keeps the frame
    w.publish(f, length=64)
    got = r.next(timeout=1)
    assert (got.shape, got.nbytes, len(got)) == ((4, 4), 64, 4)


def test_info_and_channels_say_what_the_daemon_knows(client, chan):
    ch = client.channel(chan.name(), shape=(2, 3), dtype="f", slots=3, policy="latest",
                        reader_timeout=0.5, mode=0o640)
    v = client.channel(chan.name(), max_frame_bytes=4096)
    info = ch.info()
    assert info == {
        "name": ch.name, "format": "f", "shape": (2, 3), "variable": False, "frame_nbytes": 24,
        "slots": 3, "policy": "latest", "reader_timeout": 0.5, "nbytes": info["nbytes"],
        "writer_pid": None, "readers": 0, "holders": 0, "owner_uid": os.geteuid(), "owner_gid": os.getegid(),
        "mode": 0o640, "created_unix_ns": info["created_unix_ns"]}
    assert info["nbytes"] >= 3 * 24 and 0 < info["created_unix_ns"] <= time.time_ns()
    assert ch.reader_timeout == 0.5
    r = ch.reader()
    w = ch.writer()
    now = ch.info()
    assert (now["writer_pid"], now["readers"], ch.readers) == (os.getpid(), 1, 1)
    listed = {c["name"]: c for c in client.channels()}
    assert listed.keys() == {ch.name, v.name}
    assert listed[ch.name] == now
    assert listed[v.name]["variable"] and listed[v.name]["shape"] == ()
    assert listed[v.name]["frame_nbytes"] == 4096 and listed[v.name]["reader_timeout"] is None
    assert listed[v.name]["mode"] == 0o600 and listed[v.name]["slots"] == 8
    w.close()
    r.close()
    assert ch.info()["writer_pid"] is None


@pytest.mark.parametrize("kwargs,exc", [
    (dict(reader_timeout=-1), shmlease.InvalidArgumentError),
    (dict(reader_timeout=float("nan")), shmlease.InvalidArgumentError),
    (dict(reader_timeout=True), TypeError),
    (dict(reader_timeout="1"), TypeError),
    (dict(mode=-1), shmlease.InvalidArgumentError),
    (dict(mode=0o1000), shmlease.InvalidArgumentError),
    (dict(mode=1 << 70), shmlease.InvalidArgumentError),
    (dict(mode="0644"), TypeError),
    (dict(mode=True), TypeError),
    (dict(max_frame_bytes=0), shmlease.InvalidArgumentError),
    (dict(max_frame_bytes=-1), shmlease.InvalidArgumentError),
    (dict(max_frame_bytes=1 << 70), shmlease.InvalidArgumentError),
    (dict(max_frame_bytes=1.5), TypeError),
    (dict(max_frame_bytes=True), TypeError),
    (dict(max_frame_bytes=64, dtype="f"), shmlease.InvalidArgumentError),
    (dict(max_frame_bytes=64, shape=(4,)), shmlease.InvalidArgumentError),
    (dict(max_frame_bytes=1 << 62), shmlease.InvalidArgumentError),
    (dict(shape=(4,), slots=1), shmlease.InvalidArgumentError),
    (dict(shape=(4,), slots=65), shmlease.InvalidArgumentError),
    # Set at creation only: opening by name alone cannot honour them.
    (dict(reader_timeout=1.0), shmlease.InvalidArgumentError),
    (dict(mode=0o644), shmlease.InvalidArgumentError),
])
def test_bad_channel_arguments_raise(client, chan, kwargs, exc):
    with pytest.raises(exc):
        client.channel(chan.name(), **kwargs)
    assert client.channels() == []


@pytest.mark.parametrize("value", [None, 0, 0.0, float("inf"), 10 ** 400])
def test_no_reader_timeout(client, chan, value):
    ch = client.channel(chan.name(), shape=(4,), reader_timeout=value)
    assert ch.reader_timeout is None and ch.info()["reader_timeout"] is None


def test_no_misuse_of_writer_frames_crashes(client, chan):
    ch = client.channel(chan.name(), max_frame_bytes=64, slots=3)
    other = client.channel(chan.name(), max_frame_bytes=64, slots=3)
    r = ch.reader()
    w = ch.writer()
    ow = other.writer()
    f = w.claim(timeout=1)
    for bad, exc in ((-1, shmlease.InvalidArgumentError), (65, shmlease.InvalidArgumentError),
                     (1 << 70, shmlease.InvalidArgumentError), (1 << 64, shmlease.InvalidArgumentError),
                     ("1", TypeError), (1.0, TypeError), (True, TypeError), (b"", TypeError)):
        with pytest.raises(exc):
            w.publish(f, length=bad)
    with pytest.raises(TypeError):
        w.publish(f, b"", 3)  # length is keyword-only
    with pytest.raises(shmlease.InvalidArgumentError, match="256"):
        w.publish(f, meta=bytes(257))
    with pytest.raises(TypeError):
        w.publish(f, meta="text")
    with pytest.raises(TypeError):
        w.publish(np.zeros(4))
    with pytest.raises(shmlease.InvalidArgumentError, match="not a frame claimed from this writer"):
        ow.publish(f)  # another channel's writer
    m = memoryview(f)
    with pytest.raises(BufferError):
        w.publish(f, length=1)
    with pytest.raises(BufferError):
        f.release()
    m.release()
    assert w.publish(f, length=1) == 1
    for again in (lambda: w.publish(f), lambda: w.publish(f, length=1)):
        with pytest.raises(ValueError, match="not a claimed, unpublished frame"):
            again()
    with pytest.raises(ValueError):
        memoryview(f)
    got = r.next(timeout=1)
    with pytest.raises(ValueError, match="not a claimed, unpublished frame"):
        w.publish(got)  # a reader's frame
    g = w.claim(timeout=1)
    g.release()
    with pytest.raises(ValueError):
        w.publish(g)  # released
    h = w.claim(timeout=1)
    w.close()
    with pytest.raises(ValueError, match="closed shmlease.Writer"):
        w.publish(h)
    with pytest.raises(ValueError, match="closed shmlease.Writer"):
        w.claim(timeout=0)
    assert h.released  # its writer is gone: it holds no slot
    h.release()
    got.release()
    ow.close()


def test_a_closed_clients_channel_objects_raise_rather_than_crash(daemon, chan):
    name = chan.name()
    c = shmlease.connect(daemon.socket)
    ch = c.channel(name, max_frame_bytes=64, slots=3)
    r = ch.reader()
    w = ch.writer()
    w.publish(w.claim(timeout=1), length=3)
    got = r.next(timeout=1)
    kept = np.asarray(got)
    claimed = w.claim(timeout=1)
    c.close()
    assert got.released and claimed.released
    assert "readers=?" in repr(ch) and "released" in repr(got)
    # At once, not only when the daemon has seen the connection close.
    for call in (lambda: w.publish(claimed, length=1), lambda: w.claim(timeout=0),
                 lambda: w.wait_for_readers(1, timeout=0), lambda: r.next(timeout=0), r.try_next,
                 r.fileno):
        with pytest.raises(shmlease.ConnectionLostError, match="Client was closed"):
            call()
    for call in (ch.info, lambda: ch.readers, lambda: ch.writer(), ch.reader, ch.remove):
        with pytest.raises(shmlease.ConnectionLostError):
            call()
    with pytest.raises(ValueError, match="closed shmlease.Client"):
        c.channels()
    with pytest.raises(ValueError, match="released or published frame"):
        np.asarray(got)
    assert kept.tolist() == [0, 0, 0] and len(got) == 3  # still mapped
