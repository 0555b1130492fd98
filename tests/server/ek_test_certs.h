// SPDX-License-Identifier: GPL-2.0-or-later
// EK certificate chains made with the OpenSSL API for the EK trust tests: CAs without a path
// length limit (server/pki.h's CA profile has pathlen:0, as the MA's own CA should), leaves
// for any public key, validity in days from now (negative: expired).
#pragma once

#include <openssl/x509v3.h>

#include <string>

#include <gtest/gtest.h>

#include "common/openssl.h"
#include "server/pki.h"
#include "tests/support/testutil.h"

namespace tpmma::server {

struct TestCa {
  EvpPkeyPtr key;
  X509Ptr cert;
  std::string file;  // PEM
};

inline X509Ptr TestCert(const std::string& cn, EVP_PKEY* subject_key, const TestCa* issuer,
                        EVP_PKEY* self_key, bool ca, int days) {
  X509Ptr c(X509_new());
  static long serial = 1000;
  X509_set_version(c.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(c.get()), ++serial);
  X509_NAME* name = X509_get_subject_name(c.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_set_issuer_name(c.get(), issuer ? X509_get_subject_name(issuer->cert.get()) : name);
  X509_gmtime_adj(X509_getm_notBefore(c.get()), days < 0 ? 86400L * (days - 1) : -300);
  X509_gmtime_adj(X509_getm_notAfter(c.get()), 86400L * days);
  X509_set_pubkey(c.get(), subject_key);
  X509V3_CTX v3;
  X509V3_set_ctx(&v3, issuer ? issuer->cert.get() : c.get(), c.get(), nullptr, nullptr, 0);
  const char* bc = ca ? "critical,CA:TRUE" : "critical,CA:FALSE";
  const char* ku = ca ? "critical,keyCertSign,cRLSign" : "critical,keyEncipherment";
  for (auto [nid, value] : {std::pair{NID_basic_constraints, bc}, std::pair{NID_key_usage, ku}}) {
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &v3, nid, value);
    X509_add_ext(c.get(), ext, -1);
    X509_EXTENSION_free(ext);
  }
  EXPECT_GT(X509_sign(c.get(), issuer ? issuer->key.get() : self_key, EVP_sha256()), 0);
  return c;
}

// A CA (self-signed when issuer is null) written to DIR/<cn>.pem.
inline TestCa MakeTestCa(const testing::TempDir& dir, const std::string& cn, const TestCa* issuer,
                         int days = 30) {
  TestCa out;
  out.key = *GenerateKey(KeyType::kEcP256);
  out.cert = TestCert(cn, out.key.get(), issuer, out.key.get(), true, days);
  out.file = dir.File(cn + ".pem");
  testing::Spit(out.file, *CertificateToPem(out.cert.get()));
  return out;
}

// A leaf (an EK certificate) for `key` issued by `issuer`, written to DIR/<cn>.pem.
inline TestCa MakeTestLeaf(const testing::TempDir& dir, const std::string& cn, EVP_PKEY* key,
                           const TestCa& issuer) {
  TestCa out;
  out.cert = TestCert(cn, key, &issuer, nullptr, false, 30);
  out.file = dir.File(cn + ".pem");
  testing::Spit(out.file, *CertificateToPem(out.cert.get()));
  return out;
}

}  // namespace tpmma::server
