# SPDX-License-Identifier: GPL-2.0-or-later
# Sourced bash library: bounded waits on conditions and stopping one's own children, shared
# by deploy/lib/{tabrmd,swtpm,sshd}.sh, the drill and the tests that start daemons.
#
#   . deploy/lib/wait.sh
#   wait_until 30 grep -q "listening" "$log" || echo "not within 30 s"
#   wait_until 30 wait_dead "$pid"
#   wait_kill "$pid"                                  # in the caller's cleanup
#
# Contract:
# - wait_until SECONDS CMD...: runs CMD until it succeeds (return 0), for at most SECONDS
#   (then return 1), polling every 0.05 s. The wait is on a condition, never a fixed sleep: a
#   loaded machine only makes it take longer. A condition on a process should also end when
#   that process died (cond || wait_dead PID), so a failed start is reported at once.
# - wait_alive PID / wait_dead PID: whether PID runs. Bash reaps its exited background
#   children, so kill -0 fails once one has died.
# - wait_kill PID: SIGTERM, SIGKILL if it lingers past 5 s, then reaped. For the caller's own
#   background children only (by pid; never by name).
# - wait_kill_of MAP NAME: wait_kill the pid kept in the associative array MAP under NAME (none:
#   nothing) and remove that entry; how the libraries stop the daemon they started as NAME.
# - wait_tail FILE: its last 20 lines, indented, on stderr (for a failure message); 0 always.
# - Safe under set -euo pipefail and without it. Names used: wait_* functions only.
# Needs: bash 4.2+, coreutils.

wait_until() {
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.05
  done
}
wait_alive() { kill -0 "$1" 2>/dev/null; }
wait_dead() { ! wait_alive "$1"; }
wait_kill() {
  kill "$1" 2>/dev/null || true
  wait_until 5 wait_dead "$1" || kill -9 "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
wait_kill_of() {
  local -n _wait_map=$1
  [ -z "${_wait_map[$2]:-}" ] || wait_kill "${_wait_map[$2]}"
  unset "_wait_map[$2]"
}
wait_tail() { [ -f "$1" ] && tail -n 20 "$1" | sed 's/^/    /' >&2; return 0; }
