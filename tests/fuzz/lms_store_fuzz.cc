// SPDX-License-Identifier: GPL-2.0-or-later
// The lms store files (store.json, keys/<uuid>.json, config.json, ma.json): every input goes
// through all four readers. Invariant: a record or a plain error that names the file, never
// a crash (issue #13: a damaged ma.json sub-object read freed memory; the ASan and libFuzzer
// builds catch that, the error-message check catches it without them); what a reader
// accepts, written back and read again, is the same record.
#include <cstdint>
#include <string>
#include <string_view>

#include "client/lms/keystore.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

template <typename T>
void Check(const tpmma::Result<T>& r, std::string_view what) {
  if (!r.has_value()) TPMMA_FUZZ_CHECK(r.error().message().starts_with(what));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tpmma::lms;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto key = KeyRecordFromJson(text, "key.json");
  Check(key, "key.json");
  if (key) TPMMA_FUZZ_CHECK(*KeyRecordFromJson(KeyRecordToJson(*key), "again") == *key);
  auto state = StoreStateFromJson(text, "store.json");
  Check(state, "store.json");
  if (state) TPMMA_FUZZ_CHECK(StoreStateFromJson(StoreStateToJson(*state), "again").has_value());
  auto config = StoreConfigFromJson(text, "config.json");
  Check(config, "config.json");
  if (config) {
    TPMMA_FUZZ_CHECK(StoreConfigFromJson(StoreConfigToJson(*config), "again").has_value());
  }
  auto ma = MaStateFromJson(text, "ma.json");
  Check(ma, "ma.json");
  if (ma) TPMMA_FUZZ_CHECK(MaStateFromJson(MaStateToJson(*ma), "again").has_value());
  return 0;
}
