# SPDX-License-Identifier: GPL-2.0-or-later
# Sourced bash library: software TPMs (swtpm socket) on free loopback ports, for the drill
# and tests, each reached through the bare swtpm TCTI (or a tpm2-abrmd, deploy/lib/tabrmd.sh).
#
#   . deploy/lib/swtpm.sh
#   swtpm_start A "$work/tpm-A" "$work/swtpm-A.log"   # exports SWTPM_TCTI_A
#   TPM2TOOLS_TCTI=$SWTPM_TCTI_A tpm2_getcap properties-fixed
#   swtpm_stop                                        # in the caller's EXIT trap
#
# Contract:
# - swtpm_free_port prints a loopback port P with P+1 free too (swtpm's server and control
#   ports). Another process may take it before swtpm binds it: swtpm_start then sees that
#   swtpm exited and tries again with a new pair (5 attempts).
# - swtpm_start NAME STATEDIR LOG: one swtpm socket --tpm2 on 127.0.0.1 only, with its state
#   in STATEDIR (created if absent; swtpm_setup, EK certificates etc. are the caller's), flags
#   not-need-init,startup-clear, its log in LOG. It waits on a condition, bounded
#   (SWTPM_WAIT_SECONDS, default 60, per attempt): tpm2_getcap answers on the bare TCTI; it
#   gives up on an attempt at once if swtpm exited, and never leaves a slow attempt running
#   (two swtpm on one state directory fight for it). On success it exports
#   SWTPM_TCTI_<NAME> ("swtpm:host=127.0.0.1,port=P") and keeps the pid in SWTPM_PID_OF[NAME];
#   return 0. After 5 failed attempts: the log tail on stderr, return 1.
#   NAME: letters, digits and _ (it becomes part of a variable name).
# - swtpm_localca_init DIR MANUFACTURER: a private EK CA (swtpm_localca) in DIR/localca and
#   DIR/swtpm_setup.conf using it; sets SWTPM_EK_ROOT (its root certificate, what the MA trusts)
#   and SWTPM_EK_INTERMEDIATE (the issuing CA, what lms sends along).
# - swtpm_provision NAME STATEDIR: swtpm_setup of a TPM 2.0 in STATEDIR with an EK and a
#   platform certificate from that CA (log in STATEDIR.setup.log); return 1 with its tail.
# - swtpm serves one connection at a time: while a tpm2-abrmd holds it, use that instead.
# - swtpm_stop_one NAME / swtpm_stop: stop the swtpm started as NAME / every swtpm started
#   here, by pid (SIGTERM, SIGKILL past 5 s, reaped), and unset SWTPM_TCTI_<NAME>. They kill
#   only what swtpm_start started. Idempotent. No trap is set: the caller's cleanup calls it.
# - Safe under set -euo pipefail and without it. Call swtpm_start directly, not in $(...): it
#   keeps pids in shell variables. Names used: swtpm_* functions, SWTPM_* variables, and
#   wait_* (it sources deploy/lib/wait.sh).
# Needs: swtpm, tpm2-tools (tpm2_getcap), python3.

. "$(dirname "${BASH_SOURCE[0]}")/wait.sh"

# State (global even when sourced inside a function).
declare -gA SWTPM_PID_OF=()  # NAME -> pid of the swtpm started as NAME

swtpm_free_port() {
  python3 - <<'PY'
import socket
while True:
    a = socket.socket(); a.bind(("127.0.0.1", 0)); p = a.getsockname()[1]
    b = socket.socket()
    try:
        b.bind(("127.0.0.1", p + 1))
    except OSError:
        a.close(); continue
    a.close(); b.close(); print(p); break
PY
}

_swtpm_up_or_dead() {  # TCTI PID: up as soon as it answers, given up on once it exited
  tpm2_getcap -T "$1" properties-fixed >/dev/null 2>&1 || wait_dead "$2"
}

swtpm_start() {
  local name=$1 state=$2 log=$3 port pid tcti _
  case "$name" in ''|*[!A-Za-z0-9_]*) echo "swtpm: bad name '$name'" >&2; return 1 ;; esac
  if [ -n "${SWTPM_PID_OF[$name]:-}" ]; then echo "swtpm: $name is already running" >&2; return 1; fi
  mkdir -p "$state"
  for _ in 1 2 3 4 5; do
    port=$(swtpm_free_port) || return 1
    swtpm socket --tpm2 --tpmstate dir="$state" \
      --server type=tcp,port="$port",bindaddr=127.0.0.1 \
      --ctrl type=tcp,port=$((port + 1)),bindaddr=127.0.0.1 \
      --flags not-need-init,startup-clear --log file="$log" &
    pid=$!
    tcti="swtpm:host=127.0.0.1,port=$port"
    if wait_until "${SWTPM_WAIT_SECONDS:-60}" _swtpm_up_or_dead "$tcti" "$pid" &&
       wait_alive "$pid"; then
      SWTPM_PID_OF[$name]=$pid
      eval "export SWTPM_TCTI_$name=\$tcti"
      return 0
    fi
    wait_kill "$pid"
  done
  echo "swtpm: $name did not answer on loopback in 5 attempts ($log):" >&2
  wait_tail "$log"
  return 1
}

swtpm_localca_init() {
  local dir=$1 ca=$1/localca
  mkdir -p "$ca"
  cat > "$dir/swtpm-localca.conf" <<EOF
statedir = $ca
signingkey = $ca/signkey.pem
issuercert = $ca/issuercert.pem
certserial = $ca/certserial
EOF
  printf -- '--platform-manufacturer %s\n--platform-version 1\n--platform-model swtpm\n' "$2" \
    > "$dir/swtpm-localca.options"
  cat > "$dir/swtpm_setup.conf" <<EOF
create_certs_tool = /usr/bin/swtpm_localca
create_certs_tool_config = $dir/swtpm-localca.conf
create_certs_tool_options = $dir/swtpm-localca.options
active_pcr_banks = sha256
EOF
  SWTPM_SETUP_CONF=$dir/swtpm_setup.conf
  SWTPM_EK_ROOT=$ca/swtpm-localca-rootca-cert.pem
  SWTPM_EK_INTERMEDIATE=$ca/issuercert.pem
}

swtpm_provision() {
  local state=$2
  mkdir -p "$state"
  swtpm_setup --tpm2 --tpmstate "$state" --config "$SWTPM_SETUP_CONF" --create-ek-cert \
    --create-platform-cert --overwrite --logfile "$state.setup.log" >/dev/null ||
    { echo "swtpm.sh: swtpm_setup of $1 failed:" >&2; wait_tail "$state.setup.log"; return 1; }
}

swtpm_stop_one() {
  wait_kill_of SWTPM_PID_OF "$1"
  unset "SWTPM_TCTI_$1"
}

swtpm_stop() {
  local name
  for name in "${!SWTPM_PID_OF[@]}"; do swtpm_stop_one "$name"; done
  return 0
}
