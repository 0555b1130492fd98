// SPDX-License-Identifier: GPL-2.0-or-later
#include "tpm/marshal.h"

#include <string>
#include <type_traits>

#include <tss2/tss2_mu.h>

#include "tpm/tss_error.h"

namespace tpmma::tpm {

namespace {

template <typename T>
using MarshalFn = TSS2_RC (*)(const T*, uint8_t*, size_t, size_t*);
template <typename T>
using UnmarshalFn = TSS2_RC (*)(const uint8_t*, size_t, size_t*, T*);

template <typename T>
Result<Bytes> DoMarshal(const T& value, MarshalFn<T> fn, const char* call) {
  // The in-memory structs hold every array at its maximum size, so they bound the
  // marshalled size; the slack covers selector/size fields.
  Bytes out(sizeof(T) + 64);
  size_t offset = 0;
  TPMMA_RETURN_IF_ERROR(CheckRc(call, fn(&value, out.data(), out.size(), &offset)));
  out.resize(offset);
  return out;
}

// Bytes from outside (a peer, a file, the database) are accepted only in the one encoding
// tss2-mu would write for the value they decode to. tss2-mu 3.2.1 alone is not enough:
// its TPM2B-of-structure unmarshallers ignore the size field and drop the inner return
// code, so "00 00" decodes to a zeroed TPM2B_PUBLIC and a size that disagrees with the
// content is accepted (issue #13). Several encodings of one key would give one key several
// digests and database rows.
template <typename T>
Result<T> DoUnmarshal(ByteView data, UnmarshalFn<T> fn, MarshalFn<T> marshal, const char* call,
                      const char* name) {
  if constexpr (requires(T t) { t.size; }) {
    // Every TPM2B is a 16-bit big-endian size and exactly that many bytes of content.
    if (data.size() < 2) {
      return Error(Code::kMalformed, std::string(name) + " is shorter than its size field");
    }
    const size_t declared = (size_t{data[0]} << 8) | data[1];
    if (declared != data.size() - 2) {
      return Error(Code::kMalformed, std::string(name) + " says it holds " +
                                         std::to_string(declared) + " bytes but " +
                                         std::to_string(data.size() - 2) + " follow");
    }
  }
  if constexpr (std::is_same_v<T, TPM2B_PUBLIC>) {
    if (data.size() == 2) return Error(Code::kMalformed, "TPM2B_PUBLIC is empty (no public area)");
  }
  T out{};
  size_t offset = 0;
  TPMMA_RETURN_IF_ERROR(CheckRc(call, fn(data.data(), data.size(), &offset, &out)));
  if (offset != data.size()) {
    return Error(Code::kMalformed, std::string(call) + ": " + std::to_string(data.size() - offset) +
                                       " trailing bytes after the structure");
  }
  auto again = DoMarshal<T>(out, marshal, call);
  if (!again.has_value() || *again != Bytes(data.begin(), data.end())) {
    return Error(Code::kMalformed, std::string(name) +
                                       " is not in its canonical encoding (encoded again, it "
                                       "gives different bytes: a size field inside it is wrong)");
  }
  return out;
}

}  // namespace

#define TPMMA_MU_TYPE(T)                                                          \
  template <>                                                                     \
  Result<T> Unmarshal<T>(ByteView data) {                                         \
    return DoUnmarshal<T>(data, &Tss2_MU_##T##_Unmarshal, &Tss2_MU_##T##_Marshal, \
                          "Tss2_MU_" #T "_Unmarshal", #T);                        \
  }                                                                               \
  template <>                                                                     \
  Result<Bytes> Marshal<T>(const T& value) {                                      \
    return DoMarshal<T>(value, &Tss2_MU_##T##_Marshal, "Tss2_MU_" #T "_Marshal"); \
  }

TPMMA_MU_TYPE(TPM2B_PUBLIC)
TPMMA_MU_TYPE(TPMT_PUBLIC)
TPMMA_MU_TYPE(TPM2B_PRIVATE)
TPMMA_MU_TYPE(TPM2B_ENCRYPTED_SECRET)
TPMMA_MU_TYPE(TPM2B_ID_OBJECT)
TPMMA_MU_TYPE(TPM2B_NAME)
TPMMA_MU_TYPE(TPM2B_ATTEST)
TPMMA_MU_TYPE(TPMS_ATTEST)
TPMMA_MU_TYPE(TPMT_SIGNATURE)
TPMMA_MU_TYPE(TPM2B_DIGEST)
TPMMA_MU_TYPE(TPMS_ECC_POINT)
TPMMA_MU_TYPE(TPM2B_SENSITIVE)
TPMMA_MU_TYPE(TPM2B_DATA)

#undef TPMMA_MU_TYPE

Result<TPMS_ATTEST> AttestFromTpm2b(const TPM2B_ATTEST& attest) {
  return Unmarshal<TPMS_ATTEST>(ByteView(attest.attestationData, attest.size));
}

}  // namespace tpmma::tpm
