#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Vault engines and instance counts side by side, in one run, with the same ma-bench (issue
# #14; docs/benchmarks.md "PostgreSQL and several instances"):
#   1. the set-up of run_bench.sh (bench_setup.sh): a private swtpm with an EK chain and a
#      fresh MA (`ma-admin init`, bench.echo on); a throw-away PostgreSQL cluster
#      (deploy/lib/postgres.sh, fsync on: durability costs what it costs in production);
#   2. four configurations, each started fresh and measured with ma-bench phases (every op
#      phase paired with an echo phase on the same path, so the ratio is what compares):
#        sqlite-1      SQLite vault, one instance, clients connect directly
#        postgres-1    PostgreSQL vault, one instance, directly
#        postgres-1-lb PostgreSQL, one instance behind haproxy (deploy/haproxy.cfg): the
#                      balancer's own cost
#        postgres-2-lb PostgreSQL, two instances behind haproxy
#   3. `ma-admin audit verify` on each vault; a markdown summary of the medians.
# On one small machine two instances share its cores with the client and the database:
# read the 2-instance rows as "what sharing one vault costs", not as scale-out.
#
# Usage: server/bench/scale_bench.sh [--build DIR] [--ops "upload query"] [--connections N]
#          [--duration S] [--warmup S] [--repeats N] [--out DIR] [--keep]
# Exit codes: 0 measured, 1 a step failed, 2 bad usage.
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=$SRC/build
OPS="upload query"
CONNECTIONS=32
DURATION=5
WARMUP=1
REPEATS=3
OUT=""
KEEP=0
PY=/usr/bin/python3

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --build) BUILD=$(cd "$2" && pwd); shift 2 ;;
    --ops) OPS=$2; shift 2 ;;
    --connections) CONNECTIONS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --repeats) REPEATS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) usage ;;
    *) echo "scale_bench.sh: unknown argument $1" >&2; usage ;;
  esac
done
for bin in server/ma-server server/ma-admin server/ma-bench; do
  [ -x "$BUILD/$bin" ] || { echo "scale_bench.sh: $BUILD/$bin not built (--build DIR)" >&2; exit 2; }
done
command -v haproxy >/dev/null || { echo "scale_bench.sh: haproxy not installed" >&2; exit 2; }
PACKAGES=$($PY -c "import math; print(int(math.ceil($REPEATS * ($DURATION + $WARMUP) * 8000)))")

WORK=$(mktemp -d /tmp/ma-scale.XXXXXX)  # under /tmp: the postgres user must reach it
chmod 755 "$WORK"
OUT=${OUT:-$WORK}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
SCRIPT=scale_bench.sh
. "$SRC/server/bench/bench_setup.sh"
. "$SRC/deploy/lib/wait.sh"
. "$SRC/deploy/lib/postgres.sh"
. "$SRC/deploy/lib/toml.sh"
EXTRA_PIDS=()
scale_cleanup() {
  for p in "${EXTRA_PIDS[@]}"; do wait_kill "$p"; done
  pg_stop
  bench_cleanup
  [ "$KEEP" = 1 ] || [ "$OUT" = "$WORK" ] || rm -rf "$WORK"
}
trap scale_cleanup EXIT

bench_start_swtpm
bench_init_ma "$CONNECTIONS"
SQLITE_CONFIG=$CONFIG
pg_start "$WORK/pg" || exit 1
# Production durability for the comparison (deploy/lib/postgres.sh turns fsync off).
pg_sql postgres "alter system set fsync = on" >/dev/null
pg_sql postgres "select pg_reload_conf()" >/dev/null
PG_CONFIG=$WORK/ma/config-pg.toml
cp "$SQLITE_CONFIG" "$PG_CONFIG"
toml_set "$PG_CONFIG" vault "url=\"$PG_CONNINFO dbname=tpmma\""
toml_set "$PG_CONFIG" server 'trusted_proxies=["127.0.0.2"]'
# /metrics on every instance, read straight from it (not through haproxy) before it stops:
# the vault's batch sizes say how many write calls shared a transaction.
for c in "$SQLITE_CONFIG" "$PG_CONFIG"; do toml_set "$c" metrics 'enabled=true'; done

INSTANCE_PIDS=()
start_instances() {  # CONFIG COUNT: sets PORTS
  local config=$1 i log port
  PORTS=()
  INSTANCE_PIDS=()
  for i in $(seq "$2"); do
    log=$WORK/server-$NAME-$i.log
    : > "$log"
    "$BUILD/server/ma-server" --config "$config" 2>> "$log" &
    INSTANCE_PIDS+=($!)
    EXTRA_PIDS+=($!)
    port=""
    for _ in $(seq 600); do
      port=$(sed -n 's/.*listening on https:\/\/127\.0\.0\.1:\([0-9][0-9]*\) .*/\1/p;T;q' "$log") || true
      [ -n "$port" ] && break
      kill -0 "${INSTANCE_PIDS[-1]}" 2>/dev/null || { cat "$log" >&2; return 1; }
      sleep 0.05
    done
    [ -n "$port" ] || { say "ma-server $i did not say where it listens"; return 1; }
    PORTS+=("$port")
  done
}

start_lb() {  # in front of PORTS (one port: both server lines name it)
  local lb_port
  lb_port=$($PY -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
  export TPMMA_LB_BIND=127.0.0.1:$lb_port TPMMA_LB_SOURCE=127.0.0.2 \
    TPMMA_LB_CA=$WORK/ma/ca/ca-cert.pem TPMMA_LB_STATS=$WORK/haproxy-$NAME.stats \
    TPMMA_MA1=127.0.0.1:${PORTS[0]} TPMMA_MA2=127.0.0.1:${PORTS[-1]}
  haproxy -db -f "$SRC/deploy/haproxy.cfg" > "$WORK/haproxy-$NAME.log" 2>&1 &
  LB_PID=$!
  EXTRA_PIDS+=($LB_PID)
  lb_up() {
    [ -S "$TPMMA_LB_STATS" ] && [ "$(echo "show stat" | $PY -c "
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b'show stat\n')
d = b''
while c := s.recv(65536): d += c
print(sum(1 for l in d.decode().splitlines() if l.startswith('ma_servers,ma') and ',UP,' in l and 'L7OK' in l))
" "$TPMMA_LB_STATS")" = 2 ]
  }
  wait_until 60 lb_up || { say "haproxy did not see the instances up"; cat "$WORK/haproxy-$NAME.log" >&2; return 1; }
  URL=https://127.0.0.1:$lb_port/
}

scrape_metrics() {  # the vault lines of each instance's /metrics into OUT/metrics-NAME-i.txt
  local i=0 port
  for port in "${PORTS[@]}"; do
    i=$((i + 1))
    curl -sS --cacert "$WORK/ma/ca/ca-cert.pem" "https://127.0.0.1:$port/metrics" |
      grep -E '^tpmma_vault_(batch|largest|write|commits)' > "$OUT/metrics-$NAME-$i.txt" || true
  done
}

stop_all() {
  local p
  scrape_metrics
  for p in ${LB_PID:-} "${INSTANCE_PIDS[@]}"; do wait_kill "$p"; done
  LB_PID=""
}

RESULTS=$OUT/results.jsonl
: > "$RESULTS"
measure() {  # NAME CONFIG INSTANCES LB(0|1)
  NAME=$1
  say "configuration $NAME"
  start_instances "$2" "$3"
  URL=https://127.0.0.1:${PORTS[0]}/
  [ "$4" = 0 ] || start_lb
  local op
  for op in $OPS; do
    "$BUILD/server/ma-bench" --url "$URL" --ca "$WORK/ma/ca/ca-cert.pem" \
      --connections "$CONNECTIONS" --duration "$DURATION" --warmup "$WARMUP" --json \
      --op "$op" --repeats "$REPEATS" --tcti "$TCTI" --ek-intermediate "$INTERMEDIATE" \
      --packages "$PACKAGES" 2> "$OUT/setup-$NAME-$op.log" |
      $PY -c "import json,sys
for l in sys.stdin:
    if l.strip():
        r = json.loads(l); r['config'] = sys.argv[1]; print(json.dumps(r), flush=True)" "$NAME" |
      tee -a "$RESULTS" >&2 || { cat "$OUT/setup-$NAME-$op.log" >&2; say "$NAME $op failed"; exit 1; }
  done
  stop_all
}

measure sqlite-1 "$SQLITE_CONFIG" 1 0
measure postgres-1 "$PG_CONFIG" 1 0
measure postgres-1-lb "$PG_CONFIG" 1 1
measure postgres-2-lb "$PG_CONFIG" 2 1

verify() {  # WHAT: ma-admin audit verify on the vault $WORK/ma/config.toml names
  "$BUILD/server/ma-admin" audit verify --dir "$WORK/ma" > "$OUT/audit-verify-$1.txt" 2>&1 ||
    { cat "$OUT/audit-verify-$1.txt" >&2; say "audit verify FAILED on $1"; exit 1; }
  say "audit verify on $1: $(tail -n 1 "$OUT/audit-verify-$1.txt")"
}
verify sqlite
cp "$PG_CONFIG" "$WORK/ma/config.toml"
verify postgres

{
  echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "load: connections $CONNECTIONS, duration ${DURATION}s + warm-up ${WARMUP}s, repeats $REPEATS; PostgreSQL $(pg_sql postgres 'show server_version'), fsync on"
  echo
  $PY - "$RESULTS" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
runs, echo_before = {}, None
for r in rows:
    if r["phase"] == "echo":
        echo_before = r
    else:
        runs.setdefault((r["phase"], r["config"]), []).append((r, echo_before))
med = statistics.median
print("| op | configuration | ops/s (median) | echo ops/s (same runs) | ratio to echo | p50 ms | p99 ms | runs |")
print("|---|---|---:|---:|---:|---:|---:|---|")
for (op, config), pairs in runs.items():
    print(f"| {op} | {config} | {med(p[0]['ops_per_s'] for p in pairs):.0f} | "
          f"{med(p[1]['ops_per_s'] for p in pairs):.0f} | "
          f"{med(p[0]['ratio_to_echo'] for p in pairs):.3f} | "
          f"{med(p[0]['p50_ms'] for p in pairs):.2f} | {med(p[0]['p99_ms'] for p in pairs):.2f} | "
          + ", ".join("%.0f" % p[0]["ops_per_s"] for p in pairs) + " |")
EOF
} | tee "$OUT/summary.md"
say "results in $OUT"
