# SPDX-License-Identifier: GPL-2.0-or-later
# Sourced bash library: a throw-away sshd on a free loopback port, everything in one workdir,
# and an ssh login through a PKCS#11 module (e.g. tpm2-pkcs11) with its PIN given by askpass,
# for the drill and tests.
#
#   . deploy/lib/sshd.sh
#   sshd_start "$work/sshd"                                # exports SSHD_DIR, SSHD_PORT
#   grep " ssh-rsa\$" keys.pub > "$SSHD_DIR/authorized_keys"
#   TPM2_PKCS11_STORE=... sshd_login "$module" "$pin_file" out.txt err.txt "echo hi"
#   sshd_stop                                              # in the caller's EXIT trap
#
# Contract:
# - sshd_start DIR: DIR (created) holds all of it: sshd_config, hostkey (ed25519, made once),
#   authorized_keys (emptied; the caller writes the keys to accept), sshd.pid, sshd.log,
#   known_hosts and askpass.sh. Only /run/sshd, sshd's privilege-separation directory, is
#   outside (created 0755 if absent). Public-key login only (no PAM, passwords or
#   keyboard-interactive), StrictModes off, root login by key allowed, 127.0.0.1 only.
#   It waits on a condition, bounded (SSHD_WAIT_SECONDS, default 30, per attempt): the log
#   says "Server listening on 127.0.0.1 port P"; it gives up on an attempt at once if sshd
#   exited and tries another free port (5 attempts; another process may take one first).
#   On success: exports SSHD_DIR (absolute) and SSHD_PORT, keeps the pid in SSHD_PID;
#   return 0. Otherwise the log tail on stderr, return 1. One sshd per shell.
# - sshd_login MODULE PIN_FILE OUT ERR COMMAND: ssh -I MODULE as the current user to that
#   sshd, running COMMAND there; the PIN is PIN_FILE's content, given by SSH_ASKPASS
#   ($SSHD_DIR/askpass.sh, SSH_ASKPASS_REQUIRE=force), no agent (SSH_AUTH_SOCK unset), no
#   user ssh config (-F /dev/null), host key accepted into $SSHD_DIR/known_hosts. Bounded:
#   timeout 60 s, ConnectTimeout 20 s. stdin /dev/null, COMMAND's output in OUT, ssh's
#   messages in ERR; returns ssh's status. The module's own settings (TPM2_PKCS11_STORE,
#   TPM2_PKCS11_TCTI, ...) come from the environment: prefix them to the call.
# - sshd_stop: stops the sshd sshd_start started, by pid (SIGTERM, SIGKILL past 5 s, reaped),
#   nothing else. Idempotent. No trap is set: the caller's cleanup calls it.
# - Safe under set -euo pipefail and without it. Call sshd_start directly, not in $(...).
#   Names used: sshd_* functions, SSHD_* variables, and wait_* (it sources
#   deploy/lib/wait.sh).
# Needs: openssh-server (/usr/sbin/sshd), openssh-client, python3, coreutils (timeout).

. "$(dirname "${BASH_SOURCE[0]}")/wait.sh"

# State (global even when sourced inside a function).
declare -g SSHD_PID="" SSHD_DIR="" SSHD_PORT=""

_sshd_free_port() {  # a free loopback TCP port
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
_sshd_up_or_dead() {  # PORT PID
  grep -q "Server listening on 127.0.0.1 port $1" "$SSHD_DIR/sshd.log" 2>/dev/null ||
    wait_dead "$2"
}

sshd_start() {
  local s pid port _
  if [ -n "$SSHD_PID" ]; then echo "sshd: already running (port $SSHD_PORT)" >&2; return 1; fi
  mkdir -p "$1" || return 1
  s=$(cd "$1" && pwd)
  [ -d /run/sshd ] || { mkdir -p /run/sshd && chmod 755 /run/sshd; } || return 1
  [ -f "$s/hostkey" ] || ssh-keygen -q -t ed25519 -N '' -C throwaway-sshd -f "$s/hostkey" ||
    return 1
  : > "$s/authorized_keys"
  SSHD_DIR=$s
  for _ in 1 2 3 4 5; do
    port=$(_sshd_free_port) || return 1
    cat > "$s/sshd_config" <<CONF
Port $port
ListenAddress 127.0.0.1
HostKey $s/hostkey
PidFile $s/sshd.pid
AuthorizedKeysFile $s/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
LogLevel VERBOSE
CONF
    : > "$s/sshd.log"
    /usr/sbin/sshd -D -e -f "$s/sshd_config" > "$s/sshd.log" 2>&1 &
    pid=$!
    if wait_until "${SSHD_WAIT_SECONDS:-30}" _sshd_up_or_dead "$port" "$pid" &&
       wait_alive "$pid"; then
      SSHD_PID=$pid
      export SSHD_DIR SSHD_PORT=$port
      return 0
    fi
    wait_kill "$pid"
  done
  echo "sshd: did not listen on loopback in 5 attempts ($s/sshd.log):" >&2
  wait_tail "$s/sshd.log"
  return 1
}

sshd_login() {
  local module=$1 pin_file=$2 out=$3 err=$4 cmd=$5
  if [ -z "$SSHD_PID" ]; then echo "sshd: call sshd_start first" >&2; return 1; fi
  printf '#!/bin/sh\ncat "%s"\n' "$pin_file" > "$SSHD_DIR/askpass.sh"
  chmod 700 "$SSHD_DIR/askpass.sh"
  env -u SSH_AUTH_SOCK SSH_ASKPASS="$SSHD_DIR/askpass.sh" SSH_ASKPASS_REQUIRE=force DISPLAY=:0 \
    timeout 60 ssh -F /dev/null -o StrictHostKeyChecking=no \
    -o UserKnownHostsFile="$SSHD_DIR/known_hosts" -o PasswordAuthentication=no \
    -o KbdInteractiveAuthentication=no -o ConnectTimeout=20 -o LogLevel=ERROR \
    -I "$module" -p "$SSHD_PORT" "$(id -un)@127.0.0.1" "$cmd" < /dev/null > "$out" 2> "$err"
}

sshd_stop() {
  [ -n "$SSHD_PID" ] || return 0
  wait_kill "$SSHD_PID"
  SSHD_PID=""
}
