"""shmlease: lock-counted leases on shared memory owned by the shmleased daemon.

A lease exports the segment's memory through the buffer protocol, typed by the segment's format
and shape, so numpy, memoryview and any C extension read and write it without a copy::

    import numpy as np, shmlease

    c = shmlease.connect()                           # same socket resolution as the C++ client
    c.create("weights", shape=(4096, 4096), dtype="f")
    with c.lease("weights", "w") as lease:
        a = np.asarray(lease)                        # float32 (4096, 4096), writable, no copy
        a[:] = 1.0

    # in another process:
    with shmlease.connect().lease("weights", "r") as lease:
        b = np.asarray(lease)                        # the same pages, a read-only array

Every failure raises a shmlease.Error (an OSError); its subclasses are also the matching
builtins: NotFoundError is a FileNotFoundError, ExistsError a FileExistsError,
PermissionDeniedError a PermissionError, LeaseTimeoutError a TimeoutError,
InvalidArgumentError a ValueError, DaemonUnavailableError a ConnectionRefusedError and
ConnectionLostError a ConnectionError. See docs/PYTHON.md.
"""

from ._shmlease import (
    Channel,
    Client,
    EndOfStreamError,
    EvictedError,
    Frame,
    Reader,
    Writer,
    ConnectionLostError,
    DaemonUnavailableError,
    Error,
    ExistsError,
    InvalidArgumentError,
    Lease,
    LeaseTimeoutError,
    NotFoundError,
    PermissionDeniedError,
    __version__,
    connect,
    resolve_socket_path,
)
from . import _sharing
from ._sharing import UnavailableArray

# numpy arrays of leases travel through multiprocessing by reference (docs/PYTHON.md, "Arrays
# between processes"); registered now if numpy is imported, else once it is.
_sharing.install()

__all__ = [
    "Channel",
    "Client",
    "EndOfStreamError",
    "EvictedError",
    "Frame",
    "Reader",
    "UnavailableArray",
    "Writer",
    "ConnectionLostError",
    "DaemonUnavailableError",
    "Error",
    "ExistsError",
    "InvalidArgumentError",
    "Lease",
    "LeaseTimeoutError",
    "NotFoundError",
    "PermissionDeniedError",
    "__version__",
    "connect",
    "resolve_socket_path",
]
