#!/usr/bin/env bash
# Quick start: installs dependencies, builds tpm-ma, creates a demo MA under ./var (once;
# later runs reuse it) and starts ma-server in the foreground on https://127.0.0.1:8443.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
build=${BUILD_DIR:-$root/build}

"$root/deploy/install-deps.sh"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build "$build" -j"$(nproc)"

mkdir -p "$root/var"
if [ -f "$root/var/ma/config.toml" ]; then
  # An existing MA holds the key every vaulted package is wrapped to: reuse, never replace.
  echo "Using the existing demo MA in $root/var/ma (remove that directory for a fresh one)."
else
  "$build/server/ma-admin" init --dir "$root/var/ma" --listen 127.0.0.1:8443
fi
cat <<MSG

Point clients at:  https://127.0.0.1:8443/
Trust this CA:     $root/var/ma/ca/ca-cert.pem   (lms --ma-ca)
WSDL:              $root/wsdl/migration.wsdl
Starting ma-server in the foreground (Ctrl-C or SIGTERM stops it cleanly).
MSG
exec "$build/server/ma-server" --config "$root/var/ma/config.toml"
