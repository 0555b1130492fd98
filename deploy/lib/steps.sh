# SPDX-License-Identifier: GPL-2.0-or-later
# Sourced bash library: the numbered steps and checks of an end-to-end script
# (deploy/ha-demo.sh, tests/console/console_browser_test.sh).
#
# Contract:
# - step TEXT: prints "== N. TEXT"; ok TEXT: "   ok: TEXT".
# - fail TEXT: prints "   FAILED: TEXT" to stderr, sets keep=1 (the caller's cleanup then
#   keeps $work) and says where $work is, exits 1.
# - json EXPR: EXPR (Python, the parsed stdin as `d`) printed; needs $PY.
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
