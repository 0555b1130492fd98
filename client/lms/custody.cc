// SPDX-License-Identifier: GPL-2.0-or-later
#include "client/lms/custody.h"

#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>

#include <cctype>

#include "common/openssl.h"

namespace tpmma::lms {

namespace {

constexpr char kAlphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";  // Crockford base32
constexpr size_t kCodeChars = 32;                                 // 160 bits
constexpr size_t kGroup = 4;
constexpr size_t kSaltBytes = 16;
constexpr uint64_t kScryptN = 1 << 15;
constexpr uint32_t kScryptR = 8;
constexpr uint32_t kScryptP = 1;
constexpr uint64_t kScryptMaxMem = 64ull << 20;

int DecodeChar(char c) {
  c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (c == 'O') c = '0';
  if (c == 'I' || c == 'L') c = '1';
  for (int i = 0; i < 32; ++i) {
    if (kAlphabet[i] == c) return i;
  }
  return -1;
}

Result<SecureBytes> Scrypt(std::string_view code, const InnerKeyCustody& c, size_t out_len) {
  if (c.kdf != "scrypt") {
    return Error(Code::kUnsupported, "recovery-code KDF '" + c.kdf + "' is not supported");
  }
  if (c.n > (1u << 20) || c.r > 32 || c.p > 16) {
    return Error(Code::kLimitExceeded, "scrypt parameters are larger than lms accepts");
  }
  SecureBytes out(out_len);
  if (EVP_PBE_scrypt(code.data(), code.size(), c.salt.data(), c.salt.size(), c.n, c.r, c.p,
                     kScryptMaxMem, out.data(), out.size()) != 1) {
    return Error(OpensslError("EVP_PBE_scrypt"));
  }
  return out;
}

}  // namespace

Result<NewCustody> MakeRecoveryCustody() {
  NewCustody out;
  TPMMA_ASSIGN_OR_RETURN(Bytes random, RandomBytes(kCodeChars));
  SecureBytes bits(random.begin(), random.end());
  Wipe(random.data(), random.size());
  SecureString canonical;
  for (size_t i = 0; i < kCodeChars; ++i) {
    canonical.push_back(kAlphabet[bits[i] & 31]);  // 5 uniform bits from each byte
  }
  for (size_t i = 0; i < kCodeChars; ++i) {
    if (i > 0 && i % kGroup == 0) out.recovery_code.push_back('-');
    out.recovery_code.push_back(canonical[i]);
  }
  TPMMA_ASSIGN_OR_RETURN(out.custody.salt, RandomBytes(kSaltBytes));
  out.custody.kdf = "scrypt";
  out.custody.n = kScryptN;
  out.custody.r = kScryptR;
  out.custody.p = kScryptP;
  TPMMA_ASSIGN_OR_RETURN(SecureBytes derived,
                         Scrypt(canonical, out.custody, kInnerKeyBytes + kVerifierBytes));
  out.inner_key.assign(derived.begin(), derived.begin() + kInnerKeyBytes);
  out.custody.verifier.assign(derived.begin() + kInnerKeyBytes, derived.end());
  return out;
}

Result<SecureString> NormalizeRecoveryCode(std::string_view typed) {
  SecureString out;
  for (char c : typed) {
    if (c == '-' || c == ' ' || c == '\t' || c == '\n' || c == '\r') continue;
    const int v = DecodeChar(c);
    if (v < 0) {
      return Error(Code::kInvalidArgument,
                   "a recovery code holds only digits and letters (no U); check what you typed");
    }
    out.push_back(kAlphabet[v]);
  }
  if (out.size() != kCodeChars) {
    return Error(Code::kInvalidArgument, "a recovery code has 32 characters (8 groups of 4); got " +
                                             std::to_string(out.size()));
  }
  return out;
}

Result<SecureBytes> DeriveInnerKey(std::string_view code, const InnerKeyCustody& custody) {
  TPMMA_ASSIGN_OR_RETURN(SecureString canonical, NormalizeRecoveryCode(code));
  TPMMA_ASSIGN_OR_RETURN(SecureBytes derived,
                         Scrypt(canonical, custody, kInnerKeyBytes + kVerifierBytes));
  const ByteView verifier(derived.data() + kInnerKeyBytes, kVerifierBytes);
  if (!ConstantTimeEqual(verifier, custody.verifier)) {
    return Error(Code::kPermissionDenied, "the recovery code is not the one shown at lms init");
  }
  return SecureBytes(derived.begin(), derived.begin() + kInnerKeyBytes);
}

Result<SecureBytes> NewEscrowInnerKey() {
  SecureBytes key(kInnerKeyBytes);
  if (RAND_priv_bytes(key.data(), static_cast<int>(key.size())) != 1) {
    return Error(OpensslError("RAND_priv_bytes"));
  }
  return key;
}

}  // namespace tpmma::lms
