# SPDX-License-Identifier: GPL-2.0-or-later
# Debian 12 packages (issue #14): `cpack -G DEB` in the build directory makes
#   tpm-ma-server  ma-server (/usr/sbin: a daemon only systemd and root start), ma-admin
#                  (/usr/bin: operators run it remotely as themselves), ma-server.service,
#                  the tpm-ma system user, /etc/tpm-ma and /var/lib/tpm-ma (maintainer scripts)
#   tpm-ma-lms     lms (/usr/bin), lms-backup.service + .timer, the tpm2-pkcs11 token helper
#                  (/usr/libexec/tpm-ma: where lms looks when it is not beside the binary)
# The install() rules below exist for these packages: the units in deploy/ name /usr/bin and
# /usr/sbin, so a `cmake --install` elsewhere than --prefix /usr needs its own units.
# deploy/package-test.sh builds and checks both (ctest label `package`).

# Relative destinations, so CPACK_PACKAGING_INSTALL_PREFIX (/usr) places them; units go to
# /usr/lib/systemd/system, which systemd, deb-systemd-helper and lintian all accept.
set(TPMMA_UNIT_DIR lib/systemd/system)
# `make install` and cpack's staging install build nothing first: otherwise they build `all`
# (every test and benchmark) to install three programs. Build ma-server, ma-admin and lms
# before cpack (deploy/package-test.sh does).
set(CMAKE_SKIP_INSTALL_ALL_DEPENDENCY ON)
set(TPMMA_PKG_DIR ${CMAKE_CURRENT_LIST_DIR}/../deploy/debian)
set(TPMMA_PKG_BUILD ${CMAKE_BINARY_DIR}/packaging)

install(TARGETS ma-server DESTINATION sbin COMPONENT server)
install(TARGETS ma-admin DESTINATION bin COMPONENT server)
install(FILES ${PROJECT_SOURCE_DIR}/deploy/ma-server.service DESTINATION ${TPMMA_UNIT_DIR}
        COMPONENT server)

install(TARGETS lms DESTINATION bin COMPONENT lms)
install(PROGRAMS ${PROJECT_SOURCE_DIR}/client/lms/pkcs11/tpmma-pkcs11-token
        DESTINATION libexec/tpm-ma COMPONENT lms)
install(FILES ${PROJECT_SOURCE_DIR}/deploy/lms-backup.service
              ${PROJECT_SOURCE_DIR}/deploy/lms-backup.timer
        DESTINATION ${TPMMA_UNIT_DIR} COMPONENT lms)

# Each package's /usr/share/doc/<pkg>: the machine-readable copyright file, the Debian
# changelog (gzip -9n: no name or time stamp, as lintian wants) and the guide the units'
# Documentation= names.
set(TPMMA_DEB_RELEASE 1)
set(TPMMA_DEB_VERSION ${PROJECT_VERSION}-${TPMMA_DEB_RELEASE})
file(MAKE_DIRECTORY ${TPMMA_PKG_BUILD})
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${TPMMA_PKG_DIR}/changelog.in)
foreach(pkg server lms)
  set(TPMMA_DEB_PACKAGE tpm-ma-${pkg})
  configure_file(${TPMMA_PKG_DIR}/changelog.in ${TPMMA_PKG_BUILD}/${pkg}/changelog.Debian @ONLY)
  execute_process(COMMAND gzip -9nkf ${TPMMA_PKG_BUILD}/${pkg}/changelog.Debian
                  COMMAND_ERROR_IS_FATAL ANY)
  install(FILES ${TPMMA_PKG_BUILD}/${pkg}/changelog.Debian.gz ${TPMMA_PKG_DIR}/copyright
                ${PROJECT_SOURCE_DIR}/docs/operations.md
          DESTINATION share/doc/tpm-ma-${pkg} COMPONENT ${pkg})
endforeach()

# --- CPack
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME tpm-ma)
set(CPACK_PACKAGE_VENDOR "tpm-ma")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "tpm-ma maintainers <maintainers@users.noreply.h-seed-926ec0ae.example>")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_PACKAGE_DIRECTORY ${CMAKE_BINARY_DIR}/packages)
# RelWithDebInfo binaries carry DWARF; a package ships them stripped (lintian: error otherwise).
set(CPACK_STRIP_FILES ON)
# Only our two components: nothing else in the tree has install() rules, but if a
# dependency's CMake code ever adds some, they stay out of the packages.
set(CPACK_COMPONENTS_ALL server lms)
set(CPACK_DEB_COMPONENT_INSTALL ON)

set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_RELEASE ${TPMMA_DEB_RELEASE})
set(CPACK_DEBIAN_PACKAGE_SOURCE tpm-ma)
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# Library dependencies from what the binaries link (dpkg-shlibdeps); run-time programs below.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# Maintainer scripts 0755, conffiles and md5sums 0644, whatever the source tree's modes.
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)

set(CPACK_DEBIAN_SERVER_PACKAGE_NAME tpm-ma-server)
# adduser: postinst makes the tpm-ma user. ma-server and ma-admin exec nothing else (the TPM
# custody goes through the linked ESAPI libraries, not tpm2-tools).
set(CPACK_DEBIAN_SERVER_PACKAGE_DEPENDS "adduser")
set(CPACK_DEBIAN_SERVER_PACKAGE_SUGGESTS "sqlite3, tpm2-tools")
set(CPACK_DEBIAN_SERVER_PACKAGE_CONTROL_EXTRA
    ${TPMMA_PKG_DIR}/server/postinst ${TPMMA_PKG_DIR}/server/prerm ${TPMMA_PKG_DIR}/server/postrm)
# First line: the synopsis; CPack indents the rest and turns the empty line into " .".
set(CPACK_COMPONENT_SERVER_DESCRIPTION
    "Migration Authority for TPM 2.0 keys (ma-server, ma-admin)
tpm-ma backs up and migrates migratable TPM 2.0 keys: endpoints duplicate
their Migratable Root Key to the Migration Authority and upload signed
Migration Packages; after a motherboard swap a helpdesk approval lets the
MA re-wrap them for the new TPM.

This package holds the HTTPS/SOAP server, its administration tool and a
hardened systemd unit that runs it as the tpm-ma system user.")

set(CPACK_DEBIAN_LMS_PACKAGE_NAME tpm-ma-lms)
# python3: the tpm2-pkcs11 token helper is a Python program; it also needs tpm2-pkcs11's
# Python tools and tpm2-tools, but only for the PKCS#11 token, so those are recommended.
set(CPACK_DEBIAN_LMS_PACKAGE_DEPENDS "python3")
set(CPACK_DEBIAN_LMS_PACKAGE_RECOMMENDS "libtpm2-pkcs11-1, libtpm2-pkcs11-tools, tpm2-tools")
set(CPACK_DEBIAN_LMS_PACKAGE_SUGGESTS "tpm2-abrmd, tpm2-openssl")
set(CPACK_DEBIAN_LMS_PACKAGE_CONTROL_EXTRA
    ${TPMMA_PKG_DIR}/lms/postinst ${TPMMA_PKG_DIR}/lms/prerm ${TPMMA_PKG_DIR}/lms/postrm)
set(CPACK_COMPONENT_LMS_DESCRIPTION
    "TPM 2.0 key backup agent for a tpm-ma Migration Authority (lms)
lms, the Local Migration Service, keeps migratable TPM 2.0 keys under a
Migratable Root Key and backs them up to a tpm-ma Migration Authority;
after a motherboard swap it restores them into the new TPM, unchanged.

This package holds lms, a systemd timer that runs its backup hourly, and
the helper that makes a tpm2-pkcs11 token on the Migratable Root Key.")

include(CPack)

# Builds both packages and checks contents, control fields, maintainer scripts and lintian;
# skipped (77) without dpkg-deb or lintian. Not in a sanitizer build: nobody ships those.
if(NOT TPMMA_SANITIZE)
  add_test(NAME package_test COMMAND ${PROJECT_SOURCE_DIR}/deploy/package-test.sh ${CMAKE_BINARY_DIR})
  set_tests_properties(package_test PROPERTIES LABELS package TIMEOUT 600 SKIP_RETURN_CODE 77)
endif()
