#!/usr/bin/env bash
# Installs dependencies, builds tpm-ma from scratch and runs every test through ctest.
# Usage: deploy/test.sh [extra ctest args]   (BUILD_DIR=... to build elsewhere)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
build=${BUILD_DIR:-$root/build}

"$root/deploy/install-deps.sh"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build "$build" -j"$(nproc)"
# Tests start their own swtpm instances on free loopback ports, so they may run in parallel.
cd "$build"
ctest --output-on-failure -j"$(nproc)" --timeout 900 "$@"
