"""numpy through the buffer protocol: asarray, frombuffer and ndarray(buffer=lease)."""

from __future__ import annotations

import numpy as np
import pytest

import shmlease
from conftest import run_python

DTYPES = [np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64,
          np.longlong, np.float16, np.float32, np.float64, np.bool_]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_asarray_matches_segment(client, seg, dtype):
    name = seg()
    shape = (3, 4, 5)
    info = client.create(name, shape=shape, dtype=dtype)
    assert info["format"] == np.dtype(dtype).char and info["shape"] == shape
    with client.lease(name, "w") as w:
        a = np.asarray(w)
        assert a.dtype == np.dtype(dtype) and a.shape == shape
        assert a.strides == np.empty(shape, dtype).strides
        assert a.flags.writeable and a.flags.c_contiguous
        assert w.exports == 1
        a[...] = (np.arange(a.size) % 2).reshape(shape).astype(dtype)
        del a
        assert w.exports == 0
    with client.lease(name, "r") as r:
        b = np.asarray(r)
        assert b.dtype == np.dtype(dtype) and b.shape == shape
        assert not b.flags.writeable
        np.testing.assert_array_equal(b, (np.arange(b.size) % 2).reshape(shape).astype(dtype))
        with pytest.raises(ValueError, match="read-only"):
            b[0, 0, 0] = 1
        del b


def test_asarray_is_zero_copy(client, seg):
    name = seg()
    client.create(name, shape=(1000,), dtype="d")
    with client.lease(name, "w") as w1, client.lease(name, "w") as w2:
        a1, a2 = np.asarray(w1), np.asarray(w2)
        a1[:] = np.arange(1000)
        assert a2[999] == 999.0  # the same pages, seen through a second lease
        m = memoryview(w1)
        assert a1.__array_interface__["data"][0] != 0
        a1[5] = -1.5
        assert m[5] == -1.5
        m.release()
        del a1, a2


def test_slices_keep_the_lease_locked(client, seg):
    name = seg()
    client.create(name, shape=(100,), dtype="f")
    lease = client.lease(name, "w")
    part = np.asarray(lease)[10:20]  # the full array is gone, its slice is not
    assert lease.exports == 1
    with pytest.raises(BufferError):
        lease.release()
    part[:] = 3.0
    del part
    assert lease.exports == 0
    lease.release()
    assert client.stat(name)["writers"] == 0


def test_frombuffer_holds_the_export(client, seg):
    name = seg()
    client.create(name, shape=(8, 8), dtype="f")
    lease = client.lease(name, "w")
    a = np.frombuffer(lease, dtype=np.float32)
    assert a.shape == (64,) and a.flags.writeable
    assert lease.exports == 1
    with pytest.raises(BufferError):
        lease.release()
    a[:] = 2.0
    del a
    lease.release()
    with client.lease(name, "r") as r:
        ro = np.frombuffer(r, dtype=np.float32)
        assert not ro.flags.writeable and (ro == 2.0).all()
        del ro


def test_ndarray_buffer_keeps_a_reference_not_an_export(client, seg):
    name = seg()
    client.create(name, shape=(16,), dtype="i")
    lease = client.lease(name, "w")
    a = np.ndarray((16,), np.int32, buffer=lease)
    assert lease.exports == 0  # numpy released its export at once...
    assert a.base is lease     # ...but keeps the lease object alive
    a[:] = np.arange(16)
    lease.release()            # allowed: no export
    assert client.stat(name)["writers"] == 0
    assert a.sum() == 120      # still mapped: the Lease object still exists
    r = client.lease(name, "r")
    ro = np.ndarray((16,), np.int32, buffer=r)  # numpy falls back to a read-only buffer
    assert not ro.flags.writeable and ro[15] == 15
    del ro
    r.release()


def test_ndarray_buffer_after_release_remove_and_del_cannot_crash(daemon, seg):
    # In a child: a crash there is a failed test, not a dead test run.
    name = seg()
    result = run_python(daemon, f"""
        import gc, numpy as np, shmlease
        c = shmlease.connect()
        c.create({name!r}, shape=(1 << 20,), dtype="d")      # 8 MiB
        lease = c.lease({name!r}, "w")
        a = np.ndarray((1 << 20,), np.float64, buffer=lease)
        a[:] = 1.5
        lease.release()
        c.remove({name!r})          # the daemon frees the segment now: no lease holds it
        c.ping()                    # let the client see the daemon's 'segment gone' notice
        assert {name!r} not in [s["name"] for s in c.list()]
        del lease                   # the array still references the Lease object
        gc.collect()
        assert a.sum() == 1.5 * (1 << 20), a.sum()
        a[-1] = 7.0                 # still writable memory, now private to this process
        assert a[-1] == 7.0
        def mapped():
            with open("/proc/self/maps") as f:
                return sum(1 for line in f if {daemon.prefix!r} in line)
        assert mapped() >= 1
        del a
        gc.collect()
        c.ping()
        assert mapped() == 0, "mapping leaked after the last reference went"
        print("ok")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_client_close_keeps_arrays_readable(daemon, seg):
    name = seg()
    result = run_python(daemon, f"""
        import numpy as np, shmlease
        c = shmlease.connect()
        c.create({name!r}, shape=(1000,), dtype="q")
        lease = c.lease({name!r}, "w")
        a = np.asarray(lease)
        a[:] = 9
        c.close()                       # the daemon drops every lease of this connection
        assert int(a.sum()) == 9000     # the mapping is still there
        del a
        lease.release()                 # a no-op now, and no error
        with shmlease.connect() as c2:
            st = c2.stat({name!r})
            assert st["writers"] == 0 and st["readers"] == 0, st
        print("ok")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.parametrize("dtype,char", [
    (np.float32, "f"), (np.dtype("f8"), "d"), ("float32", "f"), ("int64", "l"),
    (np.bool_, "?"), (np.uint8, "B"), (float, "d"), (np.float16, "e"), ("@h", "h"),
])
def test_create_accepts_numpy_dtypes(client, seg, dtype, char):
    info = client.create(seg(), shape=(2, 3), dtype=dtype)
    assert info["format"] == char
    assert info["size"] == 6 * np.dtype(char).itemsize


@pytest.mark.parametrize("dtype", [
    np.complex64, ">f4", np.dtype([("a", "f4"), ("b", "i4")]), np.dtype(("f4", 3)),
    object, "U4", "x", "F", "Z", "ff",
])
def test_create_refuses_unsupported_dtypes(client, seg, dtype):
    name = seg()
    with pytest.raises(shmlease.InvalidArgumentError) as info:
        client.create(name, shape=(4,), dtype=dtype)
    assert isinstance(info.value, ValueError)
    assert info.value.errc_name == "invalid_argument"
    with pytest.raises(shmlease.NotFoundError):
        client.stat(name)


def test_dtype_that_numpy_does_not_understand(client, seg):
    with pytest.raises(TypeError):
        client.create(seg(), shape=(4,), dtype=object())
