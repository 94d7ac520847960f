#!/usr/bin/env bash
# Runs the issue-7 huge-page benchmark from an existing build and writes its section of
# docs/BENCHMARKS.md, or of $SHMLEASE_BENCH_DOC (between the huge-pages markers; the rest of the
# file is left alone). bench/report.py runs it as one step of the whole report.
#
#   bench/run_huge_pages_bench.sh [BUILD_DIR] [--reps N]
#
# Needs root (it reserves 1 GiB of huge pages through vm.nr_hugepages and restores the setting)
# and about 3 GiB of free memory. BUILD_DIR (default: build) must have been configured with
# -DSHMLEASE_BUILD_BENCH=ON -DSHMLEASE_BUILD_TESTS=ON and built; this script builds nothing.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
build="${1:-build}"
shift || true
bench="$build/bench/huge_pages_bench"
if [[ ! -x "$bench" ]]; then
  echo "run_huge_pages_bench.sh: $bench not found; configure with -DSHMLEASE_BUILD_BENCH=ON" \
       "-DSHMLEASE_BUILD_TESTS=ON and build the huge_pages_bench target" >&2
  exit 1
fi
if ((EUID != 0)); then
  echo "run_huge_pages_bench.sh: run as root: it reserves 1 GiB of huge pages (vm.nr_hugepages)" >&2
  exit 1
fi
# The build directory as written in the docs: never an absolute path of this machine.
case "$build" in
  "$repo"/*) shown_build="${build#"$repo"/}" ;;
  /*) shown_build="<build-dir>" ;;
  *) shown_build="$build" ;;
esac
extra=""
for arg in "$@"; do extra+=" $(printf '%q' "$arg")"; done
"$bench" --markdown "${SHMLEASE_BENCH_DOC:-docs/BENCHMARKS.md}" \
  --shown-command "bench/run_huge_pages_bench.sh $shown_build$extra" "$@"
