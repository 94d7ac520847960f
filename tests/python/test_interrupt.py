"""Ctrl-C while a lease or the writer token is waited for: KeyboardInterrupt arrives within about
100 ms, and the request is withdrawn from the daemon (nothing queued, no lease kept). A waiting
alease keeps its place in the daemon's queue until it is cancelled."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import shmlease
from conftest import spawn_python, wait_until

# A child that waits without limit in CALL, says when it was interrupted and then proves its
# connection is still usable and holds nothing.
CHILD = """
import os, sys, time, shmlease
c = shmlease.connect()
print("ready", flush=True)
try:
    {call}
    print("granted", flush=True)
except KeyboardInterrupt:
    print("interrupted", time.monotonic(), flush=True)
c.ping()
held = [l for cl in c.stats()["clients"] if cl["pid"] == os.getpid() for l in cl["leases"]]
print("held", len(held), flush=True)
sys.stdin.readline()  # stay connected until the test has looked
"""


def interrupt_child(daemon, client, name, call, waiting=None, said=None, while_connected=None):
    """Starts a child waiting in `call`, SIGINTs it once the daemon counts its request, and
    returns (seconds from the signal to KeyboardInterrupt, leases the child holds afterwards).
    `waiting()` counts the requests the daemon queues (default: on the segment `name`); with
    name=None nothing is queued (the child polls) and the signal comes 0.3 s after the start,
    or 0.3 s after the child printed the line `said` (what `call` prints just before it waits).
    `while_connected()` runs after the interrupt, while the child is still connected."""
    if waiting is None and name is not None:
        waiting = lambda: client.stat(name)["waiting"]  # noqa: E731
    child = spawn_python(daemon, CHILD.format(call=call), stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        if said is not None:
            assert child.stdout.readline().strip() == said
        if waiting is not None:
            wait_until(lambda: waiting() == 1, 10, "the child's request queued")
            time.sleep(0.2)  # well inside the wait, not at its start
        else:
            time.sleep(0.3)
        sent = time.monotonic()
        child.send_signal(signal.SIGINT)
        words = child.stdout.readline().split()
        assert words and words[0] == "interrupted", words
        latency = float(words[1]) - sent
        held = child.stdout.readline().split()
        assert held[0] == "held", held
        # Withdrawn: the daemon no longer counts the request, while the child is still connected.
        if waiting is not None:
            assert waiting() == 0
        if while_connected is not None:
            while_connected()
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.wait(10) == 0
        return latency, int(held[1])
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_ctrl_c_interrupts_a_lease_that_waits_forever(daemon, client, seg):
    name = seg()
    client.create(name, size=4096)
    holder = client.lease(name, "w", exclusive=True)
    latency, held = interrupt_child(
        daemon, client, name, f"c.lease({name!r}, 'w', timeout=None)")
    assert latency < 0.5, f"KeyboardInterrupt {latency * 1000:.0f} ms after SIGINT"
    assert held == 0
    holder.release()
    # Nothing of the child's request is left to be granted: an exclusive lease is free at once.
    with shmlease.connect(daemon.socket) as third:
        third.lease(name, "w", exclusive=True, timeout=0).release()


def test_ctrl_c_interrupts_a_long_timeout_lease(daemon, client, seg):
    name = seg()
    client.create(name, size=4096)
    with client.lease(name, "r"):
        latency, held = interrupt_child(
            daemon, client, name, f"c.lease({name!r}, 'w', exclusive=True, timeout=3600)")
    assert latency < 0.5
    assert held == 0


def test_ctrl_c_interrupts_the_wait_for_the_writer_token(daemon, client, chan):
    ch = chan(shape=(16,), slots=2)
    writer = ch.writer()
    # A second writer waits in its own process (it asks the daemon again and again; the daemon
    # queues nothing): the child says when it is about to call writer(), and is interrupted well
    # inside the wait.
    def token_is_free_at_once():
        # The interrupted child, still connected, neither holds nor waits for the writer's place:
        # once this writer goes, another takes it without waiting.
        assert ch.info()["writer_pid"] == os.getpid()
        writer.close()
        ch.writer(timeout=0).close()

    latency, held = interrupt_child(
        daemon, client, None,
        f"ch = c.channel({ch.name!r}); print('waiting', flush=True); ch.writer(timeout=None)",
        said="waiting", while_connected=token_is_free_at_once)
    assert latency < 0.5, f"KeyboardInterrupt {latency * 1000:.0f} ms after SIGINT"
    assert held == 0


def test_ctrl_c_interrupts_the_wait_for_a_channel(daemon, client, seg):
    # The channel never appears: the child polls the daemon, nothing is queued there.
    name = seg("ch")
    latency, held = interrupt_child(daemon, client, None, f"c.channel({name!r}, wait=None)")
    assert latency < 0.5
    assert held == 0


def test_interrupt_in_another_thread_is_not_a_signal(daemon, client, seg):
    """Signals reach only the main thread: a wait in another thread ends with its timeout."""
    name = seg()
    client.create(name, size=64)
    holder = client.lease(name, "w", exclusive=True)
    errors = []

    def wait():
        try:
            client.lease(name, "w", timeout=0.3)
        except shmlease.LeaseTimeoutError as e:
            errors.append(e)

    t = threading.Thread(target=wait)
    t.start()
    t.join(5)
    assert not t.is_alive()
    assert len(errors) == 1
    assert client.stat(name)["waiting"] == 0
    holder.release()


def test_interrupt_callable_withdraws_and_its_error_propagates(daemon, client, seg):
    """The private hook alease uses: a true value withdraws (errc 'cancelled'); an exception
    raised by it is what lease() raises, and the request is withdrawn all the same."""
    name = seg()
    client.create(name, size=64)
    holder = client.lease(name, "w", exclusive=True)
    start = time.monotonic()
    with pytest.raises(shmlease.Error) as info:
        client.lease(name, "w", _interrupted=lambda: time.monotonic() - start > 0.2)
    assert info.value.errc_name == "cancelled"
    assert client.stat(name)["waiting"] == 0

    def boom():
        raise RuntimeError("stop waiting")

    with pytest.raises(RuntimeError, match="stop waiting"):
        client.lease(name, "w", _interrupted=boom)
    assert client.stat(name)["waiting"] == 0
    with pytest.raises(TypeError):
        client.lease(name, "w", _interrupted=42)
    holder.release()


def test_alease_keeps_its_place_in_the_queue(daemon, client, seg):
    """An alease that waited first is granted first, before a lease() asked for later."""
    name = seg()
    client.create(name, size=64)
    with shmlease.connect(daemon.socket) as other, shmlease.connect(daemon.socket) as late:
        holder = other.lease(name, "w", exclusive=True)
        order = []

        def late_lease():
            lease = late.lease(name, "w", exclusive=True, timeout=10)
            order.append("late")
            lease.release()

        async def main():
            task = asyncio.get_running_loop().create_task(
                client.alease(name, "w", exclusive=True))
            for _ in range(500):
                await asyncio.sleep(0.01)
                if client.stat(name)["waiting"] == 1:
                    break
            t = threading.Thread(target=late_lease)
            t.start()
            for _ in range(500):
                await asyncio.sleep(0.01)
                if client.stat(name)["waiting"] == 2:
                    break
            assert client.stat(name)["waiting"] == 2
            # Longer than any slice a sliced wait would take: the queue must not be re-entered.
            await asyncio.sleep(0.3)
            holder.release()
            lease = await asyncio.wait_for(task, 10)
            order.append("alease")
            await asyncio.sleep(0.2)
            assert order == ["alease"]  # the later request still waits
            lease.release()
            await asyncio.get_running_loop().run_in_executor(None, t.join, 10)

        asyncio.run(main())
        assert order == ["alease", "late"]


def test_close_withdraws_a_lease_waiting_in_another_thread(daemon, client, seg):
    name = seg()
    client.create(name, size=64)
    holder = client.lease(name, "w", exclusive=True)
    waiter = shmlease.connect(daemon.socket)
    raised = []

    def wait():
        try:
            waiter.lease(name, "r", timeout=None)
        except ValueError as e:
            raised.append((time.monotonic(), str(e)))

    t = threading.Thread(target=wait)
    t.start()
    wait_until(lambda: client.stat(name)["waiting"] == 1, 10, "the request queued")
    closed_at = time.monotonic()
    waiter.close()
    t.join(5)
    assert not t.is_alive()
    assert len(raised) == 1 and "closed while lease() waited" in raised[0][1]
    assert raised[0][0] - closed_at < 1.0
    wait_until(lambda: client.stat(name)["waiting"] == 0, 5, "the request withdrawn")
    assert waiter.closed
    holder.release()
