"""asyncio for shmlease: awaiting a channel frame and awaiting a lease, without blocking the loop.

The C methods Reader.__anext__, Reader.anext() and Client.alease() only call the functions here
(the extension's types are static and cannot be patched from Python). docs/PYTHON.md, "asyncio".

- A reader waits through ``loop.add_reader(reader.fileno(), ...)`` and takes frames with
  ``try_next()``: everything runs on the loop's thread, and nothing is left registered once the
  await returns, raises or is cancelled. A frame is only ever taken synchronously and returned
  at once, so a cancelled await never loses one.
- A lease is waited for by a worker thread (one per alease; Client is thread-safe) running the
  blocking ``Client.lease`` with a cancellation flag that libshmlease polls about every 50 ms
  (``_lease_blocking``). Cancelling the awaiting task sets the flag, the library withdraws the
  request from the daemon, and the task waits, without blocking the loop, for that thread to stop
  and releases a lease granted meanwhile: once the cancellation has completed no lease and no
  waiting request are left, and until then the request kept its place in the daemon's queue.
"""

from __future__ import annotations

import asyncio
import errno
import math
import threading

from . import _shmlease

# Error codes of common/include/shmlease/errc.hpp (numbered once, never reused).
_ERRC_INVALID_ARGUMENT = 5
_ERRC_TIMEOUT = 9

# File descriptors of readers a coroutine waits on (add_reader allows one callback per fd).
_waiting_fds: set[int] = set()


def _error(cls, code: int, name: str, err, message: str):
    """An exception like the extension's: code, errc_name and errno set (errors.cpp)."""
    exc = cls(message)
    exc.code = code
    exc.errc_name = name
    exc.errno = err
    return exc


def _seconds(timeout, invalid_cls):
    """timeout as Client.lease and Reader.next take it: None (no limit) or >= 0 seconds."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not (isinstance(timeout, float) or
                                         hasattr(type(timeout), "__index__")):
        raise TypeError(f"timeout must be a number of seconds or None, not "
                        f"{type(timeout).__name__}")
    seconds = float(timeout)
    if math.isnan(seconds) or seconds < 0:
        raise invalid_cls("timeout must be None or >= 0 seconds")
    return seconds


# ------------------------------------------------------------------------------------- Reader

async def reader_next(reader, timeout=None):
    """``await reader.anext(timeout)``: the next frame, without blocking the event loop.

    Raises LeaseTimeoutError when no frame came within `timeout` seconds (None: no limit),
    EndOfStreamError when the writer is gone and every frame was read, RuntimeError when another
    coroutine already waits on this reader.
    """
    seconds = _seconds(timeout, ValueError)
    frame = reader.try_next()  # a frame ready now costs no registration
    if frame is not None:
        return frame
    loop = asyncio.get_running_loop()
    fd = reader.fileno()
    if fd in _waiting_fds:
        raise RuntimeError("shmlease.Reader: another coroutine is already waiting on it")
    deadline = None if seconds is None else loop.time() + seconds
    waiter = None

    def wake():
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    _waiting_fds.add(fd)
    loop.add_reader(fd, wake)
    timer = loop.call_at(deadline, wake) if deadline is not None else None
    try:
        while True:
            # The fd is readable while a frame or an unreported end is ready; try_next drains it
            # (and raises EndOfStreamError at the end), so a wake-up never repeats for nothing.
            frame = reader.try_next()
            if frame is not None:
                return frame
            if deadline is not None and loop.time() >= deadline:
                raise _error(_shmlease.LeaseTimeoutError, _ERRC_TIMEOUT, "timeout", errno.ETIMEDOUT,
                             f"no frame within {seconds:g} s")
            waiter = loop.create_future()
            await waiter
    finally:
        if timer is not None:
            timer.cancel()
        loop.remove_reader(fd)
        _waiting_fds.discard(fd)


async def reader_anext(reader, _timeout=None):
    """``async for frame in reader``: reader_next, ending the iteration at the end of stream."""
    try:
        return await reader_next(reader, None)
    except _shmlease.EndOfStreamError:
        raise StopAsyncIteration from None


# -------------------------------------------------------------------------------------- Lease

class _Interrupted(Exception):
    """The waiting alease was cancelled; nothing was kept."""


def _lease_blocking(client, name, mode, exclusive, timeout, populate, interrupted):
    """Client.lease(...), giving up (raising _Interrupted) once interrupted() is true.

    The one place that waits for a lease on behalf of alease: one request, which keeps its place
    in the daemon's first-come-first-served queue; libshmlease polls interrupted() while it waits
    and, once it is true, withdraws the request from the daemon (Cancel), releasing a lease
    granted meanwhile.
    """
    if interrupted():
        raise _Interrupted()
    try:
        lease = client.lease(name, mode, exclusive=exclusive, timeout=timeout,
                             populate=populate, _interrupted=interrupted)
    except _shmlease.Error as e:
        if getattr(e, "errc_name", None) == "cancelled":
            raise _Interrupted() from None
        raise
    if interrupted():
        lease.release()
        raise _Interrupted()
    return lease


async def client_lease(client, name, mode="r", *, exclusive=False, timeout=None, populate=False):
    """``await client.alease(...)``: Client.lease without blocking the event loop."""
    seconds = _seconds(timeout, lambda message: _error(
        _shmlease.InvalidArgumentError, _ERRC_INVALID_ARGUMENT, "invalid_argument", errno.EINVAL,
        message))
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    interrupted = threading.Event()

    def settle(lease, error):  # on the loop's thread
        if done.cancelled():  # not expected (done is shielded), but never drop a lease
            if lease is not None:
                lease.release()
        elif error is not None:
            done.set_exception(error)
        else:
            done.set_result(lease)

    def work():
        lease = error = None
        try:
            lease = _lease_blocking(client, name, mode, exclusive, seconds, populate,
                                    interrupted.is_set)
        except BaseException as e:  # delivered to the awaiting task
            error = e
        try:
            loop.call_soon_threadsafe(settle, lease, error)
        except RuntimeError:  # the loop is closed: nobody will take the lease
            if lease is not None:
                lease.release()

    threading.Thread(target=work, name="shmlease-alease", daemon=True).start()
    try:
        return await asyncio.shield(done)
    except asyncio.CancelledError:
        interrupted.set()
        # The worker stops within one slice: wait for it (the loop keeps running) so that the
        # cancellation completes with no request waiting in the daemon.
        while not done.done():
            try:
                await asyncio.wait([done])
            except asyncio.CancelledError:
                pass  # cancelled again while cancelling: the cleanup is bounded, finish it
        if done.exception() is None:
            done.result().release()  # granted just as the task was cancelled
        raise
