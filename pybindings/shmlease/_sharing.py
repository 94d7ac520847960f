"""numpy arrays of leases and frames travel between processes by reference; Client.share and
Client.array.

Ownership: a pickled lease-backed array holds nothing; the process that unpickles it leases the
segment itself, through one Client per (process, socket) kept here, and each rebuilt array keeps
its own Lease alive through its base, so that lease is released when the last array using it goes.
An array of a reader's Frame is rebuilt the same way on a Frame this process holds
(Channel._hold: the same slot, through a holder place of this process's), released with the last
array that uses it.

What travels (see docs/PYTHON.md, "Arrays between processes"): the daemon's socket path, the
segment's name and identity (stat()["id"] and ["created_unix_ns"]), the lease mode, the byte
offset of the array's data in the segment, shape, strides, dtype and the writeable flag. Never the
bytes. The receiver checks the identity and bounds-checks every field against its own lease: a
pickle is input from another process.

The reducer is registered with multiprocessing's ForkingPickler (as torch.multiprocessing does),
so multiprocessing.Pool, Process arguments, Queue, Pipe and concurrent.futures.ProcessPoolExecutor
use it; pickle.dumps() does not (a plain pickle may be stored and read after the lease is gone).
`import shmlease` imports neither numpy nor multiprocessing: registration waits until both are.
"""

from __future__ import annotations

import _thread
import os
import sys

from ._shmlease import (
    ExistsError,
    Frame,
    InvalidArgumentError,
    Lease,
    NotFoundError,
    connect,
)

# Bumped whenever the tuple that travels changes; a receiver refuses versions it does not know.
_WIRE_VERSION = 1
# How long a receiver waits for its lease (seconds). The sender holds its own lease while the
# array is in flight, so only an exclusive lease someone else holds or waits for can delay it;
# waiting forever could deadlock a sender that waits for the receiver's reply.
LEASE_TIMEOUT_S = 10.0
# Struct format characters a segment can hold (the daemon's list, as Client.create documents it).
_SEGMENT_FORMATS = frozenset("bBhHiIlLqQefd?")
# Errc codes of common/include/shmlease/errc.hpp, for errors raised here rather than in C++.
_ERRC = {"invalid_argument": 5, "not_found": 6, "already_exists": 7}
_MAX_BASE_DEPTH = 64

_lock = _thread.allocate_lock()
_clients: dict[str, object] = {}      # socket path -> Client of this process
_clients_pid = os.getpid()
# (socket, name, segment id, created_unix_ns, mode) -> a flat uint8 array of one Lease of this
# process; arrays rebuilt from the same segment share that lease while any of them lives.
_flat_views = None  # a weakref.WeakValueDictionary, made on first use (import cost)
# (socket, channel id, created_unix_ns, slot, seq) -> a flat uint8 array of one Frame this process
# holds; arrays rebuilt from the same frame share it. And (socket, channel name) -> (Client,
# Channel handle): frames held through one handle share one holder place while any of them lives.
_held_views = None
_channels: dict[tuple, tuple] = {}
_registered = False


def _after_fork_in_child() -> None:
    # Another thread may have held the lock at fork (a Pool's result handler unpickling): the
    # child's copy would never be released.
    global _lock
    _lock = _thread.allocate_lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _error(cls, errc_name: str, message: str):
    """An instance of a shmlease error class carrying the attributes the C++ side sets."""
    exc = cls(message)
    exc.code = _ERRC[errc_name]
    exc.errc_name = errc_name
    return exc


def _pickling_error(message: str):
    import pickle
    return pickle.PicklingError(message)


# --- sending side ---------------------------------------------------------------------------

def _owner_of(arr):
    """The Lease or Frame whose memory `arr` views, and the memoryview met on the way (or None).

    Walks ndarray.base and memoryview.obj: numpy 1.24 puts a memoryview of the exporter
    (np.asarray, np.frombuffer) or the exporter itself (np.ndarray(buffer=lease)) at the end of
    the chain. Returns (None, None) for memory that is neither's.
    """
    import numpy as np
    obj = arr
    view = None
    for _ in range(_MAX_BASE_DEPTH):
        if isinstance(obj, (Lease, Frame)):
            return obj, view
        if isinstance(obj, np.ndarray):
            obj = obj.base
        elif isinstance(obj, memoryview):
            view = obj  # the last one met is the memoryview of the exporter itself
            obj = obj.obj
        else:
            return None, None
    return None, None


def _buffer_address(owner, view, what: str) -> int:
    """The address of the first byte of the owner's buffer in this process."""
    import numpy as np
    # A contiguous memoryview as long as the whole buffer can only start at its first byte (numpy
    # makes such a view of the exporter itself); it stays usable after the owner's with block ends.
    if view is not None and view.contiguous and view.nbytes == owner.nbytes:
        return np.frombuffer(view, np.uint8).__array_interface__["data"][0]
    if owner.released:
        raise _pickling_error(
            f"cannot send an array of the released {what} by reference: its memory is no longer "
            "held. Keep "
            "it (and its arrays) until the receiver has it, or send a copy (arr.copy()).")
    return np.frombuffer(owner, np.uint8).__array_interface__["data"][0]


def _offset_in(arr, owner, view, what: str) -> int:
    offset = arr.__array_interface__["data"][0] - _buffer_address(owner, view, what)
    if not 0 <= offset <= owner.nbytes:
        raise _pickling_error(f"array data is outside the {what}")
    return offset


def _reduce_frame_array(arr, frame, view):
    try:
        socket, channel, channel_id, created_ns, slot, seq = frame._location()
    except (ValueError, InvalidArgumentError) as e:
        raise _pickling_error(
            f"cannot send an array of this frame to another process by reference: {e}. Send a "
            "copy (arr.copy()).") from None
    what = f"frame {seq} of channel '{channel}'"
    return _rebuild_frame, (_WIRE_VERSION, socket, channel, channel_id, created_ns, slot, seq,
                            _offset_in(arr, frame, view, what), arr.shape, arr.strides,
                            arr.dtype)


def _reduce_ndarray(arr):
    owner, view = _owner_of(arr)
    if owner is None:
        return arr.__reduce_ex__(4)  # an ordinary array: by value, as before
    if isinstance(owner, Frame):
        return _reduce_frame_array(arr, owner, view)
    lease = owner
    if lease.exclusive:
        raise _pickling_error(
            f"cannot send an array of an exclusive lease of '{lease.name}' to another process: "
            "the receiver would have to lease the segment itself, which the exclusive lease "
            "forbids while this process holds it (it would wait forever). Use a shared lease "
            "(exclusive=False), or send a copy (arr.copy()).")
    socket = lease.socket_path
    if not socket:
        raise _pickling_error(f"the lease of '{lease.name}' does not know its daemon's socket")
    offset = _offset_in(arr, lease, view, f"lease of '{lease.name}'")
    info = lease.info
    return _rebuild, (_WIRE_VERSION, socket, lease.name, info["id"], info["created_unix_ns"],
                      lease.mode, offset, arr.shape, arr.strides, arr.dtype,
                      bool(arr.flags.writeable))


# The reducer needs both; registering imports neither (multiprocessing.reduction costs ~10 ms).
_NEEDED = ("numpy", "multiprocessing.reduction")


def register() -> None:
    """Registers the ndarray reducer with multiprocessing's ForkingPickler (idempotent).

    Imports numpy and multiprocessing.reduction. `import shmlease` calls it once both are
    imported (at once if they already are, else through _PostImportHook).
    """
    global _registered
    if _registered:
        return
    import numpy as np
    from multiprocessing.reduction import ForkingPickler
    ForkingPickler.register(np.ndarray, _reduce_ndarray)
    _registered = True


class _PostImportHook:
    """A sys.meta_path finder that runs register() right after the import of the last of
    _NEEDED finishes, then leaves sys.meta_path. It finds nothing itself: it wraps the loader
    that the other finders return."""

    def __init__(self) -> None:
        self._searching = False

    def find_spec(self, fullname, path, target=None):
        if fullname not in _NEEDED or self._searching:
            return None
        self._searching = True
        try:
            spec = None
            for finder in list(sys.meta_path):
                find = getattr(finder, "find_spec", None)
                if finder is self or find is None:
                    continue
                spec = find(fullname, path, target)
                if spec is not None:
                    break
        finally:
            self._searching = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _RegisteringLoader(spec.loader, self)
        return spec


class _RegisteringLoader:
    def __init__(self, loader, hook) -> None:
        self._loader = loader
        self._hook = hook

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        # The module sees its real loader; only the end of its import is ours.
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        if all(name in sys.modules for name in _NEEDED):
            try:
                sys.meta_path.remove(self._hook)
            except ValueError:
                pass
            register()


def install() -> None:
    """Called by `import shmlease`: register now if numpy and multiprocessing are imported,
    else once they are."""
    if all(name in sys.modules for name in _NEEDED):
        register()
    elif not any(isinstance(f, _PostImportHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _PostImportHook())


# --- receiving side -------------------------------------------------------------------------

def _client(socket: str):
    """This process's Client for `socket`, created on first use; never one from before a fork."""
    global _clients_pid
    if _clients_pid != os.getpid():
        # A forked child: the parent's connections are not ours (Client refuses them anyway).
        _clients.clear()
        _channels.clear()
        for views in (_flat_views, _held_views):
            if views is not None:
                views.clear()
        _clients_pid = os.getpid()
    c = _clients.get(socket)
    if c is None or c.closed:
        c = connect(socket)
        _clients[socket] = c
    return c


def _flat_view(socket, name, seg_id, created_ns, mode):
    """A flat uint8 array of a lease of this process on the segment, checked to be that one."""
    global _flat_views
    import numpy as np
    key = (socket, name, seg_id, created_ns, mode)
    with _lock:
        if _flat_views is None:
            import weakref
            _flat_views = weakref.WeakValueDictionary()
        if _clients_pid == os.getpid():
            flat = _flat_views.get(key)
            if flat is not None:
                return flat
        lease = _client(socket).lease(name, mode, timeout=LEASE_TIMEOUT_S)
        info = lease.info
        if info["id"] != seg_id or info["created_unix_ns"] != created_ns:
            lease.release()
            raise _error(
                NotFoundError, "not_found",
                f"segment '{name}' was removed and created again while an array of it was on "
                f"its way to this process (id {seg_id} -> {info['id']}): refusing to view "
                "another segment's memory")
        flat = np.frombuffer(lease, np.uint8)  # holds an export: the lease lives as long as it
        _flat_views[key] = flat
        return flat


def _held_flat(socket, channel, channel_id, created_ns, slot, seq):
    """A flat uint8 array of this process's hold on the frame another process took."""
    global _held_views
    import numpy as np
    key = (socket, channel_id, created_ns, slot, seq)
    with _lock:
        if _held_views is None:
            import weakref
            _held_views = weakref.WeakValueDictionary()
        client = _client(socket)  # (forgets the parent's holds in a forked child)
        flat = _held_views.get(key)
        if flat is not None:
            return flat
        known = _channels.get((socket, channel))
        if known is None or known[0] is not client:
            known = (client, client.channel(channel))
            _channels[(socket, channel)] = known
        frame = known[1]._hold(channel_id, created_ns, slot, seq)
        flat = np.frombuffer(frame, np.uint8)  # holds an export: the frame lives as long as it
        _held_views[key] = flat
        return flat


def _checked_layout(nbytes, offset, shape, strides, dtype, what="the segment's"):
    """Raises InvalidArgumentError unless the view lies within nbytes bytes."""
    import numpy as np

    def bad(why):
        return _error(InvalidArgumentError, "invalid_argument",
                      f"refusing a pickled shmlease array: {why}")

    def is_int(v):
        return type(v) is int

    if not isinstance(dtype, np.dtype):
        raise bad(f"dtype is a {type(dtype).__name__}, not a numpy.dtype")
    if dtype.hasobject:
        raise bad(f"dtype {dtype} holds Python objects")
    if not isinstance(shape, tuple) or not isinstance(strides, tuple) or \
            len(shape) != len(strides) or len(shape) > 32 or \
            not all(map(is_int, shape)) or not all(map(is_int, strides)):
        raise bad("shape and strides must be tuples of as many ints (at most 32)")
    if not is_int(offset) or not 0 <= offset <= nbytes:
        raise bad(f"offset {offset!r} is outside {what} {nbytes} bytes")
    if any(n < 0 for n in shape):
        raise bad(f"negative dimension in shape {shape}")
    if 0 in shape:
        return
    low = high = offset
    for n, s in zip(shape, strides):
        if s >= 0:
            high += s * (n - 1)
        else:
            low += s * (n - 1)
    if low < 0 or high + dtype.itemsize > nbytes:
        raise bad(f"shape {shape}, strides {strides} and offset {offset} of {dtype} reach bytes "
                  f"[{low}, {high + dtype.itemsize}) outside {what} {nbytes} bytes")


class UnavailableArray:
    """Stands for a lease-backed array that could not be rebuilt in this process.

    Unpickling never raises: multiprocessing unpickles arguments and results in places where
    an exception loses the task or breaks the pool (a Pool worker exits on an OSError, such as
    NotFoundError, raised while it reads a task). The refusal is kept here instead and raised,
    with its type and message, by every use: attributes, indexing, numpy.asarray, arithmetic,
    len, iteration, bool, and pickling it again. `error` is that exception.
    """

    __slots__ = ("_error",)

    def __init__(self, error: BaseException) -> None:
        object.__setattr__(self, "_error", error)

    @property
    def error(self) -> BaseException:
        """The exception that every use of this placeholder raises."""
        return self._error

    def _raise(self, *args, **kwargs):
        raise self._error

    def __getattr__(self, name):
        raise self._error

    def __setattr__(self, name, value):
        raise self._error

    def __repr__(self) -> str:
        return f"<shmlease.UnavailableArray {type(self._error).__name__}: {self._error}>"

    def __reduce__(self):
        raise self._error

    __hash__ = None


# Every use of an UnavailableArray raises its error: numpy's entry points, operators, protocols.
_RAISING_SPECIALS = ("__array__", "__array_ufunc__", "__array_function__", "__getitem__",
    "__setitem__", "__len__", "__iter__", "__bool__", "__contains__", "__index__", "__int__",
    "__float__", "__complex__", "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__",
    "__neg__", "__pos__", "__abs__", "__invert__", "__add__", "__radd__", "__iadd__", "__sub__",
    "__rsub__", "__isub__", "__mul__", "__rmul__", "__imul__", "__truediv__", "__rtruediv__",
    "__itruediv__", "__floordiv__", "__rfloordiv__", "__ifloordiv__", "__mod__", "__rmod__",
    "__imod__", "__pow__", "__rpow__", "__ipow__", "__matmul__", "__rmatmul__", "__imatmul__",
    "__and__", "__rand__", "__iand__", "__or__", "__ror__", "__ior__", "__xor__", "__rxor__",
    "__ixor__", "__lshift__", "__rlshift__", "__ilshift__", "__rshift__", "__rrshift__",
    "__irshift__", "__buffer__")
for _special in _RAISING_SPECIALS:
    setattr(UnavailableArray, _special, UnavailableArray._raise)
del _special


def _rebuilt_or_unavailable(rebuild_view, fields):
    """rebuild_view(*fields), or an UnavailableArray holding the error when it fails."""
    try:
        return rebuild_view(*fields)
    except Exception as e:  # noqa: BLE001 - every refusal is delivered on use
        # Its traceback's frames would keep this process's lease or hold (a local) alive.
        return UnavailableArray(e.with_traceback(None))


def _rebuild(*fields):
    """Unpickles a lease-backed array: a view of this process's own lease on the same segment."""
    return _rebuilt_or_unavailable(_rebuild_view, fields)


def _rebuild_view(version, socket, name, seg_id, created_ns, mode, offset, shape, strides,
                  dtype, writeable):
    import numpy as np
    if version != _WIRE_VERSION:
        raise _error(InvalidArgumentError, "invalid_argument",
                     f"refusing a pickled shmlease array of wire version {version!r} "
                     f"(this shmlease reads {_WIRE_VERSION})")
    if mode not in ("r", "w") or not isinstance(socket, str) or not isinstance(name, str):
        raise _error(InvalidArgumentError, "invalid_argument",
                     "refusing a pickled shmlease array: bad socket, name or mode")
    flat = _flat_view(socket, name, seg_id, created_ns, mode)
    _checked_layout(flat.nbytes, offset, shape, strides, dtype)
    arr = np.ndarray(shape, dtype, buffer=flat, offset=offset, strides=strides)
    if not writeable:
        arr.flags.writeable = False
    return arr


def _rebuild_frame(*fields):
    """Unpickles an array of a frame: a view of this process's own hold on the same frame."""
    return _rebuilt_or_unavailable(_rebuild_frame_view, fields)


def _rebuild_frame_view(version, socket, channel, channel_id, created_ns, slot, seq, offset,
                        shape, strides, dtype):
    import numpy as np
    if version != _WIRE_VERSION:
        raise _error(InvalidArgumentError, "invalid_argument",
                     f"refusing a pickled shmlease array of wire version {version!r} "
                     f"(this shmlease reads {_WIRE_VERSION})")
    if not isinstance(socket, str) or not isinstance(channel, str) or \
            not all(type(v) is int for v in (channel_id, created_ns, slot, seq)):
        raise _error(InvalidArgumentError, "invalid_argument",
                     "refusing a pickled shmlease array: bad socket, channel or frame location")
    if not (0 <= channel_id < 2**64 and -2**63 <= created_ns < 2**63 and 0 <= slot < 2**32
            and 0 <= seq < 2**64):
        raise _error(InvalidArgumentError, "invalid_argument",
                     "refusing a pickled shmlease array: frame location out of range")
    flat = _held_flat(socket, channel, channel_id, created_ns, slot, seq)
    _checked_layout(flat.nbytes, offset, shape, strides, dtype, "the frame's")
    arr = np.ndarray(shape, dtype, buffer=flat, offset=offset, strides=strides)
    arr.flags.writeable = False  # a reader's memory: the kernel maps it read-only anyway
    return arr


# --- Client.share and Client.array ----------------------------------------------------------

def share(client, name, array, *, mode=0o600, exist_ok=False, huge=None):
    """Client.share: a new segment typed as `array`, holding a copy of its bytes."""
    import numpy as np
    arr = np.asarray(array)
    dt = arr.dtype
    if dt.hasobject or dt.fields is not None or dt.subdtype is not None:
        raise _error(InvalidArgumentError, "invalid_argument",
                     f"cannot share an array of dtype {dt}: a segment holds one native scalar "
                     "type (no object, structured or sub-array dtypes)")
    if not dt.isnative:
        raise _error(InvalidArgumentError, "invalid_argument",
                     f"cannot share an array of dtype {dt.str}: it must have the native byte "
                     "order (convert it first: arr.astype(arr.dtype.newbyteorder('=')))")
    if dt.char not in _SEGMENT_FORMATS:
        raise _error(InvalidArgumentError, "invalid_argument",
                     f"cannot share an array of dtype {dt}: a segment holds one of "
                     "int8..uint64, float16/32/64 or bool")
    if arr.ndim == 0:
        raise _error(InvalidArgumentError, "invalid_argument",
                     "cannot share a 0-dimensional array: reshape it to (1,) first")
    existed = False
    if exist_ok:
        try:
            info = client.stat(name)
            existed = True
        except NotFoundError:
            pass
    info = client.create(name, shape=arr.shape, dtype=dt.char, exist_ok=exist_ok, huge=huge,
                         mode=mode)
    if existed and (tuple(info["shape"]) != arr.shape or np.dtype(info["format"] or "B") != dt):
        raise _error(ExistsError, "already_exists",
                     f"segment '{name}' exists as {info['format'] or 'B'} {tuple(info['shape'])}"
                     f", not {dt.char} {arr.shape}")
    try:
        # Exclusive: no reader sees a half-copied array.
        with client.lease(name, "w", exclusive=True) as lease:
            dst = np.asarray(lease)
            np.copyto(dst, arr, casting="no")
            del dst
    except BaseException:
        if not existed:
            try:
                client.remove(name)
            except Exception:  # the original error is the one to report
                pass
        raise
    return client.stat(name)


def array(client, name, mode="r", **lease_options):
    """Client.array: an ndarray of the segment that owns its lease."""
    import numpy as np
    lease = client.lease(name, mode, **lease_options)
    try:
        return np.asarray(lease)  # its base holds the export, the export holds the Lease
    except BaseException:
        lease.release()
        raise
