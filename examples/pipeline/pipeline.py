#!/usr/bin/env python3
"""A three-stage frame pipeline, each stage its own process: producer -> transform -> consumer.

    python3 pipeline.py run --frames 200 --shape 1080 1920 3        # over shmlease channels
    python3 pipeline.py run --frames 200 --transport queue          # the same over mp.Queue
    python3 pipeline.py run --frames 200 --transport none           # the stages' work, no IPC

`run` starts the three stages (over channels: `pipeline.py producer|transform|consumer` as three
subprocesses; over queues: three multiprocessing processes) and prints what the consumer measured:
frames/s and latency (producer's publish -> consumer has the frame), and a last line of JSON.

The producer fills frame i with i % 256; the transform writes 255 - x into its own frame; the
consumer checks the value. Over channels no frame byte is copied between processes: each stage
reads its input slot in place and writes its output slot in place.

`--transport none` does the same three stages' work in one process, one frame after the other,
into the same number of rotating buffers, with no IPC at all: what the pipeline would cost if
moving frames were free. It also reports each stage's time per frame.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import time

import numpy as np

TS = struct.Struct("<q")  # the producer's time.monotonic_ns(), carried in the frame metadata


def _report(latencies_ns: list[int], elapsed_s: float, frames: int, transport: str, nbytes: int,
            **extra):
    lat = np.array(latencies_ns, dtype=np.float64) / 1e3
    result = {
        "transport": transport,
        "frames": frames,
        "frame_bytes": nbytes,
        "frames_per_s": frames / elapsed_s if elapsed_s > 0 else 0.0,
        "latency_us_p50": float(np.percentile(lat, 50)) if len(lat) else 0.0,
        "latency_us_p99": float(np.percentile(lat, 99)) if len(lat) else 0.0,
        **extra,
    }
    print(f"consumer: {frames} frames of {nbytes} B over {transport}: "
          f"{result['frames_per_s']:.1f} frames/s, latency p50 {result['latency_us_p50']:.0f} us, "
          f"p99 {result['latency_us_p99']:.0f} us", flush=True)
    print(json.dumps(result), flush=True)


# ------------------------------------------------------------------ over shmlease channels

def _channel(client, name, shape, slots):
    return client.channel(name, shape=shape, dtype="B", slots=slots, policy="block")


def producer(args) -> None:
    import shmlease
    c = shmlease.connect()
    w = _channel(c, args.name + ".raw", args.shape, args.slots).writer(timeout=5)
    w.wait_for_readers(1, timeout=30)
    for i in range(args.frames):
        f = w.claim(timeout=30)
        np.asarray(f).fill(i % 256)
        w.publish(f, meta=TS.pack(time.monotonic_ns()))
    w.close()


def transform(args) -> None:
    import shmlease
    c = shmlease.connect()
    r = _channel(c, args.name + ".raw", args.shape, args.slots).reader()
    w = _channel(c, args.name + ".out", args.shape, args.slots).writer(timeout=5)
    w.wait_for_readers(1, timeout=30)
    for f in r:
        with f:
            out = w.claim(timeout=30)
            np.subtract(255, np.asarray(f), out=np.asarray(out))
            meta = f.meta
        w.publish(out, meta=meta)
    w.close()


def consumer(args) -> None:
    import shmlease
    c = shmlease.connect()
    r = _channel(c, args.name + ".out", args.shape, args.slots).reader()
    print("consumer ready", flush=True)
    latencies, start, n = [], None, 0
    for f in r:
        with f:
            now = time.monotonic_ns()
            if start is None:
                start = now
            a = np.asarray(f)
            expect = 255 - (n % 256)
            if a.flat[0] != expect or a.flat[-1] != expect:
                raise SystemExit(f"frame {f.seq}: got {a.flat[0]}, expected {expect}")
            latencies.append(now - TS.unpack(f.meta)[0])
            del a
        n += 1
    elapsed = (time.monotonic_ns() - start) / 1e9 if start else 0.0
    # The first frame starts the clock: rate over the n - 1 intervals after it.
    _report(latencies, elapsed, max(n - 1, 0), "shmlease", int(np.prod(args.shape)))
    if n != args.frames:
        raise SystemExit(f"consumer got {n} frames, expected {args.frames}")


# ------------------------------------------------------------ over multiprocessing.Queue

def _q_producer(q, frames, shape):
    for i in range(frames):
        q.put((time.monotonic_ns(), np.full(shape, i % 256, dtype=np.uint8)))
    q.put(None)


def _q_transform(qin, qout):
    while (item := qin.get()) is not None:
        ts, a = item
        qout.put((ts, np.subtract(255, a, dtype=np.uint8)))
    qout.put(None)


def _q_consumer(q, frames, shape):
    latencies, start, n = [], None, 0
    while (item := q.get()) is not None:
        now = time.monotonic_ns()
        if start is None:
            start = now
        ts, a = item
        expect = 255 - (n % 256)
        if a.flat[0] != expect or a.flat[-1] != expect:
            raise SystemExit(f"frame {n}: got {a.flat[0]}, expected {expect}")
        latencies.append(now - ts)
        n += 1
    elapsed = (time.monotonic_ns() - start) / 1e9 if start else 0.0
    _report(latencies, elapsed, max(n - 1, 0), "multiprocessing.Queue", int(np.prod(shape)))


def run_queue(args) -> int:
    import multiprocessing as mp
    ctx = mp.get_context("spawn")
    q1, q2 = ctx.Queue(maxsize=args.slots), ctx.Queue(maxsize=args.slots)
    procs = [ctx.Process(target=_q_consumer, args=(q2, args.frames, tuple(args.shape))),
             ctx.Process(target=_q_transform, args=(q1, q2)),
             ctx.Process(target=_q_producer, args=(q1, args.frames, tuple(args.shape)))]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return max(p.exitcode for p in procs)


# ------------------------------------------------------------------ no IPC at all

def run_none(args) -> int:
    """The three stages' work on one core, frame after frame, into `slots` rotating buffers each
    for the producer's and the transform's output (what the channels give them)."""
    shape = tuple(args.shape)
    raw = [np.empty(shape, dtype=np.uint8) for _ in range(args.slots)]
    out = [np.empty(shape, dtype=np.uint8) for _ in range(args.slots)]
    for buf in raw + out:  # touched once before the clock starts, as a channel's slots are
        buf.fill(1)
    stage_ns = {"producer": 0, "transform": 0, "consumer": 0}
    latencies = []
    start = time.monotonic_ns()
    for i in range(args.frames):
        t0 = time.monotonic_ns()
        a = raw[i % args.slots]
        a.fill(i % 256)
        t1 = time.monotonic_ns()
        b = out[i % args.slots]
        np.subtract(255, a, out=b)
        t2 = time.monotonic_ns()
        expect = 255 - (i % 256)
        if b.flat[0] != expect or b.flat[-1] != expect:
            raise SystemExit(f"frame {i}: got {b.flat[0]}, expected {expect}")
        t3 = time.monotonic_ns()
        latencies.append(t3 - t0)
        stage_ns["producer"] += t1 - t0
        stage_ns["transform"] += t2 - t1
        stage_ns["consumer"] += t3 - t2
    elapsed = (time.monotonic_ns() - start) / 1e9
    stage_us = {k: v / max(args.frames, 1) / 1e3 for k, v in stage_ns.items()}
    print("stages, per frame: " + ", ".join(f"{k} {v:.0f} us" for k, v in stage_us.items()),
          flush=True)
    # The rate over every frame (no first frame to wait for), plus each stage's mean time.
    _report(latencies, elapsed, args.frames, "none (the stages' work in one process)",
            int(np.prod(shape)), stage_us=stage_us)
    return 0


def run_channels(args) -> int:
    import shmlease
    me = [sys.executable, os.path.abspath(__file__)]
    common = ["--frames", str(args.frames), "--slots", str(args.slots), "--name", args.name,
              "--shape", *map(str, args.shape)]
    consumer_p = subprocess.Popen(me + ["consumer", *common], stdout=subprocess.PIPE, text=True)
    try:
        line = consumer_p.stdout.readline()
        if line.strip() != "consumer ready":
            raise SystemExit(f"consumer did not start: {line!r}")
        others = [subprocess.Popen(me + [stage, *common]) for stage in ("transform", "producer")]
        out, _ = consumer_p.communicate(timeout=args.timeout)
        sys.stdout.write(out)
        codes = [p.wait(timeout=args.timeout) for p in others] + [consumer_p.returncode]
    finally:
        for p in [consumer_p, *locals().get("others", [])]:
            if p.poll() is None:
                p.kill()
                p.wait()
        with shmlease.connect() as c:
            for suffix in (".raw", ".out"):
                try:
                    c.channel(args.name + suffix).remove()
                except shmlease.NotFoundError:
                    pass
    return max(codes)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("stage", choices=["run", "producer", "transform", "consumer"])
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--shape", type=int, nargs="+", default=[1080, 1920, 3])
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--name", default=f"pipeline-{os.getpid()}")
    ap.add_argument("--transport", choices=["shmlease", "queue", "none"], default="shmlease")
    ap.add_argument("--timeout", type=float, default=300)
    args = ap.parse_args()
    if args.stage == "run":
        return {"queue": run_queue, "none": run_none, "shmlease": run_channels}[args.transport](args)
    {"producer": producer, "transform": transform, "consumer": consumer}[args.stage](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
