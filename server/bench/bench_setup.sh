# SPDX-License-Identifier: GPL-2.0-or-later
# Sourced by run_bench.sh and soak.sh: the loopback set-up they share (docs/benchmarks.md).
#   bench_start_swtpm          a private swtpm with an EK certificate chain (swtpm_setup +
#                              swtpm_localca, as tests/support/swtpm.cc) on a free port pair;
#                              sets SWTPM_PID, TCTI, ROOT_CA, INTERMEDIATE
#   bench_init_ma CONNECTIONS  `ma-admin init` of a fresh MA trusting that swtpm's CA as EK
#                              root, bench.echo on, a long session TTL, workers = connections;
#                              sets CONFIG
#   bench_start_server         ma-server on port 0, its "listening on" line read back;
#                              sets SERVER_PID, PORT, URL
#   bench_stop_server          SIGTERM and wait; sets SERVER_RC
#   bench_cleanup              (the EXIT trap) stops what these started, by process id
# The caller sets SCRIPT (its name, for messages), BUILD, WORK, PY and KEEP.

. "$SRC/deploy/lib/swtpm.sh"
SWTPM_PID=""
SERVER_PID=""
SERVER_RC=""
say() { echo "$SCRIPT: $*" >&2; }

bench_cleanup() {
  # Only the processes this script started, by their ids.
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [ -n "$SWTPM_PID" ] && kill -0 "$SWTPM_PID" 2>/dev/null; then
    kill -TERM "$SWTPM_PID"; wait "$SWTPM_PID" 2>/dev/null || true
  fi
  if [ "$KEEP" = 0 ]; then rm -rf "$WORK/state" "$WORK/ma"; fi
}

# Two consecutive free loopback ports (server, control), chosen by the kernel.
bench_free_port_pair() {
  $PY - <<'PYEOF'
import socket
for _ in range(100):
    a = socket.socket(); a.bind(("127.0.0.1", 0)); p = a.getsockname()[1]
    b = socket.socket()
    try:
        b.bind(("127.0.0.1", p + 1)); print(p); break
    except OSError:
        pass
    finally:
        a.close(); b.close()
PYEOF
}
bench_port_open() { $PY -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1',$1)))"; }

bench_start_swtpm() {
  mkdir -p "$WORK/state"
  swtpm_localca_init "$WORK" tpm-ma-bench
  say "provisioning swtpm in $WORK/state"
  swtpm_provision bench "$WORK/state" || return 1
  ROOT_CA=$SWTPM_EK_ROOT
  INTERMEDIATE=$SWTPM_EK_INTERMEDIATE
  local attempt tpm_port
  for attempt in 1 2 3 4 5; do
    tpm_port=$(bench_free_port_pair)
    swtpm socket --tpm2 --tpmstate dir="$WORK/state" \
      --server type=tcp,port=$tpm_port,bindaddr=127.0.0.1 \
      --ctrl type=tcp,port=$((tpm_port + 1)),bindaddr=127.0.0.1 \
      --flags not-need-init,startup-clear --log file="$WORK/swtpm.log",level=1 &
    SWTPM_PID=$!
    for _ in $(seq 100); do
      if bench_port_open $tpm_port && bench_port_open $((tpm_port + 1)); then break 2; fi
      kill -0 $SWTPM_PID 2>/dev/null || break
      sleep 0.05
    done
    kill -TERM $SWTPM_PID 2>/dev/null || true; wait $SWTPM_PID 2>/dev/null || true; SWTPM_PID=""
  done
  [ -n "$SWTPM_PID" ] || { say "swtpm did not start"; tail "$WORK/swtpm.log" >&2; return 1; }
  TCTI="swtpm:host=127.0.0.1,port=$tpm_port"
  say "swtpm pid $SWTPM_PID, TCTI $TCTI"
}

bench_init_ma() {
  "$BUILD/server/ma-admin" init --dir "$WORK/ma" --listen 127.0.0.1:0 --ek-root "$ROOT_CA" >/dev/null
  CONFIG=$WORK/ma/config.toml
  # The echo baseline; a session that outlives package signing (upload setup); as many
  # workers as connections, so that group commit can batch every waiting durable call (a
  # worker waits for its commit's fsync). Everything else is what `ma-admin init` wrote.
  $PY - "$CONFIG" "$1" <<'PYEOF'
import re, sys
p, conns = sys.argv[1], int(sys.argv[2])
s = open(p).read()
s = re.sub(r"(?m)^echo = false$", "echo = true", s)
s = re.sub(r"(?m)^session_ttl_s = \d+$", "session_ttl_s = 86400", s)
s = re.sub(r"(?m)^worker_threads = \d+$", "worker_threads = %d" % max(8, min(conns, 256)), s)
open(p, "w").write(s)
PYEOF
  grep -q '^echo = true' "$CONFIG" || { say "could not enable bench.echo in $CONFIG"; return 1; }
}

bench_start_server() {
  # The log exists before the server starts: the background child opens its redirection
  # possibly after the first poll. The port counts only with the space after it.
  : > "$WORK/server.log"
  "$BUILD/server/ma-server" --config "$CONFIG" 2>> "$WORK/server.log" &
  SERVER_PID=$!
  PORT=""
  for _ in $(seq 200); do
    PORT=$(sed -n 's/.*listening on https:\/\/127\.0\.0\.1:\([0-9][0-9]*\) .*/\1/p;T;q' "$WORK/server.log") || true
    [ -n "$PORT" ] && break
    kill -0 $SERVER_PID 2>/dev/null || { cat "$WORK/server.log" >&2; return 1; }
    sleep 0.05
  done
  [ -n "$PORT" ] || { say "ma-server did not say where it listens"; return 1; }
  URL=https://127.0.0.1:$PORT/
  say "ma-server pid $SERVER_PID at $URL"
}

bench_stop_server() {
  kill -TERM "$SERVER_PID"
  SERVER_RC=0
  wait "$SERVER_PID" 2>/dev/null || SERVER_RC=$?
  SERVER_PID=""
}
