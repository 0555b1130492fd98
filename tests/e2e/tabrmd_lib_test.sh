#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Self-test of deploy/lib/tabrmd.sh on one swtpm (empty state, free loopback ports; started
# and stopped by deploy/lib/swtpm.sh):
#   - bare swtpm TCTI: tpm2_load without flushing runs out of object slots (0x902);
#   - through the library's tpm2-abrmd: tpm2_getcap answers, the same five loads succeed
#     with no flushing, and five concurrent tpm2_sign clients each sign with its own key;
#   - tabrmd_stop ends only what the library started; the bare TCTI works again.
# Usage: tests/e2e/tabrmd_lib_test.sh [WORKDIR]. Exit 0 pass, 1 fail, 77 skip (tools absent).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/deploy/lib/tabrmd.sh"
. "$root/deploy/lib/swtpm.sh"
for p in swtpm tpm2_createprimary tpm2_load tpm2_sign python3; do
  command -v "$p" >/dev/null || { echo "SKIP: $p is not installed"; exit 77; }
done
tabrmd_available || { echo "SKIP: see above"; exit 77; }

work=${1:-}
own_work=0
if [ -z "$work" ]; then work=$(mktemp -d /tmp/tabrmd-lib-test.XXXXXX); own_work=1; fi
mkdir -p "$work"
holders=()
cleanup() {
  local p
  for p in ${holders[@]+"${holders[@]}"}; do kill "$p" 2>/dev/null || true; done
  tabrmd_stop
  swtpm_stop
  if [ "$own_work" = 1 ] && [ -z "${TPMMA_KEEP_TEST_DIRS:-}" ]; then rm -rf "$work"; fi
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }

# ---- one swtpm (deploy/lib/swtpm.sh: free loopback ports, retried on a lost port race)
SWTPM_WAIT_SECONDS=30 swtpm_start T "$work/state" "$work/swtpm.log" ||
  fail "swtpm did not start ($work/swtpm.log)"
swtpm_pid=${SWTPM_PID_OF[T]}
bare=$SWTPM_TCTI_T
ok "swtpm at $bare"

# ---- keys: a persistent ECC primary and five ECC signing children (bare TCTI, flushed)
export TPM2TOOLS_TCTI=$bare
k=$work/keys
mkdir -p "$k"
tpm2_createprimary -Q -C o -G ecc256 -c "$k/primary.ctx"
tpm2_evictcontrol -Q -C o -c "$k/primary.ctx" 0x81000002 >/dev/null
tpm2_flushcontext -t
for i in 1 2 3 4 5; do
  tpm2_create -Q -C 0x81000002 -G ecc256 -u "$k/k$i.pub" -r "$k/k$i.priv"
  tpm2_flushcontext -t
done
ok "five ECC keys under persistent primary 0x81000002"

# ---- bare swtpm: loads left loaded (as tpm2-tools leave them) run out of slots
refused=""
for i in 1 2 3 4 5; do
  if ! out=$(tpm2_load -C 0x81000002 -u "$k/k$i.pub" -r "$k/k$i.priv" -c "$k/bare$i.ctx" 2>&1); then
    refused=$out; break
  fi
done
[ -n "$refused" ] || fail "bare swtpm loaded five objects (expected TPM_RC_OBJECT_MEMORY)"
grep -q '0x902' <<<"$refused" || fail "bare swtpm refused with something else: $refused"
ok "bare swtpm refuses load $i of 5 with TPM_RC_OBJECT_MEMORY (0x902)"
tpm2_flushcontext -t
unset TPM2TOOLS_TCTI

# ---- the library
tabrmd_start_bus "$work" || fail "tabrmd_start_bus"
case "$DBUS_SESSION_BUS_ADDRESS" in "unix:path=$work/tabrmd-bus"*) ;;
  *) fail "DBUS_SESSION_BUS_ADDRESS=$DBUS_SESSION_BUS_ADDRESS is not the private bus" ;; esac
tabrmd_start A "$bare" || fail "tabrmd_start A"
rm=$TABRMD_TCTI_A
case "$rm" in "tabrmd:bus_name=com.intel.tss2.Tabrmd.p$$_A,bus_type=session") ;;
  *) fail "unexpected TCTI $rm" ;; esac
tpm2_getcap -T "$rm" properties-fixed | grep -q TPM2_PT_MANUFACTURER || fail "tpm2_getcap via $rm"
ok "tpm2_getcap through $rm"

# Five keys loaded through the RM with no flushing in between, where the bare TCTI ran out.
# (A tpm2-tools process's objects go with its connection; holding five in ONE connection
# is what tests/support/tabrmd_test does through ESAPI.)
for i in 1 2 3 4 5; do
  tpm2_load -T "$rm" -C 0x81000002 -u "$k/k$i.pub" -r "$k/k$i.priv" -c "$k/rm$i.ctx" >/dev/null ||
    fail "tpm2_load $i via RM"
done
ok "five tpm2_load through the RM, no flush needed"
# ... and five clients at once, each with its key loaded on its own connection: the RM
# multiplexes swtpm's single connection and swaps the objects through its three slots.
echo "five at once" > "$work/msg"
for i in 1 2 3 4 5; do
  tpm2_sign -T "$rm" -c "$k/rm$i.ctx" -g sha256 -o "$work/sig$i.bin" "$work/msg" \
    2> "$work/sign$i.log" &
  holders+=($!)
done
for i in "${!holders[@]}"; do
  wait "${holders[$i]}" || fail "tpm2_sign $((i + 1)) failed: $(cat "$work/sign$((i + 1)).log")"
done
holders=()
for i in 1 2 3 4 5; do
  tpm2_verifysignature -T "$rm" -c "$k/rm$i.ctx" -g sha256 -m "$work/msg" -s "$work/sig$i.bin" ||
    fail "signature $i does not verify"
done
ok "five concurrent tpm2_sign clients through the RM; all five signatures verify"

# ---- stop: only what the library started; swtpm is free for the bare TCTI again
abrmd_pid=${TABRMD_PID_OF[A]}
bus_pid=$TABRMD_BUS_PID
tabrmd_stop
! kill -0 "$abrmd_pid" 2>/dev/null || fail "tpm2-abrmd still running"
! kill -0 "$bus_pid" 2>/dev/null || fail "dbus-daemon still running"
kill -0 "$swtpm_pid" || fail "tabrmd_stop ended swtpm too"
[ -z "${TABRMD_TCTI_A:-}" ] || fail "TABRMD_TCTI_A still set"
tpm2_getcap -T "$bare" properties-fixed >/dev/null || fail "bare TCTI after tabrmd_stop"
ok "tabrmd_stop ended tpm2-abrmd and the bus only"
echo "PASS"
