"""Zero-work frames per second between two Python processes: through a shmlease channel, and
through a hand-built shared-memory ring and a multiprocessing.Queue in the same run; writes its
section of docs/BENCHMARKS.md.

    PYTHONPATH=BUILD/python /usr/bin/python3 bench/python/channel_rate.py --daemon BUILD/server/shmleased

Back to back: the writer claims, publishes and claims again as fast as it can; the frames carry
16 bytes and nobody touches them (the cost measured is the transport's). One reader in another
process takes every frame (policy "block", 8 slots), and the writer's rate is frames / seconds
from the first claim to the last publish. "writer alone" is the same loop on a "latest" channel
with no reader. The ring is what a careful user writes with multiprocessing.shared_memory: 8
slots and two int64 counters polled by both sides (no lease, no daemon, no protection of one
side from the other). The Queue sends 16-byte bytes objects. Target (issue 13): >= 300k frames/s
written through a channel with a reader. Prints the table, then one JSON line."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import time

import numpy as np

import private_daemon
import shmlease
from doc_section import write_section

BEGIN, END = "<!-- py-channel-rate:begin -->", "<!-- py-channel-rate:end -->"
MISSED = "PY CHANNEL RATE TARGET MISSED"
TARGET = 300_000
SLOTS = 8


def channel_reader(socket: str, name: str, frames: int, ready, done) -> None:
    c = shmlease.connect(socket)
    r = c.channel(name).reader()
    ready.set()
    got = 0
    while got < frames:
        with r.next(timeout=30.0):
            got += 1
    done.put(got)
    c.close()


def channel_rate(socket: str, frames: int, with_reader: bool) -> float:
    c = shmlease.connect(socket)
    name = f"rate-{os.getpid()}-{int(with_reader)}"
    ch = c.channel(name, shape=(16,), dtype="B", slots=SLOTS,
                   policy="block" if with_reader else "latest")
    proc = None
    if with_reader:
        ctx = multiprocessing.get_context("fork")
        ready, done = ctx.Event(), ctx.Queue()
        proc = ctx.Process(target=channel_reader, args=(socket, name, frames, ready, done))
        proc.start()
        ready.wait(30)
    w = ch.writer()
    if with_reader:
        w.wait_for_readers(1, timeout=30.0)
    claim, publish = w.claim, w.publish
    t0 = time.perf_counter()
    for _ in range(frames):
        publish(claim(timeout=30.0))
    seconds = time.perf_counter() - t0
    if proc is not None:
        assert done.get(timeout=60) == frames
        proc.join(30)
    w.close()
    ch.remove()
    c.close()
    return frames / seconds


def ring_reader(shm_name: str, frames: int) -> None:
    from multiprocessing import shared_memory
    shm = shared_memory.SharedMemory(shm_name)
    head = np.ndarray((2,), dtype=np.int64, buffer=shm.buf)  # [written, read]
    slots = np.ndarray((SLOTS, 16), dtype=np.uint8, buffer=shm.buf, offset=64)
    read = 0
    while read < frames:
        while head[0] == read:
            pass
        slots[read % SLOTS]  # the frame (not copied: zero work)
        read += 1
        head[1] = read
    del head, slots
    shm.close()


def ring_rate(frames: int) -> float:
    from multiprocessing import shared_memory
    shm = shared_memory.SharedMemory(create=True, size=64 + SLOTS * 16)
    try:
        head = np.ndarray((2,), dtype=np.int64, buffer=shm.buf)
        head[:] = 0
        slots = np.ndarray((SLOTS, 16), dtype=np.uint8, buffer=shm.buf, offset=64)
        proc = multiprocessing.get_context("fork").Process(target=ring_reader,
                                                           args=(shm.name, frames))
        proc.start()
        t0 = time.perf_counter()
        for written in range(frames):
            while written - head[1] >= SLOTS:
                pass
            slots[written % SLOTS]
            head[0] = written + 1
        seconds = time.perf_counter() - t0
        proc.join(60)
        assert proc.exitcode == 0
        del head, slots
    finally:
        shm.close()
        shm.unlink()
    return frames / seconds


def queue_reader(q, frames: int) -> None:
    for _ in range(frames):
        q.get()


def queue_rate(frames: int) -> float:
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue(maxsize=SLOTS)
    proc = ctx.Process(target=queue_reader, args=(q, frames))
    proc.start()
    payload = bytes(16)
    t0 = time.perf_counter()
    for _ in range(frames):
        q.put(payload)
    proc.join(60)
    seconds = time.perf_counter() - t0
    assert proc.exitcode == 0
    return frames / seconds


def best(fn, rounds: int, *args) -> float:
    return max(fn(*args) for _ in range(rounds))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--daemon", required=True, help="the shmleased binary")
    quick = bool(os.environ.get("SHMLEASE_BENCH_QUICK"))
    ap.add_argument("--frames", type=int, default=20_000 if quick else 200_000,
                    help="frames per round (default 200000)")
    ap.add_argument("--rounds", type=int, default=1 if quick else 3,
                    help="rounds per transport; the best is reported (default 3)")
    ap.add_argument("--markdown", help="write the result into this file's section")
    args = ap.parse_args()

    socket, stop = private_daemon.start(args.daemon)
    load_start = os.getloadavg()
    try:
        rates = {
            "channel": best(channel_rate, args.rounds, socket, args.frames, True),
            "channel_alone": best(channel_rate, args.rounds, socket, args.frames, False),
            "ring": best(ring_rate, args.rounds, args.frames),
            "queue": best(queue_rate, args.rounds, max(args.frames // 10, 1000)),
        }
    finally:
        stop()
    load_end = os.getloadavg()
    met = rates["channel"] >= TARGET
    rows = [
        "| transport (Python writer, 16-byte frames) | frames/s written |",
        "|---|---:|",
        f"| shmlease channel, one reader process (block, {SLOTS} slots) | {rates['channel']:,.0f} |",
        f"| shmlease channel, writer alone (latest, no reader) | {rates['channel_alone']:,.0f} |",
        f"| hand-built shared-memory ring, one reader process | {rates['ring']:,.0f} |",
        f"| multiprocessing.Queue, one reader process | {rates['queue']:,.0f} |",
    ]
    verdict = "" if met else f"\n\n**{MISSED}**"
    report = "\n".join(rows) + (
        f"\n\n**shmlease channel: {rates['channel']:,.0f} frames/s** (target >= {TARGET:,}); "
        f"**channel / hand-built ring: {rates['channel'] / rates['ring']:.2f}x**; "
        f"**channel / multiprocessing.Queue: {rates['channel'] / rates['queue']:.1f}x**."
        f"{verdict}\n")
    print(report)
    if args.markdown:
        write_section(args.markdown, BEGIN, END, "\n".join([
            "## Python frames per second through a channel, back to back (issues 13 and 15)",
            "",
            "<!-- example: not run: a benchmark, run by ./scripts/dev bench -->",
            "```",
            "PYTHONPATH=BUILD/python /usr/bin/python3 bench/python/channel_rate.py "
            "--daemon BUILD/server/shmleased --markdown docs/BENCHMARKS.md",
            "```",
            "",
            __doc__.split("\n\n", 2)[2].replace("\n", " ").split(" Prints the table")[0]
            + f" Best of {args.rounds} rounds of {args.frames:,} frames "
            f"(the Queue: {max(args.frames // 10, 1000):,}).",
            "",
            f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}, numpy {np.__version__}; load average (1, 5, 15 min) "
            f"{', '.join(f'{x:.2f}' for x in load_start)} at the start, "
            f"{', '.join(f'{x:.2f}' for x in load_end)} at the end"
            + (" (quick mode: few frames)." if quick else "."),
            "",
            report,
        ]))
    print(json.dumps({"rates": rates, "frames": args.frames, "rounds": args.rounds,
                      "target": TARGET, "load_start": load_start, "load_end": load_end,
                      "met": met}))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
