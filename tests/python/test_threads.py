"""Threads: one Client shared by many threads, waits that do not hold the GIL, and releases
triggered by garbage collection on other threads."""

from __future__ import annotations

import gc
import threading
import time

import numpy as np

import shmlease
from conftest import wait_until


def _run_threads(target, count: int) -> list[BaseException]:
    errors: list[BaseException] = []

    def wrapped(i: int) -> None:
        try:
            target(i)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive(), "a thread hung"
    return errors


def test_many_threads_lease_and_release_one_segment(client, seg):
    name = seg()
    client.create(name, shape=(64,), dtype="q")
    iterations = 200

    def work(i: int) -> None:
        for n in range(iterations):
            if n % 4 == 0:
                with client.lease(name, "w", exclusive=True) as lease:
                    a = np.asarray(lease)
                    a[i] += 1          # exclusive: no other thread sees a half-done update
                    del a
            else:
                with client.lease(name) as lease:
                    assert np.asarray(lease).shape == (64,)

    errors = _run_threads(work, 16)
    assert errors == []
    st = client.stat(name)
    assert st["readers"] == 0 and st["writers"] == 0 and st["waiting"] == 0
    with client.lease(name) as lease:
        counts = np.asarray(lease)[:16].copy()
    assert (counts == iterations // 4).all(), counts


def test_waiting_for_a_lease_does_not_hold_the_gil(client, seg):
    name = seg()
    client.create(name, 4096)
    holder = client.lease(name, "r")
    got = threading.Event()

    def wait_for_exclusive(_: int) -> None:
        with client.lease(name, "w", exclusive=True, timeout=30):
            got.set()

    thread = threading.Thread(target=wait_for_exclusive, args=(0,))
    thread.start()
    wait_until(lambda: client.stat(name)["waiting"] == 1, what="the request to queue")
    # This thread keeps running Python code while the other one waits inside the extension.
    spins, end = 0, time.monotonic() + 0.3
    while time.monotonic() < end:
        spins += 1
    assert spins > 10_000, spins
    assert not got.is_set()
    holder.release()
    thread.join(timeout=30)
    assert got.is_set()


def test_gc_driven_releases_on_other_threads(client, seg):
    name = seg()
    client.create(name, shape=(32, 32), dtype="f")
    gc.disable()  # collections run only where this test asks for them
    try:
        def make_garbage(i: int) -> None:
            for _ in range(100):
                lease = client.lease(name)
                junk = {"lease": lease, "array": np.asarray(lease), "view": memoryview(lease)}
                junk["self"] = junk  # a cycle: only the collector frees it
                del lease, junk
                if i % 2 == 0:
                    gc.collect()  # collects other threads' cycles too

        errors = _run_threads(make_garbage, 8)
        assert errors == []
    finally:
        gc.enable()
    gc.collect()
    wait_until(lambda: client.stat(name)["readers"] == 0, what="all leases to be released")


def test_close_from_another_thread_is_safe(daemon, seg):
    name = seg()
    c = shmlease.connect(daemon.socket)
    c.create(name, 64)
    stop = threading.Event()

    def hammer(_: int) -> None:
        while not stop.is_set():
            try:
                with c.lease(name) as lease:
                    bytes(lease)
                c.stat(name)
            except ValueError:  # closed: the expected way out
                return

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    c.close()
    stop.set()
    for t in threads:
        t.join(timeout=30)
        assert not t.is_alive()
    assert c.closed
    with shmlease.connect(daemon.socket) as other:
        wait_until(lambda: other.stat(name)["readers"] == 0, what="the closed client's leases")
