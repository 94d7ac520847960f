#!/usr/bin/python3
"""Frame hand-off latency through multiprocessing.Queue against frame size, for bench/report.py.

One-way, timed like bench/handoff_bench.cpp: the parent stamps time.monotonic_ns() just before
put(bytes of the frame's size), the child (a spawned interpreter blocked in get()) stamps when
get() returns and acknowledges through a second Queue; the parent waits for the acknowledgement
and sleeps --gap-us before the next frame. The frame is a bytes object (pickling it is one copy;
a numpy array would add its own header and copy). Prints one JSON document on stdout.

    /usr/bin/python3 bench/python/queue_handoff.py [--iterations N] [--sizes 64,4096,...]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time

DEFAULT_SIZES = [64, 256, 1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20,
                 8 << 20]


def _receiver(frames: mp.Queue, acks: mp.Queue) -> None:
    while True:
        frame = frames.get()
        now = time.monotonic_ns()
        if frame is None:
            return
        acks.put(now)


def measure(sizes: list[int], iterations: int, gap_us: int, big_iterations: int) -> list[dict]:
    ctx = mp.get_context("spawn")
    frames, acks = ctx.Queue(), ctx.Queue()
    child = ctx.Process(target=_receiver, args=(frames, acks))
    child.start()
    rows = []
    try:
        frames.put(b"warm-up")  # the child has imported and is waiting in get()
        acks.get(timeout=60)
        for size in sizes:
            print(f"queue_handoff: {size} bytes", file=sys.stderr)
            payload = bytes(size)
            n = iterations if size < (1 << 20) else min(iterations, big_iterations)
            samples = []
            for _ in range(n):
                time.sleep(gap_us / 1e6)
                sent = time.monotonic_ns()
                frames.put(payload)
                samples.append(acks.get(timeout=60) - sent)
            samples.sort()
            rows.append({"size": size, "transport": "mp_queue", "stats": {
                "p50_us": samples[len(samples) // 2] / 1e3,
                "p99_us": samples[min(len(samples) - 1, len(samples) * 99 // 100)] / 1e3,
                "mean_us": sum(samples) / len(samples) / 1e3,
                "n": n,
            }})
    finally:
        frames.put(None)
        child.join(timeout=60)
        if child.is_alive():
            child.kill()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--big-iterations", type=int, default=200,
                    help="frames per size from 1 MiB up (default 200)")
    ap.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)))
    ap.add_argument("--gap-us", type=int, default=200)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    rows = measure(sizes, args.iterations, args.gap_us, args.big_iterations)
    json.dump({"program": "queue_handoff", "latency": "one-way", "iterations": args.iterations,
               "big_iterations": args.big_iterations, "gap_us": args.gap_us, "rows": rows},
              sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
