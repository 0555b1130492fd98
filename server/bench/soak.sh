#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# ma-server soak on loopback (issue #13; docs/benchmarks.md "Soak (issue #13)"):
#   1. the set-up of run_bench.sh (bench_setup.sh): a private swtpm with an EK certificate
#      chain, `ma-admin init` of a fresh MA trusting it, ma-server on port 0;
#   2. ma-bench --mix for --duration s at --connections: each connection cycles through
#      getmakey, getmaserviceinfo, authenticate, query, upload and a hostile request (one kind
#      per turn, in rotation); every acknowledged Upload's id goes to acked-uploads.txt;
#   3. meanwhile ma-server's VmRSS/VmHWM from /proc/PID/status every --sample-every s (rss.csv);
#   4. then: the server must still be running; SIGTERM (how long it takes to stop); every
#      acknowledged upload must be in the vault (sqlite3 on vault.db, and `ma-admin packages
#      show` for a sample); `ma-admin audit verify` must pass (its exit code only);
#   5. prints a markdown summary (summary.md): requests per op, refusals by kind, errors, RSS at
#      1 / 5 / 15 min and at the end, the slope over the last 20 min (judged only in a run of
#      at least 20 min: at most --max-slope MB per 10 min).
#
# Usage: server/bench/soak.sh [--build DIR] [--duration S] [--connections N] [--upload-rate N]
#          [--package-bytes N] [--sample-every S] [--report-every S] [--max-slope MB]
#          [--out DIR] [--keep]
# Exit codes: 0 passed, 1 a check failed (an unexpected answer, a lost acknowledged upload,
# audit verify, the server gone or RSS not flat), 2 bad usage.
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=$SRC/build
DURATION=1800
CONNECTIONS=64
UPLOAD_RATE=100
PACKAGE_BYTES=8192
SAMPLE_EVERY=10
REPORT_EVERY=60
MAX_SLOPE=2
OUT=""
KEEP=0
PY=/usr/bin/python3

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --build) BUILD=$(cd "$2" && pwd); shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --connections) CONNECTIONS=$2; shift 2 ;;
    --upload-rate) UPLOAD_RATE=$2; shift 2 ;;
    --package-bytes) PACKAGE_BYTES=$2; shift 2 ;;
    --sample-every) SAMPLE_EVERY=$2; shift 2 ;;
    --report-every) REPORT_EVERY=$2; shift 2 ;;
    --max-slope) MAX_SLOPE=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) usage ;;
    *) echo "soak.sh: unknown argument $1" >&2; usage ;;
  esac
done
for bin in server/ma-server server/ma-admin server/ma-bench; do
  [ -x "$BUILD/$bin" ] || { echo "soak.sh: $BUILD/$bin not built (--build DIR)" >&2; exit 2; }
done
for prog in swtpm swtpm_setup swtpm_localca; do
  command -v $prog >/dev/null || { echo "soak.sh: $prog not installed (apt install swtpm swtpm-tools)" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/ma-soak.XXXXXX)
OUT=${OUT:-$WORK}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
SCRIPT=soak.sh
. "$SRC/server/bench/bench_setup.sh"
SAMPLER_PID=""
BENCH_PID=""
soak_cleanup() {
  # Only the processes this script started, by their ids.
  for pid in $BENCH_PID $SAMPLER_PID; do
    if kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; fi
  done
  bench_cleanup
  # With --out the results are there; the work directory (server log) goes too.
  if [ "$KEEP" = 0 ] && [ "$OUT" != "$WORK" ]; then rm -rf "$WORK"; fi
}
trap soak_cleanup EXIT

# --- 1. swtpm, a fresh MA, ma-server
bench_start_swtpm
bench_init_ma "$CONNECTIONS"
cp "$CONFIG" "$OUT/config.toml"
MAX_BODY=$($PY -c "import sys, tomllib; print(tomllib.load(open(sys.argv[1], 'rb'))['limits']['max_body_bytes'])" "$CONFIG")
bench_start_server

# --- 2. ma-bench --mix in the background
ACKED=$OUT/acked-uploads.txt
: > "$ACKED"
BENCH_CMD=("$BUILD/server/ma-bench" --url "$URL" --ca "$WORK/ma/ca/ca-cert.pem" --mix
           --connections "$CONNECTIONS" --duration "$DURATION" --tcti "$TCTI"
           --ek-intermediate "$INTERMEDIATE" --json --acked-uploads "$ACKED"
           --report-every "$REPORT_EVERY" --upload-rate "$UPLOAD_RATE"
           --package-bytes "$PACKAGE_BYTES" --max-body-bytes "$MAX_BODY")
say "ma-bench --mix: $CONNECTIONS connections, ${DURATION} s"
"${BENCH_CMD[@]}" > "$OUT/bench.jsonl" 2> "$OUT/bench.log" &
BENCH_PID=$!

# --- 3. RSS samples from the moment the load starts (after ma-bench's TPM set-up)
until grep -qs 'mix load starts' "$OUT/bench.log"; do
  kill -0 $BENCH_PID 2>/dev/null || { cat "$OUT/bench.log" >&2; say "ma-bench ended in its set-up"; exit 1; }
  sleep 0.1
done
LOAD_START=${EPOCHREALTIME/./}
sample() {  # one CSV row: seconds since the load started, VmRSS, VmHWM (kB), threads, vault kB
  local now=${EPOCHREALTIME/./} st
  st=$(awk '/^VmRSS/ {r = $2} /^VmHWM/ {h = $2} /^Threads/ {t = $2} END {print r "," h "," t}' \
    /proc/$SERVER_PID/status) || return 0
  local vault
  vault=$(du -k -c "$WORK/ma"/vault.db* 2>/dev/null | tail -1 | cut -f1)
  echo "$(( (now - LOAD_START) / 1000000 )),$st,$vault" >> "$OUT/rss.csv"
}
echo "t_s,vmrss_kb,vmhwm_kb,threads,vault_kb" > "$OUT/rss.csv"
# A sampling period, not a wait for a condition.
( while kill -0 $SERVER_PID 2>/dev/null; do sample; sleep "$SAMPLE_EVERY"; done ) &
SAMPLER_PID=$!

BENCH_RC=0
wait $BENCH_PID || BENCH_RC=$?
BENCH_PID=""
kill -TERM $SAMPLER_PID 2>/dev/null || true; wait $SAMPLER_PID 2>/dev/null || true; SAMPLER_PID=""
SERVER_ALIVE=0
if kill -0 "$SERVER_PID" 2>/dev/null; then SERVER_ALIVE=1; sample; fi
say "ma-bench exited $BENCH_RC; server alive: $SERVER_ALIVE"

# --- 4. stop the server, then check the vault
STOP_START=${EPOCHREALTIME/./}
[ "$SERVER_ALIVE" = 1 ] && bench_stop_server
STOP_MS=$(( (${EPOCHREALTIME/./} - STOP_START) / 1000 ))
# The server's own view: one log line per request (op, outcome). The log itself stays in
# $WORK (hundreds of MB after a long run; removed with it unless --keep).
sed -n 's/.* request op=\([^ ]*\) .*outcome=\([^ ]*\) .*/\1 \2/p' "$WORK/server.log" |
  sort | uniq -c | sort -rn > "$OUT/server-outcomes.txt"
grep -v ' request op=' "$WORK/server.log" | grep -v ' info ' > "$OUT/server-warnings.log" || true
$PY - "$WORK/ma/vault.db" "$ACKED" > "$OUT/acked-check.json" <<'EOF'
import json, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
stored = {r[0] for r in db.execute("SELECT package_id FROM packages")}
acked = [l.strip() for l in open(sys.argv[2]) if l.strip()]
missing = [a for a in acked if a not in stored]
print(json.dumps({"acked": len(acked), "distinct": len(set(acked)), "stored": len(stored),
                  "missing": len(missing), "first_missing": missing[:5]}))
EOF
# The same through the operator's tool, for the first, a middle and the last id.
SHOWN=0
SHOW_FAILED=0
N_ACKED=$(wc -l < "$ACKED")
if [ "$N_ACKED" -gt 0 ]; then
  for line in 1 $(( (N_ACKED + 1) / 2 )) "$N_ACKED"; do
    id=$(sed -n "${line}p" "$ACKED")
    if "$BUILD/server/ma-admin" packages show "$id" --dir "$WORK/ma" > /dev/null 2>> "$OUT/packages-show.log"; then
      SHOWN=$((SHOWN + 1))
    else
      SHOW_FAILED=$((SHOW_FAILED + 1))
    fi
  done
fi
AUDIT_START=${EPOCHREALTIME/./}
AUDIT_RC=0
"$BUILD/server/ma-admin" audit verify --dir "$WORK/ma" > "$OUT/audit-verify.txt" 2>&1 || AUDIT_RC=$?
AUDIT_MS=$(( (${EPOCHREALTIME/./} - AUDIT_START) / 1000 ))
say "audit verify exited $AUDIT_RC in ${AUDIT_MS} ms"

# --- 5. summary (and the verdict)
{
  echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "command: soak.sh --duration $DURATION --connections $CONNECTIONS --upload-rate $UPLOAD_RATE --package-bytes $PACKAGE_BYTES (nice $(nice))"
  echo
  $PY - "$OUT" "$DURATION" "$MAX_SLOPE" "$BENCH_RC" "$SERVER_ALIVE" "${SERVER_RC:-}" "$STOP_MS" \
    "$AUDIT_RC" "$AUDIT_MS" "$SHOWN" "$SHOW_FAILED" <<'EOF'
import csv, json, sys
(out, duration, max_slope, bench_rc, alive, server_rc, stop_ms, audit_rc, audit_ms, shown,
 show_failed) = sys.argv[1:]
duration, max_slope = float(duration), float(max_slope)
rows = [json.loads(l) for l in open(out + "/bench.jsonl") if l.strip()]
final = next((r for r in rows if r["phase"] == "soak"), None)
rss = [(int(r["t_s"]), int(r["vmrss_kb"]), int(r["vmhwm_kb"]), int(r["threads"]), int(r["vault_kb"]))
       for r in csv.DictReader(open(out + "/rss.csv"))]
acked = json.load(open(out + "/acked-check.json"))
fail = []
if final is None:
    fail.append("ma-bench printed no summary (exit %s)" % bench_rc)
    final = {"ok": {}, "hostile": {}, "errors": 0, "seconds": 0, "reconnects": 0}
secs = final["seconds"] or 1
def row(name, c, extra=""):
    print(f"| {name} | {extra}{c['ok']:,} | {c['errors']:,} | {c['ok'] / secs:,.0f} | "
          f"{c['p50_ms']:.2f} | {c['p99_ms']:.2f} | {c['max_ms']:.1f} |")
    if c.get("first_error"):
        print(f"| first unexpected: {c['first_error'][:160]} | | | | | | |")
print("| op | answered as expected | unexpected | per s | p50 ms | p99 ms | max ms |")
print("|---|---:|---:|---:|---:|---:|---:|")
for op, c in final["ok"].items():
    row(op, c)
skipped = final["ok"].get("upload", {}).get("skipped", 0)
print("\n| hostile kind | expected answer | answered so | otherwise | per s | p50 ms | p99 ms | max ms |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for kind, c in final["hostile"].items():
    row(kind, c, c.get("expect", "") + " | ")
requests = open(out + "/server-outcomes.txt").read().split("\n")
total = sum(int(l.split()[0]) for l in requests if l.strip())
print(f"\n{final['seconds']:.0f} s of load; **{final['errors']:,} unexpected answers or failures**; "
      f"{final.get('connect_errors', 0)} connect failures; {final['reconnects']:,} reconnections "
      f"(each oversize refusal closes its connection); {final.get('signed_packages', 0):,} "
      f"packages signed during the run; {skipped:,} upload turns passed on (no signed package "
      f"ready: the signer runs at --upload-rate). The server logged {total:,} requests:")
print("\n| server log: op | outcome | requests |\n|---|---|---:|")
for l in requests:
    if l.strip():
        n, op, outcome = l.split()
        print(f"| {op} | {outcome} | {int(n):,} |")
prog = [(r["seconds"], sum(r["ok"].values())) for r in rows if r["phase"] == "progress"]
prog = [(0.0, 0)] + prog + [(final["seconds"], sum(c["ok"] for c in final["ok"].values()))]
rates = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in zip(prog, prog[1:]) if b[0] - a[0] > 1]
if rates:
    srt = sorted(rates)
    print(f"\nAnswers per second, per progress interval ({len(rates)}): first {rates[0]:,.0f}, "
          f"min {srt[0]:,.0f}, median {srt[len(srt) // 2]:,.0f}, max {srt[-1]:,.0f}, last {rates[-1]:,.0f}.")
if int(bench_rc) != 0:
    fail.append("ma-bench exited %s (an unexpected answer, or an op never answered)" % bench_rc)

def at(t):  # the first sample at or after t seconds
    return next((r for r in rss if r[0] >= t), None)
print("\n| RSS of ma-server | t (s) | VmRSS MB | VmHWM MB | threads | vault MB |")
print("|---|---:|---:|---:|---:|---:|")
points = [("load start", 0), ("1 min", 60), ("5 min", 300), ("10 min", 600), ("15 min", 900),
          ("20 min", 1200), ("25 min", 1500)]
for label, t in [p for p in points if p[1] < duration] + [("end", 10**9)]:
    r = at(t) if t < 10**9 else (rss[-1] if rss else None)
    if r:
        print(f"| {label} | {r[0]} | {r[1] / 1024:.1f} | {r[2] / 1024:.1f} | {r[3]} | {r[4] / 1024:.0f} |")
# Least-squares slope of VmRSS over the last 20 minutes (the second half of a shorter run).
end_t = rss[-1][0] if rss else 0
window = 1200 if end_t >= 1200 else end_t / 2
pts = [(r[0], r[1] / 1024) for r in rss if r[0] >= end_t - window]
slope = None
if len(pts) >= 3:
    mx = sum(p[0] for p in pts) / len(pts); my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    slope = sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx * 600 if sxx else 0
if slope is None:
    print("\nRSS slope: too few samples")
else:
    lo, hi = min(p[1] for p in pts), max(p[1] for p in pts)
    judged = duration >= 1200
    print(f"\nRSS slope over the last {window / 60:.1f} min ({len(pts)} samples): "
          f"**{slope:+.2f} MB per 10 min** (VmRSS {lo:.1f}-{hi:.1f} MB in that window); "
          + (f"flat if at most {max_slope:g}: {'yes' if slope <= max_slope else 'NO'}" if judged
             else "not judged (a run shorter than 20 min)"))
    if judged and slope > max_slope:
        fail.append(f"RSS grows {slope:+.2f} MB per 10 min")
lost = acked["missing"]
print(f"\nAcknowledged uploads: {acked['acked']:,} ({acked['distinct']:,} distinct), "
      f"{acked['acked'] - lost:,} found in the vault ({acked['stored']:,} packages stored in all), "
      f"**{lost} lost**; `ma-admin packages show` of the first, a middle and the last: "
      f"{shown} shown, {show_failed} failed.")
if lost or int(show_failed):
    fail.append(f"{lost} acknowledged upload(s) missing: {acked['first_missing']}")
print(f"\n`ma-admin audit verify`: exit {audit_rc} ({int(audit_ms) / 1000:.1f} s). "
      f"Server: {'running' if alive == '1' else 'GONE'} at the end, stopped by SIGTERM in "
      f"{int(stop_ms) / 1000:.1f} s, exit {server_rc or '-'}.")
if audit_rc != "0":
    fail.append("audit verify exited " + audit_rc)
if alive != "1" or server_rc not in ("", "0"):
    fail.append("the server was not running at the end, or did not exit 0")
print("\n**" + ("PASS" if not fail else "FAIL: " + "; ".join(fail)) + "**")
open(out + "/verdict", "w").write("0" if not fail else "1")
EOF
} | tee "$OUT/summary.md"
say "results in $OUT"
exit "$(cat "$OUT/verdict")"
