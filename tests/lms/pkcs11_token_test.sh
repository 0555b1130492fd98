#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# client/lms/pkcs11/tpmma-pkcs11-token on swtpm + tpm2-abrmd: a tpm2-pkcs11 token whose primary is
# a duplicable MRK (encryptedDuplication, persistent at 0x81000100), made WITHOUT a tpm2_create
# shim; keys made by tpm2_create with the attributes lms uses for application keys, linked; then
# pkcs11-tool signatures (ECDSA, RSA PKCS#1, RSA-PSS) verified by openssl, ssh-keygen -D, and a real
# ssh -I login to a throw-away sshd per key. Refusals: empty primary handle, label taken, wrong
# PIN. Prints the store's size. Usage: pkcs11_token_test.sh [SOURCE_DIR]   (root; ~30 s)
set -u
SRC=${1:-$(cd "$(dirname "$0")/../.." && pwd)}
TOOL=$SRC/client/lms/pkcs11/tpmma-pkcs11-token
M=/usr/lib/x86_64-linux-gnu/libtpm2_pkcs11.so.1
PY=/usr/bin/python3
# deploy/lib: swtpm on free loopback ports, the private bus + tpm2-abrmd, the throw-away sshd
. "$SRC/deploy/lib/swtpm.sh"
. "$SRC/deploy/lib/tabrmd.sh"
. "$SRC/deploy/lib/sshd.sh"
for c in swtpm tpm2-abrmd dbus-daemon tpm2_create pkcs11-tool /usr/sbin/sshd ssh "$M"; do
  command -v "$c" >/dev/null || [ -e "$c" ] || { echo "SKIP: $c missing (deploy/install-deps.sh)"; exit 0; }
done
WD=$(mktemp -d /tmp/pkcs11-token-test.XXXXXX)
cleanup() {
  sshd_stop
  tabrmd_stop
  swtpm_stop
  [ "${KEEP:-0}" = 1 ] || rm -rf "$WD"
}
trap cleanup EXIT
cd "$WD" || exit 1
PASS=0 FAIL=0
ok()   { echo "PASS: $*"; PASS=$((PASS + 1)); }
bad()  { echo "FAIL: $*"; FAIL=$((FAIL + 1)); }
die()  { echo "FAIL: $*"; [ -n "${LOGS:-}" ] && tail -n 20 $LOGS; exit 1; }
chk()  { local d=$1; shift; if "$@"; then ok "$d"; else bad "$d"; fi; }
q() { "$@" >/dev/null; }

# ---- swtpm on free loopback ports (retried if another process takes the port first)
SWTPM_WAIT_SECONDS=30 swtpm_start T "$WD/tpm" "$WD/swtpm.log" || die "swtpm did not start"
P=${SWTPM_TCTI_T##*port=}

# ---- a private D-Bus session bus and one tpm2-abrmd on it (swtpm alone holds 3 objects)
tabrmd_start_bus "$WD" || die "dbus-daemon"
TABRMD_WAIT_SECONDS=30 tabrmd_start T "$SWTPM_TCTI_T" || die "tpm2-abrmd did not answer"
export TPM2TOOLS_TCTI=$TABRMD_TCTI_T
LOGS=$WD/tabrmd-T.log
export TPM2_PKCS11_TCTI=$TPM2TOOLS_TCTI TPM2_PKCS11_STORE=$WD/store
ok "swtpm on 127.0.0.1:$P behind tpm2-abrmd on a private session bus"

# ---- SRK 0x81000001; MRK (PolicyDuplicationSelect to a dummy MA key, encryptedDuplication)
q tpm2_createprimary -C o -g sha256 -G rsa2048:aes128cfb -c srk.ctx \
  -a "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|restricted|decrypt"
q tpm2_evictcontrol -C o -c srk.ctx 0x81000001
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out ma.pem 2>/dev/null
openssl pkey -in ma.pem -pubout -out ma_pub.pem
q tpm2_loadexternal -C n -G rsa -u ma_pub.pem -c ma.ctx -n ma.name
q tpm2_startauthsession -S trial.ctx
q tpm2_policyduplicationselect -S trial.ctx -N ma.name -L mrk.policy
tpm2_flushcontext trial.ctx
q tpm2_create -C 0x81000001 -G rsa2048:aes128cfb -g sha256 -L mrk.policy -u mrk.pub -r mrk.priv \
  -a "restricted|decrypt|userwithauth|sensitivedataorigin|noda|encryptedduplication"
q tpm2_load -C 0x81000001 -u mrk.pub -r mrk.priv -c mrk.ctx

# ---- refusal before the MRK is persistent: the primary handle is empty
chk "tpm2_create on PATH is /usr/bin/tpm2_create (no shim)" test "$(command -v tpm2_create)" = /usr/bin/tpm2_create
PINS='{"sopin": "so-secret-1", "userpin": "user-secret-1"}'
"$TOOL" init --path "$WD/store" --primary-handle 0x81000100 --label apps <<<"$PINS" > out.json 2> err.txt
rc=$?
chk "init with 0x81000100 empty: exit 3, says the handle holds no persistent object" \
  bash -c "[ $rc = 3 ] && grep -q '0x81000100 holds no persistent object' err.txt"
cat err.txt
chk "... and wrote no store" test ! -e "$WD/store/tpm2_pkcs11.sqlite3"

q tpm2_evictcontrol -C o -c mrk.ctx 0x81000100
# ---- application keys: children of the MRK with the attributes lms uses (null scheme)
CH="fixedparent|sensitivedataorigin|userwithauth|encryptedduplication"
q tpm2_create -C 0x81000100 -G ecc256 -a "$CH|sign" -u ecc.pub -r ecc.priv || die "ECC child"
q tpm2_create -C 0x81000100 -G rsa2048 -a "$CH|sign|decrypt" -u rsa.pub -r rsa.priv || die "RSA child"
q tpm2_create -C 0x81000100 -G ecc256 -a "$CH|sign" -u ecc2.pub -r ecc2.priv || die "ECC child 2"
for k in ecc rsa ecc2; do
  tpm2_encodeobject -C 0x81000100 -u $k.pub -r $k.priv -p -o $k.pem || die "encodeobject $k"
  tpm2_print -t TPM2B_PUBLIC -f pem $k.pub > ${k}_pub.pem || die "public PEM $k"
done

# ---- provision the token (no shim), then link
# strace (when installed) records every program the tool runs: no PIN, and every authValue as
# file:, on any argv
if command -v strace >/dev/null; then
  traced() { local out=$1; shift; strace -f -qq -e trace=execve -s 4096 -o "$out" "$@"; }
  noauth_on_argv() {  # TRACE
    ! grep -q 'secret-1' "$1" && ! grep -qE '"-[pP]", "[^f"]' "$1" && grep -q '"-p", "file:' "$1"
  }
else
  traced() { shift; "$@"; }
  noauth_on_argv() { echo "  (strace not installed: argv not checked)"; }
fi
traced init.trace \
  "$TOOL" init --path "$WD/store" --primary-handle 0x81000100 --label apps <<<"$PINS" > out.json 2> err.txt
rc=$?; cat out.json err.txt
chk "init on the MRK at 0x81000100: exit 0" test $rc = 0
chk "... no PIN or authValue on any argv (tpm2_create/load/unseal get file:)" noauth_on_argv init.trace
$PY -c '
import sqlite3, sys
r = sqlite3.connect(sys.argv[1]).execute("select userpub, sopub from sealobjects").fetchone()
open("userseal.pub", "wb").write(r[0]); open("soseal.pub", "wb").write(r[1])' store/tpm2_pkcs11.sqlite3
for s in userseal soseal; do
  chk "... $s object in the store: fixedparent|userwithauth|encryptedduplication (fixedTPM clear)" \
    bash -c "tpm2_print -t TPM2B_PUBLIC $s.pub | grep -qx '  value: fixedparent|userwithauth|encryptedduplication'"
done
SIZE_INIT=$(stat -c %s store/tpm2_pkcs11.sqlite3)
"$TOOL" init --path "$WD/store" --primary-handle 0x81000100 --label apps <<<"$PINS" > /dev/null 2> err.txt
rc=$?; cat err.txt
chk "init with the label taken: exit 4" bash -c "[ $rc = 4 ] && grep -q 'token labelled \"apps\" exists' err.txt"
"$TOOL" init --path "$WD/store" --label x <<<'{"sopin": "a"}' > /dev/null 2> err.txt
rc=$?; cat err.txt
chk "init without userpin on stdin: exit 2" test $rc = 2

USERPIN='{"userpin": "user-secret-1"}'
chk "link ECC PEM (id 01)" q traced link.trace \
  "$TOOL" link --path "$WD/store" --label apps --key-label ecc-app --id 01 ecc.pem <<<"$USERPIN"
chk "... no PIN or authValue on any argv" noauth_on_argv link.trace
chk "link RSA sign|decrypt PEM (id 02)" q "$TOOL" link --path "$WD/store" --label apps --key-label rsa-app --id 02 rsa.pem <<<"$USERPIN"
"$TOOL" link --path "$WD/store" --label apps --key-label ecc2-app --id 03 ecc2.pem <<<'{"userpin": "wrong-pin"}' >/dev/null 2> err.txt
rc=$?; cat err.txt
chk "link with a wrong user PIN: exit 5, 'wrong user PIN'" bash -c "[ $rc = 5 ] && grep -q 'wrong user PIN' err.txt"
chk "link ECC pub+priv blobs (id 03)" q "$TOOL" link --path "$WD/store" --label apps --key-label ecc2-app --id 03 ecc2.pub ecc2.priv <<<"$USERPIN"
"$TOOL" link --path "$WD/store" --label apps --key-label again --id 01 ecc.pem <<<"$USERPIN" >/dev/null 2> err.txt
rc=$?; cat err.txt
chk "link with an id in use: exit 4" test $rc = 4
"$TOOL" list --path "$WD/store" > list.json
chk "list: token apps on 0x81000100 with 6 objects" $PY -c '
import json, sys
t = json.load(open(sys.argv[1]))["tokens"]
assert len(t) == 1 and t[0]["label"] == "apps" and t[0]["primary_handle"] == "0x81000100", t
assert sorted((o["id"], o["class"]) for o in t[0]["objects"]) == sorted(
    (i, c) for i in ("01", "02", "03") for c in ("private", "public")), t' list.json
SIZE_LINKED=$(stat -c %s store/tpm2_pkcs11.sqlite3)
GZ=$(gzip -9 -c store/tpm2_pkcs11.sqlite3 | wc -c)
echo "store size: $SIZE_INIT bytes after init, $SIZE_LINKED bytes with 3 keys linked ($GZ bytes gzip -9)"
chk "no PIN in any store file name or list output" bash -c "! grep -rq 'user-secret-1\|so-secret-1' list.json out.json"

# ---- PKCS#11 consumers
echo "signed through tpm2-pkcs11 $(date +%s%N)" > msg.txt
P11="pkcs11-tool --module $M --token-label apps --login --pin user-secret-1"
chk "pkcs11-tool ECDSA-SHA256 (id 01) verifies with openssl" bash -c \
  "$P11 --sign --id 01 -m ECDSA-SHA256 --signature-format openssl -i msg.txt -o ecc.sig 2>/dev/null &&
   openssl dgst -sha256 -verify ecc_pub.pem -signature ecc.sig msg.txt"
chk "pkcs11-tool SHA256-RSA-PKCS (id 02) verifies with openssl" bash -c \
  "$P11 --sign --id 02 -m SHA256-RSA-PKCS -i msg.txt -o rsa.sig 2>/dev/null &&
   openssl dgst -sha256 -verify rsa_pub.pem -signature rsa.sig msg.txt"
chk "pkcs11-tool SHA256-RSA-PKCS-PSS (id 02) verifies with openssl" bash -c \
  "$P11 --sign --id 02 -m SHA256-RSA-PKCS-PSS -i msg.txt -o pss.sig 2>/dev/null &&
   openssl dgst -sha256 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:-2 -verify rsa_pub.pem -signature pss.sig msg.txt"
chk "pkcs11-tool ECDSA-SHA256 (id 03, linked from blobs) verifies" bash -c \
  "$P11 --sign --id 03 -m ECDSA-SHA256 --signature-format openssl -i msg.txt -o ecc2.sig 2>/dev/null &&
   openssl dgst -sha256 -verify ecc2_pub.pem -signature ecc2.sig msg.txt"
chk "pkcs11-tool --login with a wrong PIN fails" bash -c \
  "! pkcs11-tool --module $M --token-label apps --login --pin wrong-pin --sign --id 01 -m ECDSA-SHA256 -i msg.txt -o /dev/null >/dev/null 2>&1"

ssh-keygen -D "$M" > keys.all 2>/dev/null
cat keys.all | awk '{print $1, substr($2, 1, 24) "...", $3}'
chk "ssh-keygen -D lists ecc-app and rsa-app" bash -c "grep -q '^ecdsa-sha2-nistp256 .* ecc-app\$' keys.all && grep -q '^ssh-rsa .* rsa-app\$' keys.all"

# ---- a throw-away sshd on a free loopback port; one real login per key
sshd_start "$WD/ssh" || die "sshd did not listen"
printf 'user-secret-1\n' > ssh/user.pin; chmod 600 ssh/user.pin
sshlogin() {  # KEY_LABEL
  grep " $1\$" keys.all > ssh/authorized_keys
  sshd_login "$M" "$WD/ssh/user.pin" ssh/out.txt ssh/err.txt "echo logged-in-with-$1"
  local rc=$?
  [ $rc = 0 ] && grep -qx "logged-in-with-$1" ssh/out.txt || { cat ssh/err.txt; return 1; }
}
chk "ssh -I tpm2-pkcs11 login with ecc-app" sshlogin ecc-app
chk "ssh -I tpm2-pkcs11 login with rsa-app (sign|decrypt)" sshlogin rsa-app

echo "summary: $PASS passed, $FAIL failed; store $SIZE_INIT bytes after init, $SIZE_LINKED bytes with 3 keys"
[ $FAIL = 0 ]
