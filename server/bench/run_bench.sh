#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# ma-server benchmark on loopback, from nothing (see docs/benchmarks.md):
#   1. provisions a private swtpm with an EK certificate chain (swtpm_setup + swtpm_localca,
#      as tests/support/swtpm.cc) and starts it on a free loopback port pair;
#   2. `ma-admin init` a fresh MA trusting that swtpm's CA as EK root, with bench.echo on;
#   3. starts ma-server (port 0) and reads its "listening on https://127.0.0.1:PORT" line;
#   4. runs ma-bench for each operation, every phase paired with a bare echo phase;
#   5. tops up with GetMAKey until the server has answered >= --rss-requests requests, then
#      reads its VmHWM/VmRSS from /proc;
#   6. prints the medians (markdown) and keeps the raw JSON lines.
#
# Usage: server/bench/run_bench.sh [--build DIR] [--ops "getmakey ..."] [--connections N]
#          [--duration S] [--warmup S] [--repeats N] [--packages N] [--rss-requests N]
#          [--out DIR] [--keep]
# Exit codes: 0 measured, 1 a step failed, 2 bad usage.
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=$SRC/build
OPS="getmakey getmaserviceinfo query authenticate upload"
CONNECTIONS=64
DURATION=5
WARMUP=1
REPEATS=3
PACKAGES=""
RSS_REQUESTS=1000000
OUT=""
KEEP=0
PY=/usr/bin/python3

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --build) BUILD=$(cd "$2" && pwd); shift 2 ;;
    --ops) OPS=$2; shift 2 ;;
    --connections) CONNECTIONS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --repeats) REPEATS=$2; shift 2 ;;
    --packages) PACKAGES=$2; shift 2 ;;
    --rss-requests) RSS_REQUESTS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) usage ;;
    *) echo "run_bench.sh: unknown argument $1" >&2; usage ;;
  esac
done
for bin in server/ma-server server/ma-admin server/ma-bench; do
  [ -x "$BUILD/$bin" ] || { echo "run_bench.sh: $BUILD/$bin not built (--build DIR)" >&2; exit 2; }
done
for prog in swtpm swtpm_setup swtpm_localca; do
  command -v $prog >/dev/null || { echo "run_bench.sh: $prog not installed (apt install swtpm swtpm-tools)" >&2; exit 1; }
done
# Enough distinct packages for every upload phase (warm-up included) at up to 8000/s.
if [ -z "$PACKAGES" ]; then
  PACKAGES=$($PY -c "import math; print(int(math.ceil($REPEATS * ($DURATION + $WARMUP) * 8000)))")
fi

WORK=$(mktemp -d /tmp/ma-bench.XXXXXX)
OUT=${OUT:-$WORK}
mkdir -p "$OUT"
SCRIPT=run_bench.sh
. "$SRC/server/bench/bench_setup.sh"
trap bench_cleanup EXIT

# --- 1. swtpm with an EK certificate chain (private swtpm-localca under $WORK)
bench_start_swtpm
# --- 2. a fresh MA trusting the swtpm CA as EK root
bench_init_ma "$CONNECTIONS"
cp "$CONFIG" "$OUT/config.toml"
# --- 3. ma-server on an ephemeral port
bench_start_server

BENCH=("$BUILD/server/ma-bench" --url "$URL" --ca "$WORK/ma/ca/ca-cert.pem"
       --connections "$CONNECTIONS" --duration "$DURATION" --warmup "$WARMUP" --json)
RESULTS=$OUT/results.jsonl
: > "$RESULTS"

# --- 4. the operations
for op in $OPS; do
  say "op $op"
  "${BENCH[@]}" --op "$op" --repeats "$REPEATS" --tcti "$TCTI" --ek-intermediate "$INTERMEDIATE" \
    --packages "$PACKAGES" 2> "$OUT/setup-$op.log" | tee -a "$RESULTS" >&2 \
    || { cat "$OUT/setup-$op.log" >&2; say "op $op failed"; exit 1; }
  cat "$OUT/setup-$op.log" >&2
done

# --- 5. RSS after >= RSS_REQUESTS requests (one log line per request, echo included)
served() { grep -c ' request op=' "$WORK/server.log" || true; }
while [ "$(served)" -lt "$RSS_REQUESTS" ]; do
  say "$(served) requests so far; topping up with getmakey"
  "${BENCH[@]}" --op getmakey --repeats 1 >> "$OUT/topup.jsonl"
done
SERVED=$(served)
HWM=$(awk '/^VmHWM/ {print $2}' /proc/$SERVER_PID/status)
RSS=$(awk '/^VmRSS/ {print $2}' /proc/$SERVER_PID/status)
echo "{\"phase\": \"rss\", \"requests\": $SERVED, \"vmhwm_kb\": $HWM, \"vmrss_kb\": $RSS}" | tee -a "$RESULTS" >&2

# The vault is intact and its hash chain verifies after all that.
bench_stop_server
"$BUILD/server/ma-admin" audit verify --dir "$WORK/ma" > "$OUT/audit-verify.txt" 2>&1 \
  || { cat "$OUT/audit-verify.txt" >&2; say "audit verify FAILED"; exit 1; }
say "audit verify: $(tail -1 "$OUT/audit-verify.txt")"

# --- 6. summary
{
  echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
  echo "load: connections $CONNECTIONS, duration ${DURATION}s + warm-up ${WARMUP}s, repeats $REPEATS"
  $PY - "$RESULTS" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ops, echo_before, i = {}, None, 0
for r in rows:
    if r["phase"] == "echo":
        echo_before = r
    elif r["phase"] != "rss":
        ops.setdefault(r["phase"], []).append((r, echo_before))
med = statistics.median
print("| op | ops/s (median) | echo ops/s (same runs) | ratio to echo | p50 ms | p99 ms | runs |")
print("|---|---|---|---|---|---|---|")
for op, pairs in ops.items():
    runs = ", ".join("%.0f" % p[0]["ops_per_s"] for p in pairs)
    print(f"| {op} | {med(p[0]['ops_per_s'] for p in pairs):.0f} | "
          f"{med(p[1]['ops_per_s'] for p in pairs):.0f} | "
          f"{med(p[0]['ratio_to_echo'] for p in pairs):.2f} | "
          f"{med(p[0]['p50_ms'] for p in pairs):.2f} | {med(p[0]['p99_ms'] for p in pairs):.2f} | "
          f"{runs} |")
for r in rows:
    if r["phase"] == "rss":
        print(f"\nRSS after {r['requests']} requests: VmHWM {r['vmhwm_kb']/1024:.1f} MB, "
              f"VmRSS {r['vmrss_kb']/1024:.1f} MB")
EOF
} | tee "$OUT/summary.md"
say "results in $OUT"
