"""asyncio (issue 11): `async for` / `await reader.anext()` over channel readers, `await
client.alease()`, end of stream through try_next() and fileno(), and the reprs of Channel, Writer
and Reader. Every test drives its own loop with asyncio.run (no pytest-asyncio) and bounds its
waits with asyncio.wait_for."""

from __future__ import annotations

import asyncio
import errno
import select
import signal
import subprocess
import threading
import time

import numpy as np
import pytest

import shmlease
from shmlease import _aio
from conftest import spawn_python, wait_until

BOUND = 20.0  # seconds: no test may hang longer than this


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, BOUND))


def publish(w, value, meta=b""):
    f = w.claim(timeout=2)
    np.asarray(f)[:] = value
    return w.publish(f, meta=meta)


class Ticker:
    """Runs on the loop and records the longest gap between its ticks: a blocked loop shows."""

    def __init__(self):
        self.max_gap = 0.0
        self.ticks = 0
        self._task = None

    async def _run(self):
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            self.max_gap = max(self.max_gap, now - last)
            self.ticks += 1
            last = now

    def __enter__(self):
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc):
        self._task.cancel()
        return False


def publish_later(w, values, delay):
    """Publishes from another thread after `delay` s (so a blocked loop cannot stall it), then
    closes the writer."""
    def go():
        time.sleep(delay)
        for v in values:
            publish(w, v, meta=b"%d" % v)
        w.close()
    t = threading.Thread(target=go)
    t.start()
    return t


# ---------------------------------------------------------------------------- async readers

def test_async_for_gets_every_frame_in_order_and_ends(client, chan):
    ch = chan()
    r = ch.reader()
    w = ch.writer()

    async def main():
        t = publish_later(w, range(1, 6), 0.3)
        got = []
        with Ticker() as ticker:
            async for f in r:
                with f:
                    got.append((f.seq, int(np.asarray(f)[0, 0, 0]), f.meta))
        t.join()
        return got, ticker

    got, ticker = run(main())
    assert got == [(i, i, b"%d" % i) for i in range(1, 6)]
    # The loop kept running while the reader waited the first 0.3 s.
    assert ticker.ticks >= 5 and ticker.max_gap < 0.25, (ticker.ticks, ticker.max_gap)


def test_anext_returns_ready_frame_then_raises_end_of_stream(client, chan):
    ch = chan()
    r = ch.reader()
    w = ch.writer()
    publish(w, 7)
    w.close()  # the frame is still to be read

    async def main():
        f = await r.anext(timeout=2)
        assert (f.seq, int(np.asarray(f).max())) == (1, 7)
        f.release()
        with pytest.raises(shmlease.EndOfStreamError):
            await r.anext(timeout=2)
        with pytest.raises(EOFError):  # and again: the end stays the end
            await r.anext()
        # async for on an ended reader stops at once
        return [f async for f in r]

    assert run(main()) == []


def test_anext_timeout_raises_lease_timeout_without_blocking(client, chan):
    ch = chan()
    r = ch.reader()
    w = ch.writer()

    async def main():
        loop = asyncio.get_running_loop()
        with Ticker() as ticker:
            t0 = time.monotonic()
            with pytest.raises(shmlease.LeaseTimeoutError) as info:
                await r.anext(timeout=0.6)
            elapsed = time.monotonic() - t0
        # Nothing stays registered on the loop after the await.
        assert loop.remove_reader(r.fileno()) is False
        return info.value, elapsed, ticker

    err, elapsed, ticker = run(main())
    assert isinstance(err, TimeoutError)
    assert (err.errc_name, err.errno) == ("timeout", errno.ETIMEDOUT)
    with pytest.raises(shmlease.LeaseTimeoutError) as real:  # the extension's own
        r.next(timeout=0)
    assert err.code == real.value.code
    assert 0.6 <= elapsed < 3
    assert ticker.ticks >= 10 and ticker.max_gap < 0.25, (ticker.ticks, ticker.max_gap)
    # The writer is fine and the reader still works after a timeout.
    publish(w, 3)
    assert run(r.anext(timeout=2)).seq == 1


def test_anext_timeout_zero_and_bad_timeouts(client, chan):
    ch = chan()
    r = ch.reader()
    w = ch.writer()

    async def main():
        with pytest.raises(shmlease.LeaseTimeoutError):
            await r.anext(timeout=0)
        publish(w, 1)
        assert (await r.anext(timeout=0)).seq == 1  # ready now: no wait needed
        with pytest.raises(ValueError):
            await r.anext(timeout=-1)
        with pytest.raises(ValueError):
            await r.anext(timeout=float("nan"))
        with pytest.raises(TypeError):
            await r.anext(timeout="1")
        with pytest.raises(TypeError):
            r.anext(1, 2)  # argument errors at the call, as for next()

    run(main())


def test_cancelled_anext_loses_no_frame_and_unregisters(client, chan):
    ch = chan()
    r = ch.reader()
    w = ch.writer()

    async def main():
        loop = asyncio.get_running_loop()
        task = loop.create_task(r.anext())
        await asyncio.sleep(0.1)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert loop.remove_reader(r.fileno()) is False
        publish(w, 5)
        f = await r.anext(timeout=2)  # the reader works again, and got the frame
        return f.seq, int(np.asarray(f).max())

    assert run(main()) == (1, 5)


def test_second_coroutine_on_one_reader_is_refused(client, chan):
    ch = chan()
    r = ch.reader()
    w = ch.writer()

    async def main():
        first = asyncio.get_running_loop().create_task(r.anext(timeout=5))
        await asyncio.sleep(0.05)
        with pytest.raises(RuntimeError, match="already waiting"):
            await r.anext(timeout=1)
        publish(w, 2)
        return (await first).seq

    assert run(main()) == 1


def test_async_readers_of_two_channels_on_one_loop(client, chan):
    a, b = chan(), chan()
    ra, rb = a.reader(), b.reader()
    wa, wb = a.writer(), b.writer()

    async def drain(r):
        return [f.seq async for f in r]

    async def main():
        ta = publish_later(wa, range(1, 4), 0.1)
        tb = publish_later(wb, range(1, 6), 0.2)
        got = await asyncio.gather(drain(ra), drain(rb))
        ta.join()
        tb.join()
        return got

    assert run(main()) == [[1, 2, 3], [1, 2, 3, 4, 5]]


def test_async_for_ends_when_writer_is_killed(daemon, client, chan):
    ch = chan(slots=3)
    r = ch.reader()
    p = spawn_python(daemon, f"""
        import shmlease, numpy as np, time
        w = shmlease.connect().channel({ch.name!r}).writer()
        f = w.claim(timeout=1); np.asarray(f)[:] = 4; w.publish(f)
        print("ready", flush=True); time.sleep(60)
    """, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)

        async def main():
            t0 = time.monotonic()
            seqs = [f.seq async for f in r]
            return seqs, time.monotonic() - t0

        seqs, elapsed = run(main())
        assert seqs == [1] and elapsed < 2
        assert select.select([r.fileno()], [], [], 0.2)[0] == []  # quiet after the end
    finally:
        p.kill()
        p.wait()


# ------------------------------------------------------------ end of stream, try_next, fileno

def test_try_next_raises_end_of_stream_and_fileno_goes_quiet(client, chan):
    ch = chan()
    r = ch.reader()
    fd = r.fileno()
    assert r.try_next() is None  # no writer yet is no end
    w = ch.writer()
    publish(w, 1)
    publish(w, 2)
    w.close()
    assert [r.try_next().seq, r.try_next().seq] == [1, 2]
    assert select.select([fd], [], [], 2)[0] == [fd]  # the end is an event
    with pytest.raises(shmlease.EndOfStreamError, match="every frame was read"):
        r.try_next()
    assert select.select([fd], [], [], 0.3)[0] == []  # ... reported once, then quiet
    with pytest.raises(shmlease.EndOfStreamError):
        r.try_next()  # still the end
    assert select.select([fd], [], [], 0.1)[0] == []
    with pytest.raises(shmlease.EndOfStreamError):
        r.next(timeout=1)

    w = ch.writer()  # a new writer: the stream goes on
    assert r.try_next() is None
    assert select.select([fd], [], [], 0.05)[0] == []
    publish(w, 3)
    assert select.select([fd], [], [], 2)[0] == [fd]
    assert r.try_next().seq == 3
    w.close()  # and its end is a new event
    assert select.select([fd], [], [], 2)[0] == [fd]
    with pytest.raises(shmlease.EndOfStreamError):
        r.try_next()
    assert select.select([fd], [], [], 0.3)[0] == []


def test_add_reader_callback_does_not_spin_after_end(client, chan):
    ch = chan()
    r = ch.reader()
    w = ch.writer()

    async def main():
        loop = asyncio.get_running_loop()
        calls = 0
        seqs = []
        ended = loop.create_future()

        def on_readable():
            nonlocal calls
            calls += 1
            try:
                while (f := r.try_next()) is not None:
                    seqs.append(f.seq)
                    f.release()
            except shmlease.EndOfStreamError:
                if not ended.done():
                    ended.set_result(None)

        loop.add_reader(r.fileno(), on_readable)
        try:
            for v in range(3):
                publish(w, v)
            w.close()
            await asyncio.wait_for(ended, 5)
            at_end = calls
            await asyncio.sleep(0.5)
            return seqs, calls - at_end
        finally:
            loop.remove_reader(r.fileno())

    seqs, calls_after_end = run(main())
    assert seqs == [1, 2, 3]
    assert calls_after_end == 0  # it spun at 100 % CPU before the fix (thousands of calls)


# ------------------------------------------------------------------------------------ repr

def test_repr_of_channel_writer_reader(client, chan):
    ch = chan(shape=(2, 3), dtype="f", slots=5, policy="latest")
    assert repr(ch) == (f"<shmlease.Channel '{ch.name}' shape=(2, 3) dtype='f' slots=5 "
                        f"policy='latest' frame_nbytes=24 readers=0>")
    r = ch.reader()
    assert repr(ch).endswith("readers=1>")
    assert repr(r) == f"<shmlease.Reader of '{ch.name}' shape=(2, 3) dtype='f' policy='latest' open>"
    w = ch.writer()
    assert repr(w) == f"<shmlease.Writer of '{ch.name}' shape=(2, 3) dtype='f' readers=1>"
    publish(w, 1)
    w.close()
    assert repr(w) == f"<shmlease.Writer of '{ch.name}' shape=(2, 3) dtype='f' closed>"
    assert repr(r).endswith(" open>")  # a frame is still to be read
    assert r.try_next().seq == 1
    assert repr(r).endswith(" open>")  # the end is not reported yet
    with pytest.raises(shmlease.EndOfStreamError):
        r.try_next()
    assert repr(r).endswith(" ended>")
    w2 = ch.writer()
    assert repr(r).endswith(" open>")  # a new writer took over
    w2.close()
    r.close()
    assert repr(r).endswith(" closed>")

    one_d = chan(shape=(7,))
    assert f"'{one_d.name}' shape=(7,) dtype='B'" in repr(one_d)
    assert "policy='block'" in repr(one_d)


# ------------------------------------------------------------------------------------ alease

def test_alease_grants_like_lease(client, seg):
    name = seg()
    client.create(name, shape=(4,), dtype="f")

    async def main():
        lease = await client.alease(name, "w")
        with lease:
            np.asarray(lease)[:] = 2.5
        lease = await client.alease(name, populate=True)
        with lease:
            return np.asarray(lease).tolist(), np.asarray(lease).flags.writeable

    assert run(main()) == ([2.5] * 4, False)
    assert client.stat(name)["readers"] == 0


def test_alease_waits_without_blocking_the_loop(daemon, client, seg):
    name = seg()
    client.create(name, size=64)
    with shmlease.connect(daemon.socket) as other:
        holder = other.lease(name, "w", exclusive=True)
        timer = threading.Timer(0.6, holder.release)

        async def main():
            with Ticker() as ticker:
                timer.start()
                t0 = time.monotonic()
                lease = await client.alease(name, "r", timeout=10)
                elapsed = time.monotonic() - t0
            with lease:
                return lease.readonly, elapsed, ticker

        try:
            readonly, elapsed, ticker = run(main())
        finally:
            timer.cancel()
    assert readonly and 0.5 <= elapsed < 5
    assert ticker.ticks >= 10 and ticker.max_gap < 0.25, (ticker.ticks, ticker.max_gap)


def test_alease_timeout_leaves_nothing_waiting(daemon, client, seg):
    name = seg()
    client.create(name, size=64)
    with shmlease.connect(daemon.socket) as other:
        holder = other.lease(name, "w", exclusive=True)

        async def main():
            t0 = time.monotonic()
            with pytest.raises(shmlease.LeaseTimeoutError):
                await client.alease(name, "r", timeout=0.3)
            elapsed = time.monotonic() - t0
            with pytest.raises(TimeoutError):
                await client.alease(name, "w", timeout=0)
            return elapsed

        elapsed = run(main())
        assert 0.3 <= elapsed < 3
        st = client.stat(name)
        assert (st["waiting"], st["readers"], st["writers"]) == (0, 0, 1)
        holder.release()


def test_alease_cancelled_leaves_no_request_and_no_lease(daemon, client, seg):
    name = seg()
    client.create(name, size=64)
    with shmlease.connect(daemon.socket) as other:
        holder = other.lease(name, "w", exclusive=True)

        async def main():
            task = asyncio.get_running_loop().create_task(client.alease(name, "w"))
            for _ in range(200):  # the request reaches the daemon
                await asyncio.sleep(0.01)
                if client.stat(name)["waiting"] == 1:
                    break
            assert client.stat(name)["waiting"] == 1
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # Checked at once: the cancellation completes only after the worker stopped.
            return client.stat(name)

        st = run(main())
        assert (st["waiting"], st["writers"]) == (0, 1)
        holder.release()
    # No lease of ours is left: an exclusive lease is granted at once from a new connection.
    with shmlease.connect(daemon.socket) as third:
        third.lease(name, "w", exclusive=True, timeout=2).release()


def test_alease_granted_as_cancelled_is_released(daemon, client, seg, monkeypatch):
    """The lease arrives after the task was cancelled: the cancellation releases it."""
    name = seg()
    client.create(name, size=64)
    granted = threading.Event()
    cancelled = threading.Event()

    def grant_after_cancel(client_, name_, mode, exclusive, timeout, populate, interrupted):
        lease = client_.lease(name_, mode, exclusive=exclusive, timeout=timeout)
        granted.set()
        assert cancelled.wait(10)
        return lease  # as if the grant raced the cancel past the interrupted() check

    monkeypatch.setattr(_aio, "_lease_blocking", grant_after_cancel)

    async def main():
        task = asyncio.get_running_loop().create_task(client.alease(name, "w", exclusive=True))
        while not granted.is_set():
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.sleep(0.05)  # the task is now waiting for the worker to finish
        cancelled.set()
        with pytest.raises(asyncio.CancelledError) as info:
            await task
        return info

    # The traceback keeps alease's frame (and so its result) alive: only an explicit release,
    # not garbage collection, can have freed the segment now.
    info = run(main())
    with shmlease.connect(daemon.socket) as other:
        other.lease(name, "w", exclusive=True, timeout=2).release()
    del info


def test_lease_blocking_releases_a_lease_granted_after_interrupt(daemon, client, seg):
    """The worker's own check: interrupted() turns true while the lease is being granted."""
    name = seg()
    client.create(name, size=64)
    answers = iter([False, True])
    with pytest.raises(_aio._Interrupted):
        _aio._lease_blocking(client, name, "w", True, None, False, lambda: next(answers))
    with shmlease.connect(daemon.socket) as other:
        other.lease(name, "w", exclusive=True, timeout=2).release()


def test_alease_cancel_races_grant_leave_nothing(daemon, client, seg):
    """Cancel at many moments around the holder's release: never a lease or request left."""
    name = seg()
    client.create(name, size=64)
    with shmlease.connect(daemon.socket) as other:
        async def one(delay):
            holder = other.lease(name, "w", exclusive=True, timeout=2)
            task = asyncio.get_running_loop().create_task(
                client.alease(name, "w", exclusive=True))
            await asyncio.sleep(0.02)
            threading.Timer(delay, holder.release).start()
            await asyncio.sleep(delay)
            task.cancel()
            try:
                lease = await task
            except asyncio.CancelledError:
                return "cancelled"
            lease.release()
            return "granted"

        async def main():
            return [await one(0.001 * (i % 10)) for i in range(20)]

        outcomes = run(main())
        assert set(outcomes) <= {"cancelled", "granted"} and "cancelled" in outcomes
        wait_until(lambda: client.stat(name)["writers"] == 0, what="every lease released")
        assert client.stat(name)["waiting"] == 0
        other.lease(name, "w", exclusive=True, timeout=2).release()


def test_alease_errors_arrive_at_the_await(client, seg):
    name = seg()
    client.create(name, size=64)

    async def main():
        with pytest.raises(shmlease.NotFoundError):
            await client.alease(seg("missing"))
        with pytest.raises(shmlease.InvalidArgumentError, match="mode"):
            await client.alease(name, "x")
        with pytest.raises(shmlease.InvalidArgumentError, match="timeout") as info:
            await client.alease(name, timeout=-1)
        assert (info.value.errc_name, info.value.errno) == ("invalid_argument", errno.EINVAL)
        with pytest.raises(TypeError):
            await client.alease(name, timeout="soon")
        with pytest.raises(TypeError):
            client.alease(name, "r", True)  # exclusive is keyword-only, as for lease()

    run(main())


def test_many_aleases_at_once(client, seg):
    name = seg()
    client.create(name, size=64)

    async def main():
        leases = await asyncio.gather(*(client.alease(name, timeout=5) for _ in range(8)))
        n = client.stat(name)["readers"]
        for lease in leases:
            lease.release()
        return n

    assert run(main()) == 8


def test_closed_objects_fail_at_the_await(daemon, client, chan, seg):
    ch = chan()
    r = ch.reader()
    assert r.__aiter__() is r
    r.close()
    name = seg()
    client.create(name, size=64)
    closed = shmlease.connect(daemon.socket)
    closed.close()

    async def main():
        with pytest.raises(ValueError, match="closed"):
            await r.anext(timeout=1)
        with pytest.raises(ValueError, match="closed"):
            async for _ in r:
                pass
        with pytest.raises(ValueError, match="closed"):
            await closed.alease(name)

    run(main())


def test_client_closed_while_alease_waits(daemon, client, seg):
    """close() while the worker waits: the await fails (no hang), nothing is left waiting."""
    name = seg()
    client.create(name, size=64)
    holder = client.lease(name, "w", exclusive=True)
    waiter = shmlease.connect(daemon.socket)

    async def main():
        task = asyncio.get_running_loop().create_task(waiter.alease(name, timeout=10))
        await asyncio.sleep(0.1)
        t0 = time.monotonic()
        waiter.close()
        with pytest.raises(ValueError, match="closed"):
            await task
        return time.monotonic() - t0

    assert run(main()) < 2
    holder.release()
    wait_until(lambda: client.stat(name)["waiting"] == 0, what="no request left")


def test_an_awaiting_reader_is_told_it_was_evicted(client, chan):
    # It holds every slot and awaits a third frame: the writer waits for it, evicts it after the
    # reader timeout, and the await raises EvictedError then, not at its own timeout.
    ch = client.channel(chan.name(), shape=(4,), slots=2, reader_timeout=0.1)
    r = ch.reader()
    w = ch.writer()
    w.publish(w.claim(timeout=1))
    w.publish(w.claim(timeout=1))

    async def main():
        held = [await r.anext(timeout=1), await r.anext(timeout=1)]
        writer = threading.Thread(target=lambda: w.publish(w.claim(timeout=5)))
        writer.start()
        t0 = time.monotonic()
        with pytest.raises(shmlease.EvictedError, match="reader timeout"):
            await r.anext(timeout=5)
        waited = time.monotonic() - t0
        await asyncio.get_running_loop().run_in_executor(None, writer.join, 5)
        assert all(f.released for f in held)
        return waited

    assert run(main()) < 2
