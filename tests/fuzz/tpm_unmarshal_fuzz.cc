// SPDX-License-Identifier: GPL-2.0-or-later
// tpm::Unmarshal<T> of untrusted bytes: the first byte picks T, the rest is the input.
// Invariant: what Unmarshal accepts, Marshal gives back byte for byte (one value, one
// encoding; issue #13), and a TPM2B_PUBLIC it accepts is not empty.
#include <cstdint>

#include "tests/fuzz/fuzz_check.h"
#include "tpm/marshal.h"

namespace {

template <typename T>
void RoundTrip(tpmma::ByteView data) {
  auto value = tpmma::tpm::Unmarshal<T>(data);
  if (!value.has_value()) {
    TPMMA_FUZZ_CHECK(!value.error().message().empty());
    return;
  }
  auto again = tpmma::tpm::Marshal<T>(*value);
  TPMMA_FUZZ_CHECK(again.has_value());
  TPMMA_FUZZ_CHECK(*again == tpmma::Bytes(data.begin(), data.end()));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const tpmma::ByteView in(data + 1, size - 1);
  switch (data[0] % 13) {
    case 0:
      RoundTrip<TPM2B_PUBLIC>(in);
      if (auto p = tpmma::tpm::Unmarshal<TPM2B_PUBLIC>(in)) TPMMA_FUZZ_CHECK(in.size() > 2);
      break;
    case 1:
      RoundTrip<TPMT_PUBLIC>(in);
      break;
    case 2:
      RoundTrip<TPM2B_PRIVATE>(in);
      break;
    case 3:
      RoundTrip<TPM2B_ENCRYPTED_SECRET>(in);
      break;
    case 4:
      RoundTrip<TPM2B_ID_OBJECT>(in);
      break;
    case 5:
      RoundTrip<TPM2B_NAME>(in);
      break;
    case 6:
      RoundTrip<TPM2B_ATTEST>(in);
      break;
    case 7:
      RoundTrip<TPMS_ATTEST>(in);
      break;
    case 8:
      RoundTrip<TPMT_SIGNATURE>(in);
      break;
    case 9:
      RoundTrip<TPM2B_DIGEST>(in);
      break;
    case 10:
      RoundTrip<TPMS_ECC_POINT>(in);
      break;
    case 11:
      RoundTrip<TPM2B_SENSITIVE>(in);
      break;
    default:
      RoundTrip<TPM2B_DATA>(in);
      break;
  }
  return 0;
}
