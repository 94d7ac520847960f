"""One set of rules for Python arguments (pybindings/src/convert.cpp): timeouts are parsed the same
way by every call that waits, and channel() takes shapes and dtypes exactly as create() does."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import shmlease


BAD_TIMEOUTS = [
    (True, TypeError), (False, TypeError), ("1", TypeError), ([1], TypeError),
    (-1, shmlease.InvalidArgumentError), (-0.001, shmlease.InvalidArgumentError),
    (float("nan"), shmlease.InvalidArgumentError), (float("-inf"), shmlease.InvalidArgumentError),
    (-(10 ** 400), shmlease.InvalidArgumentError),
]
HUGE_TIMEOUTS = [1e300, float("inf"), 10 ** 400, 2 ** 64, 1e15]


def _waiting_calls(client, seg, chan):
    """Every call that takes a timeout, each on something available at once."""
    name = seg()
    client.create(name, 8)
    ch = client.channel(chan.name(), shape=(2,), dtype="B", slots=2)
    w = ch.writer()
    r = client.channel(ch.name).reader()

    def next_frame(t):
        f = w.claim(timeout=5)
        w.publish(f)
        return r.next(timeout=t)

    calls = {
        "lease": lambda t: client.lease(name, "r", timeout=t),
        "claim": lambda t: w.claim(timeout=t),
        "next": next_frame,
        "wait_for_readers": lambda t: w.wait_for_readers(1, timeout=t),
        "writer": lambda t: client.channel(ch.name).writer(timeout=t),
    }
    return calls, w, r


@pytest.mark.parametrize("bad, error", BAD_TIMEOUTS, ids=repr)
def test_bad_timeouts_refused_everywhere(client, seg, chan, bad, error):
    calls, w, r = _waiting_calls(client, seg, chan)
    for what, call in calls.items():
        with pytest.raises(error) as info:
            call(bad)
        assert not isinstance(info.value, OverflowError), what
        if error is TypeError:
            assert not isinstance(info.value, ValueError), what
    w.close()
    r.close()


@pytest.mark.parametrize("huge", HUGE_TIMEOUTS, ids=repr)
def test_huge_timeouts_are_forever_everywhere(client, seg, chan, huge):
    calls, w, r = _waiting_calls(client, seg, chan)
    for what, call in calls.items():
        if what == "writer":
            continue  # the channel's one writer is w: a second one waits for it (below)
        got = call(huge)
        if got is not None:
            got.release()
    w.close()
    got = calls["writer"](huge)  # the writer token is free again
    got.close()
    r.close()


def test_a_huge_timeout_waits_instead_of_failing(client, chan):
    # The old channel parser cast 1e300 seconds to int64: it must wait, not fail or overflow.
    ch = client.channel(chan.name(), shape=(1,), dtype="B", slots=2)
    w = ch.writer()
    r = client.channel(ch.name).reader()
    result: list = []
    t = threading.Thread(target=lambda: result.append(r.next(timeout=1e300)))
    t.start()
    time.sleep(0.3)
    assert t.is_alive() and not result, "next(timeout=1e300) returned before any frame"
    f = w.claim(timeout=1e300)
    w.publish(f)
    t.join(5)
    assert not t.is_alive() and result[0].seq == 1
    result[0].release()
    w.close()
    r.close()


def test_zero_timeout_fails_at_once(client, seg):
    name = seg()
    client.create(name, 8)
    with client.lease(name, "w", exclusive=True):
        start = time.monotonic()
        with pytest.raises(shmlease.LeaseTimeoutError):
            client.lease(name, "r", timeout=0)
        with pytest.raises(shmlease.LeaseTimeoutError):
            client.lease(name, "r", timeout=0.0)
        assert time.monotonic() - start < 1.0


# (shape, dtype) pairs: channel() must accept or refuse each exactly as create() does.
SHAPE_DTYPE_CASES = [
    ((4,), None), (4, "f"), ((2, 3), np.float32), ((2, 3), np.dtype("int16")), ((3,), "float64"),
    ((2,), "@d"), ((2,), float), ((2,), bool),
    ((-1,), None), ((0,), None), ((), None), (0, None), (-3, None), (True, None), ((1.5,), None),
    ("4", None), ((2,) * 9, None), ((2 ** 65,), None),
    ((2,), "z"), ((2,), "ff"), ((2,), np.dtype(">f4")), ((2,), np.dtype([("a", "f4")])),
    ((2,), "complex64"), ((2,), 3), ((2,), "not-a-dtype"),
]


def _outcome(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - comparing what each raises
        return type(e)
    return None


@pytest.mark.parametrize("shape, dtype", SHAPE_DTYPE_CASES, ids=repr)
def test_channel_accepts_exactly_what_create_accepts(client, seg, chan, shape, dtype):
    name = seg()
    create = _outcome(lambda: client.create(name, shape=shape, dtype=dtype))
    cname = chan.name()
    channel = _outcome(lambda: client.channel(cname, shape=shape, dtype=dtype, slots=2))
    assert channel is create, f"create -> {create}, channel -> {channel}"
    assert channel is not OverflowError
    if create is None:
        info = client.stat(name)
        ch = client.channel(cname)
        assert ch.dtype == (info["format"] or "B")
        assert tuple(ch.shape) == info["shape"]


def test_channel_negative_dimension_and_numpy_dtype(client, chan):
    with pytest.raises(shmlease.InvalidArgumentError):
        client.channel(chan.name(), shape=(-1,))
    ch = client.channel(chan.name(), shape=(2, 2), dtype=np.float32, slots=2)
    assert ch.dtype == "f"
    w = ch.writer()
    f = w.claim(timeout=5)
    assert np.asarray(f).dtype == np.float32 and f.dtype == np.float32
    f.release()
    w.close()


@pytest.mark.parametrize("kwargs, error", [
    ({"slots": -1}, shmlease.InvalidArgumentError), ({"slots": 0}, shmlease.InvalidArgumentError),
    ({"slots": 2 ** 40}, shmlease.InvalidArgumentError), ({"slots": True}, TypeError),
    ({"slots": 2.0}, TypeError), ({"policy": "newest"}, shmlease.InvalidArgumentError),
    ({"policy": 1}, TypeError),
], ids=repr)
def test_channel_other_arguments(client, chan, kwargs, error):
    with pytest.raises(error):
        client.channel(chan.name(), shape=(2,), **kwargs)


def test_channel_name_must_be_a_str(client):
    with pytest.raises(TypeError):
        client.channel(b"bytes-name", shape=(2,))


@pytest.mark.parametrize("mode, error", [("x", shmlease.InvalidArgumentError),
                                         ("rw", shmlease.InvalidArgumentError),
                                         (1, TypeError), (None, TypeError)], ids=repr)
def test_lease_mode(client, seg, mode, error):
    name = seg()
    client.create(name, 8)
    with pytest.raises(error):
        client.lease(name, mode)
    with client.lease(name, "w") as w, client.lease(name, "r") as r:
        assert (w.mode, r.mode, w.readonly, r.readonly) == ("w", "r", False, True)
