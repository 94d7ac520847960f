"""numpy arrays of leases through multiprocessing: by reference, under the receiver's own lease.

Workers are multiprocessing.Pool / ProcessPoolExecutor processes of both start methods; their
functions live at module level so that spawn can import them by name. Forged pickles are checked
in this process: a refusal must be an exception, never a crash of the test run.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import gc
import multiprocessing
import os
import pickle
import signal

import numpy as np
import pytest

import shmlease
from shmlease import _sharing
from multiprocessing.reduction import ForkingPickler
from conftest import run_python, wait_until

START_METHODS = ["fork", "spawn"]


def _dumps(obj) -> bytes:
    return bytes(ForkingPickler.dumps(obj))


def _refusal(data: bytes) -> BaseException:
    """Unpickles `data`, which must give an UnavailableArray, and returns the error it raises."""
    x = pickle.loads(data)
    assert isinstance(x, shmlease.UnavailableArray), type(x)
    for use in (lambda: x.sum(), lambda: np.asarray(x), lambda: x[0], lambda: x + 1,
                lambda: len(x), lambda: pickle.dumps(x)):
        with pytest.raises(type(x.error)) as info:
            use()
        assert info.value is x.error
    return x.error


def _writers(client, name) -> int:
    return client.stat(name)["writers"]


def _readers(client, name) -> int:
    return client.stat(name)["readers"]


@pytest.fixture
def pool_factory():
    """Pools of one worker per start method, terminated at teardown."""
    pools = []

    def make(method):
        pool = multiprocessing.get_context(method).Pool(1)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.terminate()
        pool.join()


def _filled(client, name, shape=(64, 32), dtype="f", mode="w", **kwargs):
    client.create(name, shape=shape, dtype=dtype)
    lease = client.lease(name, "w")
    a = np.asarray(lease)
    a[...] = np.arange(a.size, dtype=a.dtype).reshape(a.shape)
    del a
    lease.release()
    lease = client.lease(name, mode, **kwargs)
    return lease, np.asarray(lease)


# --- worker functions -----------------------------------------------------------------------

def w_describe(x):
    """What the worker received: its values, layout, and the lease its memory belongs to."""
    owner, _ = _sharing._owner_of(x)
    return {
        "values": x.tolist(),
        "shape": x.shape,
        "strides": x.strides,
        "dtype": x.dtype.str,
        "writeable": bool(x.flags.writeable),
        "lease": None if owner is None else
        {"name": owner.name, "mode": owner.mode, "pid": os.getpid(),
         "id": owner.info["id"], "nbytes": owner.nbytes},
    }


def w_write(x, value):
    x[...] = value
    return float(x.sum())


def w_return_slice(x):
    return x[2:5, 1::3]


def w_lease_and_return(socket, name):
    c = shmlease.connect(socket)
    return c.array(name, "w")[1:3]


_held = []


def w_hold(x):
    _held.append(x)
    return os.getpid()


def w_drop():
    _held.clear()
    gc.collect()
    return os.getpid()


def w_try_write(x):
    try:
        x[0, 0] = 1.0
    except ValueError as e:
        first = str(e)
    else:
        return "wrote"
    try:
        x.flags.writeable = True
    except ValueError as e:
        return "refused: " + first + " / " + str(e)
    return "writeable flag set"


def w_poke_address(x):
    """Writes through the raw address, bypassing numpy's flag: the kernel must stop it."""
    addr = x.__array_interface__["data"][0]
    ctypes.memmove(addr, b"\x01\x02\x03\x04", 4)
    os._exit(0)


def w_loads(data):
    x = pickle.loads(data)
    try:
        x.sum()
    except shmlease.Error as e:
        return type(x).__name__, type(e).__name__, str(e)
    return type(x).__name__, "", ""


def w_sum(x):
    return float(x.sum())


# --- tests ----------------------------------------------------------------------------------

@pytest.mark.parametrize("method", START_METHODS)
def test_pool_apply_argument_is_a_view_under_the_workers_lease(client, seg, pool_factory, method):
    name = seg()
    lease, a = _filled(client, name)
    pool = pool_factory(method)
    got = pool.apply(w_describe, (a,))
    assert got["values"] == a.tolist()
    assert got["shape"] == a.shape and got["strides"] == a.strides
    assert got["writeable"]
    assert got["lease"]["name"] == name and got["lease"]["mode"] == "w"
    assert got["lease"]["pid"] != os.getpid()
    assert got["lease"]["id"] == lease.info["id"]
    # By reference: the pickle of a 64x32 float array, and of a 16 MiB one, is a few hundred bytes.
    assert len(_dumps(a)) < 600


@pytest.mark.parametrize("method", START_METHODS)
def test_worker_writes_are_seen_by_the_parent(client, seg, pool_factory, method):
    name = seg()
    lease, a = _filled(client, name)
    pool = pool_factory(method)
    assert pool.apply(w_write, (a[10:20], 7.0)) == 7.0 * 10 * 32
    assert (a[10:20] == 7.0).all()
    assert a[9, 31] == 9 * 32 + 31 and a[20, 0] == 20 * 32  # neighbours untouched


@pytest.mark.parametrize("method", START_METHODS)
def test_pool_apply_returned_array_is_a_view_of_the_same_memory(client, seg, pool_factory, method):
    name = seg()
    lease, a = _filled(client, name)
    pool = pool_factory(method)
    r = pool.apply(w_return_slice, (a,))
    assert np.array_equal(r, a[2:5, 1::3]) and r.strides == a[2:5, 1::3].strides
    a[3, 4] = -1.0
    assert r[1, 1] == -1.0  # the parent's write shows through the returned array
    owner, _ = _sharing._owner_of(r)
    assert owner is not lease and owner.info["id"] == lease.info["id"] and owner.mode == "w"


def test_worker_made_array_returned_to_the_parent(daemon, client, seg, pool_factory):
    name = seg()
    lease, a = _filled(client, name)
    r = pool_factory("spawn").apply(w_lease_and_return, (daemon.socket, name))
    assert np.array_equal(r, a[1:3])
    r[0, 0] = 123.0
    assert a[1, 0] == 123.0


@pytest.mark.parametrize("method", START_METHODS)
def test_worker_holds_a_lease_while_it_has_the_array_and_releases_it_after(
        client, seg, pool_factory, method):
    name = seg()
    lease, a = _filled(client, name)
    assert _writers(client, name) == 1
    pool = pool_factory(method)
    pid = pool.apply(w_hold, (a[5],))
    assert _writers(client, name) == 2
    held = [c for c in client.stats()["clients"] if c["pid"] == pid]
    assert [l["segment"] for c in held for l in c["leases"]] == [name]
    assert pool.apply(w_drop) == pid
    wait_until(lambda: _writers(client, name) == 1, what="the worker's release")


def test_slice_with_offset_and_strides_arrives_exactly(client, seg, pool_factory):
    name = seg()
    lease, a = _filled(client, name, shape=(40, 30, 4), dtype="d")
    views = [a[3:17:3, ::-2, 1], a.T[::2], a[5:, 4:20].reshape(35, 16, 4)[::-7],
             a.view(np.int32)[1:3, 2:9:3], a[7, 3], a.ravel()[11:12], a[1:1]]
    pool = pool_factory("spawn")
    for v in views:
        got = pool.apply(w_describe, (v,))
        assert got["lease"] is not None, v.shape
        assert got["values"] == v.tolist()
        assert (got["shape"], got["strides"], got["dtype"]) == (v.shape, v.strides, v.dtype.str)


@pytest.mark.parametrize("method", START_METHODS)
def test_read_lease_view_is_read_only_in_the_worker(client, seg, pool_factory, method):
    name = seg()
    lease, a = _filled(client, name, mode="r")
    pool = pool_factory(method)
    got = pool.apply(w_describe, (a,))
    assert got["lease"]["mode"] == "r" and not got["writeable"]
    outcome = pool.apply(w_try_write, (a,))
    assert outcome.startswith("refused: ") and "read-only" in outcome
    wait_until(lambda: _readers(client, name) == 1, what="the worker's release")


def test_read_lease_is_read_only_for_the_kernel_in_the_receiver(client, seg):
    name = seg()
    lease, a = _filled(client, name, mode="r")
    p = multiprocessing.get_context("spawn").Process(target=w_poke_address, args=(a,))
    # Under ASan (tests/python/CMakeLists.txt preloads it) the child's fault must stay a SIGSEGV
    # rather than an ASan report: a spawned interpreter reads ASAN_OPTIONS when it starts.
    saved = os.environ.get("ASAN_OPTIONS")
    if saved is not None:
        os.environ["ASAN_OPTIONS"] = saved + ":handle_segv=0"
    try:
        p.start()
    finally:
        if saved is not None:
            os.environ["ASAN_OPTIONS"] = saved
    p.join(60)
    assert p.exitcode == -signal.SIGSEGV
    assert a[0, 0] == 0.0 and a[0, 1] == 1.0


def test_a_read_only_view_of_a_write_lease_stays_read_only(client, seg, pool_factory):
    name = seg()
    lease, a = _filled(client, name)
    v = a[1:3]
    v.flags.writeable = False
    got = pool_factory("fork").apply(w_describe, (v,))
    assert got["lease"]["mode"] == "w" and not got["writeable"]


@pytest.mark.parametrize("method", START_METHODS)
def test_process_pool_executor_argument_and_result(client, seg, method):
    name = seg()
    lease, a = _filled(client, name)
    ctx = multiprocessing.get_context(method)
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as ex:
        assert ex.submit(w_write, a[0], 2.5).result(timeout=60) == 2.5 * 32
        assert (a[0] == 2.5).all()
        r = ex.submit(w_return_slice, a).result(timeout=60)
        a[2, 1] = 77.0
        assert r[0, 0] == 77.0
        assert _sharing._owner_of(r)[0] is not lease


def test_ordinary_arrays_still_pickle_by_value(pool_factory):
    plain = np.arange(10000, dtype=np.int64).reshape(100, 100)[::3]
    data = _dumps(plain)
    assert len(data) > plain.nbytes
    back = pickle.loads(data)
    assert np.array_equal(back, plain) and _sharing._owner_of(back) == (None, None)
    from_bytes = np.frombuffer(bytearray(b"abcdefgh"), np.uint8)  # a memoryview, not a Lease
    assert pickle.loads(_dumps(from_bytes)).tobytes() == b"abcdefgh"
    assert pool_factory("spawn").apply(w_sum, (plain,)) == float(plain.sum())


def test_plain_pickle_dumps_is_unchanged(client, seg):
    name = seg()
    lease, a = _filled(client, name)
    back = pickle.loads(pickle.dumps(a))  # not ForkingPickler: by value, a copy
    assert np.array_equal(back, a) and _sharing._owner_of(back) == (None, None)


def test_arrays_unpickled_together_share_one_lease_that_lives_as_long_as_they_do(client, seg):
    name = seg()
    lease, a = _filled(client, name)
    data1, data2 = _dumps(a[1]), _dumps(a[2:4])
    del a
    lease.release()
    x, y = pickle.loads(data1), pickle.loads(data2)
    assert _writers(client, name) == 1
    assert _sharing._owner_of(x)[0] is _sharing._owner_of(y)[0]
    del x
    gc.collect()
    assert _writers(client, name) == 1
    y[0, 0] = 5.0
    del y
    gc.collect()
    wait_until(lambda: _writers(client, name) == 0, what="the receiver's release")
    with client.lease(name) as check:
        assert np.asarray(check)[2, 0] == 5.0


def test_array_made_in_a_with_block_travels_after_it(client, seg, pool_factory):
    name = seg()
    client.create(name, shape=(8,), dtype="i")
    with client.lease(name, "w") as lease:
        a = np.asarray(lease)[2:]
    assert lease.released  # no new export, yet the daemon's lease is still held by `a`
    assert pool_factory("fork").apply(w_write, (a, 3)) == 18.0
    assert a.tolist() == [3] * 6


def test_array_of_a_released_lease_without_export_is_refused(client, seg):
    name = seg()
    client.create(name, shape=(8,), dtype="i")
    lease = client.lease(name, "w")
    a = np.ndarray((8,), np.int32, buffer=lease)  # keeps no export
    lease.release()
    with pytest.raises(pickle.PicklingError, match="released lease"):
        _dumps(a)


def test_removed_segment_is_not_found_in_the_worker(client, seg, pool_factory):
    name = seg()
    lease, a = _filled(client, name)
    data = _dumps(a)
    del a
    lease.release()
    client.remove(name)
    kind, error, message = pool_factory("spawn").apply(w_loads, (data,))
    assert (kind, error) == ("UnavailableArray", "NotFoundError") and name in message


def test_removed_while_held_worker_gets_not_found(client, seg, pool_factory):
    name = seg()
    lease, a = _filled(client, name)
    client.remove(name)  # the name goes now, the memory with the last lease
    pool = pool_factory("fork")
    with pytest.raises(shmlease.NotFoundError, match=name):
        pool.apply(w_sum, (a,))  # raised where the worker uses the array, reported here
    assert pool.apply(w_sum, (np.ones(3),)) == 3.0  # the worker and the pool are fine
    assert a[1, 0] == 32.0  # still mapped and leased here


def test_segment_recreated_in_flight_is_refused(client, seg):
    name = seg()
    lease, a = _filled(client, name)
    data = _dumps(a)
    del a
    lease.release()
    client.remove(name)
    client.create(name, shape=(64, 32), dtype="f")  # same name and layout, another segment
    error = _refusal(data)
    assert isinstance(error, shmlease.NotFoundError) and "created again" in str(error)
    assert _writers(client, name) == 0 and _readers(client, name) == 0  # its lease given back


class _Forged:
    def __init__(self, *args):
        self.args = args

    def __reduce__(self):
        return _sharing._rebuild, self.args


def test_forged_pickles_are_refused(daemon, client, seg):
    name = seg()
    lease, a = _filled(client, name, shape=(16,), dtype="f")  # 64 bytes
    info = lease.info
    ok = (1, daemon.socket, name, info["id"], info["created_unix_ns"], "w", 8, (4,), (4,),
          np.dtype("f"), True)

    def forged(**change):
        fields = ["version", "socket", "name", "id", "created", "mode", "offset", "shape",
                  "strides", "dtype", "writeable"]
        args = list(ok)
        for k, v in change.items():
            args[fields.index(k)] = v
        return pickle.dumps(_Forged(*args))

    assert pickle.loads(forged()).tolist() == [2.0, 3.0, 4.0, 5.0]  # the unforged one works
    cases = {
        "offset": [dict(offset=-4), dict(offset=65), dict(offset=2**64), dict(offset=60),
                   dict(offset="8")],
        "reach": [dict(shape=(17,), offset=0), dict(strides=(-4,), offset=8),
                  dict(strides=(2**62,)), dict(shape=(2, 2), strides=(52, 4)),
                  dict(dtype=np.dtype("V60"))],
        "shape": [dict(shape=(-1,)), dict(shape=(4,), strides=(4, 4)), dict(shape=[4]),
                  dict(shape=(4.0,)), dict(shape=(1,) * 33, strides=(4,) * 33)],
        "objects": [dict(dtype=np.dtype("O")), dict(dtype=np.dtype([("a", "O"), ("b", "f")])),
                    dict(dtype="f")],
        "version": [dict(version=2), dict(mode="x"), dict(socket=3)],
    }
    for group, changes in cases.items():
        for change in changes:
            error = _refusal(forged(**change))
            assert isinstance(error, shmlease.InvalidArgumentError), (group, change, error)
            assert "refusing a pickled" in str(error), (group, change)
    for change in (dict(id=info["id"] + 1000), dict(created=info["created_unix_ns"] + 1)):
        error = _refusal(forged(**change))
        assert isinstance(error, shmlease.NotFoundError) and "created again" in str(error)
    assert isinstance(_refusal(forged(name=name + "-missing")), shmlease.NotFoundError)
    assert a.tolist() == list(range(16))  # nothing was written through a refused view


def test_exclusive_lease_array_is_refused_at_pickling(client, seg, pool_factory):
    name = seg()
    lease, a = _filled(client, name, exclusive=True)
    with pytest.raises(pickle.PicklingError, match="exclusive"):
        _dumps(a[1:])
    pool = pool_factory("fork")
    result = pool.apply_async(w_sum, (a,))
    with pytest.raises(pickle.PicklingError, match="exclusive"):
        result.get(timeout=30)  # refused in this process, no worker waits for the lease
    assert pool.apply(w_sum, (a.copy(),)) == float(a.sum())  # a copy travels by value


# --- arrays of channel frames ---------------------------------------------------------------

def w_held_values():
    return [x.tolist() for x in _held]


def w_frame_of(x):
    """The seq of the Frame the received array views, and whether it is read-only."""
    owner, _ = _sharing._owner_of(x)
    return type(owner).__name__, owner.seq, bool(x.flags.writeable), x.tolist()


def _frame_channel(client, name, value=2.0, **kwargs):
    """A channel of (4, 3) float32 frames, its writer and reader, and frame 1 taken (all `value`)."""
    ch = client.channel(name, shape=(4, 3), dtype="f", **kwargs)
    w = ch.writer()
    r = ch.reader()
    _publish(w, value)
    return ch, w, r, r.next(timeout=5.0)


def _publish(w, value):
    f = w.claim(timeout=5.0)
    x = np.asarray(f)
    x[:] = value
    del x
    return w.publish(f)


def _end(ch, *participants):
    for p in participants:
        p.close()
    ch.remove()


def test_claimed_frame_array_is_refused_with_advice_to_copy(client, seg):
    ch = client.channel(seg("chan"), shape=(4, 3), dtype="f", slots=2)
    w = ch.writer()
    f = w.claim(timeout=1.0)
    x = np.asarray(f)
    with pytest.raises(pickle.PicklingError, match=r"claimed frame is the writer's.*arr\.copy\(\)"):
        _dumps(x[1:])
    x[:] = 2.0
    assert pickle.loads(_dumps(x.copy())).tolist() == [[2.0] * 3] * 4  # a copy goes by value
    del x
    f.release()
    _end(ch, w)


def _released(frame) -> bool:
    try:
        frame.release()
    except BufferError:
        return False
    return True


@pytest.mark.parametrize("method", START_METHODS)
def test_frame_array_travels_by_reference_and_the_worker_holds_its_slot(
        client, seg, pool_factory, method):
    ch, w, r, got = _frame_channel(client, seg("chan"), slots=3, policy="block")
    y = np.asarray(got)
    pool = pool_factory(method)
    kind, seq, writeable, values = pool.apply(w_frame_of, (y[1:],))
    assert (kind, seq, writeable, values) == ("Frame", got.seq, False, [[2.0] * 3] * 3)
    pool.apply(w_hold, (y[::2, 1:],))
    info = ch.info()
    assert (info["readers"], info["holders"]) == (1, 1)  # a holder is not a reader
    assert w.readers == 1
    del y
    # multiprocessing's task-handler thread lets go of the last task's arguments (a view of y) a
    # moment after apply() has returned; only then is got's last export gone.
    wait_until(lambda: _released(got), what="the pool's task handler dropping the last view")
    # Only the worker holds frame 1 now.
    # The writer goes on through the two other slots (the holder never makes it wait for
    # frames it has not read), and never into the held one.
    for value in range(3, 23):
        _publish(w, float(value))
        f = r.next(timeout=5.0)
        assert np.asarray(f)[0, 0] == value
        f.release()
    assert pool.apply(w_held_values) == [[[2.0, 2.0], [2.0, 2.0]]]
    pool.apply(w_drop)
    wait_until(lambda: ch.info()["holders"] == 0, what="the worker's holder place given back")
    _end(ch, w, r)


def test_frame_array_returned_from_a_worker_is_held_by_the_parent(client, seg, pool_factory):
    ch, w, r, got = _frame_channel(client, seg("chan"), value=5.0, slots=2, policy="latest")
    back = pool_factory("fork").apply(w_return_slice, (np.asarray(got)[None],))
    owner = _sharing._owner_of(back)[0]
    assert isinstance(owner, shmlease.Frame) and owner is not got and owner.seq == got.seq
    assert back.tolist() == [] and back.shape == (0, 1, 3)  # x[2:5, 1::3] of a (1, 4, 3) array
    back2 = pickle.loads(_dumps(np.asarray(got)[1:3]))
    got.release()
    _publish(w, 6.0)  # into the other slot; the held one stays
    second = r.next(timeout=5.0)
    with pytest.raises(shmlease.LeaseTimeoutError):
        w.claim(timeout=0.2)  # 'latest' waits only when every slot is held, as now
    assert back2.tolist() == [[5.0] * 3] * 2
    del back, back2, owner
    gc.collect()
    f = w.claim(timeout=5.0)  # the held slot is free again
    f.release()
    second.release()
    _end(ch, w, r)


def test_arrays_of_one_frame_unpickled_together_share_one_hold(client, seg):
    ch, w, r, got = _frame_channel(client, seg("chan"), slots=2, policy="latest")
    a, b = pickle.loads(_dumps((np.asarray(got), np.asarray(got)[2:])))
    assert _sharing._owner_of(a)[0] is _sharing._owner_of(b)[0]
    assert ch.info()["holders"] == 1
    got.release()
    del a
    gc.collect()
    _publish(w, 3.0)
    second = r.next(timeout=5.0)
    with pytest.raises(shmlease.LeaseTimeoutError):
        w.claim(timeout=0.2)  # b still holds frame 1's slot, the reader frame 2's
    assert b.tolist() == [[2.0] * 3] * 2
    del b
    gc.collect()
    w.claim(timeout=5.0).release()
    second.release()
    wait_until(lambda: ch.info()["holders"] == 0, what="the holder place given back")
    _end(ch, w, r)


def test_frame_reused_before_the_receiver_holds_it_is_not_found(client, seg):
    ch, w, r, got = _frame_channel(client, seg("chan"), slots=2, policy="block")
    data = _dumps(np.asarray(got))
    got.release()  # nobody holds frame 1 while it is "in flight"
    for value in (3.0, 4.0):
        _publish(w, value)
        r.next(timeout=5.0).release()
    error = _refusal(data)
    assert isinstance(error, shmlease.NotFoundError)
    assert "frame 1 is no longer in slot" in str(error)
    _end(ch, w, r)


def test_frame_of_a_channel_created_again_is_refused(client, seg):
    name = seg("chan")
    ch, w, r, got = _frame_channel(client, name, slots=2)
    data = _dumps(np.asarray(got))
    got.release()
    _end(ch, w, r)
    ch = client.channel(name, shape=(4, 3), dtype="f", slots=2)
    w = ch.writer()
    _publish(w, 9.0)  # the new channel's frame 1, in the same slot
    error = _refusal(data)
    assert isinstance(error, shmlease.NotFoundError)
    assert "removed and created again" in str(error)
    assert ch.info()["holders"] == 0
    _end(ch, w)
    error = _refusal(data)  # and gone: no channel of that name
    assert isinstance(error, shmlease.NotFoundError)


class _ForgedFrame(_Forged):
    def __reduce__(self):
        return _sharing._rebuild_frame, self.args


def test_forged_frame_pickles_are_refused(client, seg):
    ch, w, r, got = _frame_channel(client, seg("chan"), slots=2)
    fn, fields = _sharing._reduce_ndarray(np.asarray(got))
    assert fn is _sharing._rebuild_frame
    good = dict(zip(("version", "socket", "channel", "channel_id", "created_ns", "slot", "seq",
                     "offset", "shape", "strides", "dtype"), fields))

    def forged(**change):
        return _refusal(pickle.dumps(_ForgedFrame(*{**good, **change}.values())))

    cases = [
        (dict(slot=7), shmlease.InvalidArgumentError, "there is no slot 7"),
        (dict(slot=-1), shmlease.InvalidArgumentError, "out of range"),
        (dict(seq="1"), shmlease.InvalidArgumentError, "frame location"),
        (dict(seq=99), shmlease.NotFoundError, "frame 99 is no longer in slot"),
        (dict(channel_id=good["channel_id"] + 1), shmlease.NotFoundError,
         "removed and created again"),
        (dict(offset=49), shmlease.InvalidArgumentError, "outside the frame's 48 bytes"),
        (dict(shape=(5, 3)), shmlease.InvalidArgumentError, "outside the frame's 48"),
        (dict(strides=(-12, 4)), shmlease.InvalidArgumentError, "outside the frame's 48"),
        (dict(dtype=np.dtype(object)), shmlease.InvalidArgumentError, "Python objects"),
        (dict(version=2), shmlease.InvalidArgumentError, "wire version 2"),
    ]
    for change, cls, text in cases:
        error = forged(**change)
        assert isinstance(error, cls), (change, error)
        assert text in str(error), (change, error)
    assert pickle.loads(pickle.dumps(_ForgedFrame(*good.values()))).tolist() == [[2.0] * 3] * 4
    gc.collect()
    wait_until(lambda: ch.info()["holders"] == 0, what="the forged holds given back")
    got.release()
    _end(ch, w, r)


def test_import_shmlease_imports_neither_numpy_nor_multiprocessing_and_registers_later(daemon):
    r = run_python(daemon, """
        import sys
        import shmlease
        from shmlease import _sharing
        assert "numpy" not in sys.modules, "import shmlease imported numpy"
        assert "multiprocessing" not in sys.modules, "import shmlease imported multiprocessing"
        import numpy as np
        assert "multiprocessing" not in sys.modules, "registering imported multiprocessing"
        assert not _sharing._registered
        import multiprocessing
        from multiprocessing.reduction import ForkingPickler
        assert ForkingPickler._extra_reducers.get(np.ndarray) is _sharing._reduce_ndarray
        assert not any(isinstance(f, _sharing._PostImportHook) for f in sys.meta_path)
        assert type(np.__loader__).__name__ != "_RegisteringLoader"
        assert type(np.__spec__.loader).__name__ != "_RegisteringLoader"
        c = shmlease.connect()
        c.create("import-order", shape=(4,), dtype="f")
        with c.lease("import-order", "w") as lease:
            a = np.asarray(lease)
            assert len(ForkingPickler.dumps(a)) < 600
            del a
        c.remove("import-order")
        print("ok")
    """)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
    for order in ("import numpy, multiprocessing, shmlease",
                  "import multiprocessing, shmlease, numpy",
                  "import numpy, shmlease, multiprocessing.reduction"):
        r = run_python(daemon, f"""
            {order}
            import numpy as np
            from multiprocessing.reduction import ForkingPickler
            from shmlease import _sharing
            assert ForkingPickler._extra_reducers.get(np.ndarray) is _sharing._reduce_ndarray
            print("ok")
        """)
        assert r.returncode == 0 and r.stdout.strip() == "ok", (order, r.stderr)
