#!/usr/bin/env bash
# The sanitizer stage: builds tpm-ma from scratch with ASan + UBSan (+ LSan) in ./build-asan
# (or $ASAN_BUILD_DIR) and runs every test through ctest; fails on a failed test and on any
# sanitizer report, including one from a process a test started and then killed or expected
# to fail (cmake/sanitize.cmake writes every report to build-asan/sanitizer-reports/).
# .ci/run calls it after deploy/test.sh. Usage: deploy/test-sanitize.sh [extra ctest args]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
build=${ASAN_BUILD_DIR:-$root/build-asan}

"$root/deploy/install-deps.sh"
rm -rf "$build"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTPMMA_SANITIZE=ON
start=$(date +%s)
cmake --build "$build" -j"$(nproc)"
echo "test-sanitize: build took $(($(date +%s) - start)) s"

reports=$build/sanitizer-reports
rm -rf "$reports"
cd "$build"
start=$(date +%s)
status=0
# ASan makes the programs 2-3 times slower; the per-test timeouts (600 s) leave room for it.
ctest --output-on-failure -j"$(nproc)" --timeout 900 "$@" || status=$?
echo "test-sanitize: ctest took $(($(date +%s) - start)) s"

# A report file is only created when a sanitizer has something to say. UBSan inside the ASan
# runtime ignores log_path and prints to stderr (the process still exits non-zero), so the
# tests' output is searched for its reports too.
shopt -s nullglob
files=("$reports"/*)
if grep -n -B2 -A12 -E 'runtime error: |SUMMARY: UndefinedBehaviorSanitizer' \
     Testing/Temporary/LastTest.log > "$reports/ubsan-in-test-output.txt" 2>/dev/null; then
  files=("$reports"/*)
else
  rm -f "$reports/ubsan-in-test-output.txt"
fi
if [ ${#files[@]} -gt 0 ]; then
  echo "test-sanitize: ${#files[@]} sanitizer report(s):" >&2
  for f in "${files[@]}"; do
    echo "==== $f" >&2
    cat "$f" >&2
  done
  status=1
fi
[ "$status" -eq 0 ] && echo "test-sanitize: all tests passed, no sanitizer report"
exit "$status"
