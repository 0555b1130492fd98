// SPDX-License-Identifier: GPL-2.0-or-later
#include "client/lms/app_data.h"

#include <zlib.h>

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
    return Error(Code::kMalformed,
                 "the package's " + std::string(kMrkHandleItem) + " is not a persistent handle");
  }
  return *handle;
}

Result<schema::ApplicationData> Pkcs11StoreItem(ByteView db) {
  uLongf size = compressBound(static_cast<uLong>(db.size()));
  Bytes packed(size);
  if (compress2(packed.data(), &size, db.data(), static_cast<uLong>(db.size()), 9) != Z_OK) {
    return Error(Code::kInternal, "zlib compress2 failed on the PKCS#11 token store");
  }
  packed.resize(size);
  const size_t room = schema::kMaxApplicationData - kPkcs11StoreItem.size() - 1;
  if (packed.size() > room) {
    return Error(Code::kLimitExceeded, "the PKCS#11 token store is too large for a package: " +
                                           std::to_string(db.size()) + " bytes, " +
                                           std::to_string(packed.size()) + " compressed, at most " +
                                           std::to_string(room));
  }
  return OpaqueItem(kPkcs11StoreItem, packed);
}

Result<std::optional<Bytes>> Pkcs11StoreOf(const std::vector<schema::ApplicationData>& items) {
  std::optional<Bytes> packed = FindOpaqueItem(items, kPkcs11StoreItem);
  if (!packed) return std::optional<Bytes>();
  constexpr uLongf kMaxUnpacked = 16 << 20;
  // A hostile package may unpack to anything: the output buffer is the bound.
  Bytes db(kMaxUnpacked);
  uLongf size = kMaxUnpacked;
  const int rc = uncompress(db.data(), &size, packed->data(), static_cast<uLong>(packed->size()));
  // Z_BUF_ERROR is either a full output buffer or input cut short.
  if (rc == Z_BUF_ERROR && size == kMaxUnpacked) {
    return Error(Code::kLimitExceeded,
                 "the package's PKCS#11 token store unpacks to more than "
                 "16 MiB");
  }
  if (rc != Z_OK) return Error(Code::kMalformed, "the package's PKCS#11 token store is damaged");
  db.resize(size);
  return std::optional<Bytes>(std::move(db));
}

std::vector<schema::ApplicationData> KeyApplicationData(const KeyRecord& key) {
  std::vector<schema::ApplicationData> out;
  if (!key.certificate.empty()) {
    out.push_back(
        {.type = schema::ApplicationDataType::kX509Certificate, .value = key.certificate});
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
