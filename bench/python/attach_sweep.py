#!/usr/bin/python3
"""Attach time against size, for bench/report.py: another process gets a numpy array of a segment
that already holds the data, through shmlease, multiprocessing.shared_memory and
multiprocessing.Queue, in one run. Prints one JSON document on stdout.

For each size (float32 arrays, default 4 KiB to 1 GiB in powers of 4), in freshly spawned
interpreters, each size attached for the first time in that process:
  * shmlease: lease + numpy.asarray (the connection made, and another segment leased once, before
    the clock starts: as bench/python/attach_bench.py's first attach);
  * shared_memory: SharedMemory(name) + numpy.ndarray(buffer=shm.buf);
  * both again "+ touch": the attach, then one element read per 4 KiB page (every page faulted in);
  * Queue: the parent puts the array, the clock stops when get() returns in a child already waiting
    (pickle, pipe, unpickle); only up to --queue-max-mib (256 by default), as it grows linearly.
Medians over --runs processes (sizes in ascending order in one half, descending in the other).

    PYTHONPATH=BUILD/python /usr/bin/python3 bench/python/attach_sweep.py --daemon BUILD/server/shmleased
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import time
from multiprocessing import shared_memory

import numpy as np

import shmlease

import private_daemon

PAGE_ITEMS = 4096 // 4  # float32 items per 4 KiB page
WARM_NAME = "sweep-warm"


def _name(size: int) -> str:
    return f"sweep-{size}"


def _touch(a: np.ndarray) -> float:
    return float(a[::PAGE_ITEMS].sum())


# --- children (spawned interpreters) ---

def _shmlease_child(socket: str, sizes: list[int], out: mp.Queue) -> None:
    c = shmlease.connect(socket)
    # One-time costs of a process's first lease (code and heap touched, numpy's buffer import).
    with c.lease(WARM_NAME) as warm:
        np.asarray(warm)
    result = {}
    for size in sizes:
        t0 = time.perf_counter()
        lease = c.lease(_name(size), "r")
        a = np.asarray(lease)
        t1 = time.perf_counter()
        _touch(a)
        t2 = time.perf_counter()
        assert a.nbytes == size
        del a
        lease.release()
        result[size] = (t1 - t0, t2 - t0)
    out.put(result)


def _shm_child(names: dict, sizes: list[int], out: mp.Queue) -> None:
    # One-time costs of a process's first attach (the resource tracker, numpy's buffer import),
    # taken on another segment as the shmlease child does.
    warm = shared_memory.SharedMemory(name=names["warm"])
    np.ndarray((1024,), np.float32, buffer=warm.buf)
    warm.close()
    result = {}
    for size in sizes:
        t0 = time.perf_counter()
        shm = shared_memory.SharedMemory(name=names[size])
        a = np.ndarray((size // 4,), np.float32, buffer=shm.buf)
        t1 = time.perf_counter()
        _touch(a)
        t2 = time.perf_counter()
        del a
        # Attaching registered the name with the resource tracker (gh-82300); a spawned child
        # shares its parent's tracker, where the parent's unlink() settles it.
        shm.close()
        result[size] = (t1 - t0, t2 - t0)
    out.put(result)


def _queue_child(q: mp.Queue, out: mp.Queue) -> None:
    while True:
        a = q.get()
        done = time.perf_counter()
        if a is None:
            return
        out.put((done, a.nbytes))


# --- parent ---

def _run(ctx, target, *args):
    out = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, out))
    p.start()
    value = out.get(timeout=600)
    p.join(timeout=60)
    if p.exitcode != 0:
        raise RuntimeError(f"{target.__name__} exited with {p.exitcode}")
    return value


def _median_pairs(runs: list[dict], size: int) -> tuple[float, float]:
    return (statistics.median(r[size][0] for r in runs),
            statistics.median(r[size][1] for r in runs))


def measure(socket: str, sizes: list[int], runs: int, queue_max: int) -> dict:
    ctx = mp.get_context("spawn")
    c = shmlease.connect(socket)
    shms: dict = {}  # size (or "warm") -> SharedMemory
    try:
        c.create(WARM_NAME, shape=(1024,), dtype=np.float32)
        for size in sizes:
            print(f"attach_sweep: filling {size} bytes", file=sys.stderr)
            c.create(_name(size), shape=(size // 4,), dtype=np.float32)
            with c.lease(_name(size), "w") as w:
                np.asarray(w)[:] = 1.0  # every page resident before anyone attaches
            shm = shared_memory.SharedMemory(create=True, size=size)
            np.ndarray((size // 4,), np.float32, buffer=shm.buf)[:] = 1.0
            shms[size] = shm
        names = {size: shm.name for size, shm in shms.items()}
        shms["warm"] = shared_memory.SharedMemory(create=True, size=4096)
        names["warm"] = shms["warm"].name

        lease_runs, shm_runs = [], []
        for i in range(runs):
            order = sizes if i % 2 == 0 else sizes[::-1]
            print(f"attach_sweep: attach run {i + 1}/{runs}", file=sys.stderr)
            lease_runs.append(_run(ctx, _shmlease_child, socket, order))
            shm_runs.append(_run(ctx, _shm_child, names, order))

        # multiprocessing.Queue: one receiving child for every transfer, warmed up first.
        queue_rows = {}
        q, out = ctx.Queue(), ctx.Queue()
        child = ctx.Process(target=_queue_child, args=(q, out))
        child.start()
        try:
            q.put(np.ones(4, np.float32))
            out.get(timeout=120)
            for size in [s for s in sizes if s <= queue_max]:
                print(f"attach_sweep: Queue {size} bytes", file=sys.stderr)
                array = np.ones(size // 4, np.float32)
                times = []
                for _ in range(3 if size <= (16 << 20) else 1):
                    t0 = time.perf_counter()
                    q.put(array)
                    done, nbytes = out.get(timeout=900)
                    assert nbytes == size
                    times.append(done - t0)
                queue_rows[size] = statistics.median(times)
                del array
        finally:
            q.put(None)
            child.join(timeout=60)
            if child.is_alive():
                child.kill()
    finally:
        for shm in shms.values():
            shm.close()
            shm.unlink()
        for name in [WARM_NAME, *(_name(s) for s in sizes)]:
            try:
                c.remove(name)
            except shmlease.NotFoundError:
                pass
        c.close()

    rows = []
    for size in sizes:
        lease_attach, lease_touch = _median_pairs(lease_runs, size)
        shm_attach, shm_touch = _median_pairs(shm_runs, size)
        rows.append({"size": size, "shmlease_s": lease_attach, "shmlease_touch_s": lease_touch,
                     "shared_memory_s": shm_attach, "shared_memory_touch_s": shm_touch,
                     "mp_queue_s": queue_rows.get(size)})
    return {"program": "attach_sweep", "runs": runs, "queue_max_bytes": queue_max, "rows": rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--daemon", required=True, help="the shmleased binary (a private one is run)")
    ap.add_argument("--sizes", default=",".join(str(4096 * 4 ** k) for k in range(10)),
                    help="bytes, comma-separated, multiples of 4 (default 4 KiB ... 1 GiB)")
    ap.add_argument("--runs", type=int, default=5, help="fresh processes per method (default 5)")
    ap.add_argument("--queue-max-mib", type=int, default=256,
                    help="largest size sent through the Queue, MiB (default 256)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    socket, stop = private_daemon.start(args.daemon)
    try:
        result = measure(socket, sizes, max(1, args.runs), args.queue_max_mib << 20)
    finally:
        stop()
    json.dump(result, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
