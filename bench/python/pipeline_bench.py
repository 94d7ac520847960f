"""8 MiB frames through the three-stage pipeline of examples/pipeline, over shmlease channels and
over multiprocessing.Queue, in one run; writes the ratio to its section of docs/BENCHMARKS.md.

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
        channels = run("shmlease", args.frames, env)
        queue = run("queue", args.queue_frames, env)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    left = [n for n in os.listdir("/dev/shm") if n.startswith(prefix)]
    if left:
        raise SystemExit(f"shmleased left {left} in /dev/shm")

    ratio = channels["frames_per_s"] / queue["frames_per_s"]
    rows = [
        "| transport | frames | frames/s | latency p50 | latency p99 |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in (channels, queue):
        rows.append(f"| {r['transport']} | {r['frames']} | {r['frames_per_s']:.1f} | "
                    f"{r['latency_us_p50'] / 1e3:.2f} ms | {r['latency_us_p99'] / 1e3:.2f} ms |")
    report = "\n".join(rows) + (f"\n\n**shmlease channels / multiprocessing.Queue: {ratio:.0f}x** "
                                "frames/s (target >= 100x)\n")
    print(report)
    if args.markdown:
        write_section(args.markdown, BEGIN, END, "\n".join([
            "## 8 MiB frames through the three-stage Python pipeline, one run (issue 4)",
            "",
            "```",
            "PYTHONPATH=BUILD/python /usr/bin/python3 bench/python/pipeline_bench.py "
            "--daemon BUILD/server/shmleased --markdown docs/BENCHMARKS.md",
            "```",
            "",
            f"Machine: {platform.platform()}, {os.cpu_count()} CPUs; load average at the end "
            f"{os.getloadavg()[0]:.2f}. Both pipelines in the same run, same stages "
            "(examples/pipeline/pipeline.py).",
            "",
            report,
        ]))
    return 0 if ratio >= 100 else 1


if __name__ == "__main__":
    sys.exit(main())
