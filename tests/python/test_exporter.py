"""The exporter behind Lease and Frame (pybindings/src/exporter.cpp): the buffer-request matrix on
frames, consumers (memoryview, bytes, hashlib, zlib), numpy's fallback on a released exporter,
dtype, and DLPack (counted exports, read-only memory only through the versioned capsule)."""

from __future__ import annotations

import ctypes
import gc
import hashlib
import math
import re
import struct
import zlib

import _testbuffer as tb
import numpy as np
import pytest

import shmlease
from conftest import run_python
from test_buffer_protocol import MODIFIERS, REQUESTS

# --- DLPack 1.0 structs (dlpack.h), to decode capsules as a C consumer would ------------------


class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


class DLPackVersion(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint32), ("minor", ctypes.c_uint32)]


class DLManagedTensorVersioned(ctypes.Structure):
    _fields_ = [("version", DLPackVersion), ("manager_ctx", ctypes.c_void_p),
                ("deleter", ctypes.c_void_p), ("flags", ctypes.c_uint64),
                ("dl_tensor", DLTensor)]


class DLManagedTensor(ctypes.Structure):
    _fields_ = [("dl_tensor", DLTensor), ("manager_ctx", ctypes.c_void_p),
                ("deleter", ctypes.c_void_p)]


READ_ONLY = 1  # DLPACK_FLAG_BITMASK_READ_ONLY
kDLCPU, kDLInt, kDLUInt, kDLFloat, kDLBool = 1, 0, 1, 2, 6

_api = ctypes.pythonapi
_api.PyCapsule_GetName.restype = ctypes.c_char_p
_api.PyCapsule_GetName.argtypes = [ctypes.py_object]
_api.PyCapsule_GetPointer.restype = ctypes.c_void_p
_api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
_api.PyCapsule_SetName.restype = ctypes.c_int
_api.PyCapsule_SetName.argtypes = [ctypes.py_object, ctypes.c_char_p]
_DELETER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_USED_NAMES = {b"dltensor": b"used_dltensor", b"dltensor_versioned": b"used_dltensor_versioned"}


def decode(capsule):
    """(name, managed struct, pointer) of a DLPack capsule."""
    name = _api.PyCapsule_GetName(capsule)
    ptr = _api.PyCapsule_GetPointer(capsule, name)
    kind = DLManagedTensorVersioned if name == b"dltensor_versioned" else DLManagedTensor
    return name, kind.from_address(ptr), ptr


def consume(capsule) -> tuple[DLManagedTensorVersioned | DLManagedTensor, callable]:
    """Does what a consumer does: renames the capsule used_..., and returns the tensor and a
    function that calls its deleter (through ctypes, which calls it without the GIL)."""
    name, managed, ptr = decode(capsule)
    # A capsule keeps the name's pointer, not a copy: the bytes must live as long as it does.
    assert _api.PyCapsule_SetName(capsule, _USED_NAMES[name]) == 0
    deleter = _DELETER(managed.deleter)
    return managed, lambda: deleter(ptr)


def address(x) -> int:
    return np.asarray(x).__array_interface__["data"][0]


# --- frames: a factory of channels and frames -----------------------------------------------


class FramePair:
    """A writer and a reader on one channel, to make writable and read-only frames."""

    def __init__(self, client, ch) -> None:
        self.writer = ch.writer()
        self.reader = client.channel(ch.name).reader()
        self.fmt = ch.dtype
        self.shape = tuple(ch.shape)

    def claimed(self):
        return self.writer.claim(timeout=5)

    def published(self, values: bytes | None = None):
        f = self.writer.claim(timeout=5)
        if values is not None:
            memoryview(f).cast("B")[:] = values
        self.writer.publish(f)
        return self.reader.next(timeout=5)

    def close(self) -> None:
        self.writer.close()
        self.reader.close()


FRAME_LAYOUTS = [("B", (24,)), ("f", (3, 4)), ("d", (2, 3, 4)), ("h", (1, 5)), ("q", (6, 1)),
                 ("?", (2, 2))]


@pytest.mark.parametrize("fmt, shape", FRAME_LAYOUTS, ids=lambda p: str(p))
@pytest.mark.parametrize("side", ["writer", "reader"])
def test_frame_request_matrix(client, chan, fmt, shape, side):
    pair = FramePair(client, chan(shape, fmt, slots=2))
    itemsize = struct.calcsize(fmt)
    count = math.prod(shape)
    payload = bytes((i * 37) % 2 if fmt == "?" else (i * 37) % 256
                    for i in range(count * itemsize))
    f = pair.published(payload) if side == "reader" else pair.claimed()
    if side == "writer":
        memoryview(f).cast("B")[:] = payload
    readonly = side == "reader"
    assert f.readonly is readonly and f.itemsize == itemsize and f.ndim == len(shape)
    strides, step = [], itemsize
    for dim in reversed(shape):
        strides.insert(0, step)
        step *= dim
    assert f.strides == tuple(strides)
    f_contiguous = sum(1 for d in shape if d > 1) <= 1
    outcomes = 0
    for rname, rflags in REQUESTS:
        for mname, mflags in MODIFIERS:
            req = rflags | mflags
            where = f"{rname}{mname} on a {side}'s frame {fmt}{shape}"

            def match(flag):
                return req & flag == flag

            if ((readonly and match(tb.PyBUF_WRITABLE))
                    or (match(tb.PyBUF_F_CONTIGUOUS) and not f_contiguous)
                    or (not match(tb.PyBUF_ND) and match(tb.PyBUF_FORMAT))):
                with pytest.raises(BufferError):
                    tb.ndarray(f, getbuf=req)
                assert f.exports == 0, where
                outcomes += 1
                continue
            nd = tb.ndarray(f, getbuf=req)
            assert f.exports == 1 and nd.obj is f, where
            assert nd.readonly == (False if match(tb.PyBUF_WRITABLE) else readonly), where
            assert nd.itemsize == itemsize and nd.nbytes == count * itemsize, where
            assert nd.suboffsets == () and nd.c_contiguous, where
            assert nd.format == (fmt if match(tb.PyBUF_FORMAT) else ""), where
            if match(tb.PyBUF_ND):
                assert nd.ndim == len(shape) and nd.shape == shape, where
            else:
                assert nd.ndim == 1 and nd.shape == (), where
            assert nd.strides == (tuple(strides) if match(tb.PyBUF_STRIDES) else ()), where
            assert nd.tobytes() == payload, where
            del nd
            assert f.exports == 0, where
            outcomes += 1
    assert outcomes == 60
    f.release()
    pair.close()


@pytest.mark.parametrize("mode", ["r", "w"])
def test_consumers_on_a_lease(client, seg, mode):
    name = seg()
    client.create(name, shape=(16,), dtype="H")
    data = struct.pack("16H", *range(1000, 1016))
    with client.lease(name, "w") as w:
        memoryview(w).cast("B")[:] = data
    with client.lease(name, mode) as lease:
        assert memoryview(lease).tobytes() == data
        assert memoryview(lease).tolist() == list(range(1000, 1016))
        assert bytes(lease) == data
        assert hashlib.sha256(lease).digest() == hashlib.sha256(data).digest()
        assert zlib.crc32(lease) == zlib.crc32(data)
        assert zlib.decompress(zlib.compress(lease)) == data
        assert lease.exports == 0  # every consumer gave its export back


@pytest.mark.parametrize("side", ["writer", "reader"])
def test_consumers_on_a_frame(client, chan, side):
    pair = FramePair(client, chan((4, 2), "i", slots=2))
    data = struct.pack("8i", *range(-4, 4))
    if side == "reader":
        f = pair.published(data)
    else:
        f = pair.claimed()
        memoryview(f).cast("B")[:] = data
    assert memoryview(f).tobytes() == data
    assert memoryview(f).tolist() == [[-4, -3], [-2, -1], [0, 1], [2, 3]]
    assert bytes(f) == data
    assert hashlib.md5(f).digest() == hashlib.md5(data).digest()
    assert zlib.adler32(f) == zlib.adler32(data)
    assert f.exports == 0
    f.release()
    pair.close()


# --- numpy: a released exporter raises instead of becoming an object array -------------------


def _buffer_error(obj) -> str:
    with pytest.raises(ValueError) as info:
        memoryview(obj)
    return str(info.value)


@pytest.mark.parametrize("how", ["release", "with", "close"])
def test_asarray_of_a_released_lease_raises(daemon, client, seg, how):
    name = seg()
    client.create(name, shape=(2, 3), dtype="f")
    if how == "release":
        lease = client.lease(name, "w")
        lease.release()
    elif how == "with":
        with client.lease(name, "w") as lease:
            pass
    else:
        c = shmlease.connect(daemon.socket)
        lease = c.lease(name, "w")
        c.close()
    assert lease.released
    message = _buffer_error(lease)
    assert name in message
    for convert in (np.asarray, np.array, np.asanyarray, lambda x: np.array(x, dtype=np.float64),
                    lambda x: x.__array__()):
        with pytest.raises(ValueError) as info:
            convert(lease)
        assert str(info.value) == message
    with pytest.raises(ValueError, match=re.escape(message)):
        np.frombuffer(lease, dtype=np.float32)


@pytest.mark.parametrize("how", ["release", "publish"])
def test_asarray_of_a_released_frame_raises(client, chan, how):
    pair = FramePair(client, chan((3,), "d", slots=2))
    f = pair.claimed()
    if how == "release":
        f.release()
    else:
        pair.writer.publish(f)
    assert f.released
    message = _buffer_error(f)
    for convert in (np.asarray, np.array, lambda x: x.__array__()):
        with pytest.raises(ValueError) as info:
            convert(f)
        assert str(info.value) == message
    r = pair.reader.next(timeout=5) if how == "publish" else None
    if r is not None:
        r.release()
        assert str(pytest.raises(ValueError, np.asarray, r).value) == _buffer_error(r)
    pair.close()


def test_asarray_is_zero_copy_and_counted(client, seg, chan):
    name = seg()
    client.create(name, shape=(4, 4), dtype="f")
    lease = client.lease(name, "w")
    a = np.asarray(lease)
    assert a.dtype == np.float32 and a.shape == (4, 4) and a.flags.writeable
    assert address(a) == address(memoryview(lease)) == address(np.frombuffer(lease, np.float32))
    assert lease.exports == 1
    b = lease.__array__()  # called directly, it is also a view
    assert address(b) == address(a) and b.flags.writeable and lease.exports == 2
    b[0, 0] = 3.0
    assert a[0, 0] == 3.0
    c = lease.__array__(np.float32)
    assert address(c) == address(a)
    del a, b, c
    assert lease.exports == 0
    lease.release()
    pair = FramePair(client, chan((5,), "H", slots=2))
    f = pair.published(struct.pack("5H", 1, 2, 3, 4, 5))
    x = np.asarray(f)
    assert x.tolist() == [1, 2, 3, 4, 5] and not x.flags.writeable
    assert address(x) == address(memoryview(f)) == address(f.__array__())
    del x
    f.release()
    pair.close()


def test_dtype_attribute(client, seg, chan):
    for fmt, expected in (("f", np.float32), ("B", np.uint8), ("q", np.int64), ("?", np.bool_)):
        name = seg()
        client.create(name, shape=(2,), dtype=fmt)
        with client.lease(name) as lease:
            assert isinstance(lease.dtype, np.dtype) and lease.dtype == np.dtype(expected)
            assert np.asarray(lease).dtype == lease.dtype
        assert lease.dtype == np.dtype(expected)  # still readable once released
    raw = seg()
    client.create(raw, 10)
    with client.lease(raw) as lease:
        assert lease.dtype == np.uint8
    pair = FramePair(client, chan((2, 2), "e", slots=2))
    f = pair.claimed()
    assert f.dtype == np.float16 and np.asarray(f).dtype == f.dtype
    f.release()
    pair.close()


def test_dtype_without_numpy_is_the_format(daemon):
    code = """
        import sys
        sys.modules["numpy"] = None  # import numpy now raises ImportError
        import shmlease
        with shmlease.connect() as c:
            c.create("nonumpy", shape=(3,), dtype="d")
            with c.lease("nonumpy", "w") as lease:
                print(repr(lease.dtype), lease.format, bytes(lease) == bytes(24))
                try:
                    lease.__array__()
                except ImportError:
                    print("__array__ needs numpy")
            c.remove("nonumpy")
    """
    result = run_python(daemon, code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["'d' d True", "__array__ needs numpy"]


# --- DLPack ----------------------------------------------------------------------------------


def test_from_dlpack_write_lease_zero_copy_and_counted(daemon, client, seg):
    name = seg()
    client.create(name, shape=(3, 4), dtype="f")
    lease = client.lease(name, "w")
    assert lease.__dlpack_device__() == (kDLCPU, 0)
    x = np.from_dlpack(lease)
    assert x.shape == (3, 4) and x.dtype == np.float32 and x.strides == (16, 4)
    assert address(x) == address(memoryview(lease))
    assert lease.exports == 1
    with pytest.raises(BufferError, match="export"):
        lease.release()
    assert not lease.released
    # Another client's lease writes; the DLPack array sees it (the same pages).
    with shmlease.connect(daemon.socket) as other:
        other_lease = other.lease(name, "w", timeout=5)  # shared write leases
        np.asarray(other_lease)[1, 2] = 42.0
        assert x[1, 2] == 42.0
        other_lease.release()
    del x
    gc.collect()
    assert lease.exports == 0
    lease.release()
    assert lease.released


def test_writes_through_a_dlpack_tensor_reach_shared_memory(daemon, client, seg):
    # numpy 1.24 makes every from_dlpack array read-only, so write as a C consumer would.
    name = seg()
    client.create(name, shape=(4,), dtype="i")
    lease = client.lease(name, "w")
    capsule = lease.__dlpack__()
    managed, delete = consume(capsule)
    tensor = managed.dl_tensor
    ctypes.memmove(tensor.data + 2 * 4, struct.pack("i", -77), 4)
    with shmlease.connect(daemon.socket) as other:
        with other.lease(name, "r", timeout=5) as r:
            assert memoryview(r)[2] == -77
    assert lease.exports == 1
    del capsule  # consumed: dropping the capsule must not run the deleter
    gc.collect()
    assert lease.exports == 1
    delete()  # the consumer is done (from ctypes: without the GIL)
    assert lease.exports == 0
    lease.release()


def test_dlpack_refused_on_a_read_lease_without_max_version(client, seg):
    name = seg()
    client.create(name, shape=(8,), dtype="B")
    lease = client.lease(name, "r")
    for call in (lambda: np.from_dlpack(lease), lambda: lease.__dlpack__(),
                 lambda: lease.__dlpack__(max_version=(0, 8))):
        with pytest.raises(BufferError) as info:
            call()
        message = str(info.value)
        assert "read-only" in message and "max_version=(1, 0)" in message
        assert "write lease" in message and "numpy.array" in message
    assert lease.exports == 0
    assert np.array(lease).tolist() == [0] * 8  # the copy the message suggests
    lease.release()


@pytest.mark.parametrize("fmt, shape, code", [("f", (2, 3), kDLFloat), ("q", (5,), kDLInt),
                                              ("H", (2, 1, 2), kDLUInt), ("?", (3,), kDLBool)])
def test_versioned_capsule_of_a_read_lease(client, seg, fmt, shape, code):
    name = seg()
    client.create(name, shape=shape, dtype=fmt)
    lease = client.lease(name, "r")
    capsule = lease.__dlpack__(max_version=(1, 0))
    name_, managed, _ = decode(capsule)
    assert name_ == b"dltensor_versioned"
    assert (managed.version.major, managed.version.minor) == (1, 0)
    assert managed.flags & READ_ONLY
    t = managed.dl_tensor
    itemsize = struct.calcsize(fmt)
    assert (t.device.device_type, t.device.device_id) == (kDLCPU, 0)
    assert t.ndim == len(shape)
    assert [t.shape[i] for i in range(t.ndim)] == list(shape)
    elements, step = [], 1
    for dim in reversed(shape):
        elements.insert(0, step)
        step *= dim
    assert [t.strides[i] for i in range(t.ndim)] == elements  # DLPack strides count elements
    assert (t.dtype.code, t.dtype.bits, t.dtype.lanes) == (code, itemsize * 8, 1)
    assert t.byte_offset == 0
    assert t.data == address(memoryview(lease))
    assert lease.exports == 1
    with pytest.raises(BufferError):
        lease.release()
    del capsule  # never consumed: its destructor runs the deleter
    gc.collect()
    assert lease.exports == 0
    lease.release()


def test_versioned_capsule_of_a_write_lease_is_writable(client, seg):
    name = seg()
    client.create(name, shape=(2,), dtype="d")
    with client.lease(name, "w") as lease:
        for max_version in ((1, 0), (1, 3), (2, 0)):
            capsule = lease.__dlpack__(max_version=max_version)
            name_, managed, _ = decode(capsule)
            assert name_ == b"dltensor_versioned" and managed.flags & READ_ONLY == 0
            del capsule, managed
        legacy = lease.__dlpack__(max_version=(0, 8))
        assert decode(legacy)[0] == b"dltensor"
        del legacy
        assert lease.exports == 0


def test_dlpack_arguments(client, seg):
    name = seg()
    client.create(name, 8)
    with client.lease(name, "w") as lease:
        with pytest.raises(ValueError, match="stream"):
            lease.__dlpack__(stream=1)
        with pytest.raises(BufferError, match="dl_device"):
            lease.__dlpack__(dl_device=(2, 0))
        with pytest.raises(BufferError, match="copy"):
            lease.__dlpack__(copy=True)
        with pytest.raises(TypeError):
            lease.__dlpack__(max_version=1)
        with pytest.raises(TypeError):
            lease.__dlpack__(None)  # keyword-only
        for ok in (lease.__dlpack__(dl_device=(1, 0), copy=False),
                   lease.__dlpack__(stream=None, max_version=None)):
            assert decode(ok)[0] == b"dltensor"
            del ok
        assert lease.exports == 0
    with pytest.raises(ValueError, match="released lease"):
        lease.__dlpack__(max_version=(1, 0))


def test_dlpack_on_frames(client, chan):
    pair = FramePair(client, chan((2, 3), "f", slots=2))
    f = pair.claimed()
    x = np.from_dlpack(f)
    assert x.shape == (2, 3) and address(x) == address(memoryview(f))
    memoryview(f).cast("B").cast("f", (2, 3))[1, 1] = 5.0
    assert x[1, 1] == 5.0
    assert f.exports == 1
    with pytest.raises(BufferError):
        pair.writer.publish(f)  # readers must not see it change
    with pytest.raises(BufferError):
        f.release()
    del x
    gc.collect()
    assert f.exports == 0
    pair.writer.publish(f)
    r = pair.reader.next(timeout=5)
    with pytest.raises(BufferError, match="read-only"):
        np.from_dlpack(r)
    capsule = r.__dlpack__(max_version=(1, 0))
    name, managed, _ = decode(capsule)
    assert name == b"dltensor_versioned" and managed.flags & READ_ONLY
    assert ctypes.c_float.from_address(managed.dl_tensor.data + 4 * 4).value == 5.0
    assert r.exports == 1
    with pytest.raises(BufferError):
        r.release()
    del capsule, managed
    gc.collect()
    assert r.exports == 0
    r.release()
    with pytest.raises(ValueError, match="released or published frame"):
        r.__dlpack__(max_version=(1, 0))
    pair.close()


def test_lease_outlives_its_dlpack_consumer_safely(client, seg):
    # The tensor holds the Lease object: dropping every other reference keeps the memory mapped.
    name = seg()
    client.create(name, shape=(3,), dtype="d")
    with client.lease(name, "w") as w:
        np.asarray(w)[:] = [1.5, 2.5, 3.5]
    x = np.from_dlpack(client.lease(name, "w"))
    gc.collect()
    assert x.tolist() == [1.5, 2.5, 3.5]
    assert client.stat(name)["writers"] == 1
    del x
    gc.collect()
    assert client.stat(name)["writers"] == 0
