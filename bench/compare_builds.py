#!/usr/bin/python3
"""Did a change make the hot paths slower? Two build trees, measured alternately in one run.

    bench/compare_builds.py --before OLD_BUILD --after NEW_BUILD [--rounds 7] [--write docs/BENCHMARKS.md]

Each build tree is a RelWithDebInfo build with benchmarks and tests (./scripts/dev bench makes
one; a `git worktree` of the old commit gives the other). Each round runs, from both trees in
alternating order (so drift of a shared, noisy machine falls on both alike):
- lease_bench: a lease acquire + release of a mapped segment, and a raw Unix-socket round trip of
  the same message sizes measured by the same binary (the baseline);
- handoff_bench: a frame handed to a sleeping reader through a channel, and a raw futex wake-up
  (the baseline), at 64 B and 1 MiB.
Each build spawns its own shmleased. The figures are medians over the rounds; the verdict is on
the ratios to each run's own baseline, which the machine's load moves far less than raw times.
--write replaces the section between <!-- build-compare:begin/end --> in the given file (or
appends it). CTest's bench.compare_smoke runs one round of a build against itself.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SECTION = ("<!-- build-compare:begin -->", "<!-- build-compare:end -->")
# The split placement (lease_bench: client and shmleased on different CPUs).
LEASE_FILTER = ("^BM_(RawUnixRoundTrip/request:40/reply:123|LeaseAcquireRelease)"
                "/same_core:0/real_time$")
SIZES = (64, 1 << 20)
UNIT_US = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}


def run_json(cmd: list[str]) -> dict:
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600).stdout
    return json.loads(out)


def lease_round(build: Path) -> dict[str, float]:
    doc = run_json([str(build / "bench" / "lease_bench"), f"--benchmark_filter={LEASE_FILTER}",
                    "--benchmark_min_time=0.3", "--benchmark_format=json"])
    got = {}
    for b in doc["benchmarks"]:
        us = b["real_time"] * UNIT_US[b["time_unit"]]
        got["lease_us" if b["name"].startswith("BM_LeaseAcquireRelease") else "raw_us"] = us
    if set(got) != {"lease_us", "raw_us"}:
        raise SystemExit(f"{build}: lease_bench ran {sorted(got)}, not both benchmarks")
    return got


def handoff_round(build: Path) -> dict[str, float]:
    doc = run_json([str(build / "bench" / "handoff_bench"), "--iterations", "1000", "--rounds", "1",
                    "--sizes", ",".join(map(str, SIZES))])
    got = {}
    for row in doc["rows"]:
        if row["transport"] in ("shmlease", "futex"):
            got[f"{row['transport']}_{row['size']}_us"] = row["stats"]["p50_us"]
    want = {f"{t}_{s}_us" for t in ("shmlease", "futex") for s in SIZES}
    if set(got) != want:
        raise SystemExit(f"{build}: handoff_bench gave {sorted(got)}, wanted {sorted(want)}")
    return got


def source_of(build: Path) -> str:
    cache = (build / "CMakeCache.txt").read_text()
    home = next(line.split("=", 1)[1] for line in cache.splitlines()
                if line.startswith("CMAKE_HOME_DIRECTORY:"))
    rev = subprocess.run(["git", "-C", home, "log", "-1", "--format=%h %s"], capture_output=True,
                         text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", home, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return (rev[:72] or "not a git checkout") + (" (with uncommitted changes)" if dirty else "")


def fmt_ratio(x: float) -> str:
    return f"{x:.2f}×"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--before", type=Path, required=True)
    ap.add_argument("--after", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--write", type=Path)
    args = ap.parse_args()
    builds = {"before": args.before.resolve(), "after": args.after.resolve()}
    samples: dict[str, dict[str, list[float]]] = {k: {} for k in builds}
    load_start, start = os.getloadavg(), time.time()
    for r in range(args.rounds):
        order = list(builds) if r % 2 == 0 else list(reversed(builds))
        for label in order:
            for key, value in {**lease_round(builds[label]), **handoff_round(builds[label])}.items():
                samples[label].setdefault(key, []).append(value)
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    load_end = os.getloadavg()
    med = {label: {k: statistics.median(v) for k, v in s.items()} for label, s in samples.items()}

    rows = [("Lease acquire + release", "lease_us", "raw_us", "raw Unix-socket round trip")]
    rows += [(f"Frame hand-off, {'64 B' if s == 64 else '1 MiB'} (p50)", f"shmlease_{s}_us",
              f"futex_{s}_us", "futex wake-up") for s in SIZES]
    lines = [
        SECTION[0],
        "## Before and after a change of structure",
        "",
        "The hot paths of two builds, measured alternately in one run by",
        "`bench/compare_builds.py --before OLD_BUILD --after NEW_BUILD` (its --help says how): each",
        "figure is the median of "
        f"{args.rounds} rounds, and each ratio is to the baseline the same binary measured in the same",
        "round.",
        "",
        f"- before: {source_of(builds['before'])}",
        f"- after: {source_of(builds['after'])}",
        f"- run on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(start))}, "
        f"{(time.time() - start) / 60:.0f} min; load average (1, 5, 15 min) "
        f"{', '.join(f'{x:.2f}' for x in load_start)} at the start, "
        f"{', '.join(f'{x:.2f}' for x in load_end)} at the end, on {os.cpu_count()} CPUs"
        + (" (noisy: above the core count)" if max(load_start[0], load_end[0]) > (os.cpu_count() or 1)
           else ""),
        "",
        "| path | before | after | baseline | before / baseline | after / baseline |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for title, key, base, base_name in rows:
        b, a = med["before"], med["after"]
        lines.append(f"| {title} | {b[key]:.2f} µs | {a[key]:.2f} µs | {base_name} "
                     f"({b[base]:.2f} / {a[base]:.2f} µs) | {fmt_ratio(b[key] / b[base])} | "
                     f"{fmt_ratio(a[key] / a[base])} |")
    lines.append(SECTION[1])
    text = "\n".join(lines)
    print(text)
    if args.write:
        doc = args.write.read_text() if args.write.exists() else ""
        if SECTION[0] in doc:
            head, rest = doc.split(SECTION[0], 1)
            doc = head + text + rest.split(SECTION[1], 1)[1]
        else:
            doc = doc.rstrip("\n") + "\n\n" + text + "\n"
        args.write.write_text(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
