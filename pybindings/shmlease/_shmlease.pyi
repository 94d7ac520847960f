"""Type stubs for the C extension shmlease._shmlease (re-exported by the shmlease package)."""

import os
from types import TracebackType
from typing import (
    Any,
    Coroutine,
    Final,
    Literal,
    Protocol,
    Sequence,
    SupportsIndex,
    TypedDict,
    final,
)

__version__: str

class SegmentStat(TypedDict):
    """What the daemon knows of one segment (Client.stat, Client.list, Lease.info)."""

    id: int
    name: str
    size: int
    format: str  # "" for raw bytes
    shape: tuple[int, ...]  # () when created without a shape
    created_unix_ns: int
    creator_pid: int
    creator_uid: int
    readers: int
    writers: int
    exclusive: bool
    waiting: int
    removed: bool
    page_size: int  # bytes per page backing the segment: 2 MiB (x86-64) for huge pages
    huge_fallback: bool  # huge pages were asked for best effort; normal pages back it
    reserved_bytes: int  # size rounded up to whole pages (counted against limits when huge)
    owner_uid: int  # access control: the owner (creator) and its group
    owner_gid: int
    mode: int  # permission bits: 0o600 by default

class ChannelStat(TypedDict):
    """What the daemon knows of one channel (Client.channels, Channel.info)."""

    name: str
    format: str
    shape: tuple[int, ...]  # () for variable-size frames
    variable: bool
    frame_nbytes: int  # every frame's size; for variable-size frames the largest
    slots: int
    policy: Literal["block", "latest"]
    reader_timeout: float | None  # seconds; None: the writer waits for readers without limit
    nbytes: int  # memory of its frames
    writer_pid: int | None  # None without a writer
    readers: int
    holders: int  # places holding frames for other processes (arrays sent by reference)
    owner_uid: int
    owner_gid: int
    mode: int  # read: may read frames; write: may be the writer and remove it
    created_unix_ns: int

class HeldLease(TypedDict):
    segment: str
    mode: Literal["r", "w"]
    exclusive: bool

class ClientStats(TypedDict):
    """One client of the daemon, as the kernel identified it (Client.stats)."""

    connection: int
    pid: int
    uid: int
    gid: int
    process: str
    waiting: int
    leases: list[HeldLease]

class DaemonStats(TypedDict):
    """The daemon's totals and its clients (Client.stats)."""

    segments: int
    bytes: int
    max_bytes: int
    leases: int
    connections: int
    uptime_ms: int
    clients: list[ClientStats]

class Error(OSError):
    """Base class of every shmlease failure."""

    code: int
    errc_name: str

class NotFoundError(Error, FileNotFoundError): ...
class ExistsError(Error, FileExistsError): ...
class PermissionDeniedError(Error, PermissionError): ...
class LeaseTimeoutError(Error, TimeoutError): ...
class InvalidArgumentError(Error, ValueError): ...
class DaemonUnavailableError(Error, ConnectionRefusedError): ...
class ConnectionLostError(Error, ConnectionError): ...
class EndOfStreamError(Error, EOFError): ...
class EvictedError(Error): ...

_Socket = str | os.PathLike[str] | bytes | None
# A struct format character ("f", "d", "B", ...) or anything numpy.dtype() accepts.
_DType = str | type | Any
# Seconds: None waits forever; a value too large to mean anything (inf, 1e300) also does.
_Timeout = float | int | None
# numpy.dtype of the items when numpy can be imported, else the format string (e.g. "f").
_ItemType = Any

class _SharedView(Protocol):
    """What a Lease and a Frame both are: a view of leased shared memory, exported through the
    buffer protocol, __array__ and DLPack. A name for the type checker only: at run time Lease
    and Frame are separate classes with no common base but object."""

    @property
    def nbytes(self) -> int: ...
    @property
    def readonly(self) -> bool: ...
    @property
    def format(self) -> str: ...
    @property
    def itemsize(self) -> int: ...
    @property
    def ndim(self) -> int: ...
    @property
    def shape(self) -> tuple[int, ...]: ...
    @property
    def strides(self) -> tuple[int, ...]: ...
    @property
    def dtype(self) -> _ItemType: ...
    @property
    def exports(self) -> int: ...  # buffers and arrays exported and not yet released
    @property
    def released(self) -> bool: ...
    def release(self) -> None: ...
    def __array__(self, dtype: _DType | None = None, copy: bool | None = None) -> Any: ...
    def __dlpack__(
        self,
        *,
        stream: None = None,
        max_version: tuple[int, int] | None = None,
        dl_device: tuple[int, int] | None = None,
        copy: bool | None = None,
    ) -> Any: ...  # a PyCapsule "dltensor" or "dltensor_versioned"
    def __dlpack_device__(self) -> tuple[int, int]: ...
    def __buffer__(self, flags: int, /) -> memoryview: ...  # PEP 688 (3.12+ typing only)

@final
class Lease(_SharedView):
    """A granted lease; exports the segment's memory through the buffer protocol."""

    @property
    def name(self) -> str: ...
    @property
    def mode(self) -> Literal["r", "w"]: ...
    @property
    def exclusive(self) -> bool: ...
    @property
    def id(self) -> int: ...
    @property
    def info(self) -> SegmentStat: ...
    @property
    def client(self) -> Client: ...  # kept alive by the lease
    @property
    def socket_path(self) -> str: ...  # the granting daemon's (arrays between processes)
    def __enter__(self) -> Lease: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
        /,
    ) -> Literal[False]: ...

@final
class Client:
    """A connection to the shmleased daemon."""

    def __new__(cls, socket: _Socket = None, *, reconnect_timeout: _Timeout = None) -> Client: ...
    @property
    def socket_path(self) -> str: ...
    @property
    def server_pid(self) -> int: ...
    @property
    def closed(self) -> bool: ...
    def ping(self) -> None: ...
    def channel(
        self,
        name: str,
        shape: SupportsIndex | Sequence[SupportsIndex] | None = None,
        *,
        dtype: _DType | None = "B",
        slots: int | None = None,
        policy: Literal["block", "latest"] | None = None,
        max_frame_bytes: SupportsIndex | None = None,
        reader_timeout: float | None = None,
        mode: int = 0o600,
        wait: _Timeout = 0,
    ) -> Channel: ...
    def channels(self) -> list[ChannelStat]: ...
    def create(
        self,
        name: str,
        size: SupportsIndex | None = None,
        *,
        shape: SupportsIndex | Sequence[SupportsIndex] | None = None,
        dtype: _DType | None = None,
        exist_ok: bool = False,
        huge: bool | Literal["best-effort"] | None = None,
        mode: int = 0o600,
    ) -> SegmentStat: ...
    def lease(
        self,
        name: str,
        mode: Literal["r", "w"] = "r",
        *,
        exclusive: bool = False,
        timeout: _Timeout = None,
        populate: bool = False,
    ) -> Lease: ...
    # asyncio (shmlease._aio): lease() without blocking the event loop; cancel-safe.
    def alease(
        self,
        name: str,
        mode: Literal["r", "w"] = "r",
        *,
        exclusive: bool = False,
        timeout: float | None = None,
        populate: bool = False,
    ) -> Coroutine[Any, Any, Lease]: ...
    def remove(self, name: str) -> None: ...
    def stat(self, name: str) -> SegmentStat: ...
    def list(self) -> list[SegmentStat]: ...
    def chmod(self, name: str, mode: int) -> SegmentStat: ...
    def stats(self) -> DaemonStats: ...
    # share() and array() are implemented in shmlease/_sharing.py and need numpy.
    def share(
        self,
        name: str,
        array: Any,  # numpy.typing.ArrayLike
        *,
        mode: int = 0o600,
        exist_ok: bool = False,
        huge: bool | Literal["best-effort"] | None = None,
    ) -> SegmentStat: ...
    def array(
        self,
        name: str,
        mode: Literal["r", "w"] = "r",
        *,
        exclusive: bool = False,
        timeout: float | None = None,
        populate: bool = False,
    ) -> Any: ...  # numpy.ndarray that owns its lease
    def close(self) -> None: ...
    def __enter__(self) -> Client: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
        /,
    ) -> Literal[False]: ...

def connect(socket: _Socket = None, *, reconnect_timeout: _Timeout = None) -> Client: ...

@final
class Frame(_SharedView):
    """A channel's frame: a slot leased for reading (Reader) or writing (Writer.claim)."""

    seq: Final[int]
    timestamp: Final[int]  # time.monotonic_ns() at publish
    meta: Final[bytes]
    missed: Final[int]
    def __len__(self) -> int: ...  # shape[0]; variable-size frames: the published length
    # (socket_path, channel, channel_id, created_unix_ns, slot, seq): for pickled arrays
    def _location(self) -> tuple[str, str, int, int, int, int]: ...
    def __enter__(self) -> Frame: ...
    def __exit__(self, *exc: object) -> Literal[False]: ...

@final
class Writer:
    readers: Final[int]
    def claim(self, timeout: float | None = None) -> Frame: ...
    def publish(
        self, frame: Frame, meta: bytes = b"", *, length: SupportsIndex | None = None
    ) -> int: ...
    def wait_for_readers(self, n: int, timeout: float | None = None) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> Writer: ...
    def __exit__(self, *exc: object) -> Literal[False]: ...

@final
class Reader:
    def next(self, timeout: float | None = None) -> Frame: ...
    def try_next(self) -> Frame | None: ...  # EndOfStreamError at the end of the stream
    def fileno(self) -> int: ...
    # asyncio (shmlease._aio): waits through loop.add_reader(fileno()).
    def anext(self, timeout: float | None = None) -> Coroutine[Any, Any, Frame]: ...
    def __aiter__(self) -> Reader: ...
    def __anext__(self) -> Coroutine[Any, Any, Frame]: ...
    def close(self) -> None: ...
    def __iter__(self) -> Reader: ...
    def __next__(self) -> Frame: ...
    def __enter__(self) -> Reader: ...
    def __exit__(self, *exc: object) -> Literal[False]: ...

@final
class Channel:
    name: Final[str]
    shape: Final[tuple[int, ...]]
    dtype: Final[str]
    slots: Final[int]
    policy: Final[str]
    frame_nbytes: Final[int]
    variable: Final[bool]
    max_frame_nbytes: Final[int | None]  # None for fixed-shape frames
    reader_timeout: Final[float | None]
    readers: Final[int]  # asks the daemon
    def writer(self, timeout: float | None = 0) -> Writer: ...
    def reader(self, *, busy_poll: bool = False) -> Reader: ...
    def info(self) -> ChannelStat: ...
    def remove(self) -> None: ...
    # The frame another process took (Frame._location()), held by this one: for pickled arrays
    def _hold(self, channel_id: int, created_unix_ns: int, slot: int, seq: int, /) -> Frame: ...
def resolve_socket_path(socket: _Socket = None) -> str: ...
