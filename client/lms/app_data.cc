// SPDX-License-Identifier: GPL-2.0-or-later
#include "client/lms/app_data.h"

#include <string>

#include "client/lms/mrk_handle.h"

namespace tpmma::lms {

schema::ApplicationData OpaqueItem(std::string_view name, ByteView payload) {
  schema::ApplicationData a;
  a.type = schema::ApplicationDataType::kOpaque;
  a.value.assign(name.begin(), name.end());
  a.value.push_back('\n');
  a.value.insert(a.value.end(), payload.begin(), payload.end());
  return a;
}

std::optional<Bytes> FindOpaqueItem(const std::vector<schema::ApplicationData>& items,
                                    std::string_view name) {
  for (const schema::ApplicationData& a : items) {
    if (a.type != schema::ApplicationDataType::kOpaque || a.value.size() <= name.size() ||
        a.value[name.size()] != '\n' ||
        std::string_view(reinterpret_cast<const char*>(a.value.data()), name.size()) != name) {
      continue;
    }
    return Bytes(a.value.begin() + static_cast<std::ptrdiff_t>(name.size() + 1), a.value.end());
  }
  return std::nullopt;
}

Result<uint32_t> MrkHandleOf(const std::vector<schema::ApplicationData>& items) {
  std::optional<Bytes> v = FindOpaqueItem(items, kMrkHandleItem);
  if (!v) return 0u;
  auto handle = ParseMrkHandle(std::string(v->begin(), v->end()));
  if (!handle || *handle == 0) {
    return Error(Code::kMalformed, "the package's " + std::string(kMrkHandleItem) +
                                       " is not a persistent handle");
  }
  return *handle;
}

std::vector<schema::ApplicationData> KeyApplicationData(const KeyRecord& key) {
  std::vector<schema::ApplicationData> out;
  if (!key.certificate.empty()) {
    out.push_back({.type = schema::ApplicationDataType::kX509Certificate,
                   .value = key.certificate});
  }
  return out;
}

Bytes CertificateOf(const std::vector<schema::ApplicationData>& items) {
  for (const schema::ApplicationData& a : items) {
    if (a.type == schema::ApplicationDataType::kX509Certificate) return a.value;
  }
  return {};
}

}  // namespace tpmma::lms
