#!/usr/bin/python3
"""Attach a typed 1 GiB array in a second process: shmlease against the alternatives.

Measures, in freshly spawned interpreters (never forks of a live client):
  * shmlease, first attach of a segment in a process: lease + numpy.asarray of a 1 GiB float32
    array, and of a 4 KiB one (the connection is made, and one other segment leased, before the
    clock starts);
  * shmlease, repeated attach on the same connection (the segment's mapping is reused);
  * multiprocessing.shared_memory: SharedMemory(name) + numpy.ndarray(buffer=shm.buf);
  * multiprocessing.Queue: the array put by the parent, got by the child (by default the first
    256 MiB of it, scaled to 1 GiB: the whole GiB takes 25-80 s here; --queue-mib 1024 sends it);
  * for reference, the first full read (every page faulted in) of the attached 1 GiB array.

Usage (from the repository root, after building into BUILD):
  PYTHONPATH=BUILD/python /usr/bin/python3 bench/python/attach_bench.py \\
      --daemon BUILD/server/shmleased [--markdown docs/BENCHMARKS.md]
or --socket PATH to use a daemon that is already running. Takes about a minute.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from multiprocessing import shared_memory

import numpy as np

import shmlease

import private_daemon
from doc_section import write_section

SIDE = 16384                  # 16384 x 16384 float32 = 1 GiB
SMALL = (1024,)               # 1024 float32 = 4 KiB
BIG_NAME, SMALL_NAME, WARM_NAME = "bench-attach-1g", "bench-attach-4k", "bench-attach-warm"
# SHMLEASE_BENCH_QUICK=1 (bench/report.py --quick): fewer repetitions, for trying the report out.
# An environment variable because the spawned children read these too.
QUICK = os.environ.get("SHMLEASE_BENCH_QUICK") == "1"
COLD_RUNS = 3 if QUICK else 15        # fresh processes for first-attach numbers
WARM_LOOPS = 200 if QUICK else 2000   # attaches per process on a warm connection
SHM_LOOPS = 20 if QUICK else 200      # SharedMemory attaches per process


NOTES = """
How to read it:
- Attaching does not touch the pages, so its cost does not depend on the size: a lease is one
  round trip to the daemon plus, the first time a process leases the segment, one mmap of the
  descriptor passed with the reply. Later leases on the same connection reuse that mapping.
- The repeat rows time lease + np.asarray + release in a loop, so they include the release
  (a one-way message the daemon handles before the next request); the first-attach rows stop the
  clock before the release.
- SharedMemory attach is in the same range (shm_open + mmap, no daemon round trip) but has no
  lease, no lock count, no dtype or shape, and its numpy arrays outlive close() (numpy#18294).
- Reading every page is the real cost of a fresh mapping: page faults, 1-2 s per GiB here
  (shared/LESSONS.md: 12-14 us per 4 KiB fault on these VMs). Keep one Client per process.
- The Queue pickles the array and pushes it through a pipe; its time grows linearly with the
  size (`--queue-mib 1024` sends the whole GiB: 25-80 s on this VM). Other builds were running
  on the machine during this run (see the load average): expect some noise in the µs rows.
"""


# --- children (run in spawned interpreters) ---

def _shmlease_cold(socket: str, big_first: bool, out: mp.Queue) -> None:
    c = shmlease.connect(socket)
    # The first lease of a process also pays one-time costs unrelated to the segment (code and
    # heap pages touched for the first time, numpy's buffer import): take them on a third segment.
    with c.lease(WARM_NAME) as warm:
        np.asarray(warm)
    order = [BIG_NAME, SMALL_NAME] if big_first else [SMALL_NAME, BIG_NAME]
    result = {}
    for name in order:
        t0 = time.perf_counter()
        lease = c.lease(name, "r")
        a = np.asarray(lease)
        t1 = time.perf_counter()
        assert a.dtype == np.float32 and a.nbytes in (1 << 30, 4096)
        del a
        lease.release()
        result[name] = t1 - t0
    out.put(result)


def _shmlease_warm(socket: str, out: mp.Queue) -> None:
    c = shmlease.connect(socket)
    result = {}
    for name in (BIG_NAME, SMALL_NAME):
        with c.lease(name) as first:          # maps the segment once
            np.asarray(first)
        chunks = []  # the median chunk of 100 resists other load on the machine
        for _ in range(WARM_LOOPS // 100):
            t0 = time.perf_counter()
            for _ in range(100):
                lease = c.lease(name, "r")
                a = np.asarray(lease)
                del a
                lease.release()
            chunks.append((time.perf_counter() - t0) / 100)
        result[name] = statistics.median(chunks)
    out.put(result)


def _shmlease_touch(socket: str, out: mp.Queue) -> None:
    c = shmlease.connect(socket)
    t0 = time.perf_counter()
    with c.lease(BIG_NAME, "r") as lease:
        a = np.asarray(lease)
        total = float(a.sum(dtype=np.float64))
        del a
    out.put({"seconds": time.perf_counter() - t0, "sum": total})


def _connect_cold(socket: str, out: mp.Queue) -> None:
    t0 = time.perf_counter()
    c = shmlease.connect(socket)
    out.put(time.perf_counter() - t0)
    c.close()


def _shm_attach(names: dict, out: mp.Queue) -> None:
    result = {}
    for key, (name, shape) in names.items():
        t0 = time.perf_counter()
        for _ in range(SHM_LOOPS):
            shm = shared_memory.SharedMemory(name=name)
            a = np.ndarray(shape, np.float32, buffer=shm.buf)
            del a
            shm.close()
        result[key] = (time.perf_counter() - t0) / SHM_LOOPS
    # Attaching registered the segment with the resource tracker (gh-82300); a spawned child
    # shares its parent's tracker, so the parent's unlink() settles it.
    out.put(result)


def _queue_receiver(q: mp.Queue, out: mp.Queue) -> None:
    a = q.get()
    done = time.perf_counter()
    out.put({"done": done, "nbytes": a.nbytes, "check": float(a[-1, -1])})


# --- parent ---

def _run(ctx, target, *args):
    out = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, out))
    p.start()
    value = out.get(timeout=300)
    p.join(timeout=60)
    if p.exitcode != 0:
        raise RuntimeError(f"{target.__name__} exited with {p.exitcode}")
    return value


BEGIN = "<!-- python-attach:begin -->"
END = "<!-- python-attach:end -->"


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f} µs"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--daemon", default=os.environ.get("SHMLEASE_DAEMON"),
                       help="shmleased binary to start privately (default: $SHMLEASE_DAEMON)")
    group.add_argument("--socket", help="socket of a running shmleased")
    parser.add_argument("--markdown", help="also write the results as Markdown to this file")
    parser.add_argument("--queue-mib", type=int, default=256, choices=[128, 256, 512, 1024],
                        help="MiB sent through multiprocessing.Queue, scaled to 1 GiB (256)")
    args = parser.parse_args()
    if not args.socket and not args.daemon:
        parser.error("give --daemon PATH or --socket PATH")

    stop = None
    socket = args.socket
    if not socket:
        socket, stop = private_daemon.start(args.daemon)
    ctx = mp.get_context("spawn")
    shm_big = shm_small = None
    try:
        c = shmlease.connect(socket)
        for name in (BIG_NAME, SMALL_NAME, WARM_NAME):
            try:
                c.remove(name)
            except shmlease.NotFoundError:
                pass
        c.create(BIG_NAME, shape=(SIDE, SIDE), dtype=np.float32)
        c.create(SMALL_NAME, shape=SMALL, dtype=np.float32)
        c.create(WARM_NAME, shape=SMALL, dtype=np.float32)
        t0 = time.perf_counter()
        with c.lease(BIG_NAME, "w") as w:
            np.asarray(w)[:] = 1.0            # every page resident before anyone attaches
        fill_s = time.perf_counter() - t0
        with c.lease(SMALL_NAME, "w") as w:
            np.asarray(w)[:] = 1.0

        connect_s = [_run(ctx, _connect_cold, socket) for _ in range(COLD_RUNS)]
        cold = [_run(ctx, _shmlease_cold, socket, i % 2 == 0) for i in range(COLD_RUNS)]
        cold_big = statistics.median(r[BIG_NAME] for r in cold)
        cold_small = statistics.median(r[SMALL_NAME] for r in cold)
        warm = [_run(ctx, _shmlease_warm, socket) for _ in range(3)]
        warm_big = statistics.median(r[BIG_NAME] for r in warm)
        warm_small = statistics.median(r[SMALL_NAME] for r in warm)
        touch = _run(ctx, _shmlease_touch, socket)
        assert touch["sum"] == float(SIDE * SIDE), touch

        shm_big = shared_memory.SharedMemory(create=True, size=1 << 30)
        shm_small = shared_memory.SharedMemory(create=True, size=4096)
        np.ndarray((SIDE, SIDE), np.float32, buffer=shm_big.buf)[:] = 1.0
        shm_runs = [_run(ctx, _shm_attach, {"big": (shm_big.name, (SIDE, SIDE)),
                                             "small": (shm_small.name, SMALL)})
                    for _ in range(3)]
        shm_big_s = statistics.median(r["big"] for r in shm_runs)
        shm_small_s = statistics.median(r["small"] for r in shm_runs)
        shm_big.close()
        shm_big.unlink()
        shm_big = None

        # multiprocessing.Queue: pickled through a pipe, once (it takes seconds).
        queue_rows = SIDE * args.queue_mib // 1024
        array = np.ones((queue_rows, SIDE), np.float32)
        q, out = ctx.Queue(), ctx.Queue()
        receiver = ctx.Process(target=_queue_receiver, args=(q, out))
        receiver.start()
        time.sleep(1.0)  # let the child finish importing before the clock starts
        t0 = time.perf_counter()
        q.put(array)
        got = out.get(timeout=600)
        queue_measured_s = got["done"] - t0
        queue_s = queue_measured_s * 1024 / args.queue_mib  # per GiB
        receiver.join(timeout=60)
        assert got["nbytes"] == queue_rows * SIDE * 4 and got["check"] == 1.0
        del array

        for name in (BIG_NAME, SMALL_NAME, WARM_NAME):
            c.remove(name)
        c.close()
    finally:
        for shm in (shm_big, shm_small):
            if shm is not None:
                shm.close()
                shm.unlink()
        if stop is not None:
            stop()

    rows = [
        ("shmlease: first attach of the segment in a process, 1 GiB float32 "
         "(lease + np.asarray)", cold_big),
        ("shmlease: first attach of the segment in a process, 4 KiB float32", cold_small),
        ("shmlease: repeat attach on one connection, 1 GiB (mapping reused)", warm_big),
        ("shmlease: repeat attach on one connection, 4 KiB", warm_small),
        ("shmlease: connect (socket + hello), fresh process", statistics.median(connect_s)),
        ("multiprocessing.shared_memory attach, 1 GiB (SharedMemory + np.ndarray)", shm_big_s),
        ("multiprocessing.shared_memory attach, 4 KiB", shm_small_s),
        (f"multiprocessing.Queue: put {args.queue_mib} MiB of the array -> got in child",
         queue_measured_s),
        ("multiprocessing.Queue: the same, scaled linearly to 1 GiB", queue_s),
        ("shmlease: first attach + read every page of 1 GiB (a.sum())", touch["seconds"]),
    ]
    ratio_small = cold_big / cold_small
    ratio_queue = queue_s / cold_big
    ratio_shm = shm_big_s / cold_big
    lines = [
        "| what | time |",
        "| --- | ---: |",
        *[f"| {what} | {_us(s) if s < 0.1 else f'{s:.2f} s'} |" for what, s in rows],
        "",
        f"- 1 GiB first attach / 4 KiB first attach: **{ratio_small:.2f}x** (target: within 2x)",
        f"- Queue (per GiB) / 1 GiB first attach: **{ratio_queue:,.0f}x** faster "
        f"(target: >= 1000x)",
        f"- SharedMemory attach / shmlease first attach (1 GiB): {ratio_shm:.2f}x",
        f"- filling the 1 GiB segment once (first touch, parent): {fill_s:.2f} s",
    ]
    report = "\n".join(lines)
    print(report)
    if args.markdown:
        cmd = ("PYTHONPATH=BUILD/python /usr/bin/python3 bench/python/attach_bench.py "
               f"--daemon BUILD/server/shmleased --queue-mib {args.queue_mib}")
        section = "".join([
            "## Python: attaching a typed array (issue 3)\n\n",
            f"Command (from the repository root, BUILD = your build directory):\n\n"
            f"```\n{cmd}\n```\n\n",
            f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}, numpy {np.__version__}. "
            f"Medians over {COLD_RUNS} fresh processes (first attach), "
            f"3 x {WARM_LOOPS} in chunks of 100 (repeat), 3 x {SHM_LOOPS} (SharedMemory); "
            f"the Queue is one transfer of {args.queue_mib} MiB. Load average at the "
            f"end: {os.getloadavg()[0]:.1f}.\n\n",
            report + "\n",
            NOTES,
        ])
        write_section(args.markdown, BEGIN, END, section)
    ok = ratio_small <= 2.0 and ratio_queue >= 1000
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
