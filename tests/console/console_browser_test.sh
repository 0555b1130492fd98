#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The helpdesk console end to end (issue #15), in headless Chromium (console_browser.py):
#   1. board A (hostname laptop-4711) backs up; its disk goes to board B, which authenticates;
#   2. helen (helpdesk), in a browser with her certificate in NSS, finds laptop-4711, opens the
#      old board (its open session shown), reviews both side by side and grants the approval
#      with a reason; approvals are two-person, so it is pending and her own Confirm is refused;
#   3. hugo (helpdesk) confirms it in the queue; B's `lms restore` succeeds and A's key signs on
#      B with its old public key; hugo grants a second approval and revokes it with a reason;
#   4. audrey (auditor) sees the approval (used), the chain verified and today's audit, is
#      offered no approve form or button, and her approve form posted anyway is refused by role;
#   5. a browser without a certificate gets a refusal and no data; a form on another origin
#      posting to the console in helen's browser is refused, and no approval was made by it;
#   6. carol (admin) revokes the old board after a confirmation page; a mistyped hostname is
#      refused; the vault then says revoked and its page shows no open session;
#   7. audrey's compliance view lists B as never backed up and A as revoked; its CSV quotes and
#      defuses a formula in an owner label. curl checks the headers of every reply.
# Usage: console_browser_test.sh [--build DIR] [--workdir DIR] [--shots DIR] [--keep]
# Exit 0 when every check passed, 1 on a failed check, 77 when Chromium, chromedriver,
# Selenium or NSS tools are missing (ctest: skipped). Loopback only.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$root/build
work=""
shots=""
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --workdir) work=$2; shift 2 ;;
    --shots) shots=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    *) echo "console_browser_test.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
PY=/usr/bin/python3
for p in chromium chromedriver certutil pk12util swtpm unshare; do
  command -v "$p" >/dev/null || { echo "console_browser_test.sh: $p is not installed" >&2; exit 77; }
done
$PY -c 'import selenium' 2>/dev/null || { echo "console_browser_test.sh: no python3-selenium" >&2; exit 77; }
MA_ADMIN=$build/server/ma-admin
MA_SERVER=$build/server/ma-server
LMS=$build/client/lms/lms
[ -n "$work" ] || work=$(mktemp -d /tmp/tpm-ma-console.XXXXXX)
mkdir -p "$work"
. "$root/deploy/lib/swtpm.sh"
. "$root/deploy/lib/steps.sh"

pids=()
cleanup() {
  for p in "${pids[@]}"; do wait_kill "$p"; done
  swtpm_stop
  [ "$keep" = 1 ] || rm -rf "$work"
}
trap cleanup EXIT
d=$work/data
mkdir -p "$d"

step "Two TPMs (boards A and B), one MA (two-person approvals), operators helen and hugo (helpdesk), audrey (auditor), carol (admin)"
swtpm_localca_init "$work" tpm-ma-console-test
for b in A B; do
  swtpm_provision "$b" "$work/tpm-$b" || fail "swtpm_setup of $b"
  swtpm_start "$b" "$work/tpm-$b" "$work/swtpm-$b.log" || fail "swtpm $b did not start"
done
"$MA_ADMIN" init --dir "$work/ma" --listen 127.0.0.1:0 --ek-root "$SWTPM_EK_ROOT" >/dev/null
sed -i 's/^two_person = false$/two_person = true/' "$work/ma/config.toml"
grep -q '^two_person = true$' "$work/ma/config.toml" || fail "config.toml has no two_person line"
: > "$work/ma.log"
"$MA_SERVER" --config "$work/ma/config.toml" 2>> "$work/ma.log" &
ma=$!
pids+=("$ma")
port_of() { sed -n 's/.*listening on https:\/\/127\.0\.0\.1:\([0-9][0-9]*\) .*/\1/p;T;q' "$work/ma.log"; }
up_or_dead() { [ -n "$(port_of)" ] || wait_dead "$ma"; }
wait_until 60 up_or_dead || fail "ma-server did not report its port"
port=$(port_of)
[ -n "$port" ] || fail "ma-server exited: $(tail -n 5 "$work/ma.log")"
MA=https://127.0.0.1:$port
MA_CA=$work/ma/ca/ca-cert.pem
for op in helen:helpdesk hugo:helpdesk audrey:auditor carol:admin; do
  "$MA_ADMIN" operator issue --name "${op%%:*}" --role "${op#*:}" --out "$work/operators" \
    --dir "$work/ma" >/dev/null
done
audrey_fp=$(openssl x509 -in "$work/operators/audrey.pem" -outform DER | sha256sum | cut -d' ' -f1)
ok "MA at $MA"

# Both boards are laptop-4711: B got A's disk. Their own UTS namespace names them so.
lms_on() {  # BOARD STORE ARGS...
  local tcti=SWTPM_TCTI_$1 store=$2
  shift 2
  unshare --uts sh -c 'hostname laptop-4711 && exec "$@"' lms "$LMS" --store "$store" \
    --tcti "${!tcti}" --ma "$MA" --ma-ca "$MA_CA" --ek-intermediate "$SWTPM_EK_INTERMEDIATE" "$@"
}
step "Board A: lms init, a key, a backup; then its disk goes to board B, which authenticates"
lms_on A "$work/store-A" --json init > "$d/init.json" || fail "lms init on A: $(cat "$d/init.json")"
json 'd["recovery_code"]' < "$d/init.json" > "$d/recovery-code.txt"
chmod 600 "$d/recovery-code.txt"
lms_on A "$work/store-A" keygen --type ecc-sign --label vpn >/dev/null
lms_on A "$work/store-A" pubkey vpn --out "$d/vpn-A.pem" >/dev/null
lms_on A "$work/store-A" --json --owner-label "Alice Example" backup > "$d/backup.json" ||
  fail "backup on A: $(cat "$d/backup.json")"
OLD=$(json 'd["platform_id"]' < "$d/backup.json")
swtpm_stop_one A
cp -a "$work/store-A" "$work/store-B"
NEW=$(lms_on B "$work/store-B" --json --owner-label "Alice Example" authenticate |
  json 'd["platform_id"]')
[ -n "$NEW" ] && [ "$NEW" != "$OLD" ] || fail "B did not authenticate as a new platform"
ok "old platform ${OLD:0:16}..., new platform ${NEW:0:16}..., both laptop-4711"
# Each board's SRK as the TPM names it: A's from lms init, B's read from B's TPM by tpm2-tools.
# The review must show these, certified by each board's AK when it authenticated.
SRK_A=$(json 'd["srk_name"]' < "$d/init.json")
tpm2_readpublic -T "$SWTPM_TCTI_B" -c "$(json 'd["srk_handle"]' < "$d/init.json")" \
  -n "$d/srk-B.name" >/dev/null || fail "tpm2_readpublic of B's SRK"
SRK_B=$(od -An -tx1 -v "$d/srk-B.name" | tr -d ' \n')
"$MA_ADMIN" --json platforms show "$NEW" --dir "$work/ma" > "$d/show-B.json"
[ "$(json 'd["platform"]["srk"]["name"]' < "$d/show-B.json")" = "$SRK_B" ] ||
  fail "ma-admin platforms show: B's certified SRK is not B's SRK: $(cat "$d/show-B.json")"
ok "ma-admin shows B's SRK ${SRK_B:0:12}... as certified by B's AK"

browse() {  # SCENARIO ARGS...: one console_browser.py run; its JSON in $d/SCENARIO.json
  local s=$1
  shift
  $PY "$root/tests/console/console_browser.py" --base "$MA" --ca "$MA_CA" --work "$work/browser" \
    ${shots:+--shots "$shots"} "$s" "$@" > "$d/$s.json" 2> "$d/$s.err" ||
    fail "$s: $(cat "$d/$s.err" | tail -n 5)"
}
step "helen in the browser: find laptop-4711, open the old board, review, grant"
browse helpdesk --cert "$work/operators/helen.pem" --operator "helen · helpdesk" \
  --hostname laptop-4711 --old "$OLD" --new "$NEW" --reason "ticket 4711: motherboard replaced" \
  --srk-old "$SRK_A" --srk-new "$SRK_B"
APPROVAL=$(json 'd["approval_id"]' < "$d/helpdesk.json")
ok "approval $APPROVAL granted in the browser ($(json 'd["found"]' < "$d/helpdesk.json") platforms found)"
ok "her own confirmation: $(json 'd["own_confirm"]' < "$d/helpdesk.json")"
approval_is() {  # ID FIELDS EXPECTED: the vault's approval ID, FIELDS joined by /
  "$MA_ADMIN" --json approvals list --dir "$work/ma" > "$d/approvals.json"
  local got
  got=$(json '["/".join(str(a[f]) for f in "'"$2"'".split(",")) for a in d["approvals"] if a["id"] == '"$1"'][0]' < "$d/approvals.json")
  [ "$got" = "$3" ] || fail "the vault's approval $1 has $2 = $got, not $3"
}
approval_is "$APPROVAL" created_by,reason,status "helen/ticket 4711: motherboard replaced/pending"

step "hugo (helpdesk) confirms helen's approval in the queue"
browse confirm --cert "$work/operators/hugo.pem" --approval "$APPROVAL"
approval_is "$APPROVAL" confirmed_by,status "hugo/active"
ok "$(json 'd["confirmed"]' < "$d/confirm.json") The vault: confirmed by hugo, active"

step "Board B restores; A's key signs on B"
lms_on B "$work/store-B" --json restore --from "$OLD" --recovery-code-file "$d/recovery-code.txt" \
  > "$d/restore.json" || fail "restore on B: $(cat "$d/restore.json")"
key_signs_as vpn "$d/vpn-A.pem" "$d" lms_on B "$work/store-B"
ok "restored under approval $APPROVAL; vpn signs on B with A's public key"

step "hugo grants a second approval by mistake and revokes it in the queue"
browse grant-revoke --cert "$work/operators/hugo.pem" --old "$OLD" --new "$NEW" \
  --reason "granted by mistake"
SECOND=$(json 'd["approval_id"]' < "$d/grant-revoke.json")
approval_is "$SECOND" created_by,status "hugo/revoked"
ok "$(json 'd["revoked"]' < "$d/grant-revoke.json") The vault agrees"

step "audrey (auditor): the approval and the verified chain; no approve; a posted form refused"
browse auditor --cert "$work/operators/audrey.pem" --fingerprint "$audrey_fp" --old "$OLD" \
  --new "$NEW" --approval "$APPROVAL" --approver operator:helen --today "$(date -u +%F)"
[ "$(json 'd["approval_status"]' < "$d/auditor.json")" = used ] ||
  fail "the auditor sees approval $APPROVAL as $(json 'd["approval_status"]' < "$d/auditor.json"), not used"
ok "$(json 'd["chain"]' < "$d/auditor.json"); today: $(json 'd["today_rows"]' < "$d/auditor.json") approval record(s)"
ok "a period that ends before it starts: $(json 'd["bad_period"]' < "$d/auditor.json")"
ok "posted anyway: $(json 'd["auditor_post"]' < "$d/auditor.json")"

step "No certificate: nothing; a form from another site: refused"
browse nocert --hostname laptop-4711
ok "without a certificate: $(json 'd["nocert"]' < "$d/nocert.json")"
before=$("$MA_ADMIN" --json approvals list --dir "$work/ma" | json 'len(d["approvals"])')
browse cross-site --cert "$work/operators/helen.pem" --old "$OLD" --new "$NEW"
after=$("$MA_ADMIN" --json approvals list --dir "$work/ma" | json 'len(d["approvals"])')
[ "$before" = "$after" ] || fail "the cross-site form made an approval ($before -> $after)"
ok "cross-site: $(json 'd["cross_site"]' < "$d/cross-site.json"); still $after approval(s)"

step "carol (admin) revokes the old board: a confirmation, a mistyped hostname refused, revoked"
browse admin --cert "$work/operators/carol.pem" --old "$OLD" --hostname laptop-4711 \
  --reason "ticket 4712: the old board was stolen from the repair shop"
state=$("$MA_ADMIN" --json platforms show "$OLD" --dir "$work/ma" | json 'd["platform"]["state"]')
[ "$state" = revoked ] || fail "the vault says the old platform is $state, not revoked"
ok "mistyped: $(json 'd["mistyped"]' < "$d/admin.json"); then revoked (the vault agrees)"

step "Compliance as audrey: B never backed up, A revoked; the CSV defuses a formula owner label"
# What a platform reports about itself goes into the CSV: a spreadsheet must not run it.
lms_on B "$work/store-B" --json --owner-label "=HYPERLINK(\"http://x\")" authenticate >/dev/null ||
  fail "B did not authenticate again"
browse compliance --cert "$work/operators/audrey.pem" --old "$OLD" --new "$NEW"
ok "$(json 'd["summary"]' < "$d/compliance.json")"
curl -sS -D "$d/csv-headers.txt" -o "$d/compliance.csv" --cacert "$MA_CA" \
  --cert "$work/operators/audrey.pem" "$MA/console/compliance.csv?days=30"
grep -qi '^content-type: text/csv' "$d/csv-headers.txt" &&
  grep -qi '^content-disposition: attachment; filename="tpm-ma-compliance-30d.csv"' "$d/csv-headers.txt" ||
  fail "the CSV is not served as a text/csv attachment: $(cat "$d/csv-headers.txt")"
grep -q "^never-backed-up,\"$NEW\",\"laptop-4711\",\"'=HYPERLINK(\"\"http://x\"\")\"," "$d/compliance.csv" ||
  fail "the CSV's line for B is not as expected: $(cat "$d/compliance.csv")"
grep -q "^revoked,\"$OLD\"," "$d/compliance.csv" || fail "the CSV does not list A as revoked"
[ "$(grep -c . "$d/compliance.csv")" = 3 ] || fail "the CSV has other lines: $(cat "$d/compliance.csv")"
ok "CSV: a header and 2 findings; B's owner label quoted and prefixed (no formula)"

step "What every console reply says to the browser (curl)"
curl -sS -D "$d/headers.txt" -o "$d/find.html" --cacert "$MA_CA" --cert "$work/operators/helen.pem" \
  "$MA/console/?q=laptop-4711"
for h in "content-security-policy: default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'" \
  "x-frame-options: DENY" "x-content-type-options: nosniff" "referrer-policy: same-origin" \
  "cache-control: no-store"; do
  grep -qiF "$h" "$d/headers.txt" || fail "no '$h' in the console's reply: $(cat "$d/headers.txt")"
done
grep -qiE '^set-cookie: __Host-tpmma-csrf=[0-9a-f]{64}; Path=/; Secure; HttpOnly; SameSite=Strict' \
  "$d/headers.txt" || fail "the form cookie is not __Host-, Secure, HttpOnly, SameSite=Strict"
! grep -qi '<script' "$d/find.html" || fail "a console page holds a script"
code=$(curl -sS -o "$d/anon.html" -w '%{http_code}' --cacert "$MA_CA" "$MA/console/?q=laptop-4711")
[ "$code" = 403 ] && ! grep -q laptop-4711 "$d/anon.html" ||
  fail "without a certificate: $code and $(grep -c laptop-4711 "$d/anon.html") mention(s) of the laptop"
ok "CSP without script or framing, DENY, nosniff, no-store; the cookie __Host- and Strict; 403 and nothing without a certificate"

# A browser's mistakes are answered in words, not hidden like the MA's own faults.
code=$(curl -sS -o "$d/method.html" -w '%{http_code}' --cacert "$MA_CA" \
  --cert "$work/operators/helen.pem" -X POST -d x=1 "$MA/console/platform")
[ "$code" = 405 ] && grep -q "this page does not take that method" "$d/method.html" ||
  fail "POST to a page that takes GET: $code, $(grep -o 'class="error">[^<]*' "$d/method.html")"
code=$(curl -sS -o "$d/enctype.html" -w '%{http_code}' --cacert "$MA_CA" \
  --cert "$work/operators/helen.pem" -H 'Content-Type: text/plain' -d x=1 "$MA/console/approve")
[ "$code" = 415 ] && grep -q "a form is sent as application/x-www-form-urlencoded" "$d/enctype.html" ||
  fail "a form as text/plain: $code, $(grep -o 'class="error">[^<]*' "$d/enctype.html")"
ok "405 and 415 say what the browser did wrong"

"$MA_ADMIN" --json audit verify --dir "$work/ma" > "$d/verify.json" ||
  fail "audit verify: $(cat "$d/verify.json")"
ok "ma-admin audit verify: $(json 'd["verified_rows"]' < "$d/verify.json") rows"
printf '\nconsole_browser_test: every check passed\n'
