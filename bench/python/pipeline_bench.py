"""8 MiB frames through the three-stage pipeline of examples/pipeline, over shmlease channels, over
multiprocessing.Queue, and with no IPC at all (the three stages' work in one process), in one run;
writes what the transport costs to its section of docs/BENCHMARKS.md.

    PYTHONPATH=BUILD/python /usr/bin/python3 bench/python/pipeline_bench.py --daemon BUILD/server/shmleased

Starts a private shmleased (own socket and shm prefix) and stops it at the end."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from doc_section import write_section

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PIPELINE = os.path.join(REPO, "examples", "pipeline", "pipeline.py")
BEGIN, END = "<!-- pipeline-bench:begin -->", "<!-- pipeline-bench:end -->"


def run(transport: str, frames: int, env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, PIPELINE, "run", "--frames", str(frames), "--shape",
                          str(8 << 20), "--slots", "4", "--transport", transport],
                         env=env, capture_output=True, text=True, timeout=900, check=True).stdout
    return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--daemon", required=True, help="the shmleased binary")
    ap.add_argument("--frames", type=int, default=300, help="frames over channels (default 300)")
    ap.add_argument("--queue-frames", type=int, default=30, help="frames over the Queue (30)")
    ap.add_argument("--markdown", help="write the result into this file's pipeline-bench section")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="shmlease-bench-")
    prefix = f"shmlease-bench-pipe-{os.getpid()}"
    env = dict(os.environ, SHMLEASE_SOCKET=os.path.join(tmp, "d.sock"))
    # --state-dir none: no state in $XDG_RUNTIME_DIR, so SIGTERM frees every segment.
    daemon = subprocess.Popen([args.daemon, "--socket", env["SHMLEASE_SOCKET"], "--shm-prefix",
                               prefix, "--state-dir", "none"], stderr=subprocess.DEVNULL)
    try:
        while not os.path.exists(env["SHMLEASE_SOCKET"]):
            if daemon.poll() is not None:
                raise SystemExit("shmleased did not start")
            time.sleep(0.02)
        time.sleep(0.2)
        none = run("none", args.frames, env)
        channels = run("shmlease", args.frames, env)
        queue = run("queue", args.queue_frames, env)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    left = [n for n in os.listdir("/dev/shm") if n.startswith(prefix)]
    if left:
        raise SystemExit(f"shmleased left {left} in /dev/shm")

    cores = len(os.sched_getaffinity(0))
    stage_us = none["stage_us"]
    # With no IPC, `cores` processes could at best overlap the stages: the rate is bounded by the
    # slowest stage and by the total work shared out over the cores.
    ideal_fps = 1e6 / max(max(stage_us.values()), sum(stage_us.values()) / cores)
    vs_none = channels["frames_per_s"] / none["frames_per_s"]
    vs_ideal = channels["frames_per_s"] / ideal_fps
    vs_queue = channels["frames_per_s"] / queue["frames_per_s"]
    rows = [
        "| transport | frames | frames/s | latency p50 | latency p99 |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in (none, channels, queue):
        rows.append(f"| {r['transport']} | {r['frames']} | {r['frames_per_s']:.1f} | "
                    f"{r['latency_us_p50'] / 1e3:.2f} ms | {r['latency_us_p99'] / 1e3:.2f} ms |")
    rows += [
        "",
        "The stages' work per frame, with no IPC: " + ", ".join(
            f"{k} {v:.0f} us" for k, v in stage_us.items()) + f" ({sum(stage_us.values()):.0f} us in all).",
        "",
        "| what the transport costs (frames/s) | ratio |",
        "|---|---:|",
        f"| pipeline over channels / the same work in one process, no IPC | **{vs_none:.2f}x** |",
        f"| pipeline over channels / the best {cores} cores could do with no IPC "
        f"({ideal_fps:.0f} frames/s: the slowest stage, or all the work over {cores} cores) "
        f"| **{vs_ideal:.2f}x** |",
        f"| pipeline over channels / over multiprocessing.Queue (copies every frame twice) "
        f"| {vs_queue:.0f}x |",
    ]
    report = "\n".join(rows) + "\n"
    print(report)
    if args.markdown:
        write_section(args.markdown, BEGIN, END, "\n".join([
            "## 8 MiB frames through the three-stage Python pipeline: what the transport costs "
            "(issues 4 and 15)",
            "",
            "```",
            "PYTHONPATH=BUILD/python /usr/bin/python3 bench/python/pipeline_bench.py "
            "--daemon BUILD/server/shmleased --markdown docs/BENCHMARKS.md",
            "```",
            "",
            f"Machine: {platform.platform()}, {os.cpu_count()} CPUs; load average at the end "
            f"{os.getloadavg()[0]:.2f}. All three in the same run, same stages "
            "(examples/pipeline/pipeline.py; `--transport none` does the three stages' work in "
            "one process into the same rotating buffers). A ratio near 1 against the best the "
            "cores allow means the transport costs nothing the stages notice; the zero-work "
            "frame rate through a channel against a hand-built shared-memory ring is in "
            "[Python frames per second through a channel](#python-frames-per-second-through-a-channel-back-to-back-issues-13-and-15).",
            "",
            report,
        ]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
