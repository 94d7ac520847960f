#!/usr/bin/env bash
# Runs each libFuzzer target for a bounded time and reports what it did.
#
#   tests/fuzz/run_fuzzers.sh BUILD_DIR SECONDS_PER_TARGET [TARGET...]
#
# The build it expects (clang; the fuzz targets carry their own -fsanitize flags):
#   CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSHMLEASE_FUZZ=ON -DSHMLEASE_BUILD_TESTS=OFF -DSHMLEASE_BUILD_BENCH=OFF -DSHMLEASE_BUILD_PYTHON=OFF
#   cmake --build build-fuzz -j2 --target fuzz_protocol fuzz_config fuzz_format
# Every seed once, as regression tests: ctest --test-dir build-fuzz -L fuzz
#
# Targets run one after another (one core each). Each works on its own corpus under
# BUILD_DIR/fuzz-runs/TARGET/corpus, seeded from a copy of tests/fuzz/corpus/TARGET: the committed
# corpus is never written to, and what a run finds is kept for the next run in the same build
# directory (delete fuzz-runs/ to start over). Crashing inputs are saved as
# BUILD_DIR/fuzz-runs/TARGET/crash-* (also leak-*, timeout-*, oom-*) and make the script exit 1.
# Per target it prints executions, executions per second, coverage (cov: edges, ft: features),
# corpus size and the crashes; the full libFuzzer log is BUILD_DIR/fuzz-runs/TARGET/log.
set -euo pipefail

if (($# < 2)); then
  sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0" >&2
  exit 2
fi
build_dir=$(cd "$1" && pwd)
seconds=$2
shift 2
src_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
targets=("$@")
((${#targets[@]})) || targets=(fuzz_protocol fuzz_config fuzz_format)

# Saved failing inputs of a target, one path a line.
artifacts() {
  find "$1" -maxdepth 1 \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | sort
}

# Longest input per target: frames and config files are small; sizes and shapes are short text.
max_len() {
  case $1 in
    fuzz_format) echo 256 ;;
    *) echo 4096 ;;
  esac
}

failed=0
summary=()
for target in "${targets[@]}"; do
  binary=$build_dir/tests/fuzz/$target
  [[ -x $binary ]] || { echo "run_fuzzers: $binary is not built" >&2; exit 2; }
  work=$build_dir/fuzz-runs/$target
  mkdir -p "$work/corpus"
  cp -n "$src_dir/corpus/$target/"* "$work/corpus/"
  dict=()
  [[ -f $src_dir/$target.dict ]] && dict=("-dict=$src_dir/$target.dict")
  before=$(artifacts "$work")
  echo "run_fuzzers: $target for ${seconds}s on $(find "$work/corpus" -type f | wc -l) inputs"
  status=0
  "$binary" "$work/corpus" "${dict[@]}" -max_total_time="$seconds" -max_len="$(max_len "$target")" \
    -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$work/" \
    >"$work/log" 2>&1 || status=$?
  # The last status line ("#N DONE cov: ... ft: ... corp: N/SIZE ...") and the final stats.
  last=$(grep -E '^#[0-9]+' "$work/log" | tail -n 1 || true)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$work/log" | tail -n 1)
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$work/log" | tail -n 1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([^ ]*\).*/\1/p' <<<"$last")
  new_artifacts=$(comm -13 <(echo "$before") <(artifacts "$work") | sed '/^$/d')
  line="$target: ${execs:-?} executions, ${rate:-?} exec/s, cov ${cov:-?}, ft ${ft:-?}, corpus ${corp:-?} (inputs/bytes), peak rss ${rss:-?} MB"
  if ((status != 0)) || [[ -n $new_artifacts ]]; then
    failed=1
    line+=", FAILED (exit $status)"
    grep -E 'ERROR|SUMMARY|runtime error|fuzz_[a-z]+: ' "$work/log" | head -n 5 | sed 's/^/    /' || true
    [[ -z $new_artifacts ]] || sed 's/^/    input saved: /' <<<"$new_artifacts"
  fi
  echo "  $line"
  summary+=("$line")
done

echo "run_fuzzers: summary (${seconds}s per target)"
printf '  %s\n' "${summary[@]}"
exit "$failed"
