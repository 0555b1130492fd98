#!/usr/bin/env bash
# The motherboard-swap drill, end to end, printed step by step in plain words:
#   a fresh MA (ma-admin init + ma-server) and two software TPMs (swtpm): board A (old) and
#   board B (new). A enrolls and backs up its keys; B authenticates; B's restore is refused
#   without an approval; a helpdesk operator approves (remote ma-admin, operator
#   certificate); B restores with the user's recovery code; every key on B has A's public
#   key, signatures made on A and on B verify with it, a ciphertext made for A decrypts on
#   B, sealed data unseals; the approval is used up; the audit log verifies.
#   Applications too (issue 11): on A, a TLS server key (ECC) and client key (RSA) exported as
#   TSS2 PRIVATE KEY PEMs with self-signed certificates do mutual TLS (openssl s_server and
#   s_client, tpm2-openssl), and SSH keys (RSA sign|decrypt, ECC) in the store's tpm2-pkcs11
#   token log in to a throw-away sshd (ssh -I). The same files, carried to B with the disk,
#   fail there before the restore and do the same after it, unchanged (SHA-256).
#   Each board's TPM is reached through its own tpm2-abrmd on a private D-Bus session bus
#   (deploy/lib/tabrmd.sh): swtpm alone holds three objects, too few for OpenSSL and PKCS#11.
#   The swtpms and the throw-away sshd come from deploy/lib/swtpm.sh and deploy/lib/sshd.sh.
#
# Usage: deploy/demo.sh [--build DIR] [--workdir DIR] [--ma-key software|tpm] [--srk rsa|ecc]
#                       [--custody recovery-code|escrow] [--escrow-key software|tpm]
#   --ma-key tpm: the MA storage key lives in a third swtpm (TPM2_Rewrap there).
#   --srk ecc: the boards' SRKs are ECC P-256 (0x81000002) instead of RSA-2048 (0x81000001).
#   --custody escrow: no recovery code; the inner key is escrowed to the MA's escrow key and
#     released with the approved Download. --escrow-key tpm: that key lives in a TPM too.
# Exit 0 when every check passed; 1 and the failing step otherwise. Loopback only.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
work=""
ma_key=software
srk=rsa
custody=recovery-code
escrow_key=software
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --workdir) work=$2; shift 2 ;;
    --ma-key) ma_key=$2; shift 2 ;;
    --srk) srk=$2; shift 2 ;;
    --custody) custody=$2; shift 2 ;;
    --escrow-key) escrow_key=$2; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "demo.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$ma_key" in software|tpm) ;; *) echo "demo.sh: --ma-key software|tpm" >&2; exit 2 ;; esac
case "$custody" in recovery-code|escrow) ;;
  *) echo "demo.sh: --custody recovery-code|escrow" >&2; exit 2 ;; esac
case "$escrow_key" in software|tpm) ;; *) echo "demo.sh: --escrow-key software|tpm" >&2; exit 2 ;; esac
case "$srk" in rsa) srk_alg=rsa2048 ;; ecc) srk_alg=ecc-p256 ;;
  *) echo "demo.sh: --srk rsa|ecc" >&2; exit 2 ;; esac
MA_ADMIN=$build/server/ma-admin
MA_SERVER=$build/server/ma-server
LMS=$build/client/lms/lms
for b in "$MA_ADMIN" "$MA_SERVER" "$LMS"; do
  [ -x "$b" ] || { echo "demo.sh: $b is not built (cmake --build $build)" >&2; exit 2; }
done
[ -n "$work" ] || work=$(mktemp -d /tmp/tpm-ma-demo.XXXXXX)
mkdir -p "$work"
PY=/usr/bin/python3
. "$root/deploy/lib/tabrmd.sh"
. "$root/deploy/lib/swtpm.sh"
. "$root/deploy/lib/sshd.sh"
. "$root/deploy/lib/toml.sh"
tabrmd_available || exit 2
P11=$(ls /usr/lib/*/libtpm2_pkcs11.so.1 2>/dev/null | head -n 1)
[ -n "$P11" ] || { echo "demo.sh: libtpm2_pkcs11.so.1 is not installed (deploy/install-deps.sh)" >&2; exit 2; }
PV=(-provider tpm2 -provider default)

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  tabrmd_stop
  sshd_stop
  swtpm_stop
  wait 2>/dev/null || true
}
trap cleanup EXIT

n=0
step() { n=$((n + 1)); printf '\n== %d. %s\n' "$n" "$*"; }
ok() { printf '   ok: %s\n' "$*"; }
fail() { printf '   FAILED: %s\n' "$*" >&2; exit 1; }
json() { $PY -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

# ---- software TPMs with EK certificates from a private swtpm-localca
swtpm_localca_init "$work" tpm-ma-demo
start_tpm() {  # NAME: its state in $work/tpm-NAME (EK certificate), sets TCTI_NAME
  local name=$1 v=SWTPM_TCTI_$1
  swtpm_provision "$name" "$work/tpm-$name" || fail "swtpm_setup of $name failed"
  swtpm_start "$name" "$work/tpm-$name" "$work/swtpm-$name.log" ||
    fail "swtpm $name did not start (see $work/swtpm-$name.log)"
  printf -v "TCTI_$name" %s "${!v}"
}

step "Two laptops: board A (old) and board B (new), each with its own TPM and EK certificate"
start_tpm A
start_tpm B
ok "TPM A at $TCTI_A, TPM B at $TCTI_B"
# From here on each board's TPM is reached only through its resource manager (it holds
# swtpm's one connection): lms, OpenSSL and tpm2-pkcs11 alike.
tabrmd_start_bus "$work" || fail "the private D-Bus session bus did not start"
tabrmd_start A "$TCTI_A" || fail "tpm2-abrmd for board A did not start"
tabrmd_start B "$TCTI_B" || fail "tpm2-abrmd for board B did not start"
RM_A=$TABRMD_TCTI_A
RM_B=$TABRMD_TCTI_B
ok "resource managers: A at $RM_A, B at $RM_B"
ek_root=$SWTPM_EK_ROOT
ek_inter=$SWTPM_EK_INTERMEDIATE

step "A fresh Migration Authority (ma-admin init, ma-server on a free loopback port)"
"$MA_ADMIN" init --dir "$work/ma" --listen 127.0.0.1:0 --ek-root "$ek_root" >/dev/null
# set_config SECTION KEY=VALUE...: keys of one [SECTION] of the MA's config.toml (deploy/lib/toml.sh).
set_config() { toml_set "$work/ma/config.toml" "$@"; }
start_hsm() {  # the MA's own TPM, with a storage parent at 0x81000001
  [ -z "${TCTI_HSM:-}" ] || return 0
  start_tpm HSM
  TPM2TOOLS_TCTI=$TCTI_HSM tpm2_createprimary -Q -C o -g sha256 -G rsa2048:aes128cfb \
    -a "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|restricted|decrypt" \
    -c "$work/hsm-srk.ctx"
  TPM2TOOLS_TCTI=$TCTI_HSM tpm2_evictcontrol -Q -C o -c "$work/hsm-srk.ctx" 0x81000001
}
if [ "$ma_key" = tpm ]; then
  start_hsm
  # The MA key goes into the MA's own TPM; ma-server then re-wraps with TPM2_Rewrap there.
  TPM2TOOLS_TCTI=$TCTI_HSM tpm2_import -Q -C 0x81000001 -G rsa -i "$work/ma/ma/ma-key.pem" \
    -a "restricted|decrypt|userwithauth" -u "$work/ma/ma/ma-tpm.pub" -r "$work/ma/ma/ma-tpm.priv"
  TPM2TOOLS_TCTI=$TCTI_HSM tpm2_flushcontext -t
  set_config ma custody='"tpm"' tpm_tcti="\"$TCTI_HSM\"" tpm_public='"ma/ma-tpm.pub"' \
    tpm_private='"ma/ma-tpm.priv"'
  mv "$work/ma/ma/ma-key.pem" "$work/ma-key-offline.pem"  # the host no longer holds it
fi
if [ "$escrow_key" = tpm ]; then
  start_hsm
  # The escrow key goes into a TPM as well (a plain decryption key: TPM2_RSA_Decrypt).
  TPM2TOOLS_TCTI=$TCTI_HSM tpm2_import -Q -C 0x81000001 -G rsa \
    -i "$work/ma/escrow/escrow-key.pem" -a "decrypt|userwithauth" \
    -u "$work/ma/escrow/escrow-tpm.pub" -r "$work/ma/escrow/escrow-tpm.priv"
  TPM2TOOLS_TCTI=$TCTI_HSM tpm2_flushcontext -t
  set_config escrow custody='"tpm"' tpm_tcti="\"$TCTI_HSM\"" \
    tpm_public='"escrow/escrow-tpm.pub"' tpm_private='"escrow/escrow-tpm.priv"'
  mv "$work/ma/escrow/escrow-key.pem" "$work/escrow-key-offline.pem"
fi
# The log exists before the server starts (the redirection would otherwise be opened by the
# background child, possibly after the first poll reads it), and the wait ends on the line
# naming the port, on the server's exit, or at a deadline, each with its own message.
ma_log=$work/ma-server.log
: > "$ma_log"
"$MA_SERVER" --config "$work/ma/config.toml" 2>> "$ma_log" &
ma_pid=$!
pids+=("$ma_pid")
# The port is taken only with the space after it, so a line still being written never
# yields a prefix of it; sed stops at the first match (no head, no SIGPIPE under pipefail).
ma_port() {
  sed -n 's/.*listening on https:\/\/127\.0\.0\.1:\([0-9][0-9]*\) .*/\1/p;T;q' "$ma_log"
}
ma_up_or_dead() { [ -n "$(ma_port)" ] || ! wait_alive "$ma_pid"; }
wait_until 60 ma_up_or_dead ||
  fail "ma-server did not report its port within 60 s: $(tail -n 5 "$ma_log")"
port=$(ma_port)
[ -n "$port" ] || fail "ma-server exited before listening: $(tail -n 5 "$ma_log")"
MA=https://127.0.0.1:$port
MA_CA=$work/ma/ca/ca-cert.pem
escrow_note=""
[ "$custody" = escrow ] && escrow_note=" to the $escrow_key escrow key"
ok "MA at $MA (MA key: $ma_key; boards' SRKs: $srk_alg; inner keys: $custody$escrow_note)"

"$MA_ADMIN" operator issue --name helen --role helpdesk --out "$work" --dir "$work/ma" >/dev/null
"$MA_ADMIN" operator issue --name audrey --role auditor --out "$work" --dir "$work/ma" >/dev/null
helpdesk() { "$MA_ADMIN" --json --ma "$MA" --ma-ca "$MA_CA" --operator-cert "$work/helen.pem" "$@"; }
auditor() { "$MA_ADMIN" --json --ma "$MA" --ma-ca "$MA_CA" --operator-cert "$work/audrey.pem" "$@"; }
ok "operators: helen (helpdesk), audrey (auditor)"

lms_a() {
  "$LMS" --store "$work/store-A" --tcti "$RM_A" --ma "$MA" --ma-ca "$MA_CA" --srk-alg "$srk_alg" \
    --ek-intermediate "$ek_inter" "$@"
}
lms_b() {
  "$LMS" --store "$work/store-B" --tcti "$RM_B" --ma "$MA" --ma-ca "$MA_CA" --srk-alg "$srk_alg" \
    --ek-intermediate "$ek_inter" "$@"
}
d=$work/data
mkdir -p "$d"

if [ "$custody" = escrow ]; then
  step "Board A: lms init --custody escrow (SRK, MRK bound to the MA key, inner key escrowed)"
  lms_a --json init --custody escrow > "$d/init.json"
  [ "$(json 'd["custody"]' < "$d/init.json")" = escrow ] || fail "custody is not escrow"
  [ "$(json '"recovery_code" in d' < "$d/init.json")" = False ] || fail "a recovery code was shown"
  code_args=()
  ok "no recovery code: the MA's escrow key holds the inner key for the helpdesk"
else
  step "Board A: lms init (SRK, MRK bound to the MA key, recovery code shown once)"
  lms_a --json init > "$d/init.json"
  json 'd["recovery_code"]' < "$d/init.json" > "$d/recovery-code.txt"  # the user writes it down
  chmod 600 "$d/recovery-code.txt"
  code_args=(--recovery-code-file "$d/recovery-code.txt")
  ok "recovery code noted (not printed here)"
fi

step "Board A: the user's keys: a VPN signing key, a mail decryption key, a sealed disk secret"
lms_a keygen --type ecc-sign --label vpn >/dev/null
lms_a keygen --type rsa-decrypt --label mail >/dev/null
head -c 32 /dev/urandom > "$d/disk-secret.bin"
lms_a keygen --type sealed --label disk --data "$d/disk-secret.bin" >/dev/null
for k in vpn mail; do lms_a pubkey "$k" --out "$d/$k-A.pem" >/dev/null; done
echo "signed on board A" > "$d/msg-A.txt"
lms_a sign vpn --in "$d/msg-A.txt" --out "$d/msg-A.sig" >/dev/null
echo "mail for the user" > "$d/mail.txt"
lms_a encrypt mail --in "$d/mail.txt" --out "$d/mail.enc" >/dev/null
ok "3 keys; public keys exported, a signature and a ciphertext made on A"

# ---- applications' keys: OpenSSL (tpm2-openssl) with TSS2 PRIVATE KEY files, ssh with the
# store's tpm2-pkcs11 token. The user's files live in home-X, which moves with the disk.
h_a=$work/home-A
mkdir -p "$h_a"
printf 'so-%s\n' "$RANDOM$RANDOM" > "$h_a/so.pin"
printf 'user-%s\n' "$RANDOM$RANDOM" > "$h_a/user.pin"
chmod 600 "$h_a"/*.pin
ssh_pin=$h_a/user.pin  # ssh asks the PIN (askpass) from this file
has() { grep -q -- "$1" "$2" 2>/dev/null; }
has_or_dead() { has "$1" "$2" || wait_dead "$3"; }
# A child started in the background by tls_handshake: never left running.
reap() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# tls_handshake TAG TCTI HOME: mutual TLS on a free loopback port, both keys in the TPM at TCTI
# (files in HOME: tls-server.pem/.crt, tls-client.pem/.crt). The server trusts only the
# client's certificate (-Verify 1 -verify_return_error), the client only the server's. Each
# side's input is a FIFO held open here, so every line is sent when a condition says so:
# the client's line once connected, the server's once the client's line arrived; then the
# client's EOF ends the connection and s_server (-naccept 1) exits. Outputs are checked after
# both exited. Fails the drill naming what did not happen.
tls_handshake() {
  local tag=$1 tcti=$2 h=$3 t=$d/tls-$1 port="" spid="" cpid="" sfd cfd _
  mkdir -p "$t"
  for _ in 1 2 3 4 5; do
    port=$(swtpm_free_port)  # another process may take it first: then s_server exits and we retry
    rm -f "$t/srv.in" "$t/cli.in"
    mkfifo "$t/srv.in" "$t/cli.in"
    : > "$t/srv.out"
    TPM2OPENSSL_TCTI=$tcti timeout 120 openssl s_server "${PV[@]}" -accept "127.0.0.1:$port" \
      -naccept 1 -cert "$h/tls-server.crt" -key "$h/tls-server.pem" \
      -Verify 1 -verify_return_error -CAfile "$h/tls-client.crt" \
      < "$t/srv.in" > "$t/srv.out" 2>&1 &
    spid=$!
    pids+=("$spid")
    exec {sfd}> "$t/srv.in"
    # s_server prints ACCEPT once it listens (a probe connection would use up -naccept 1)
    if wait_until 60 has_or_dead '^ACCEPT' "$t/srv.out" "$spid" && wait_alive "$spid"; then break; fi
    exec {sfd}>&-
    reap "$spid"
    spid=""
  done
  [ -n "$spid" ] || fail "[$tag] s_server did not listen: $(tail -n 3 "$t/srv.out")"
  : > "$t/cli.out"
  TPM2OPENSSL_TCTI=$tcti timeout 120 openssl s_client "${PV[@]}" -connect "127.0.0.1:$port" \
    -cert "$h/tls-client.crt" -key "$h/tls-client.pem" -CAfile "$h/tls-server.crt" \
    -verify_return_error -brief -no_ign_eof < "$t/cli.in" > "$t/cli.out" 2>&1 &
  cpid=$!
  pids+=("$cpid")
  exec {cfd}> "$t/cli.in"
  echo "ping from the TLS client on $tag" >&"$cfd"  # s_client reads it after the handshake
  wait_until 60 has_or_dead "ping from the TLS client on $tag" "$t/srv.out" "$spid" ||
    { exec {cfd}>&- {sfd}>&-; reap "$cpid"; reap "$spid"; fail "[$tag] mTLS: no data reached s_server in 60 s"; }
  echo "pong from the TLS server on $tag" >&"$sfd"
  wait_until 60 has_or_dead "pong from the TLS server on $tag" "$t/cli.out" "$cpid" || true
  exec {cfd}>&-  # EOF: s_client closes the connection and exits, then s_server
  wait_until 30 wait_dead "$cpid" || reap "$cpid"
  wait "$cpid" 2>/dev/null || true
  exec {sfd}>&-
  wait_until 30 wait_dead "$spid" || reap "$spid"
  wait "$spid" 2>/dev/null || true
  has 'Verification: OK' "$t/cli.out" ||
    fail "[$tag] s_client did not verify the server: $(grep -m3 -i 'error\|verif' "$t/cli.out")"
  has 'subject=CN = tls-client.drill' "$t/srv.out" ||
    fail "[$tag] s_server shows no verified client certificate: $(grep -m3 -i 'error\|verif' "$t/srv.out")"
  has "ping from the TLS client on $tag" "$t/srv.out" ||
    fail "[$tag] the client's data did not reach the server: $(grep -m3 -i error "$t/srv.out")"
  has "pong from the TLS server on $tag" "$t/cli.out" ||
    fail "[$tag] the server's data did not reach the client: $(grep -m3 -i error "$t/cli.out")"
  ok "[$tag] mutual TLS on 127.0.0.1:$port, $(sed -n 's/^Protocol version: //p' "$t/cli.out"): client verified the server, server required and verified the client, data crossed both ways"
}

# pem_sign TCTI HOME TAG: openssl pkeyutl -sign with HOME/tls-server.pem in the TPM at TCTI;
# the signature must verify with the public key in A's certificate.
pem_sign() {
  local tcti=$1 h=$2 tag=$3
  echo "signed by OpenSSL with the TPM key on $tag" > "$d/ossl-$tag.txt"
  openssl dgst -sha256 -binary "$d/ossl-$tag.txt" > "$d/ossl-$tag.sha256"
  TPM2OPENSSL_TCTI=$tcti openssl pkeyutl "${PV[@]}" -sign -inkey "$h/tls-server.pem" \
    -in "$d/ossl-$tag.sha256" -out "$d/ossl-$tag.sig" >/dev/null &&
  openssl x509 -in "$h/tls-server.crt" -noout -pubkey > "$d/tls-server-pub.pem" &&
  openssl pkeyutl -verify -pubin -inkey "$d/tls-server-pub.pem" -in "$d/ossl-$tag.sha256" \
    -sigfile "$d/ossl-$tag.sig" >/dev/null
}

# ssh_try TAG TCTI STORE LABEL: ssh -I tpm2-pkcs11 (token in STORE/pkcs11, TPM at TCTI) to the
# throw-away sshd, which accepts only the key LABEL; the PIN comes through SSH_ASKPASS. The
# remote command's output in $d/ssh-TAG-LABEL.out, ssh's messages in .err; ssh's status.
ssh_try() {
  local tag=$1 tcti=$2 store=$3 label=$4
  grep " $label\$" "$d/ssh-keys-A.pub" > "$SSHD_DIR/authorized_keys" || fail "[$tag] no ssh key $label"
  TPM2_PKCS11_STORE="$store/pkcs11" TPM2_PKCS11_TCTI="$tcti" TPM2_PKCS11_LOG_LEVEL=0 \
    sshd_login "$P11" "$ssh_pin" "$d/ssh-$tag-$label.out" "$d/ssh-$tag-$label.err" \
    "echo logged in as \$(id -un) with $label on $tag"
}
# ssh_login TAG TCTI STORE LABEL: ssh_try, which must log in and run the remote command.
ssh_login() {
  local tag=$1 label=$4 want
  want="logged in as $(id -un) with $label on $tag"
  ssh_try "$@" || fail "[$tag] ssh login with $label: $(tail -n 3 "$d/ssh-$tag-$label.err")"
  [ "$(cat "$d/ssh-$tag-$label.out")" = "$want" ] ||
    fail "[$tag] ssh login with $label printed: $(cat "$d/ssh-$tag-$label.out")"
  ok "[$tag] ssh -I libtpm2_pkcs11 login with $label: remote said \"$want\""
}

step "Board A: application keys: a TLS server key (ECC), a TLS client key (RSA), as PEM files"
lms_a keygen --type ecc-app --label tls-server >/dev/null
lms_a keygen --type rsa-app --label tls-client >/dev/null
for k in tls-server tls-client; do
  lms_a export "$k" --out "$h_a/$k.pem" >/dev/null
  head -n 1 "$h_a/$k.pem" | grep -q 'BEGIN TSS2 PRIVATE KEY' || fail "$k.pem is not a TSS2 PRIVATE KEY"
done
ok "tls-server.pem, tls-client.pem: TSS2 PRIVATE KEY files whose parent is the MRK at 0x81000100"

step "Board A: self-signed certificates made by the TPM keys (openssl req -x509), kept by lms"
for k in tls-server tls-client; do
  TPM2OPENSSL_TCTI=$RM_A openssl req -new -x509 "${PV[@]}" -key "$h_a/$k.pem" -subj "/CN=$k.drill" \
    -days 30 -sha256 -out "$h_a/$k.crt" 2> "$d/req-$k.err" ||
    fail "openssl req with $k.pem: $(tail -n 3 "$d/req-$k.err")"
  openssl verify -CAfile "$h_a/$k.crt" "$h_a/$k.crt" >/dev/null || fail "$k.crt does not verify"
  lms_a cert "$k" --set "$h_a/$k.crt" >/dev/null
done
ok "CN=tls-server.drill (ECDSA), CN=tls-client.drill (RSA); both kept with their keys"
pem_sign "$RM_A" "$h_a" A 2> "$d/err.txt" || fail "openssl pkeyutl -sign with tls-server.pem on A: $(tail -n 3 "$d/err.txt")"
ok "openssl pkeyutl -sign with tls-server.pem on A verifies with the certificate's key"

step "Board A: mutual TLS with the TPM keys (openssl s_server and s_client, through tpm2-abrmd)"
tls_handshake A "$RM_A" "$h_a"

step "Board A: SSH keys (RSA sign|decrypt, ECC) in the store's PKCS#11 token, ssh login"
lms_a keygen --type rsa-app --label ssh-rsa >/dev/null
lms_a keygen --type ecc-app --label ssh-ecc >/dev/null
lms_a pkcs11 init --so-pin-file "$h_a/so.pin" --user-pin-file "$h_a/user.pin" >/dev/null
for k in ssh-rsa ssh-ecc; do lms_a pkcs11 link "$k" --user-pin-file "$h_a/user.pin" >/dev/null; done
TPM2_PKCS11_STORE=$work/store-A/pkcs11 TPM2_PKCS11_TCTI=$RM_A TPM2_PKCS11_LOG_LEVEL=0 \
  ssh-keygen -D "$P11" > "$d/ssh-keys-A.pub" 2> "$d/ssh-keygen.err" ||
  fail "ssh-keygen -D: $(tail -n 3 "$d/ssh-keygen.err")"
grep -q '^ssh-rsa .* ssh-rsa$' "$d/ssh-keys-A.pub" || fail "ssh-keygen -D lists no ssh-rsa: $(cat "$d/ssh-keys-A.pub")"
grep -q '^ecdsa-sha2-nistp256 .* ssh-ecc$' "$d/ssh-keys-A.pub" || fail "ssh-keygen -D lists no ssh-ecc: $(cat "$d/ssh-keys-A.pub")"
ok "token tpm-ma on the MRK; ssh-keygen -D lists ssh-rsa and ssh-ecc"
sshd_start "$work/sshd" || fail "sshd did not start: $(tail -n 3 "$work/sshd/sshd.log")"
ok "throw-away sshd on 127.0.0.1:$SSHD_PORT (config, host key, authorized_keys in $work/sshd)"
ssh_login A "$RM_A" "$work/store-A" ssh-rsa
ssh_login A "$RM_A" "$work/store-A" ssh-ecc

step "Board A: the SHA-256 of the key files, certificates and token database, for later"
(cd "$h_a" && sha256sum tls-server.pem tls-server.crt tls-client.pem tls-client.crt) > "$d/home.sha256"
(cd "$work/store-A" && sha256sum pkcs11/tpm2_pkcs11.sqlite3) > "$d/token.sha256"
ok "$(wc -l < "$d/home.sha256") files in home-A and the token database recorded"

step "Board A: authenticate (EK certificate, AK, credential activation) and back up"
lms_a --json authenticate > "$d/auth-A.json" || fail "authenticate on A: $(cat "$d/auth-A.json")"
OLD=$(json 'd["platform_id"]' < "$d/auth-A.json")
lms_a --json backup > "$d/backup.json" || fail "backup on A: $(cat "$d/backup.json")"
PKG=$(json 'd["package_id"]' < "$d/backup.json")
ok "platform A = ${OLD:0:16}…, package $PKG vaulted"

step "Board A dies. The disk (its lms store and the user's key files) moves to board B, with a new TPM"
tabrmd_stop_one A
swtpm_stop_one A
cp -a "$work/store-A" "$work/store-B"
cp -a "$work/home-A" "$work/home-B"
h_b=$work/home-B
ssh_pin=$h_b/user.pin  # the PIN file on B's disk
if lms_b sign vpn --in "$d/msg-A.txt" --out "$d/x.sig" >/dev/null 2>"$d/err.txt"; then
  fail "a key of A worked on B without a restore"
fi
ok "the keys do not work on B: $(head -c 120 "$d/err.txt")"
if pem_sign "$RM_B" "$h_b" B-early 2>"$d/pem-B-early.err"; then
  fail "openssl pkeyutl -sign with A's tls-server.pem worked on B without a restore"
fi
ok "openssl pkeyutl -sign with A's PEM fails on B: $(grep -m1 -o 'Esys_[A-Za-z_]*() [^(]*ErrorCode (0x[0-9a-f]*)' "$d/pem-B-early.err")"
if lms_b export tls-server --out "$d/x.pem" >/dev/null 2>"$d/err.txt"; then
  fail "lms export worked on B without a restore"
fi
grep -qi restore "$d/err.txt" || fail "lms export on B refused without saying to restore: $(cat "$d/err.txt")"
ok "lms export on B refuses: $(grep -m1 -i restore "$d/err.txt" | head -c 240)"
if ssh_try B-early "$RM_B" "$work/store-B" ssh-rsa; then
  fail "ssh login with A's token worked on B without a restore"
fi
[ ! -s "$d/ssh-B-early-ssh-rsa.out" ] || fail "the remote command ran for A's token on B without a restore"
ok "ssh -I with the token carried to B fails before the restore: $(grep -m1 '^ERROR: Esys' "$d/ssh-B-early-ssh-rsa.err" | head -c 100); $(tail -n 1 "$d/ssh-B-early-ssh-rsa.err")"

step "Board B authenticates to the MA: a different platform"
NEW=$(lms_b --json authenticate | json 'd["platform_id"]')
[ "$NEW" != "$OLD" ] || fail "B has A's platform id"
ok "platform B = ${NEW:0:16}…"

step "Board B asks for A's keys without an approval: refused"
if lms_b restore --from "$OLD" "${code_args[@]}" >"$d/out.txt" 2>&1; then
  fail "restore without approval succeeded"
fi
grep -q "PermissionDenied\|approv" "$d/out.txt" || fail "unexpected refusal: $(cat "$d/out.txt")"
ok "refused: $(grep -m1 -o 'the MA has no package[^(]*' "$d/out.txt" | head -c 100)…"

step "Helpdesk: an auditor may not approve; helen (helpdesk) approves A -> B for 1 hour"
if auditor approve --old "$OLD" --new "$NEW" --reason "ticket 4711" --expires 1h >"$d/out.txt" 2>&1; then
  fail "an auditor approved"
fi
grep -q PermissionDenied "$d/out.txt" || fail "auditor refusal: $(cat "$d/out.txt")"
APPROVAL=$(helpdesk approve --old "$OLD" --new "$NEW" --reason "ticket 4711: board swap" \
  --expires 1h | json 'd["approval"]["id"]')
ok "auditor refused; approval $APPROVAL active"

if [ "$custody" = escrow ]; then
  step "Board B restores A's package; the MA releases the escrowed inner key with it"
else
  step "Board B restores A's package with the user's recovery code"
fi
lms_b --json restore --from "$OLD" "${code_args[@]}" > "$d/restore.json"
source=$(json 'd["inner_key_source"]' < "$d/restore.json")
expected=recovery-code
[ "$custody" = escrow ] && expected=escrow
[ "$source" = "$expected" ] || fail "inner key came from $source, expected $expected"
ok "restored (inner key from: $source)"

step "Every key works on B with the public key it had on A"
for k in vpn mail; do
  lms_b pubkey "$k" --out "$d/$k-B.pem" >/dev/null
  cmp -s "$d/$k-A.pem" "$d/$k-B.pem" || fail "$k: public key changed"
done
openssl dgst -sha256 -verify "$d/vpn-A.pem" -signature "$d/msg-A.sig" "$d/msg-A.txt" >/dev/null \
  || fail "A's signature does not verify"
echo "signed on board B" > "$d/msg-B.txt"
lms_b sign vpn --in "$d/msg-B.txt" --out "$d/msg-B.sig" >/dev/null
openssl dgst -sha256 -verify "$d/vpn-A.pem" -signature "$d/msg-B.sig" "$d/msg-B.txt" >/dev/null \
  || fail "B's signature does not verify with A's public key"
lms_b decrypt mail --in "$d/mail.enc" --out "$d/mail.dec" >/dev/null
cmp -s "$d/mail.txt" "$d/mail.dec" || fail "the ciphertext made for A did not decrypt on B"
lms_b unseal disk --out "$d/disk.out" >/dev/null
cmp -s "$d/disk-secret.bin" "$d/disk.out" || fail "sealed data differs"
ok "same public keys; signatures from A and B verify; A's ciphertext decrypts; sealed data unseals"

step "The user's key files and token database on B's disk are the ones A had (SHA-256)"
(cd "$h_b" && sha256sum --quiet -c "$d/home.sha256") || fail "a key file or certificate changed"
(cd "$work/store-B" && sha256sum --quiet -c "$d/token.sha256") || fail "the token database changed"
ok "tls-server/tls-client .pem and .crt, pkcs11/tpm2_pkcs11.sqlite3: unchanged"

step "Board B: the MRK is persistent at 0x81000100, the parent A's key files name"
tpm2_getcap -T "$RM_B" handles-persistent > "$d/handles-B.txt" || fail "tpm2_getcap on B"
grep -qi '0x81000100' "$d/handles-B.txt" || fail "0x81000100 is not on B: $(tr '\n' ' ' < "$d/handles-B.txt")"
ok "persistent handles on B: $(sed 's/^- //' "$d/handles-B.txt" | paste -sd ' ')"

step "Board B: OpenSSL signs with A's PEM file and mutual TLS works with A's files and certificates"
pem_sign "$RM_B" "$h_b" B 2> "$d/err.txt" || fail "openssl pkeyutl -sign with A's PEM on B: $(tail -n 3 "$d/err.txt")"
ok "openssl pkeyutl -sign with A's tls-server.pem on B verifies with A's certificate"
tls_handshake B "$RM_B" "$h_b"
for k in tls-server tls-client; do
  lms_b cert "$k" --out "$d/$k-B.crt" >/dev/null
  [ "$(openssl x509 -in "$d/$k-B.crt" -noout -fingerprint -sha256)" = \
    "$(openssl x509 -in "$h_b/$k.crt" -noout -fingerprint -sha256)" ] ||
    fail "lms cert $k --out on B is not A's certificate"
done
ok "lms cert --out on B gives A's certificates (same SHA-256 fingerprints)"

step "Board B: ssh login through the PKCS#11 token carried over on the disk"
TPM2_PKCS11_STORE=$work/store-B/pkcs11 TPM2_PKCS11_TCTI=$RM_B TPM2_PKCS11_LOG_LEVEL=0 \
  ssh-keygen -D "$P11" > "$d/ssh-keys-B.pub" 2> "$d/ssh-keygen.err" ||
  fail "ssh-keygen -D on B: $(tail -n 3 "$d/ssh-keygen.err")"
cmp -s "$d/ssh-keys-A.pub" "$d/ssh-keys-B.pub" || fail "ssh-keygen -D on B lists other keys than on A"
ok "ssh-keygen -D on B lists A's public keys"
ssh_login B "$RM_B" "$work/store-B" ssh-rsa
ssh_login B "$RM_B" "$work/store-B" ssh-ecc

step "The approval is used up: a second restore under it is refused"
if lms_b restore --from "$OLD" "${code_args[@]}" >"$d/out.txt" 2>&1; then
  fail "a second restore under a used approval succeeded"
fi
state=$(helpdesk approvals list --new "$NEW" | json '[a["state"] for a in d["approvals"] if a["id"] == '"$APPROVAL"'][0]')
[ "$state" = used ] || fail "approval state is $state"
ok "approval $APPROVAL is used"

step "Auditor: the audit log's hash chain verifies"
rows=$(auditor audit verify | json 'd["verified_rows"]')
ok "$rows audit rows, chain intact"
if [ "$custody" = escrow ]; then
  released=$(auditor audit --action Download.Complete --platform "$NEW" |
    json 'sum("escrowed inner key released" in r["detail"] for r in d["records"])')
  [ "$released" = 1 ] || fail "expected one escrow release in the audit log, found $released"
  ok "the log shows the one escrowed-key release, to B, under approval $APPROVAL"
fi

printf '\nThe drill passed: every key of board A works on board B, for lms and for OpenSSL and ssh. Files in %s\n' "$work"
