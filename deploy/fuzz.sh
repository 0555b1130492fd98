#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz with clang 16 (ASan + UBSan, coverage) and runs
# each for a fixed time from its checked-in corpus; prints executions and coverage per
# target and fails on any crash, leak or sanitizer report (the reproducer is kept under the
# work directory). Used by .ci/run with a short time; longer runs: docs/reliability.md.
# Usage: deploy/fuzz.sh [SECONDS_PER_TARGET=60] [TARGET ...]   (FUZZ_BUILD_DIR=..., FUZZ_WORK=...)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(package tpm_unmarshal config lms_store soap_request http_request)
build=${FUZZ_BUILD_DIR:-$root/build-fuzz}
work=${FUZZ_WORK:-$(mktemp -d /tmp/tpmma-fuzz.XXXXXX)}

"$root/deploy/install-deps.sh"
# libstdc++ 12's <expected> wants __cpp_concepts >= 202002L, which clang 16 implements but
# does not announce (tests/fuzz/README.md).
flags="-D__cpp_concepts=202002L -Wno-macro-redefined"
flags+=" -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined"
CC=clang-16 CXX=clang++-16 cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DTPMMA_LIBFUZZER=ON -DCMAKE_CXX_FLAGS="$flags" >/dev/null
start=$(date +%s)
cmake --build "$build" -j"$(nproc)" --target "${targets[@]/#/fuzz_}"
echo "fuzz: build took $(($(date +%s) - start)) s"

status=0
printf '| target | seconds | executions | exec/s | coverage (cov) | features (ft) | result |\n'
printf '|---|---|---|---|---|---|---|\n'
for t in "${targets[@]}"; do
  mkdir -p "$work/$t/corpus" "$work/$t/artifacts"
  log=$work/$t/log.txt
  rc=0
  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
    "$build/tests/fuzz/fuzz_$t" -max_total_time="$seconds" -max_len=65536 -timeout=25 \
    -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$work/$t/artifacts/" \
    "$work/$t/corpus" "$root/tests/fuzz/corpus/$t" >"$log" 2>&1 || rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  result=ok
  if [ "$rc" -ne 0 ]; then
    result="FAILED (exit $rc; $log, $(ls "$work/$t/artifacts" | head -1))"
    status=1
  fi
  printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$t" "$seconds" "${runs:-?}" "${speed:-?}" \
    "${cov:-?}" "${ft:-?}" "$result"
done
[ "$status" -eq 0 ] || { echo "fuzz: a target failed; logs and reproducers under $work" >&2; }
exit "$status"
