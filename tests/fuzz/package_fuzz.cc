// SPDX-License-Identifier: GPL-2.0-or-later
// schema::PackageReader (the migration package, from lms or the MA's database): Open, then
// Verify with the fuzz key (fuzz_key.h) that signed the seeds. Invariants: a reader or a
// plain error, never a crash; what libxml2 parsed is UTF-8 we checked (issue #13: a UTF-16
// re-encoding verified under a second digest), so an accepted document has no NUL byte; and
// a package that verifies, signed again, is the same model.
#include <algorithm>
#include <cstdint>

#include "schema/package_xml.h"
#include "tests/fuzz/fuzz_check.h"
#include "tests/fuzz/fuzz_key.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const tpmma::ByteView bytes(data, size);
  auto reader = tpmma::schema::PackageReader::Open(bytes, {});
  if (!reader.has_value()) {
    TPMMA_FUZZ_CHECK(!reader.error().message().empty());
    return 0;
  }
  TPMMA_FUZZ_CHECK(std::find(bytes.begin(), bytes.end(), 0) == bytes.end());
  auto model = reader->Verify(tpmma::fuzz::PackageKey());
  if (!model.has_value()) return 0;
  auto resigned = tpmma::schema::SignPackage(*model, tpmma::fuzz::PackageKey());
  TPMMA_FUZZ_CHECK(resigned.has_value());
  auto reread = tpmma::schema::PackageReader::Open(*resigned, {});
  TPMMA_FUZZ_CHECK(reread.has_value());
  auto remodel = reread->Verify(tpmma::fuzz::PackageKey());
  TPMMA_FUZZ_CHECK(remodel.has_value() && *remodel == *model);
  return 0;
}
