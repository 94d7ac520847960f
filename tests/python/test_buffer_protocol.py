"""PEP 3118 conformance of shmlease.Lease, and its export lock counting.

The request matrix is CPython's own (Lib/test/test_buffer.py): 15 request kinds crossed with 4
modifiers, driven through the _testbuffer module, on read and write leases of several formats
and shapes. The expected outcome of each request follows the rules every exporter must obey
(shared/LESSONS.md, "CPython buffer rules").
"""

from __future__ import annotations

import copy
import ctypes
import gc
import math
import pickle
import struct
import weakref

import _testbuffer as tb
import pytest

import shmlease

REQUESTS = [
    ("INDIRECT", tb.PyBUF_INDIRECT), ("STRIDES", tb.PyBUF_STRIDES), ("ND", tb.PyBUF_ND),
    ("SIMPLE", tb.PyBUF_SIMPLE), ("C_CONTIGUOUS", tb.PyBUF_C_CONTIGUOUS),
    ("F_CONTIGUOUS", tb.PyBUF_F_CONTIGUOUS), ("ANY_CONTIGUOUS", tb.PyBUF_ANY_CONTIGUOUS),
    ("FULL", tb.PyBUF_FULL), ("FULL_RO", tb.PyBUF_FULL_RO), ("RECORDS", tb.PyBUF_RECORDS),
    ("RECORDS_RO", tb.PyBUF_RECORDS_RO), ("STRIDED", tb.PyBUF_STRIDED),
    ("STRIDED_RO", tb.PyBUF_STRIDED_RO), ("CONTIG", tb.PyBUF_CONTIG),
    ("CONTIG_RO", tb.PyBUF_CONTIG_RO),
]
MODIFIERS = [("", 0), ("|WRITABLE", tb.PyBUF_WRITABLE), ("|FORMAT", tb.PyBUF_FORMAT),
             ("|WRITABLE|FORMAT", tb.PyBUF_WRITABLE | tb.PyBUF_FORMAT)]
assert len(REQUESTS) == 15 and len(MODIFIERS) == 4

# (dtype given to create, shape given to create, size given to create)
LAYOUTS = [
    (None, None, 24),                     # raw bytes: format 'B', shape (24,)
    ("B", (4, 6), None),
    ("f", (3, 4), None),                  # not Fortran-contiguous
    ("d", (2, 3, 4), None),
    ("h", (1, 5), None),                  # C- and Fortran-contiguous
    ("q", (6,), None),
    ("b", (4, 1, 3), None),
    ("L", (2, 3), None),
    ("?", (2, 2), None),
    ("e", (8,), None),                    # memoryview.tolist() cannot read it in 3.11
    ("i", (1, 2, 1, 2, 1, 2, 1, 2), None),  # 8 dimensions, the most a segment may have
]


def _values(fmt: str, count: int) -> list:
    if fmt == "?":
        return [i % 3 == 0 for i in range(count)]
    if fmt in "efd":
        return [float(i) * 0.5 - 3.0 for i in range(count)]
    if fmt in "bhilq":
        return [(i * 7) % 100 - 50 for i in range(count)]
    return [(i * 13) % 200 for i in range(count)]


def _nest(flat: list, shape: tuple[int, ...]) -> list:
    if len(shape) == 1:
        return list(flat)
    step = len(flat) // shape[0]
    return [_nest(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


class Layout:
    """A segment filled with known values, and what its exports must look like."""

    def __init__(self, client, name: str, dtype, shape, size) -> None:
        client.create(name, size, shape=shape, dtype=dtype)
        self.name = name
        self.format = dtype or "B"
        self.itemsize = struct.calcsize(self.format)
        self.shape = tuple(shape) if shape else (size // self.itemsize,)
        self.ndim = len(self.shape)
        count = math.prod(self.shape)
        self.nbytes = count * self.itemsize
        strides, step = [], self.itemsize
        for dim in reversed(self.shape):
            strides.insert(0, step)
            step *= dim
        self.strides = tuple(strides)
        self.f_contiguous = sum(1 for d in self.shape if d > 1) <= 1
        self.flat = _values(self.format, count)
        self.bytes = struct.pack(f"{count}{self.format}", *self.flat)
        self.list = _nest(self.flat, self.shape)
        with client.lease(name, "w") as lease:
            memoryview(lease).cast("B")[:] = self.bytes


@pytest.fixture(params=LAYOUTS, ids=lambda p: f"{p[0] or 'raw'}{p[1] or ''}")
def layout(request, client, seg):
    dtype, shape, size = request.param
    return Layout(client, seg(), dtype, shape, size)


def _expect_error(lay: Layout, readonly: bool, req: int) -> bool:
    def match(flag):
        return req & flag == flag
    return ((readonly and match(tb.PyBUF_WRITABLE))
            or (match(tb.PyBUF_F_CONTIGUOUS) and not lay.f_contiguous)
            or (not match(tb.PyBUF_ND) and match(tb.PyBUF_FORMAT)))


@pytest.mark.parametrize("mode", ["r", "w"])
def test_request_matrix(client, layout, mode):
    lay = layout
    lease = client.lease(lay.name, mode)
    readonly = mode == "r"
    assert lease.readonly is readonly
    failures, successes = 0, 0
    for rname, rflags in REQUESTS:
        for mname, mflags in MODIFIERS:
            req = rflags | mflags
            where = f"{rname}{mname} on a {mode!r} lease of {lay.format}{lay.shape}"

            def match(flag):
                return req & flag == flag

            if _expect_error(lay, readonly, req):
                with pytest.raises(BufferError):
                    tb.ndarray(lease, getbuf=req)
                assert lease.exports == 0, where
                failures += 1
                continue
            nd = tb.ndarray(lease, getbuf=req)
            assert lease.exports == 1, where
            assert nd.obj is lease, where
            assert nd.readonly == (False if match(tb.PyBUF_WRITABLE) else readonly), where
            assert nd.itemsize == lay.itemsize, where  # the real item size, even without FORMAT
            assert nd.nbytes == lay.nbytes == math.prod(lay.shape) * lay.itemsize, where
            assert nd.suboffsets == (), where
            assert nd.c_contiguous, where
            if match(tb.PyBUF_FORMAT):
                assert nd.format == lay.format, where
            else:
                assert nd.format == "", where  # NULL: unsigned bytes
            if match(tb.PyBUF_ND):
                assert nd.ndim == lay.ndim and nd.shape == lay.shape, where
            else:
                assert nd.ndim == 1 and nd.shape == (), where  # shape NULL
            if match(tb.PyBUF_STRIDES):
                assert nd.strides == lay.strides, where
            else:
                assert nd.strides == (), where  # strides NULL
            assert nd.tobytes() == lay.bytes, where
            if match(tb.PyBUF_FORMAT):
                assert nd.tolist() == lay.list, where
            del nd
            assert lease.exports == 0, where
            successes += 1
    assert failures + successes == 60
    # A read lease refuses every writable request; a write lease grants them.
    assert successes >= (12 if readonly else 24)
    lease.release()


def test_memoryview_matches_layout(client, layout):
    lay = layout
    for mode in "rw":
        with client.lease(lay.name, mode) as lease:
            assert (lease.format, lease.itemsize, lease.shape, lease.strides, lease.nbytes,
                    lease.ndim) == (lay.format, lay.itemsize, lay.shape, lay.strides,
                                    lay.nbytes, lay.ndim)
            m = memoryview(lease)
            assert m.obj is lease
            assert m.format == lay.format and m.itemsize == lay.itemsize
            assert m.shape == lay.shape and m.strides == lay.strides and m.ndim == lay.ndim
            assert m.nbytes == lay.nbytes and m.readonly == (mode == "r")
            assert m.suboffsets == () and m.c_contiguous and m.contiguous
            assert m.f_contiguous == lay.f_contiguous
            assert m.tobytes() == lay.bytes
            if lay.format == "e":  # memoryview cannot unpack 'e' before 3.12: check through struct
                assert list(struct.unpack(f"{len(lay.flat)}e", m.tobytes())) == lay.flat
            else:
                assert m.tolist() == lay.list
            m.release()


# --- raw Py_buffer fields, through the C API ---

class Py_buffer(ctypes.Structure):
    _fields_ = [("buf", ctypes.c_void_p), ("obj", ctypes.c_void_p),
                ("len", ctypes.c_ssize_t), ("itemsize", ctypes.c_ssize_t),
                ("readonly", ctypes.c_int), ("ndim", ctypes.c_int),
                ("format", ctypes.c_char_p), ("shape", ctypes.POINTER(ctypes.c_ssize_t)),
                ("strides", ctypes.POINTER(ctypes.c_ssize_t)),
                ("suboffsets", ctypes.POINTER(ctypes.c_ssize_t)),
                ("internal", ctypes.c_void_p)]


# A handle of our own (not ctypes.pythonapi, whose function objects every importer shares): the
# prototypes set here must not change how other test modules call the same functions.
_capi = ctypes.PyDLL(None)
_get_buffer = _capi.PyObject_GetBuffer
_get_buffer.argtypes = [ctypes.py_object, ctypes.POINTER(Py_buffer), ctypes.c_int]
_get_buffer.restype = ctypes.c_int
_release_buffer = _capi.PyBuffer_Release
_release_buffer.argtypes = [ctypes.POINTER(Py_buffer)]
_release_buffer.restype = None


def test_raw_view_fields(client, seg):
    name = seg()
    client.create(name, shape=(3, 5), dtype="d")
    lease = client.lease(name, "r")

    # A failed request raises BufferError and leaves view->obj NULL.
    view = Py_buffer(obj=0x1234)
    with pytest.raises(BufferError, match=r"^Object is not writable\.$"):
        _get_buffer(lease, ctypes.byref(view), tb.PyBUF_WRITABLE)
    assert view.obj is None
    assert lease.exports == 0

    # PyBUF_SIMPLE: format, shape, strides and suboffsets NULL; itemsize stays the real one.
    view = Py_buffer()
    assert _get_buffer(lease, ctypes.byref(view), tb.PyBUF_SIMPLE) == 0
    assert view.obj == id(lease) and lease.exports == 1
    assert view.format is None and not view.shape and not view.strides
    assert not view.suboffsets and view.ndim == 1 and view.readonly == 1
    assert view.len == 3 * 5 * 8 and view.itemsize == 8
    _release_buffer(ctypes.byref(view))
    assert lease.exports == 0

    # PyBUF_ND|PyBUF_FORMAT: shape, no strides (C-contiguous); len == prod(shape) * itemsize.
    view = Py_buffer()
    assert _get_buffer(lease, ctypes.byref(view), tb.PyBUF_ND | tb.PyBUF_FORMAT) == 0
    assert view.format == b"d" and view.ndim == 2
    assert [view.shape[0], view.shape[1]] == [3, 5] and not view.strides
    assert view.len == view.shape[0] * view.shape[1] * view.itemsize
    _release_buffer(ctypes.byref(view))

    # PyBUF_FULL_RO: everything, still no suboffsets.
    view = Py_buffer()
    assert _get_buffer(lease, ctypes.byref(view), tb.PyBUF_FULL_RO) == 0
    assert [view.strides[0], view.strides[1]] == [40, 8] and not view.suboffsets
    _release_buffer(ctypes.byref(view))
    assert lease.exports == 0

    lease.release()
    view = Py_buffer(obj=0x1234)
    with pytest.raises(ValueError, match="released"):
        _get_buffer(lease, ctypes.byref(view), tb.PyBUF_SIMPLE)
    assert view.obj is None


# --- export lock counting ---

def test_release_with_exports_raises_and_changes_nothing(client, seg):
    name = seg()
    client.create(name, shape=(100,), dtype="i")
    lease = client.lease(name, "w")
    m = memoryview(lease)
    sub = m[10:20]  # a slice is zero-copy and keeps the export
    m.release()
    assert lease.exports == 1
    with pytest.raises(BufferError, match="export"):
        lease.release()
    assert not lease.released and lease.exports == 1
    assert client.stat(name)["writers"] == 1
    sub[0] = 42  # still usable after the refused release
    assert memoryview(lease)[10] == 42
    sub.release()
    assert lease.exports == 0
    lease.release()
    assert lease.released and client.stat(name)["writers"] == 0
    lease.release()  # twice: nothing
    with pytest.raises(ValueError, match="released"):
        memoryview(lease)
    # Attributes stay readable after release.
    assert (lease.name, lease.mode, lease.shape, lease.format) == (name, "w", (100,), "i")


def test_exports_are_counted_per_consumer(client, seg):
    name = seg()
    client.create(name, 64)
    with client.lease(name) as lease:
        views = [memoryview(lease) for _ in range(5)]
        assert lease.exports == 5
        copy = bytes(lease)  # bytes() takes and returns an export
        assert len(copy) == 64 and lease.exports == 5
        for v in views:
            v.release()
        assert lease.exports == 0


def test_with_block_defers_release_while_exports_live(client, seg):
    name = seg()
    client.create(name, 4096)
    with client.lease(name, "w") as lease:
        m = memoryview(lease)
        m[0] = 7
    # The view made inside the block still uses the memory: the lease stays held, but no new
    # export can be made.
    assert lease.released and lease.exports == 1
    assert client.stat(name)["writers"] == 1
    with pytest.raises(ValueError):
        memoryview(lease)
    assert m[0] == 7
    m.release()
    lease.release()  # now it can go
    assert client.stat(name)["writers"] == 0


def test_with_block_deferred_release_happens_at_gc(client, seg):
    name = seg()
    client.create(name, 4096)
    with client.lease(name, "w") as lease:
        m = memoryview(lease)
    del lease
    assert client.stat(name)["writers"] == 1
    m.release()  # drops the last reference: the lease object is deallocated and released
    assert client.stat(name)["writers"] == 0


def test_lease_released_by_garbage_collection(client, seg):
    name = seg()
    client.create(name, 4096)
    lease = client.lease(name, "r")
    ref = weakref.ref(lease)
    cycle = [lease]
    cycle.append(cycle)  # only the cycle collector can free it
    del lease
    assert client.stat(name)["readers"] == 1
    del cycle
    gc.collect()
    assert ref() is None
    assert client.stat(name)["readers"] == 0


def test_writable_request_on_read_lease(client, seg):
    name = seg()
    client.create(name, 16)
    with client.lease(name, "r") as lease:
        m = memoryview(lease)
        assert m.readonly
        with pytest.raises(TypeError):
            m[0] = 1
        m.release()
        with pytest.raises(BufferError, match=r"^Object is not writable\.$"):
            tb.ndarray(lease, getbuf=tb.PyBUF_WRITABLE)
        assert lease.exports == 0


def test_lease_cannot_be_made_subclassed_or_pickled(client, seg):
    with pytest.raises(TypeError):
        shmlease.Lease()
    with pytest.raises(TypeError):
        type("Sub", (shmlease.Lease,), {})
    name = seg()
    client.create(name, 8)
    with client.lease(name) as lease:
        with pytest.raises(TypeError):
            pickle.dumps(lease)
        with pytest.raises(TypeError):
            copy.copy(lease)
        assert lease.exports == 0
