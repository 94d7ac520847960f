#!/usr/bin/env bash
# Runs the issue-2 lease benchmark from an existing build and writes its section of
# docs/BENCHMARKS.md, or of $SHMLEASE_BENCH_DOC (between the lease-bench markers; the rest of the
# file is left alone). bench/report.py runs it as one step of the whole report.
#
#   bench/run_benchmarks.sh [BUILD_DIR] [extra Google Benchmark flags...]
#
# BUILD_DIR (default: build) is relative to the repository root and must have been configured
# with -DSHMLEASE_BUILD_BENCH=ON -DSHMLEASE_BUILD_TESTS=ON and built; this script builds nothing.
# The raw JSON goes to BUILD_DIR/bench/lease_bench.json.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

build="${1:-build}"
shift || true
bench="$build/bench/lease_bench"
if [[ ! -x "$bench" ]]; then
  echo "run_benchmarks.sh: $bench not found; configure with -DSHMLEASE_BUILD_BENCH=ON" \
       "-DSHMLEASE_BUILD_TESTS=ON -DCMAKE_BUILD_TYPE=Release and build the lease_bench target" >&2
  exit 1
fi

# The build directory as written in the docs: never an absolute path of this machine.
case "$build" in
  "$repo"/*) shown_build="${build#"$repo"/}" ;;
  /*) shown_build="<build-dir>" ;;
  *) shown_build="$build" ;;
esac

flags=(--benchmark_repetitions=5 --benchmark_report_aggregates_only=true --benchmark_format=json "$@")
json="$build/bench/lease_bench.json"
# Both commands as a reader can paste them (extra flags shell-quoted).
extra=""
for arg in "$@"; do extra+=" $(printf '%q' "$arg")"; done
shown_script="bench/run_benchmarks.sh $shown_build$extra"
shown_command="$shown_build/bench/lease_bench"
for arg in "${flags[@]}"; do shown_command+=" $(printf '%q' "$arg")"; done
shown_command+=" > $shown_build/bench/lease_bench.json"

echo "running: $shown_command" >&2
# CPU time counters before and after: how busy the machine was with other work during the run.
stat_before="$(head -n 1 /proc/stat)"
"$bench" "${flags[@]}" > "$json"
stat_after="$(head -n 1 /proc/stat)"

/usr/bin/python3 - "$json" "${SHMLEASE_BENCH_DOC:-docs/BENCHMARKS.md}" "$shown_script" "$shown_command" "$stat_before" \
    "$stat_after" <<'PYTHON'
import json
import os
import platform
import re
import sys

json_path, doc_path, script_command, bench_command, stat_before, stat_after = sys.argv[1:7]

BEGIN = "<!-- lease-bench:begin -->"
END = "<!-- lease-bench:end -->"
INTRO = """# Benchmarks

Every figure here is compared with a baseline measured by the same binary in the same run, because
the machines these runs happen on are shared and noisy (2 cores, other builds and tests running):
absolute times move by tens of percent from one run to the next, ratios much less. Each section is
written by the script named in it; rerun that script rather than editing its numbers by hand.
"""

with open(json_path) as f:
    report = json.load(f)
context = report["context"]

def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"

# Median and coefficient of variation of each benchmark, in the order they ran.
order, median, cv = [], {}, {}
for b in report["benchmarks"]:
    if b.get("run_type") != "aggregate":
        continue
    name = b["run_name"]
    if name not in order:
        order.append(name)
    if b["aggregate_name"] == "median":
        median[name] = b
    elif b["aggregate_name"] == "cv":
        cv[name] = b

def to_ns(b, key):
    scale = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}[b.get("time_unit", "ns")]
    return b[key] * scale

def fmt_us(ns):
    return f"{ns / 1000:.1f} µs"

def display(name):
    return re.sub(r"/real_time$", "", name)

req = context.get("acquire_request_bytes")
rep = context.get("acquire_reply_bytes")
PLACEMENTS = {"0": "split", "1": "same core"}

def placement_of(name):
    m = re.search(r"same_core:(\d)", name)
    return m.group(1) if m else None

def baseline_of(placement):
    b = median.get(f"BM_RawUnixRoundTrip/request:{req}/reply:{rep}/same_core:{placement}/real_time")
    return to_ns(b, "real_time") if b else None

if baseline_of("0") is None and baseline_of("1") is None:
    sys.exit(f"run_benchmarks.sh: no BM_RawUnixRoundTrip baseline of request {req}, reply {rep} in {json_path}")

rows = []
for name in order:
    if name not in median:
        continue
    m = median[name]
    wall = to_ns(m, "real_time")
    placement = placement_of(name)
    baseline = baseline_of(placement)
    spread = f"{cv[name]['real_time'] * 100:.0f} %" if name in cv else "–"
    ratio = f"{wall / baseline:.2f}×" if baseline else "–"
    rows.append(f"| `{display(name)}` | {PLACEMENTS.get(placement, '?')} | {fmt_us(wall)} | {spread} | "
                f"{fmt_us(to_ns(m, 'cpu_time'))} | {ratio} |")

verdicts = []
for placement, label in PLACEMENTS.items():
    target = f"BM_LeaseAcquireRelease/same_core:{placement}/real_time"
    baseline = baseline_of(placement)
    if target in median and baseline:
        ratio = to_ns(median[target], "real_time") / baseline
        verdicts.append(f"{label}: **{ratio:.2f}×** ({fmt_us(to_ns(median[target], 'real_time'))} "
                        f"against {fmt_us(baseline)}; issue 2's ≤ 2× {'met' if ratio <= 2.0 else 'NOT met'}, "
                        f"issue 15's ≤ 1.2× {'met' if ratio <= 1.2 else 'NOT met'})")
verdict = ("**Acquire + release of a mapped segment, × one raw round trip placed alike**: "
           + "; ".join(verdicts) + ".") if verdicts else ""

def idle_percent(before, after):
    # /proc/stat "cpu" line: user nice system idle iowait irq softirq steal ...
    b = [int(x) for x in before.split()[1:]]
    a = [int(x) for x in after.split()[1:]]
    delta = [y - x for x, y in zip(b, a)]
    total = sum(delta[:8])
    return 100.0 * (delta[3] + delta[4]) / total if total > 0 else float("nan")

load = context.get("load_avg") or []
load_text = ", ".join(f"{x:.2f}" for x in load) if load else "unknown"
machine = (f"nproc {len(os.sched_getaffinity(0))}, {cpu_model()}, Linux {platform.release()}; "
           f"load average at start {load_text}, CPUs idle {idle_percent(stat_before, stat_after):.0f} % "
           f"of the run (the benchmark alone would leave most of them idle); Google Benchmark "
           f"{context.get('library_build_type', 'unknown')} build from Debian (it only times the loop)")

section = f"""{BEGIN}
## Lease round trip (issues 2 and 15)

What a lease costs once its segment is mapped, against a raw Unix-socket round trip of the same
sizes measured in the same binary and run (`bench/lease_bench.cpp`).

Placement is controlled: the benchmark process (its client threads too) runs on CPU
{context.get("client_cpu")}, and every row runs twice, with its peer (every thread of `shmleased`,
or the echo peer) on CPU {context.get("peer_cpu")} (**split**, `same_core:0`) and on CPU
{context.get("client_cpu")} with the client (**same core**, `same_core:1`). Each row is compared
with the baseline of its own placement. Which one is the fast regime depends on the host: a
wake-up of a process sleeping on another CPU costs an inter-processor interrupt, which on some
VMs costs tens of microseconds (see the futex floor in the channel section), while on one CPU a
round trip is two context switches.

- `BM_RawUnixRoundTrip/request:{req}/reply:{rep}`: **the baseline.** The benchmark thread writes
  {req} bytes (an encoded acquire request) to a blocking Unix stream socket and reads {rep} bytes back
  (an encoded acquire reply, no descriptor); the peer is a forked process doing blocking
  reads and writes. The 64/64 row is the same with 64-byte messages.
- `BM_RawUnixRoundTripThenSend/request:{req}/reply:{rep}/send:{context.get("release_request_bytes")}`: the
  message pattern of acquire + release with no daemon behind it: the same round trip, then a
  one-way message of a release's size that the peer reads and does not answer.
- `BM_LeaseAcquireRelease`: `client.Acquire(name, Mode::kRead)` then `lease.Release()` against a real
  `shmleased` (log level info) on a segment already mapped by a warm-up lease: one round trip for the
  acquire plus a one-way {context.get("release_request_bytes")}-byte release that the daemon does not answer.
- `BM_LeaseAcquireReleaseWrite`: the same with write leases.
- `BM_Stat`: one request and its reply through the daemon (`client.Stat(name)`), for context.

Times are medians of 5 repetitions of wall time per operation; CV is the coefficient of variation
of the 5; client CPU is the benchmark process's CPU time per operation. How to read them: the
`ThenSend` row is what the acquire + release message pattern costs with nothing behind it, so the
gap between it and `BM_LeaseAcquireRelease` is the daemon's and the client library's own cost, and
the gap between it and the baseline is the price of sending the release as a second message.

| Benchmark | Placement | Median time | CV | Client CPU | × raw round trip (same placement) |
|---|---|---:|---:|---:|---:|
{chr(10).join(rows)}

{verdict}

Machine: {machine}. Run on {context.get("date", "unknown date")}.

Command (from the repository root, on an existing Release build with benchmarks and tests on):

<!-- example: not run: the benchmarks take minutes and want a quiet machine -->
```sh
{script_command}
# which runs
{bench_command}
```
{END}
"""

if os.path.exists(doc_path):
    with open(doc_path) as f:
        doc = f.read()
else:
    doc = INTRO
if BEGIN in doc and END in doc:
    head, rest = doc.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    doc = head + section.rstrip("\n") + tail
else:
    doc = doc.rstrip("\n") + "\n\n" + section
with open(doc_path, "w") as f:
    f.write(doc)
print(f"wrote the lease-bench section of {doc_path}", file=sys.stderr)
if verdict:
    print(re.sub(r"\*\*", "", verdict), file=sys.stderr)
PYTHON
