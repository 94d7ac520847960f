"""A numpy array passed to a multiprocessing.Pool worker: by reference (an array of a lease) at
4 KiB and 1 GiB, and an 8 MiB array of a channel's frame (the worker holds the same slot),
against the same 1 GiB as an ordinary array (pickled by value); writes its section of
docs/BENCHMARKS.md.

    PYTHONPATH=BUILD/python /usr/bin/python3 bench/python/pool_bench.py --daemon BUILD/server/shmleased

One round trip is one pool.apply(touch, (array,)): the worker reads one element and returns it as
a float. The pool (one worker, fork) is warmed first with every array. Starts a private shmleased
(own socket and shm prefix) and stops it at the end. Targets: 1 GiB by reference <= 2x 4 KiB by
reference, and >= 1000x faster than 1 GiB by value. Prints the table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time

import numpy as np

import private_daemon
import shmlease
from doc_section import write_section

BEGIN, END = "<!-- pool-bench:begin -->", "<!-- pool-bench:end -->"
GIB = 1 << 30
FRAME_BYTES = 8 << 20
MISSED = "POOL TARGETS MISSED"


def touch(x) -> float:
    return float(x.flat[x.size // 2])


def round_trips(pool, arr, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        value = pool.apply(touch, (arr,))
        times.append(time.perf_counter() - t0)
        assert value == float(arr.flat[arr.size // 2])
    return times


def fmt_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.0f} µs"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--daemon", required=True, help="the shmleased binary")
    quick = bool(os.environ.get("SHMLEASE_BENCH_QUICK"))
    ap.add_argument("--runs", type=int, default=50 if quick else 300,
                    help="round trips by reference per size (default 300)")
    ap.add_argument("--plain-runs", type=int, default=2 if quick else 3,
                    help="round trips of the 1 GiB ordinary array (default 3)")
    ap.add_argument("--markdown", help="write the result into this file's pool-bench section")
    args = ap.parse_args()

    socket, stop = private_daemon.start(args.daemon)
    try:
        c = shmlease.connect(socket)
        small = c.share("pool-4k", np.arange(1024, dtype=np.float32))
        c.create("pool-1g", shape=(GIB // 4,), dtype="f")
        with c.lease("pool-1g", "w", populate=True) as lease:
            np.asarray(lease)[::1024] = 1.0  # every page written once: a populated segment
        del small
        by_ref_small = c.array("pool-4k", "r")
        by_ref_big = c.array("pool-1g", "r")
        ch = c.channel("pool-frames", shape=(FRAME_BYTES // 4,), dtype="f", slots=2,
                       policy="latest")
        writer, reader = ch.writer(), ch.reader()
        with writer.claim(timeout=1.0) as claimed:
            np.asarray(claimed)[:] = 2.0
            writer.publish(claimed)
        frame = reader.next(timeout=1.0)
        by_ref_frame = np.asarray(frame)
        plain_big = np.ones(GIB // 4, dtype=np.float32)
        load_start = os.getloadavg()
        with multiprocessing.get_context("fork").Pool(1) as pool:
            # Warm: the worker's client connects, maps both segments, imports what it needs.
            round_trips(pool, by_ref_small, 5)
            round_trips(pool, by_ref_big, 5)
            round_trips(pool, by_ref_frame, 5)
            round_trips(pool, plain_big, 1)
            ref_small = round_trips(pool, by_ref_small, args.runs)
            ref_big = round_trips(pool, by_ref_big, args.runs)
            ref_frame = round_trips(pool, by_ref_frame, args.runs)
            plain = round_trips(pool, plain_big, args.plain_runs)
        load_end = os.getloadavg()
        del by_ref_small, by_ref_big, plain_big, by_ref_frame
        frame.release()
        writer.close()
        reader.close()
        ch.remove()
        c.remove("pool-4k")
        c.remove("pool-1g")
        c.close()
    finally:
        stop()

    samples = {"ref_4k": ref_small, "ref_1g": ref_big, "ref_frame_8m": ref_frame,
               "plain_1g": plain}
    med = {k: statistics.median(v) for k, v in samples.items()}
    p90 = {k: sorted(v)[int(0.9 * (len(v) - 1))] for k, v in samples.items()}
    flat = med["ref_1g"] / med["ref_4k"]
    speedup = med["plain_1g"] / med["ref_1g"]
    met = flat <= 2 and speedup >= 1000
    rows = [
        "| array passed to pool.apply | round trips | median | p90 |",
        "|---|---:|---:|---:|",
        f"| 4 KiB, by reference (lease) | {len(ref_small)} | {fmt_time(med['ref_4k'])} | "
        f"{fmt_time(p90['ref_4k'])} |",
        f"| 1 GiB, by reference (lease) | {len(ref_big)} | {fmt_time(med['ref_1g'])} | "
        f"{fmt_time(p90['ref_1g'])} |",
        f"| 8 MiB channel frame, by reference (the worker holds the slot) | {len(ref_frame)} | "
        f"{fmt_time(med['ref_frame_8m'])} | {fmt_time(p90['ref_frame_8m'])} |",
        f"| 1 GiB, ordinary ndarray (pickled by value) | {len(plain)} | "
        f"{fmt_time(med['plain_1g'])} | {fmt_time(p90['plain_1g'])} |",
    ]
    verdict = "" if met else f"\n\n**{MISSED}**"
    report = "\n".join(rows) + (
        f"\n\n**1 GiB / 4 KiB by reference: {flat:.2f}x** (target <= 2x); **1 GiB by value / by "
        f"reference: {speedup:,.0f}x** (target >= 1000x).{verdict}\n")
    print(report)
    if args.markdown:
        write_section(args.markdown, BEGIN, END, "\n".join([
            "## A numpy array to a multiprocessing.Pool worker, by reference (issue 11)",
            "",
            "```",
            "PYTHONPATH=BUILD/python /usr/bin/python3 bench/python/pool_bench.py "
            "--daemon BUILD/server/shmleased --markdown docs/BENCHMARKS.md",
            "```",
            "",
            "One round trip: `pool.apply(touch, (array,))`, whose worker reads one element and "
            "returns it as a float; one worker (fork start method), warmed with every array "
            "first. An array of a lease travels as its segment's name, identity, offset, shape, "
            "strides and dtype (about 300 bytes); the worker leases the segment itself (one "
            "daemon round trip; its client keeps the mapping) and views the same pages. The "
            "array of a reader's frame travels as the channel's name, identity, slot and frame "
            "number; the worker holds that slot through a holder place of its own (one daemon "
            "round trip to attach it, each time, since its hold goes with its last view). The "
            "ordinary array is pickled by value, as multiprocessing always does "
            "(docs/PYTHON.md, \"Arrays between processes\").",
            "",
            f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}, numpy {np.__version__}; load average (1, 5, 15 min) "
            f"{', '.join(f'{x:.2f}' for x in load_start)} at the start, "
            f"{', '.join(f'{x:.2f}' for x in load_end)} at the end"
            + (" (quick mode: few runs)." if quick else "."),
            "",
            report,
        ]))
    print(json.dumps({"median_s": med, "p90_s": p90, "runs": {"ref": args.runs,
                      "plain": args.plain_runs}, "flat_ratio": flat, "speedup": speedup,
                      "load_start": load_start, "load_end": load_end, "met": met}))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
