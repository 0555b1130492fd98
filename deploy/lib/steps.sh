# SPDX-License-Identifier: GPL-2.0-or-later
# Sourced bash library: the numbered steps and checks of an end-to-end script
# (deploy/ha-demo.sh, tests/console/console_browser_test.sh).
#
# Contract:
# - step TEXT: prints "== N. TEXT"; ok TEXT: "   ok: TEXT".
# - fail TEXT: prints "   FAILED: TEXT" to stderr, sets keep=1 (the caller's cleanup then
#   keeps $work) and says where $work is, exits 1.
# - json EXPR: EXPR (Python, the parsed stdin as `d`) printed; needs $PY.
# - key_signs_as KEY OLD_PEM DIR LMS...: a restored key kept its public key and signs.
n=0
step() { n=$((n + 1)); printf '\n== %d. %s\n' "$n" "$*"; }
ok() { printf '   ok: %s\n' "$*"; }
fail() {
  printf '   FAILED: %s\n' "$*" >&2
  keep=1
  echo "   (everything is kept in $work)" >&2
  exit 1
}
json() { $PY -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

# key_signs_as KEY OLD_PEM DIR LMS...: the restored KEY (through the lms command LMS...) has
# the public key in OLD_PEM and signs a message that verifies with it. Files go to DIR.
key_signs_as() {
  local key=$1 old=$2 dir=$3
  shift 3
  "$@" pubkey "$key" --out "$dir/$key-now.pem" >/dev/null || fail "$key: no public key"
  cmp -s "$old" "$dir/$key-now.pem" || fail "$key: the public key changed"
  echo "signed with $key after the restore" > "$dir/$key-msg.txt"
  "$@" sign "$key" --in "$dir/$key-msg.txt" --out "$dir/$key-msg.sig" >/dev/null ||
    fail "$key: lms sign failed"
  openssl dgst -sha256 -verify "$old" -signature "$dir/$key-msg.sig" "$dir/$key-msg.txt" \
    >/dev/null || fail "$key: the signature does not verify with the old public key"
}
