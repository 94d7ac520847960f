"""The C extension of docs/examples/c_consumer consumes leases through the C buffer API."""

from __future__ import annotations

import importlib
import os
import sys
import threading
import time

import numpy as np
import pytest

import shmlease


@pytest.fixture(scope="module")
def consumer():
    where = os.environ.get("SHMLEASE_C_CONSUMER_DIR")
    if not where:
        pytest.fail("set SHMLEASE_C_CONSUMER_DIR to the built lease_consumer module's folder "
                    "(ctest does)", pytrace=False)
    sys.path.insert(0, where)
    try:
        return importlib.import_module("lease_consumer")
    finally:
        sys.path.remove(where)


@pytest.mark.parametrize("dtype", ["f", "d"])
def test_c_extension_reads_and_writes_a_lease(client, seg, consumer, dtype):
    name = seg()
    client.create(name, shape=(300, 200), dtype=dtype)
    with client.lease(name, "w") as w:
        consumer.fill(w, 0.5)
        assert w.exports == 0  # the C code released its buffer
        np.asarray(w)[0, :10] = 2.5
    with client.lease(name, "r") as r:
        assert consumer.describe(r) == (dtype, np.dtype(dtype).itemsize, (300, 200), True,
                                        300 * 200 * np.dtype(dtype).itemsize)
        assert consumer.total(r) == pytest.approx(0.5 * (60000 - 10) + 2.5 * 10)
        assert r.exports == 0
        with pytest.raises(BufferError, match="not writable"):
            consumer.fill(r, 1.0)
        assert r.exports == 0


def test_c_extension_refuses_other_formats_and_released_leases(client, seg, consumer):
    name = seg()
    client.create(name, shape=(10,), dtype="i")
    lease = client.lease(name, "w")
    with pytest.raises(TypeError, match="'i'"):
        consumer.total(lease)
    assert lease.exports == 0
    assert consumer.describe(lease)[:3] == ("i", 4, (10,))
    lease.release()
    with pytest.raises(ValueError, match="released"):
        consumer.total(lease)


def test_export_held_by_c_code_blocks_release(client, seg, consumer):
    # total() sums with the GIL released while it holds the export. release() from this thread
    # meanwhile must fail with BufferError (never unmap the memory under the C code); once it
    # succeeds, total() must see a released lease.
    name = seg()
    count = 1 << 23  # 32 MiB of float32: one sum takes some milliseconds
    client.create(name, shape=(count,), dtype="f")
    lease = client.lease(name, "w")
    consumer.fill(lease, 1.0)
    results, errors, first = [], [], threading.Event()

    def sum_until_released():
        while True:
            try:
                results.append(consumer.total(lease))
            except ValueError as e:
                errors.append(e)
                return
            first.set()
            time.sleep(0.001)  # gives the GIL away with no export held, too

    t = threading.Thread(target=sum_until_released)
    t.start()
    assert first.wait(timeout=30)
    refused = 0
    while True:
        try:
            lease.release()
            break
        except BufferError:
            refused += 1
            time.sleep(0.0005)
    t.join(timeout=30)
    assert not t.is_alive()
    assert results and all(r == float(count) for r in results), results[:5]
    assert len(errors) == 1 and "released" in str(errors[0])
    assert lease.released and lease.exports == 0
    assert client.stat(name)["writers"] == 0
