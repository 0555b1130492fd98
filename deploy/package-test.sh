#!/usr/bin/env bash
# deploy/package-test.sh BUILD_DIR: builds the Debian packages from BUILD_DIR (`cpack -G DEB`,
# cmake/packaging.cmake) into a temporary directory and checks them: the exact file list
# (binaries, units, docs; nothing from the build tree, no test programs), owners and modes,
# no build or source paths inside the files, the control fields, the maintainer scripts
# (`sh -n`, modes), lintian (any E: fails; W: only those accepted below), and an unpack with
# `dpkg --root` into a throw-away root. ctest: package_test (label package).
#
# The maintainer scripts are not run for real: `dpkg --root` runs them chrooted into the
# throw-away root, which has no /bin/sh, adduser or systemd, and running them unchrooted
# would change this machine. They run dry instead: PATH holds only stubs that log their
# arguments (adduser, deb-systemd-helper, ...), so every dpkg action must exit 0 under
# `sh -eu` and make the expected calls, and an unexpected command fails as not found.
#
# Exit 0 all checks pass, 1 a check failed, 77 (ctest: skipped) a tool is missing.
set -euo pipefail

build=${1:?usage: package-test.sh BUILD_DIR}
build=$(cd "$build" && pwd)
source_dir=$(cd "$(dirname "$0")/.." && pwd)

for tool in cpack dpkg-deb dpkg-shlibdeps dpkg lintian; do
  if ! command -v "$tool" >/dev/null; then
    echo "package-test: SKIP: $tool is not installed (deploy/install-deps.sh installs it)"
    exit 77
  fi
done

# lintian warnings accepted, each with the reason. Anything else at W: fails the test.
accepted_warnings=(
  # ma-server, ma-admin and lms document themselves with --help (every subcommand too) and
  # docs/operations.md; no man pages are written yet.
  no-manual-page
  # The changelog would close the Debian ITP bug of a first upload to Debian; these packages
  # are built by the project for its users, not uploaded, so there is no such bug.
  initial-upload-closes-no-bugs
)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
fail() {
  echo "package-test: FAIL: $*" >&2
  failures=$((failures + 1))
}

# cpack installs what the install() rules name without building it first
# (CMAKE_SKIP_INSTALL_ALL_DEPENDENCY), so build exactly that; a no-op when up to date.
cmake --build "$build" --target ma-server ma-admin lms >"$work/build.log" 2>&1 ||
  { cat "$work/build.log" >&2; exit 1; }
(cd "$build" && cpack -G DEB -B "$work/out") >"$work/cpack.log" 2>&1 ||
  { cat "$work/cpack.log" >&2; exit 1; }

version=$(sed -n 's/^set(CPACK_PACKAGE_VERSION "\(.*\)")$/\1/p' "$build/CPackConfig.cmake")
[ -n "$version" ] || { echo "package-test: no CPACK_PACKAGE_VERSION in $build/CPackConfig.cmake" >&2; exit 1; }
arch=$(dpkg --print-architecture)

# --- What each package holds: exactly these files (directories aside).
declare -A want
want[tpm-ma-server]="./usr/bin/ma-admin
./usr/lib/systemd/system/ma-server.service
./usr/sbin/ma-server
./usr/share/doc/tpm-ma-server/changelog.Debian.gz
./usr/share/doc/tpm-ma-server/copyright
./usr/share/doc/tpm-ma-server/operations.md"
want[tpm-ma-lms]="./usr/bin/lms
./usr/lib/systemd/system/lms-backup.service
./usr/lib/systemd/system/lms-backup.timer
./usr/libexec/tpm-ma/tpmma-pkcs11-token
./usr/share/doc/tpm-ma-lms/changelog.Debian.gz
./usr/share/doc/tpm-ma-lms/copyright
./usr/share/doc/tpm-ma-lms/operations.md"

check_contents() {
  local pkg=$1 deb=$2
  dpkg-deb -c "$deb" >"$work/$pkg.list"
  # tar -tv columns: mode owner/group size date time path
  awk '$1 !~ /^d/ {print $6}' "$work/$pkg.list" | sort >"$work/$pkg.files"
  if ! diff -u <(echo "${want[$pkg]}" | sort) "$work/$pkg.files" >"$work/$pkg.diff"; then
    fail "$pkg: files differ from the expected list:"
    cat "$work/$pkg.diff" >&2
  fi
  awk '$2 != "root/root" {print}' "$work/$pkg.list" | grep . >&2 && fail "$pkg: files not owned by root"
  awk '$6 ~ /\/(s?bin|libexec\/tpm-ma)\/[^/]+$/ && $1 != "-rwxr-xr-x" {print}' "$work/$pkg.list" |
    grep . >&2 && fail "$pkg: a program is not 0755"
  awk '$6 ~ /\/(systemd\/system|doc\/[^/]+)\/[^/]+$/ && $1 != "-rw-r--r--" {print}' "$work/$pkg.list" |
    grep . >&2 && fail "$pkg: a unit or doc file is not 0644"

  mkdir -p "$work/x/$pkg"
  dpkg-deb -x "$deb" "$work/x/$pkg"
  # A build or source tree path in a file means the package depends on this machine's tree.
  local hits
  hits=$(grep -rlaF -e "$build" -e "$source_dir" "$work/x/$pkg" || true)
  [ -z "$hits" ] || fail "$pkg: build or source paths inside: $hits"
  for elf in "$work/x/$pkg"/usr/bin/* "$work/x/$pkg"/usr/sbin/*; do
    [ -e "$elf" ] || continue
    if readelf -S "$elf" | grep -q '\.debug_info'; then fail "$pkg: $(basename "$elf") not stripped"; fi
  done
  if grep -rlaE '/usr/local/|/var/lib/tpm-ma/ma/' "$work/x/$pkg/usr/lib/systemd/system" | grep .; then
    fail "$pkg: a unit names /usr/local or the old /var/lib/tpm-ma/ma"
  fi
}

# --- The units as systemd reads them: any complaint but the one about our programs not
# being installed on this machine fails (an unknown key, a bad value, a missing section).
check_units() {
  if ! command -v systemd-analyze >/dev/null; then
    echo "package-test: systemd-analyze missing; units not verified"
    return
  fi
  local units=("$work"/x/*/usr/lib/systemd/system/*)
  SYSTEMD_LOG_COLOR=0 systemd-analyze verify "${units[@]}" >"$work/verify.log" 2>&1 || true
  if grep -vE 'Command /usr/s?bin/(ma-server|lms) is not executable' "$work/verify.log" | grep .; then
    fail "systemd-analyze verify complains about the units"
  fi
}

# --- Control fields: the dependencies come from dpkg-shlibdeps (libraries) and the list in
# cmake/packaging.cmake (programs); a -dev package or an empty Depends is a packaging bug.
check_control() {
  local pkg=$1 deb=$2; shift 2
  local field value
  for field in Package Version Architecture Maintainer Section Priority Description Depends; do
    value=$(dpkg-deb -f "$deb" "$field")
    [ -n "$value" ] || fail "$pkg: control field $field is empty"
  done
  [ "$(dpkg-deb -f "$deb" Package)" = "$pkg" ] || fail "$pkg: Package field"
  [ "$(dpkg-deb -f "$deb" Version)" = "$version-1" ] || fail "$pkg: Version is not $version-1"
  [ "$(dpkg-deb -f "$deb" Architecture)" = "$arch" ] || fail "$pkg: Architecture is not $arch"
  local depends
  depends=$(dpkg-deb -f "$deb" Depends)
  echo "package-test: $pkg Depends: $depends"
  if echo "$depends" | tr ',' '\n' | grep -E -e '-dev( |$)' -e 'swtpm' -e 'gtest|gmock|benchmark'; then
    fail "$pkg: Depends names a build or test package"
  fi
  local need
  for need in "$@"; do
    echo "$depends" | tr ',' '\n' | grep -qE "^ ?$need( |$)" || fail "$pkg: Depends lacks $need"
  done
}

# --- Maintainer scripts: POSIX sh that parses, 0755, debhelper-style guards.
check_scripts() {
  local pkg=$1 deb=$2 unit=$3
  local ctl=$work/ctl/$pkg s
  mkdir -p "$ctl"
  dpkg-deb -e "$deb" "$ctl"
  for s in postinst prerm postrm; do
    if [ ! -f "$ctl/$s" ]; then fail "$pkg: no $s"; continue; fi
    sh -n "$ctl/$s" || fail "$pkg: $s does not parse"
    [ "$(stat -c %a "$ctl/$s")" = 755 ] || fail "$pkg: $s is not 0755"
    head -1 "$ctl/$s" | grep -qx '#!/bin/sh' || fail "$pkg: $s is not #!/bin/sh"
    grep -q "'$unit'" "$ctl/$s" || fail "$pkg: $s does not handle $unit"
  done
  grep -q 'deb-systemd-helper enable' "$ctl/postinst" || fail "$pkg: postinst enables nothing"
  grep -q 'deb-systemd-invoke stop' "$ctl/prerm" || fail "$pkg: prerm stops nothing"
  grep -q 'deb-systemd-helper purge' "$ctl/postrm" || fail "$pkg: postrm purges nothing"
  [ -f "$ctl/md5sums" ] || fail "$pkg: no md5sums"
}

# --- The maintainer scripts dry, for each action dpkg calls them with (see the header).
run_dry() {
  local script=$1; shift
  : >"$work/calls.log"
  if ! PATH=$work/stubs /bin/sh -eu "$script" "$@" >"$work/dry.out" 2>&1; then
    fail "$(basename "$(dirname "$script")")/$(basename "$script") $* failed dry:"
    cat "$work/dry.out" >&2
  fi
}
expect_call() {
  grep -qxF "$1" "$work/calls.log" || { fail "$2: no call \`$1\`:"; cat "$work/calls.log" >&2; }
}
check_scripts_dry() {
  local c
  mkdir -p "$work/stubs"
  for c in adduser install deb-systemd-helper deb-systemd-invoke systemctl rmdir; do
    printf '#!/bin/sh\necho "%s $*" >>"%s"\n' "$c" "$work/calls.log" >"$work/stubs/$c"
  done
  # getent finds no tpm-ma user (exit 2), so postinst makes it.
  printf '#!/bin/sh\necho "getent $*" >>"%s"\nexit 2\n' "$work/calls.log" >"$work/stubs/getent"
  chmod 0755 "$work/stubs"/*

  local srv=$work/ctl/tpm-ma-server lms=$work/ctl/tpm-ma-lms
  run_dry "$srv/postinst" configure
  expect_call "adduser --system --group --quiet --home /var/lib/tpm-ma --no-create-home --shell /usr/sbin/nologin --gecos tpm-ma Migration Authority tpm-ma" "server postinst configure"
  expect_call "deb-systemd-helper enable ma-server.service" "server postinst configure"
  if [ ! -d /var/lib/tpm-ma ]; then
    expect_call "install -d -o tpm-ma -g tpm-ma -m 0700 /var/lib/tpm-ma" "server postinst configure"
  fi
  if [ ! -d /etc/tpm-ma ]; then
    expect_call "install -d -o root -g tpm-ma -m 0750 /etc/tpm-ma" "server postinst configure"
  fi
  run_dry "$srv/postinst" configure 0.0.9-1
  run_dry "$srv/postinst" abort-upgrade 0.2.0-1
  run_dry "$srv/prerm" remove
  run_dry "$srv/prerm" upgrade 0.2.0-1
  run_dry "$srv/postrm" remove
  expect_call "deb-systemd-helper mask ma-server.service" "server postrm remove"
  run_dry "$srv/postrm" purge
  expect_call "deb-systemd-helper purge ma-server.service" "server postrm purge"
  grep -q '^rm ' "$work/calls.log" && fail "server postrm purge deletes files"
  run_dry "$srv/postrm" upgrade 0.2.0-1

  run_dry "$lms/postinst" configure
  expect_call "deb-systemd-helper enable lms-backup.timer" "lms postinst configure"
  run_dry "$lms/postinst" configure 0.0.9-1
  run_dry "$lms/prerm" remove
  run_dry "$lms/postrm" remove
  expect_call "deb-systemd-helper mask lms-backup.timer" "lms postrm remove"
  run_dry "$lms/postrm" purge
  expect_call "deb-systemd-helper purge lms-backup.timer" "lms postrm purge"
  echo "package-test: maintainer scripts ran dry for configure, upgrade, remove, purge"
}

# --- lintian: errors fail; warnings fail unless accepted above (so a new one is seen).
check_lintian() {
  local pkg=$1 deb=$2
  lintian --no-cfg --display-level '>=warning' "$deb" >"$work/$pkg.lintian" 2>&1 || true
  echo "package-test: lintian $pkg: $(grep -c '^E:' "$work/$pkg.lintian" || true) E," \
       "$(grep -c '^W:' "$work/$pkg.lintian" || true) W"
  sed 's/^/  /' "$work/$pkg.lintian"
  grep -q '^E:' "$work/$pkg.lintian" && fail "$pkg: lintian errors"
  local tag
  while read -r tag; do
    printf '%s\n' "${accepted_warnings[@]}" | grep -qx "$tag" || fail "$pkg: lintian warning $tag"
  done < <(sed -n 's/^W: [^:]*: \([^ ]*\).*/\1/p' "$work/$pkg.lintian" | sort -u)
}

# --- Unpack into a throw-away root: dpkg's own checks of the archive, its file list and
# conffiles. --unpack runs no preinst (there is none) and no postinst.
check_unpack() {
  local root=$work/root
  mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates"
  : >"$root/var/lib/dpkg/status"
  # No dependencies in an empty root, so --force-depends; nothing else is forced.
  if ! dpkg --root="$root" --force-depends --unpack "$@" >"$work/unpack.log" 2>&1; then
    fail "dpkg --root --unpack failed:"
    cat "$work/unpack.log" >&2
    return
  fi
  [ -x "$root/usr/sbin/ma-server" ] || fail "unpack: no /usr/sbin/ma-server in the root"
  [ -x "$root/usr/bin/lms" ] || fail "unpack: no /usr/bin/lms in the root"
  dpkg --root="$root" -L tpm-ma-server | grep -qx /usr/bin/ma-admin || fail "unpack: dpkg -L"
  echo "package-test: unpacked both packages into a throw-away root"
}

server_deb=$work/out/tpm-ma-server_${version}-1_${arch}.deb
lms_deb=$work/out/tpm-ma-lms_${version}-1_${arch}.deb
for deb in "$server_deb" "$lms_deb"; do
  [ -f "$deb" ] || { echo "package-test: FAIL: cpack made no $(basename "$deb"):" >&2; ls "$work/out" >&2; exit 1; }
done

check_contents tpm-ma-server "$server_deb"
check_contents tpm-ma-lms "$lms_deb"
# libpq5 joins by itself (dpkg-shlibdeps) once ma-server links the PostgreSQL vault.
check_units
check_control tpm-ma-server "$server_deb" libc6 libssl3 libsqlite3-0 libtss2-esys-3.0.2-0 adduser
check_control tpm-ma-lms "$lms_deb" libc6 libssl3 libtss2-esys-3.0.2-0 python3
check_scripts tpm-ma-server "$server_deb" ma-server.service
check_scripts tpm-ma-lms "$lms_deb" lms-backup.timer
check_scripts_dry
check_lintian tpm-ma-server "$server_deb"
check_lintian tpm-ma-lms "$lms_deb"
check_unpack "$server_deb" "$lms_deb"

if [ "$failures" -ne 0 ]; then
  echo "package-test: $failures check(s) failed" >&2
  exit 1
fi
echo "package-test: OK ($(basename "$server_deb"), $(basename "$lms_deb"))"
