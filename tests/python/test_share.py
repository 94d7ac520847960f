"""Client.share (a segment typed and filled from an array in one call) and Client.array (an
ndarray that owns its lease)."""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest

import shmlease
from conftest import wait_until


def _leases(client, name) -> tuple[int, int]:
    st = client.stat(name)
    return st["readers"], st["writers"]


def test_share_creates_a_typed_segment_with_the_arrays_bytes(client, seg):
    name = seg()
    src = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    info = client.share(name, src)
    assert (info["format"], info["shape"], info["size"]) == ("f", (2, 3, 4), src.nbytes)
    assert (info["readers"], info["writers"], info["mode"]) == (0, 0, 0o600)
    with client.lease(name) as lease:
        got = np.asarray(lease)
        assert got.dtype == np.float32 and np.array_equal(got, src)
        del got


@pytest.mark.parametrize("dtype", ["b", "B", "h", "H", "i", "I", "l", "L", "q", "Q", "e", "f",
                                   "d", "?"])
def test_share_every_segment_dtype(client, seg, dtype):
    name = seg()
    src = (np.arange(10) % 3).astype(dtype)
    client.share(name, src)
    a = client.array(name)
    assert a.dtype == np.dtype(dtype) and np.array_equal(a, src)


def test_share_copies_a_non_contiguous_array_in_c_order(client, seg):
    name = seg()
    base = np.arange(60, dtype=np.int64).reshape(6, 10)
    src = base[::2, ::-3].T  # neither C nor Fortran contiguous, negative strides
    info = client.share(name, src)
    assert info["shape"] == src.shape
    a = client.array(name)
    assert np.array_equal(a, src) and a.flags.c_contiguous
    client.share(seg(), [[1, 2], [3, 4]])  # anything numpy.asarray takes


@pytest.mark.parametrize("bad", [
    np.arange(4, dtype=">f4" if np.little_endian else "<f4"),
    np.array([1, "a", None], dtype=object),
    np.zeros(3, dtype=[("x", "f4"), ("y", "i4")]),
    np.zeros(3, dtype=np.complex64),
    np.zeros(3, dtype="V4"),
    np.array(["ab", "cd"]),
    np.zeros(3, dtype="datetime64[s]"),
    np.array(1.5),
    np.zeros((0, 3)),
], ids=["byteorder", "object", "structured", "complex", "void", "str", "datetime", "0-d",
        "empty"])
def test_share_refuses_what_a_segment_cannot_hold(client, seg, bad):
    name = seg()
    with pytest.raises(shmlease.InvalidArgumentError):
        client.share(name, bad)
    with pytest.raises(shmlease.NotFoundError):
        client.stat(name)  # nothing left behind


def test_share_refuses_non_native_byte_order_saying_so(client, seg):
    swapped = np.arange(4, dtype=np.float32).astype(np.dtype("f4").newbyteorder())
    with pytest.raises(shmlease.InvalidArgumentError, match="byte order"):
        client.share(seg(), swapped)


def test_share_exist_ok_fills_a_matching_segment_and_refuses_another(client, seg):
    name = seg()
    client.share(name, np.zeros((3, 4), np.float64))
    with pytest.raises(shmlease.ExistsError):
        client.share(name, np.ones((3, 4)))
    assert np.array_equal(client.array(name), np.zeros((3, 4)))
    client.share(name, np.full((3, 4), 7.0), exist_ok=True)
    assert np.array_equal(client.array(name), np.full((3, 4), 7.0))
    for other in (np.ones((4, 3)), np.ones((3, 4), np.float32)):
        with pytest.raises(shmlease.ExistsError, match="exists as"):
            client.share(name, other, exist_ok=True)
    assert np.array_equal(client.array(name), np.full((3, 4), 7.0))  # untouched, not removed


def test_share_passes_mode_and_huge(client, seg):
    info = client.share(seg(), np.ones(5), mode=0o640, huge=False)
    assert info["mode"] == 0o640 and info["page_size"] == 4096 and not info["huge_fallback"]
    with pytest.raises(shmlease.InvalidArgumentError):
        client.share(seg(), np.ones(5), mode=0o1000)
    with pytest.raises(shmlease.InvalidArgumentError):
        client.share(seg(), np.ones(5), huge="sometimes")


def test_share_copies_under_an_exclusive_lease(client, seg):
    name = seg()
    client.share(name, np.zeros(8))
    reader = client.lease(name)  # while a reader holds it, share(exist_ok) cannot start copying
    other = shmlease.connect(client.socket_path)
    done = threading.Event()
    t = threading.Thread(target=lambda: (other.share(name, np.ones(8), exist_ok=True),
                                         done.set()))
    t.start()
    assert not done.wait(0.3)
    assert np.array_equal(np.asarray(reader), np.zeros(8))
    reader.release()
    t.join(10)
    assert done.is_set()
    assert np.array_equal(client.array(name), np.ones(8))
    other.close()


def test_array_owns_its_lease_until_the_last_array_is_collected(client, seg):
    name = seg()
    client.share(name, np.arange(12.0).reshape(3, 4))
    a = client.array(name)
    assert not a.flags.writeable and _leases(client, name) == (1, 0)
    part = a[1:, ::2]
    del a
    gc.collect()
    assert _leases(client, name) == (1, 0)  # the slice still uses it
    assert part.tolist() == [[4.0, 6.0], [8.0, 10.0]]
    del part
    gc.collect()
    wait_until(lambda: _leases(client, name) == (0, 0), what="the lease's release")


def test_array_write_mode_and_lease_options(client, seg):
    name = seg()
    client.share(name, np.zeros(6, np.int32))
    w = client.array(name, "w", exclusive=True)
    assert w.flags.writeable
    w[:] = 5
    assert client.stat(name)["exclusive"]
    with pytest.raises(shmlease.LeaseTimeoutError):
        client.array(name, "r", timeout=0)
    del w
    gc.collect()
    r = client.array(name, "r", timeout=5, populate=True)
    assert r.tolist() == [5] * 6
    with pytest.raises(ValueError, match="read-only"):
        r[0] = 1


def test_array_errors(client, seg):
    with pytest.raises(shmlease.NotFoundError):
        client.array(seg())
    name = seg()
    client.share(name, np.zeros(2))
    with pytest.raises(shmlease.InvalidArgumentError):
        client.array(name, "x")
    with pytest.raises(TypeError):
        client.array(name, "r", colour="blue")
    assert _leases(client, name) == (0, 0)


def test_share_and_array_on_a_closed_client(daemon, seg):
    c = shmlease.connect(daemon.socket)
    c.close()
    with pytest.raises(ValueError, match="closed"):
        c.share(seg(), np.zeros(2))
    with pytest.raises(ValueError, match="closed"):
        c.array(seg())
