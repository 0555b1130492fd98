// SPDX-License-Identifier: GPL-2.0-or-later
#include "tpm/tss2_pem.h"

#include <openssl/asn1.h>
#include <openssl/asn1t.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/pem.h>

#include <algorithm>
#include <climits>
#include <memory>
#include <string>

#include <tss2/tss2_tpm2_types.h>

#include "common/openssl.h"
#include "tpm/marshal.h"

namespace tpmma::tpm {
namespace {

// The ASN.1 type, as tpm2-openssl (src/tpm2-provider-pkey.c) and tpm2-tss-engine define it.
// emptyAuth is an ASN1_BOOLEAN (an int): -1 when absent, otherwise the decoded content byte.
struct TSSPRIVKEY {
  ASN1_OBJECT* type;
  ASN1_BOOLEAN emptyAuth;
  ASN1_INTEGER* parent;
  ASN1_OCTET_STRING* pubkey;
  ASN1_OCTET_STRING* privkey;
};

// OpenSSL's template macros, as tpm2-openssl writes them. They compile cleanly as C++ with
// g++ 12 -Wall -Wextra -Werror (checked; also under -DTPMMA_SANITIZE=ON), so no pragma.
// clang-format off
ASN1_SEQUENCE(TSSPRIVKEY) = {
  ASN1_SIMPLE(TSSPRIVKEY, type, ASN1_OBJECT),
  ASN1_EXP_OPT(TSSPRIVKEY, emptyAuth, ASN1_BOOLEAN, 0),
  ASN1_SIMPLE(TSSPRIVKEY, parent, ASN1_INTEGER),
  ASN1_SIMPLE(TSSPRIVKEY, pubkey, ASN1_OCTET_STRING),
  ASN1_SIMPLE(TSSPRIVKEY, privkey, ASN1_OCTET_STRING)
} ASN1_SEQUENCE_END(TSSPRIVKEY);
// clang-format on

IMPLEMENT_ASN1_FUNCTIONS(TSSPRIVKEY);

using TssPrivKeyPtr = std::unique_ptr<TSSPRIVKEY, OpensslDeleter<TSSPRIVKEY, TSSPRIVKEY_free>>;

// What PEM_read_bio and i2d allocate with OPENSSL_malloc (OPENSSL_free is a macro).
void FreeOpensslBytes(unsigned char* p) {
  OPENSSL_free(p);
}
void FreeOpensslChars(char* p) {
  OPENSSL_free(p);
}
using OpensslBytesPtr =
    std::unique_ptr<unsigned char, OpensslDeleter<unsigned char, FreeOpensslBytes>>;
using OpensslCharsPtr = std::unique_ptr<char, OpensslDeleter<char, FreeOpensslChars>>;

constexpr const char* kPemName = "TSS2 PRIVATE KEY";
constexpr std::string_view kOidLoadable = "2.23.133.10.1.3";
constexpr std::string_view kOidImportable = "2.23.133.10.1.4";
constexpr std::string_view kOidSealed = "2.23.133.10.1.5";
// X.690 11.1: a DER TRUE is 0xFF. Readers (tpm2-openssl, tpm2-tss-engine) take any non-zero.
constexpr ASN1_BOOLEAN kDerTrue = 0xFF;

Status Invalid(std::string message) {
  return Status(Code::kInvalidArgument, "TSS2 PRIVATE KEY: " + std::move(message));
}

uint16_t Prefix(ByteView b) {
  return static_cast<uint16_t>((b[0] << 8) | b[1]);
}

// A TPM2B as stored in the file: the 2-byte big-endian size, then exactly that many bytes,
// non-empty, within `limit` bytes in all; and what tss2-mu makes of it.
Status CheckTpm2b(ByteView b, const char* field, const char* type, size_t limit) {
  const std::string what = std::string(field) + " (" + type + ")";
  if (b.empty()) return Invalid(what + " is empty");
  if (b.size() > limit) {
    return Invalid(what + " is " + std::to_string(b.size()) + " bytes, more than the " +
                   std::to_string(limit) + " allowed");
  }
  if (b.size() < 2) return Invalid(what + " is shorter than its 2-byte size prefix");
  const size_t inner = Prefix(b);
  if (inner == 0) return Invalid(what + " has size 0");
  if (inner != b.size() - 2) {
    return Invalid(what + " says " + std::to_string(inner) + " bytes but holds " +
                   std::to_string(b.size() - 2) + " after its size prefix");
  }
  return Status::Ok();
}

Status CheckPublic(ByteView b) {
  TPMMA_RETURN_IF_ERROR(CheckTpm2b(b, "pubkey", "TPM2B_PUBLIC", kMaxTss2PemPublic));
  auto pub = Unmarshal<TPM2B_PUBLIC>(b);
  if (!pub) return Invalid("pubkey is not a well-formed TPM2B_PUBLIC: " + pub.error().message());
  return Status::Ok();
}

Status CheckPrivate(ByteView b) {
  TPMMA_RETURN_IF_ERROR(CheckTpm2b(b, "privkey", "TPM2B_PRIVATE", kMaxTss2PemPrivate));
  auto priv = Unmarshal<TPM2B_PRIVATE>(b);
  if (!priv) {
    return Invalid("privkey is not a well-formed TPM2B_PRIVATE: " + priv.error().message());
  }
  return Status::Ok();
}

Status CheckFields(const Tss2PrivateKey& key) {
  if (key.parent == 0) return Invalid("parent handle 0 is not a TPM handle");
  TPMMA_RETURN_IF_ERROR(CheckPublic(key.public_area));
  return CheckPrivate(key.private_area);
}

std::string OidText(const ASN1_OBJECT* obj) {
  char buf[128];
  const int n = OBJ_obj2txt(buf, sizeof(buf), obj, 1);
  if (n <= 0) return "(unprintable)";
  if (static_cast<size_t>(n) >= sizeof(buf)) return std::string(buf) + "...";
  return std::string(buf, static_cast<size_t>(n));
}

Status CheckType(const ASN1_OBJECT* obj) {
  const std::string oid = OidText(obj);
  if (oid == kOidLoadable) return Status::Ok();
  if (oid == kOidImportable) {
    return Invalid("type " + oid +
                   " is an importable key (needs TPM2_Import first); only loadable keys "
                   "(2.23.133.10.1.3) are accepted");
  }
  if (oid == kOidSealed) {
    return Invalid("type " + oid +
                   " is a sealed data object, not a key; only loadable keys (2.23.133.10.1.3) "
                   "are accepted");
  }
  return Invalid("type " + oid + " is not a TPM key type; expected loadable key 2.23.133.10.1.3");
}

Result<uint32_t> ParentHandle(const ASN1_INTEGER* parent) {
  if (ASN1_STRING_type(parent) == V_ASN1_NEG_INTEGER) {
    return Error(Invalid("parent is a negative INTEGER, not a TPM handle"));
  }
  uint64_t v = 0;
  if (ASN1_INTEGER_get_uint64(&v, parent) != 1 || v > UINT32_MAX) {
    ERR_clear_error();
    return Error(Invalid("parent does not fit a 32-bit TPM handle"));
  }
  if (v == 0) return Error(Invalid("parent handle 0 is not a TPM handle"));
  return static_cast<uint32_t>(v);
}

Bytes OctetBytes(const ASN1_OCTET_STRING* s) {
  const unsigned char* p = ASN1_STRING_get0_data(s);
  return Bytes(p, p + ASN1_STRING_length(s));
}

Status SetOctets(ASN1_OCTET_STRING* s, const Bytes& b) {
  if (ASN1_OCTET_STRING_set(s, b.data(), static_cast<int>(b.size())) != 1) {
    return OpensslError("ASN1_OCTET_STRING_set");
  }
  return Status::Ok();
}

// DER of one TPMKey; the caller has checked the fields.
Result<Bytes> ToDer(const Tss2PrivateKey& key) {
  TssPrivKeyPtr tpk(TSSPRIVKEY_new());
  if (!tpk) return Error(OpensslError("TSSPRIVKEY_new"));
  tpk->type = OBJ_txt2obj(std::string(kOidLoadable).c_str(), 1);
  if (tpk->type == nullptr) return Error(OpensslError("OBJ_txt2obj"));
  tpk->emptyAuth = key.empty_auth ? kDerTrue : 0;
  if (ASN1_INTEGER_set_uint64(tpk->parent, key.parent) != 1) {
    return Error(OpensslError("ASN1_INTEGER_set_uint64"));
  }
  TPMMA_RETURN_IF_ERROR(SetOctets(tpk->pubkey, key.public_area));
  TPMMA_RETURN_IF_ERROR(SetOctets(tpk->privkey, key.private_area));
  unsigned char* der = nullptr;
  const int len = i2d_TSSPRIVKEY(tpk.get(), &der);
  OpensslBytesPtr owned(der);
  if (len <= 0) return Error(OpensslError("i2d_TSSPRIVKEY"));
  return Bytes(der, der + len);
}

// One DER TPMKey, nothing before or after it, encoded canonically.
Result<Tss2PrivateKey> FromDer(ByteView der) {
  const unsigned char* p = der.data();
  TssPrivKeyPtr tpk(d2i_TSSPRIVKEY(nullptr, &p, static_cast<long>(der.size())));
  if (!tpk) {
    ERR_clear_error();
    return Error(
        Invalid("the PEM body is not a DER TPMKey SEQUENCE (OID, [0] BOOLEAN, INTEGER, "
                "OCTET STRING, OCTET STRING)"));
  }
  const size_t used = static_cast<size_t>(p - der.data());
  if (used != der.size()) {
    return Error(Invalid(std::to_string(der.size() - used) +
                         " bytes of trailing data after the TPMKey SEQUENCE"));
  }
  TPMMA_RETURN_IF_ERROR(CheckType(tpk->type));
  TPMMA_ASSIGN_OR_RETURN(const uint32_t parent, ParentHandle(tpk->parent));
  Tss2PrivateKey key;
  key.parent = parent;
  key.empty_auth = tpk->emptyAuth != -1 && tpk->emptyAuth != 0;
  key.public_area = OctetBytes(tpk->pubkey);
  key.private_area = OctetBytes(tpk->privkey);
  TPMMA_RETURN_IF_ERROR(CheckPublic(key.public_area));
  TPMMA_RETURN_IF_ERROR(CheckPrivate(key.private_area));
  // OpenSSL's decoder also takes some BER (long-form lengths, indefinite lengths); a file that
  // does not re-encode to the same bytes is not DER.
  unsigned char* again = nullptr;
  const int len = i2d_TSSPRIVKEY(tpk.get(), &again);
  OpensslBytesPtr owned(again);
  if (len <= 0) return Error(OpensslError("i2d_TSSPRIVKEY"));
  if (static_cast<size_t>(len) != der.size() || !std::equal(der.begin(), der.end(), again)) {
    return Error(Invalid("the TPMKey is BER, not DER (it does not re-encode to the same bytes)"));
  }
  return key;
}

}  // namespace

Result<std::string> EncodeTss2PrivateKeyPem(const Tss2PrivateKey& key) {
  TPMMA_RETURN_IF_ERROR(CheckFields(key));
  TPMMA_ASSIGN_OR_RETURN(const Bytes der, ToDer(key));
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio) return Error(OpensslError("BIO_new"));
  if (PEM_write_bio(bio.get(), kPemName, "", der.data(), static_cast<long>(der.size())) <= 0) {
    return Error(OpensslError("PEM_write_bio"));
  }
  char* text = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &text);
  if (n <= 0 || text == nullptr) return Error(OpensslError("BIO_get_mem_data"));
  return std::string(text, static_cast<size_t>(n));
}

Result<Tss2PrivateKey> DecodeTss2PrivateKeyPem(std::string_view pem) {
  if (pem.size() > static_cast<size_t>(INT_MAX)) return Error(Invalid("input is too large"));
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return Error(OpensslError("BIO_new_mem_buf"));
  char* name = nullptr;
  char* header = nullptr;
  unsigned char* data = nullptr;
  long len = 0;
  const int ok = PEM_read_bio(bio.get(), &name, &header, &data, &len);
  OpensslCharsPtr owned_name(name), owned_header(header);
  OpensslBytesPtr owned_data(data);
  if (ok != 1) {
    ERR_clear_error();
    return Error(Invalid("not PEM: no complete '-----BEGIN " + std::string(kPemName) +
                         "-----' block with valid base64 was found"));
  }
  if (std::string_view(name) != kPemName) {
    return Error(
        Invalid("expected a " + std::string(kPemName) + " PEM, found '" + std::string(name) + "'"));
  }
  if (header != nullptr && header[0] != '\0') {
    return Error(
        Invalid("the PEM block has headers (encrypted PEM?); a TSS2 PRIVATE KEY has none"));
  }
  if (len <= 0) return Error(Invalid("the PEM block is empty"));
  return FromDer(ByteView(data, static_cast<size_t>(len)));
}

}  // namespace tpmma::tpm
