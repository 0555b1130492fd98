# SPDX-License-Identifier: GPL-2.0-or-later
# Sourced bash library: a private D-Bus session bus and one tpm2-abrmd (resource manager)
# per swtpm, for the drill and tests. swtpm alone holds three transient objects and serves
# one connection at a time; OpenSSL's tpm2 provider and tpm2-pkcs11 need more, as
# /dev/tpmrm0 gives them on a real machine.
#
#   . deploy/lib/tabrmd.sh
#   tabrmd_start_bus "$work"                        # exports DBUS_SESSION_BUS_ADDRESS
#   tabrmd_start A "swtpm:host=127.0.0.1,port=$p"   # exports TABRMD_TCTI_A
#   TPM2TOOLS_TCTI=$TABRMD_TCTI_A tpm2_getcap properties-fixed
#   tabrmd_stop                                     # in the caller's EXIT trap
#
# Contract:
# - Never the system bus or a user's session bus: the bus listens on $WORKDIR/tabrmd-bus and
#   DBUS_SESSION_BUS_ADDRESS is exported (replacing any inherited value), because the
#   tabrmd TCTI in tpm2-tools, OpenSSL and tpm2-pkcs11 finds the bus only through it.
# - Bus names carry this shell's pid ($$), so two drills on one machine never collide.
# - Every start waits on a condition, bounded (TABRMD_WAIT_SECONDS, default 10): the bus
#   printed its address / tpm2_getcap answers through the new daemon; it fails at once,
#   with the log tail on stderr, if the process died. Return 0 on success, 1 on failure.
# - While a tpm2-abrmd runs, it holds its swtpm's only connection: reach that TPM through
#   $TABRMD_TCTI_<NAME> only.
# - tabrmd_stop kills only the processes these functions started (by pid), daemons first,
#   then the bus. It sets no trap: the caller's cleanup calls it.
# - Safe under set -euo pipefail. Call the functions directly, not in $(...): they keep pids
#   in shell variables. Names used: tabrmd_* functions, TABRMD_* variables (and wait_*:
#   it sources deploy/lib/wait.sh, whose wait_until/wait_kill it waits and stops with).
# Needs: dbus-daemon (package dbus), tpm2-abrmd, libtss2-tcti-tabrmd0, tpm2-tools.

. "$(dirname "${BASH_SOURCE[0]}")/wait.sh"

# State (global even when sourced inside a function).
declare -g TABRMD_BUS_PID="" TABRMD_WORKDIR="" TABRMD_DBUS_ADDRESS=""
declare -gA TABRMD_PID_OF=()  # NAME -> pid of the tpm2-abrmd started as NAME

_tabrmd_prog() {  # the program's path; tpm2-abrmd lives in /usr/sbin, not always on PATH
  command -v "$1" 2>/dev/null || { [ -x "/usr/sbin/$1" ] && echo "/usr/sbin/$1"; } || return 1
}

# tabrmd_available: 0 if dbus-daemon, tpm2-abrmd and tpm2_getcap are installed; else 1 and
# says which is missing on stderr (the only reason a test may skip).
tabrmd_available() {
  local p
  for p in dbus-daemon tpm2-abrmd tpm2_getcap; do
    if ! _tabrmd_prog "$p" >/dev/null; then
      echo "tabrmd: $p is not installed (apt install dbus tpm2-abrmd libtss2-tcti-tabrmd0 tpm2-tools)" >&2
      return 1
    fi
  done
}

_tabrmd_bus_up_or_dead() {
  [ -n "$(sed -n 1p "$TABRMD_WORKDIR/tabrmd-bus.address" 2>/dev/null)" ] ||
    ! wait_alive "$TABRMD_BUS_PID"
}

# tabrmd_start_bus WORKDIR: starts a private dbus-daemon --session (socket, address file and
# log in WORKDIR) and exports DBUS_SESSION_BUS_ADDRESS and TABRMD_DBUS_ADDRESS. Once per shell.
tabrmd_start_bus() {
  local dir=$1 prog
  if [ -n "$TABRMD_BUS_PID" ]; then echo "tabrmd: the bus is already running" >&2; return 1; fi
  prog=$(_tabrmd_prog dbus-daemon) || { tabrmd_available; return 1; }
  mkdir -p "$dir"
  TABRMD_WORKDIR=$(cd "$dir" && pwd)
  : > "$TABRMD_WORKDIR/tabrmd-bus.address"
  : > "$TABRMD_WORKDIR/tabrmd-bus.log"
  # --nofork keeps it our child (its pid is $!); --print-address writes the address once the
  # bus listens, the condition waited for.
  "$prog" --session --nofork --nopidfile --address="unix:path=$TABRMD_WORKDIR/tabrmd-bus" \
    --print-address=1 > "$TABRMD_WORKDIR/tabrmd-bus.address" 2> "$TABRMD_WORKDIR/tabrmd-bus.log" &
  TABRMD_BUS_PID=$!
  if ! wait_until "${TABRMD_WAIT_SECONDS:-10}" _tabrmd_bus_up_or_dead ||
     ! wait_alive "$TABRMD_BUS_PID"; then
    echo "tabrmd: dbus-daemon did not start ($TABRMD_WORKDIR/tabrmd-bus.log):" >&2
    wait_tail "$TABRMD_WORKDIR/tabrmd-bus.log"
    kill "$TABRMD_BUS_PID" 2>/dev/null || true
    wait "$TABRMD_BUS_PID" 2>/dev/null || true
    TABRMD_BUS_PID=""
    return 1
  fi
  TABRMD_DBUS_ADDRESS=$(sed -n 1p "$TABRMD_WORKDIR/tabrmd-bus.address")
  export TABRMD_DBUS_ADDRESS DBUS_SESSION_BUS_ADDRESS=$TABRMD_DBUS_ADDRESS
}

_tabrmd_rm_up_or_dead() {  # TCTI PID
  DBUS_SESSION_BUS_ADDRESS=$TABRMD_DBUS_ADDRESS tpm2_getcap -T "$1" properties-fixed \
    >/dev/null 2>&1 || ! wait_alive "$2"
}

# tabrmd_start NAME SWTPM_TCTI: starts one tpm2-abrmd in front of the swtpm at SWTPM_TCTI
# ("swtpm:host=127.0.0.1,port=P") on the private bus, waits until tpm2_getcap answers
# through it, and exports TABRMD_TCTI_<NAME> ("tabrmd:bus_name=...,bus_type=session").
# NAME: letters, digits and _ (it becomes part of a variable and a D-Bus name). Log:
# WORKDIR/tabrmd-NAME.log.
tabrmd_start() {
  local name=$1 tpm_tcti=$2 prog bus log pid tcti
  case "$name" in ''|*[!A-Za-z0-9_]*) echo "tabrmd: bad name '$name'" >&2; return 1 ;; esac
  if [ -z "$TABRMD_BUS_PID" ]; then echo "tabrmd: call tabrmd_start_bus first" >&2; return 1; fi
  prog=$(_tabrmd_prog tpm2-abrmd) || { tabrmd_available; return 1; }
  bus="com.intel.tss2.Tabrmd.p$$_$name"
  tcti="tabrmd:bus_name=$bus,bus_type=session"
  log=$TABRMD_WORKDIR/tabrmd-$name.log
  : > "$log"
  # --allow-root: the drill and tests may run as root, which tpm2-abrmd refuses by default.
  DBUS_SESSION_BUS_ADDRESS=$TABRMD_DBUS_ADDRESS "$prog" --session --allow-root \
    --tcti="$tpm_tcti" --dbus-name="$bus" > "$log" 2>&1 &
  pid=$!
  TABRMD_PID_OF[$name]=$pid
  if ! wait_until "${TABRMD_WAIT_SECONDS:-10}" _tabrmd_rm_up_or_dead "$tcti" "$pid" ||
     ! wait_alive "$pid"; then
    echo "tabrmd: tpm2-abrmd $name ($tpm_tcti) did not answer ($log):" >&2
    wait_tail "$log"
    tabrmd_stop_one "$name"
    return 1
  fi
  eval "export TABRMD_TCTI_$name=\$tcti"
}

# tabrmd_stop_one NAME: stops the tpm2-abrmd started as NAME (its swtpm is free again for the
# bare swtpm TCTI) and unsets TABRMD_TCTI_<NAME>.
tabrmd_stop_one() {
  wait_kill_of TABRMD_PID_OF "$1"
  unset "TABRMD_TCTI_$1"
}

# tabrmd_stop: stops every tpm2-abrmd started here, then the bus. Idempotent.
tabrmd_stop() {
  local name
  for name in "${!TABRMD_PID_OF[@]}"; do tabrmd_stop_one "$name"; done
  if [ -n "$TABRMD_BUS_PID" ]; then wait_kill "$TABRMD_BUS_PID"; TABRMD_BUS_PID=""; fi
  return 0
}
