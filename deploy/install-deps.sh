#!/usr/bin/env bash
# Installs every Debian 12 package tpm-ma needs to build, test and run.
# Idempotent and non-interactive; run as root (CI and fresh machines).
set -euo pipefail

PACKAGES=(
  # toolchain
  build-essential cmake pkg-config clang-format
  # the libFuzzer build of tests/fuzz (deploy/fuzz.sh)
  clang-16 libclang-rt-16-dev
  # service and package libraries
  gsoap libgsoap-dev libboost-dev libboost-system-dev libssl-dev openssl
  libxml2-dev libxml2-utils libxmlsec1-dev xmlsec1 libsqlite3-dev sqlite3
  libtss2-dev zlib1g-dev
  # the PostgreSQL vault (storage/postgres/, libpq) and the throw-away clusters its tests
  # start (tests/support/postgres.h); the packaged cluster is not used by tpm-ma's tests
  postgresql libpq-dev
  # the load balancer of several instances (deploy/haproxy.cfg, deploy/ha-demo.sh); the
  # packaged service is not used by the demo, which runs its own haproxy
  haproxy
  # small helpers
  libcli11-dev libspdlog-dev libfmt-dev nlohmann-json3-dev libtomlplusplus-dev
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev
  swtpm swtpm-tools tpm2-tools tpm2-openssl
  # tests run one tpm2-abrmd per swtpm on a private D-Bus (tests/support/tabrmd.h,
  # deploy/lib/tabrmd.sh); real machines use /dev/tpmrm0
  tpm2-abrmd libtss2-tcti-tabrmd0 dbus
  python3-zeep python3-cryptography python3-lxml
  uuid-runtime
  # applications' PKCS#11 token on the MRK (client/lms/pkcs11), and the tests' ssh login
  libtpm2-pkcs11-1 libtpm2-pkcs11-tools opensc openssh-server openssh-client
  # the helpdesk console's templates (server/console/), and its browser test: headless
  # Chromium driven by Selenium, operator certificates in NSS databases (tests/console/)
  libkainjow-mustache-dev
  chromium chromium-driver python3-selenium libnss3-tools fonts-dejavu-core curl
  # code-size check (tests/style)
  universal-ctags
  # the Debian packages' test (deploy/package-test.sh; cpack uses dpkg-shlibdeps from
  # dpkg-dev, which build-essential brings)
  lintian
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages (${missing[*]}); run as root" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-deps: installed ${missing[*]}"
