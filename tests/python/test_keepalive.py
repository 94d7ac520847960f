"""Objects that depend on a connection keep their Client alive (issue 11), `released` says whether
the daemon still counts a lease, and connect(reconnect_timeout=...)."""

from __future__ import annotations

import gc
import os
import re
import time
import weakref

import numpy as np
import pytest

import shmlease
from conftest import SHM_DIR, wait_until
from test_restart import kill, start_again


def test_readme_pattern_holds_an_exclusive_lease(daemon, client, seg, monkeypatch):
    # The pattern of README.md, with the socket from the environment as a user would have it.
    monkeypatch.setenv("SHMLEASE_SOCKET", daemon.socket)
    name = seg()
    client.create(name, shape=(4,), dtype="f")
    with shmlease.connect().lease(name, "w", exclusive=True) as lease:
        gc.collect()  # the temporary Client has no other reference: it must survive this
        assert not lease.released
        assert not lease.client.closed
        with pytest.raises(shmlease.LeaseTimeoutError):
            client.lease(name, "w", timeout=0)
        with pytest.raises(shmlease.LeaseTimeoutError):
            client.lease(name, "r", timeout=0)
        assert client.stat(name)["exclusive"] is True
        np.asarray(lease)[:] = 7.0
    assert lease.released
    # The block is over: the lease was given back, and the others get theirs.
    with client.lease(name, "r", timeout=5) as other:
        assert np.asarray(other).tolist() == [7.0] * 4


def test_deleting_everything_closes_the_connection(own_daemon):
    d = own_daemon()
    admin = shmlease.connect(d.socket)
    admin.create("k", 64)
    c = shmlease.connect(d.socket)
    client_ref = weakref.ref(c)
    lease = c.lease("k", "w")
    view = memoryview(lease)
    del c
    gc.collect()
    assert client_ref() is not None, "the lease must keep its Client alive"
    assert admin.stats()["leases"] == 1 and admin.stats()["connections"] == 2
    view[0] = 3
    del view
    assert client_ref() is not None
    del lease
    gc.collect()
    assert client_ref() is None, "the last dependent gone, the Client must go too"
    wait_until(lambda: admin.stats()["leases"] == 0, what="the daemon to drop the lease")
    wait_until(lambda: admin.stats()["connections"] == 1, what="the connection to close")
    with admin.lease("k", "r") as again:
        assert memoryview(again)[0] == 3
    admin.remove("k")
    admin.close()


def test_close_releases_and_refuses_new_exports(client, daemon, seg):
    name = seg()
    client.create(name, shape=(8,), dtype="d")
    c = shmlease.connect(daemon.socket)
    lease = c.lease(name, "w", exclusive=True)
    before = np.asarray(lease)  # an export made before close stays mapped and readable
    before[:] = 2.5
    assert not lease.released
    c.close()
    assert lease.released
    assert "released" in repr(lease)
    for export in (np.asarray, memoryview, bytes, lambda x: x.__array__(),
                   lambda x: x.__dlpack__(max_version=(1, 0))):
        with pytest.raises(ValueError, match=f"released lease of '{re.escape(name)}'"):
            export(lease)
    assert before.tolist() == [2.5] * 8
    # The daemon gave the lease back when the connection closed.
    wait_until(lambda: client.stat(name)["writers"] == 0, what="the lease to be released")
    with client.lease(name, "w", exclusive=True, timeout=5):
        pass
    # release() has nothing left to protect: it marks the lease released, even with an export.
    lease.release()
    assert lease.exports == 1
    del before
    assert lease.exports == 0


def test_release_still_refuses_while_counted(client, seg):
    name = seg()
    client.create(name, 16)
    lease = client.lease(name, "w")
    m = memoryview(lease)
    with pytest.raises(BufferError):
        lease.release()
    assert not lease.released
    m.release()
    lease.release()
    assert lease.released


def test_one_expression_channel_reader_keeps_its_client(daemon, client, chan):
    name = chan.name()
    w = client.channel(name, shape=(3,), dtype="f", slots=2).writer()
    r = shmlease.connect(daemon.socket).channel(name).reader()
    gc.collect()  # the temporary Client lives on in the reader's channel
    f = w.claim(timeout=5)
    np.asarray(f)[:] = [1, 2, 3]
    w.publish(f)
    got = r.next(timeout=5)
    assert np.asarray(got).tolist() == [1.0, 2.0, 3.0]
    got.release()
    w.close()
    r.close()


def test_frame_keeps_its_client_and_is_released_by_close(daemon, client, chan):
    name = chan.name()
    w = client.channel(name, shape=(2, 2), dtype="B", slots=2).writer()
    c = shmlease.connect(daemon.socket)
    client_ref = weakref.ref(c)
    r = c.channel(name).reader()
    del c
    f = w.claim(timeout=5)
    w.publish(f)
    frame = r.next(timeout=5)
    del r
    gc.collect()
    assert client_ref() is not None, "the frame must keep its Client alive"
    assert not frame.released
    assert np.asarray(frame).shape == (2, 2)
    client_ref().close()
    assert frame.released
    with pytest.raises(ValueError, match="released or published frame"):
        np.asarray(frame)
    with pytest.raises(ValueError, match="released or published frame"):
        memoryview(frame)
    del frame
    gc.collect()
    assert client_ref() is None
    w.close()


def test_channel_writer_reader_and_frames_keep_their_client(own_daemon):
    # Each of Channel, Writer, Reader and Frame alone keeps the connection open (the daemon keeps
    # knowing the writer and the reader by it); the last of them gone, the connection closes.
    d = own_daemon()
    admin = shmlease.connect(d.socket)
    admin.channel("keep", shape=(4,), slots=2)

    def connections():
        return admin.stats()["connections"]

    c = shmlease.connect(d.socket)
    client_ref = weakref.ref(c)
    ch = c.channel("keep")
    del c
    gc.collect()
    assert client_ref() is not None, "the Channel must keep its Client alive"
    w = ch.writer()
    r = ch.reader()
    del ch
    gc.collect()
    assert client_ref() is not None
    f = w.claim(timeout=5)
    np.asarray(f)[:] = 9
    w.publish(f)
    del f
    got = r.next(timeout=5)
    del r  # the frame keeps the reader's place (and the Client)
    gc.collect()
    assert client_ref() is not None and connections() == 2
    assert not got.released and np.asarray(got).tolist() == [9] * 4
    info = admin.channel("keep").info()
    assert (info["writer_pid"], info["readers"]) == (os.getpid(), 1)
    del got
    gc.collect()
    assert client_ref() is not None, "the Writer alone must keep its Client alive"
    wait_until(lambda: admin.channel("keep").info()["readers"] == 0, what="the reader to go")
    assert admin.channel("keep").info()["writer_pid"] == os.getpid()
    del w
    gc.collect()
    assert client_ref() is None, "the last dependent gone, the Client must go too"
    wait_until(lambda: connections() == 1, what="the connection to close")
    assert admin.channel("keep").info()["writer_pid"] is None
    admin.channel("keep").remove()
    admin.close()


def kill_and_clean(d) -> None:
    """SIGKILL the daemon and remove the shared memory it could not clean up."""
    kill(d)
    for name in d.shm_objects():
        (SHM_DIR / name).unlink(missing_ok=True)


def test_reconnect_timeout_gives_up_quickly(own_daemon, monkeypatch):
    monkeypatch.setenv("SHMLEASE_RECONNECT_TIMEOUT_MS", "60000")  # the argument must win
    d = own_daemon()
    c = shmlease.connect(d.socket, reconnect_timeout=0.2)
    c.create("x", 4096)
    lease = c.lease("x", "w")
    view = memoryview(lease)
    view[0] = 9
    kill_and_clean(d)
    start = time.monotonic()
    with pytest.raises(shmlease.ConnectionLostError):
        c.ping()
    took = time.monotonic() - start
    assert took < 1.0, f"gave up after {took:.2f} s, not ~0.2 s"
    assert view[0] == 9  # the mapping outlives the daemon
    del view, lease
    c.close()
    start_again(d)  # for the fixture's clean stop


def test_reconnect_timeout_zero_never_reconnects(own_daemon):
    d = own_daemon()
    c = shmlease.Client(d.socket, reconnect_timeout=0)
    c.ping()
    kill_and_clean(d)
    start_again(d)  # a daemon is back at once, but this client does not look for it
    with pytest.raises(shmlease.ConnectionLostError):
        c.ping()
    c.close()


def test_reconnect_timeout_long_enough_survives_a_restart(own_daemon, monkeypatch):
    monkeypatch.setenv("SHMLEASE_RECONNECT_TIMEOUT_MS", "0")  # the argument must win
    d = own_daemon()
    c = shmlease.connect(d.socket, reconnect_timeout=10)
    c.ping()
    kill_and_clean(d)
    start_again(d)
    c.ping()  # reconnected
    c.close()


@pytest.mark.parametrize("bad, error", [
    (-1, shmlease.InvalidArgumentError), (float("nan"), shmlease.InvalidArgumentError),
    (float("-inf"), shmlease.InvalidArgumentError), (-(10 ** 400), shmlease.InvalidArgumentError),
    (True, TypeError), ("1", TypeError), ([1], TypeError),
])
def test_reconnect_timeout_bad_values(daemon, bad, error):
    with pytest.raises(error):
        shmlease.connect(daemon.socket, reconnect_timeout=bad)


@pytest.mark.parametrize("huge", [1e300, float("inf"), 10 ** 400, 2 ** 63])
def test_reconnect_timeout_huge_values_connect(daemon, huge):
    with shmlease.connect(daemon.socket, reconnect_timeout=huge) as c:
        c.ping()


def test_reconnect_timeout_is_keyword_only(daemon):
    with pytest.raises(TypeError):
        shmlease.connect(daemon.socket, 1.0)
