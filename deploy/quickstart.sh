#!/usr/bin/env bash
# Quick start: installs dependencies, builds tpm-ma, and (once ma-server exists) creates a
# demo MA under ./var and starts it. Today only the libraries exist: this script builds
# them and says so; it does not pretend to start a server.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
build=${BUILD_DIR:-$root/build}

"$root/deploy/install-deps.sh"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build "$build" -j"$(nproc)"

if [ -x "$build/server/ma-server" ] && [ -x "$build/server/ma-admin" ]; then
  mkdir -p "$root/var"
  [ -f "$root/var/ma/config.toml" ] || "$build/server/ma-admin" init --dir "$root/var/ma"
  exec "$build/server/ma-server" --config "$root/var/ma/config.toml"
fi
cat <<MSG

Built the tpm-ma libraries (package, TPM wire, vault) and their tests in $build.
ma-server and ma-admin are not built yet (tracked in issue #3), so there is no MA to
start. Run deploy/test.sh to build and run every test.
MSG
