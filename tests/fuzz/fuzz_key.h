// SPDX-License-Identifier: GPL-2.0-or-later
// The package target's signing key: a throw-away P-256 test key, public in this tree on
// purpose, so that the seed packages in corpus/package verify and fuzzing reaches ReadModel.
#pragma once

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "common/openssl.h"

namespace tpmma::fuzz {

inline EVP_PKEY* PackageKey() {
  static EvpPkeyPtr key = [] {
    static const char kPem[] =
        "-----BEGIN PRIVATE KEY-----\n"
        "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgtOFt5ATE6zWGgetA\n"
        "OhVOfGxFfkwzmK0ZIU7aSvvnBP6hRANCAARmnLJhHvkVxpAr23BSlHhkNhZ5Oy95\n"
        "42KKlaxJ/WV0ofGp5cOxkxA+wQrZPnP+rUKRBvV13zdRehj9sAFSOkg9\n"
        "-----END PRIVATE KEY-----\n";
    BioPtr bio(BIO_new_mem_buf(kPem, -1));
    return EvpPkeyPtr(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  }();
  return key.get();
}

}  // namespace tpmma::fuzz
