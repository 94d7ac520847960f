#!/usr/bin/python3
"""Runs every benchmark and writes the report: docs/BENCHMARKS.md, its plots and the raw results.

    /usr/bin/python3 bench/report.py --build BUILD [--quick | --smoke] [--out DIR] [--only a,b]
    /usr/bin/python3 bench/report.py --from-json RESULTS --out DIR    (plots and tables only)

BUILD must be configured with -DSHMLEASE_BUILD_BENCH=ON -DSHMLEASE_BUILD_TESTS=ON
-DSHMLEASE_BUILD_PYTHON=ON and built (./scripts/dev bench does both, then runs this). The report
goes to OUT/BENCHMARKS.md, OUT/bench/*.png and OUT/bench/results.json; OUT is docs by default,
BUILD/bench-report with --quick or --smoke (which start from a copy of docs/BENCHMARKS.md), so
trying things out never touches docs/.

Steps, in order (--only picks some): lease (bench/run_benchmarks.sh), huge-pages (as root only,
not in quick mode), attach (bench/python/attach_bench.py), pipeline (bench/python/pipeline_bench.py),
channel (channel_bench: shmlease channels, the raw futex and spin baselines and iceoryx),
attach-sweep, handoff, queue-handoff, scaling (the report's sweeps), pool
(bench/python/pool_bench.py: arrays to a multiprocessing.Pool worker), py-channel-rate
(bench/python/channel_rate.py: Python frames/s through a channel, a hand-built ring and a Queue).
The first four, pool and py-channel-rate write their own sections of the Markdown file; this
script writes the rest. Each step's time and the load average around it are recorded. --quick:
every step with few repetitions.
--smoke: only the sweeps and channel_bench, tiny, to check that the report code still works
(ctest bench.report_smoke). Exits non-zero if a step failed (a missed target is reported, in the
report too, but is not a failure), after writing everything else."""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "python"))

STEPS = ["lease", "huge-pages", "attach", "pipeline", "channel", "attach-sweep", "handoff",
         "queue-handoff", "scaling", "pool", "py-channel-rate"]
# The sections this script writes, in the order they appear (the others' markers sit among them).
MARKERS = {name: (f"<!-- {name}:begin -->", f"<!-- {name}:end -->")
           for name in ("report", "attach-sweep", "handoff-sweep", "lease-scaling", "channels")}


def require_matplotlib() -> None:
    try:
        importlib.import_module("matplotlib")
    except ImportError:
        sys.exit(f"report.py: {sys.executable} cannot import matplotlib: install the Debian "
                 "package python3-matplotlib (./scripts/dev bench does)")


# --- the machine ---

def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def loadavg() -> list[float]:
    return [float(x) for x in _read("/proc/loadavg").split()[:3]] or [float("nan")] * 3


def cpu_times() -> list[int]:
    line = _read("/proc/stat").splitlines()[0] if _read("/proc/stat") else "cpu 0 0 0 0"
    return [int(x) for x in line.split()[1:]]


def idle_percent(before: list[int], after: list[int]) -> float:
    delta = [b - a for a, b in zip(before, after)]
    total = sum(delta[:8])
    return 100.0 * (delta[3] + delta[4]) / total if total > 0 else float("nan")


def machine(build: str | None) -> dict:
    cpuinfo = _read("/proc/cpuinfo")
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    flags = re.search(r"^flags\s*:\s*(.+)$", cpuinfo, re.M)
    cores = re.search(r"^cpu cores\s*:\s*(\d+)$", cpuinfo, re.M)
    siblings = re.search(r"^siblings\s*:\s*(\d+)$", cpuinfo, re.M)
    mem = re.search(r"^MemTotal:\s*(\d+) kB", _read("/proc/meminfo"), re.M)
    os_name = re.search(r'^PRETTY_NAME="?([^"\n]+)"?', _read("/etc/os-release"), re.M)
    try:
        import numpy
        numpy_version = numpy.__version__
    except ImportError:
        numpy_version = "not installed"
    compiler = "unknown compiler"
    try:
        compiler = subprocess.run(["c++", "--version"], capture_output=True, text=True,
                                  timeout=10).stdout.splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        pass
    build_type = "unknown"
    cache = _read(os.path.join(build, "CMakeCache.txt")) if build else ""
    found = re.search(r"^CMAKE_BUILD_TYPE:\w+=(.*)$", cache, re.M)
    if found:
        build_type = found.group(1)
    return {
        "cpu": model.group(1).strip() if model else platform.processor() or "unknown CPU",
        "virtualization": "virtual machine" if flags and " hypervisor" in f" {flags.group(1)}"
        else "bare metal or undetected",
        "cpus": os.cpu_count(),
        "cores_note": (f"{cores.group(1)} cores × {int(siblings.group(1)) // int(cores.group(1))} "
                       "threads per socket as the guest sees them" if cores and siblings
                       else "topology unknown"),
        "ram": f"{int(mem.group(1)) / (1 << 20):.1f} GiB" if mem else "unknown",
        "kernel": platform.release(),
        "os": os_name.group(1) if os_name else "unknown OS",
        "compiler": compiler,
        "build_type": build_type,
        "python": platform.python_version(),
        "numpy": numpy_version,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load_start": loadavg(),
    }


# --- running the steps ---

class Runner:
    def __init__(self, build: str, doc: str, mode: str):
        self.build = build
        self.doc = doc
        self.mode = mode  # "full", "quick" or "smoke"
        self.steps: list[dict] = []
        self.env = dict(os.environ, PYTHONPATH=os.path.join(build, "python"),
                        SHMLEASE_BENCH_DOC=doc)
        if mode != "full":
            self.env["SHMLEASE_BENCH_QUICK"] = "1"

    def path(self, *parts: str) -> str:
        return os.path.join(self.build, *parts)

    def run(self, name: str, argv: list[str], parse_json: bool = False,
            missed_marker: str | None = None):
        """Runs one step; returns its parsed JSON stdout (parse_json) or its stdout text, or None
        if it failed (a missed target is not a failure: its output is returned). Its stderr goes to ours as it comes. A step that exits 1 after printing
        `missed_marker` ran to the end and wrote its section but missed its target: that is
        recorded as such, not as a failure."""
        print(f"report.py: step {name}: {' '.join(argv)}", file=sys.stderr, flush=True)
        load_start, t0 = loadavg()[0], time.monotonic()
        proc = subprocess.run(argv, cwd=REPO, env=self.env, stdout=subprocess.PIPE, text=True)
        seconds = time.monotonic() - t0
        status = "ok" if proc.returncode == 0 else f"exit {proc.returncode}"
        missed = proc.returncode == 1 and missed_marker and missed_marker in proc.stdout
        if missed:
            status = "ran; target missed (see its section)"
        value = None
        if proc.returncode == 0 or missed:
            value = proc.stdout
            if parse_json:
                try:
                    value = json.loads(proc.stdout)
                except json.JSONDecodeError as e:
                    status, value = f"bad JSON output ({e})", None
        else:
            sys.stderr.write(proc.stdout)
        self.steps.append({"name": name, "seconds": seconds, "load_start": load_start,
                           "load_end": loadavg()[0], "status": status})
        return value


def run_steps(runner: Runner, only: list[str], results: dict) -> None:
    py = sys.executable
    quick, smoke = runner.mode == "quick", runner.mode == "smoke"
    daemon = runner.path("server", "shmleased")
    if "lease" in only:
        flags = ["--benchmark_repetitions=2", "--benchmark_min_time=0.1"] if quick else []
        runner.run("lease", ["bench/run_benchmarks.sh", runner.build, *flags])
    if "huge-pages" in only:
        if os.geteuid() != 0:
            print("report.py: skipping huge-pages: it reserves huge pages and needs root "
                  "(its section keeps the last root run)", file=sys.stderr)
        elif quick:
            print("report.py: skipping huge-pages in quick mode", file=sys.stderr)
        else:
            runner.run("huge-pages", ["bench/run_huge_pages_bench.sh", runner.build])
    if "attach" in only:
        runner.run("attach", [py, "bench/python/attach_bench.py", "--daemon", daemon,
                              "--markdown", runner.doc,
                              "--queue-mib", "128" if quick else "256"],
                   missed_marker="TARGETS MISSED")
    if "pipeline" in only:
        frames = ["--frames", "40", "--queue-frames", "5"] if quick else []
        runner.run("pipeline", [py, "bench/python/pipeline_bench.py", "--daemon", daemon,
                                "--markdown", runner.doc, *frames])
    if "channel" in only:
        iterations, rounds = {"full": (3000, 3), "quick": (500, 2), "smoke": (100, 1)}[runner.mode]
        out = runner.run("channel", [runner.path("bench", "channel_bench"), str(iterations),
                                     str(rounds)])
        if out is not None:
            values = json.loads([l for l in out.splitlines() if l.startswith("{")][-1])
            results["channel"] = {"iterations": iterations, "rounds": rounds,
                                  "table": [l for l in out.splitlines() if l.startswith("|")],
                                  "values": values}
            # Built with the iceoryx peer but it did not run: a failure, not a missing row.
            iceoryx = values.get("iceoryx", {})
            if iceoryx.get("built") and iceoryx.get("error"):
                runner.steps[-1]["status"] = "iceoryx peer failed: " + iceoryx["error"].splitlines()[0]
    if "attach-sweep" in only:
        args = {"full": [], "quick": ["--runs", "2", "--queue-max-mib", "64"],
                "smoke": ["--runs", "1", "--sizes", "4096,65536", "--queue-max-mib", "1"]}
        results["attach_sweep"] = runner.run(
            "attach-sweep", [py, "bench/python/attach_sweep.py", "--daemon", daemon,
                             *args[runner.mode]], parse_json=True)
    sizes = {"smoke": ["--sizes", "64,65536"]}.get(runner.mode, [])
    if "handoff" in only:
        iterations = {"full": "1000", "quick": "200", "smoke": "20"}[runner.mode]
        results["handoff"] = runner.run(
            "handoff", [runner.path("bench", "handoff_bench"), "--iterations", iterations,
                        "--rounds", "2" if runner.mode == "smoke" else "5", *sizes],
            parse_json=True)
    if "queue-handoff" in only:
        iterations = {"full": ["1000", "200"], "quick": ["200", "50"],
                      "smoke": ["20", "20"]}[runner.mode]
        results["queue_handoff"] = runner.run(
            "queue-handoff", [py, "bench/python/queue_handoff.py", "--iterations", iterations[0],
                              "--big-iterations", iterations[1], *sizes], parse_json=True)
    if "scaling" in only:
        args = {"full": [], "quick": ["--seconds", "0.3", "--repeats", "1"],
                "smoke": ["--clients", "1,2", "--seconds", "0.05", "--repeats", "1"]}
        results["scaling"] = runner.run(
            "scaling", [runner.path("bench", "lease_scaling_bench"), *args[runner.mode]],
            parse_json=True)
    if "pool" in only:
        out = runner.run("pool", [py, "bench/python/pool_bench.py", "--daemon", daemon,
                                  "--markdown", runner.doc], missed_marker="POOL TARGETS MISSED")
        if out is not None:
            results["pool"] = json.loads([l for l in out.splitlines() if l.startswith("{")][-1])
    if "py-channel-rate" in only:
        tiny = ["--frames", "2000", "--rounds", "1"] if smoke else []
        out = runner.run("py-channel-rate", [py, "bench/python/channel_rate.py", "--daemon", daemon,
                                             "--markdown", runner.doc, *tiny],
                         missed_marker="PY CHANNEL RATE TARGET MISSED")
        if out is not None:
            results["py_channel_rate"] = json.loads(
                [l for l in out.splitlines() if l.startswith("{")][-1])
    del smoke


# --- writing the report ---

def render(results: dict, out: str, command: str) -> list[str]:
    """Writes the plots, results.json and this script's sections of OUT/BENCHMARKS.md; returns the
    names of the sections written."""
    import report_render as rr
    from doc_section import write_section

    doc = os.path.join(out, "BENCHMARKS.md")
    img_dir = os.path.join(out, "bench")
    img_rel = "bench"
    os.makedirs(img_dir, exist_ok=True)
    with open(os.path.join(img_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
        f.write("\n")
    m = results["machine"]
    keys, images, written = {}, {}, []
    if results.get("attach_sweep"):
        images["attach"] = rr.attach_plot(results["attach_sweep"], img_dir, m)
        text, keys["attach"] = rr.attach_section(results["attach_sweep"], images["attach"], img_rel)
        write_section(doc, *MARKERS["attach-sweep"], rr.reflow(text))
        written.append("attach-sweep")
    if results.get("handoff"):
        images["handoff"] = rr.handoff_plot(results["handoff"], results.get("queue_handoff"),
                                            img_dir, m)
        text, keys["handoff"] = rr.handoff_section(results["handoff"],
                                                   results.get("queue_handoff"),
                                                   images["handoff"], img_rel)
        write_section(doc, *MARKERS["handoff-sweep"], rr.reflow(text))
        written.append("handoff-sweep")
    if results.get("scaling"):
        images["scaling"] = rr.scaling_plot(results["scaling"], img_dir, m)
        text, keys["scaling"] = rr.scaling_section(results["scaling"], images["scaling"], img_rel)
        write_section(doc, *MARKERS["lease-scaling"], rr.reflow(text))
        written.append("lease-scaling")
    if results.get("channel"):
        write_section(doc, *MARKERS["channels"], rr.reflow(rr.channel_section(results["channel"])))
        written.append("channels")
    # The header last: it quotes the others' key figures. Prepended when the file has none.
    summary = rr.summary_section(results, keys, images, img_rel, command)
    begin, end = MARKERS["report"]
    text = _read(doc)
    if begin not in text:
        with open(doc, "w") as f:
            f.write(f"{begin}\n{end}\n\n" + re.sub(r"\A# Benchmarks\n", "", text).lstrip())
    write_section(doc, begin, end, rr.reflow(summary))
    written.append("report")
    return written


def check_smoke(out: str, written: list[str], results: dict) -> list[dict]:
    """What the smoke test requires of a tiny run: every section and plot written, non-empty;
    every channel_bench row measured (the iceoryx ones when it was built with them); every
channel_rate.py transport measured."""
    problems = [f"section {name} not written" for name in MARKERS if name not in written]
    values = results.get("channel", {}).get("values", {})
    built = values.get("iceoryx", {}).get("built")
    for key, row in values.get("results", {}).items():
        if not row and (built or not key.startswith("iceoryx")):
            problems.append(f"channel_bench measured no {key}")
    rates = results.get("py_channel_rate", {}).get("rates", {})
    for key in ("channel", "channel_alone", "ring", "queue"):
        if not rates.get(key, 0) > 0:
            problems.append(f"channel_rate.py measured no {key}")
    for name in ("attach_vs_size.png", "handoff_vs_size.png", "lease_scaling.png"):
        path = os.path.join(out, "bench", name)
        if not os.path.exists(path) or os.path.getsize(path) < 10000:
            problems.append(f"plot {name} missing or empty")
    return [{"name": "smoke check", "status": p} for p in problems]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", help="the build directory (relative to the repository root or not)")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="few repetitions, into BUILD/bench-report")
    mode.add_argument("--smoke", action="store_true", help="tiny sweeps only (the ctest smoke test)")
    mode.add_argument("--from-json", help="only render this results.json")
    ap.add_argument("--out", help="directory of BENCHMARKS.md and bench/ (default: docs, or "
                                  "BUILD/bench-report with --quick or --smoke)")
    ap.add_argument("--only", help=f"comma-separated steps of {','.join(STEPS)}")
    args = ap.parse_args()
    require_matplotlib()

    if args.from_json:
        if not args.out:
            ap.error("--from-json needs --out")
        with open(args.from_json) as f:
            results = json.load(f)
        os.makedirs(args.out, exist_ok=True)
        written = render(results, args.out, results.get("command", "./scripts/dev bench"))
        print(f"report.py: wrote {', '.join(written)} into {args.out}", file=sys.stderr)
        return 0

    if not args.build:
        ap.error("give --build BUILD (or --from-json)")
    build = os.path.abspath(os.path.join(REPO, args.build))
    mode_name = "smoke" if args.smoke else "quick" if args.quick else "full"
    out = os.path.abspath(args.out) if args.out else (
        os.path.join(REPO, "docs") if mode_name == "full" else os.path.join(build, "bench-report"))
    os.makedirs(out, exist_ok=True)
    doc = os.path.join(out, "BENCHMARKS.md")
    if mode_name == "smoke" and os.path.samefile(out, os.path.join(REPO, "docs")):
        ap.error("--smoke never writes into docs/")
    if not os.path.exists(doc) or mode_name == "smoke":
        shutil.copy(os.path.join(REPO, "docs", "BENCHMARKS.md"), doc)
    default_steps = [s for s in STEPS if mode_name != "smoke" or
                     s in ("channel", "attach-sweep", "handoff", "queue-handoff", "scaling",
                              "py-channel-rate")]
    only = args.only.split(",") if args.only else default_steps
    unknown = set(only) - set(STEPS)
    if unknown:
        ap.error(f"unknown steps {sorted(unknown)}; steps: {','.join(STEPS)}")

    results = {"quick": mode_name != "full", "mode": mode_name, "machine": machine(build),
               "command": "./scripts/dev bench" + {"full": "", "quick": " --quick",
                                                   "smoke": ""}[mode_name]}
    previous_path = os.path.join(out, "bench", "results.json")
    rerun = bool(args.only) and os.path.exists(previous_path)
    before = cpu_times()
    t0 = time.monotonic()
    runner = Runner(build, doc, mode_name)
    run_steps(runner, only, results)
    if rerun:
        # Some steps run again: the report keeps the others from the run before, and says so.
        with open(previous_path) as f:
            previous = json.load(f)
        new_machine = results.pop("machine")
        for step in runner.steps:
            step["date"] = new_machine["date"]
            if mode_name != "full":
                step["status"] += f" ({mode_name} mode)"
        previous.update({k: v for k, v in results.items() if k not in ("quick", "mode", "command")})
        previous["steps"] = [s for s in previous.get("steps", []) if s["name"] not in only]
        previous["steps"] += runner.steps
        results = previous
    else:
        results["steps"] = runner.steps
        results["total_seconds"] = time.monotonic() - t0
        results["machine"]["load_end"] = loadavg()
        results["machine"]["idle_percent"] = idle_percent(before, cpu_times())
    written = render(results, out, results["command"])
    shown = os.path.relpath(out, REPO) if out.startswith(REPO + os.sep) else out
    print(f"report.py: wrote {', '.join(written)} into {shown}", file=sys.stderr)
    failed = [s for s in runner.steps if s["status"] != "ok" and "target missed" not in s["status"]]
    for s in runner.steps:
        if "target missed" in s["status"]:
            print(f"report.py: step {s['name']}: {s['status']}", file=sys.stderr)
    if mode_name == "smoke":
        failed += check_smoke(out, written, results)
    for s in failed:
        print(f"report.py: step {s['name']}: {s['status']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
