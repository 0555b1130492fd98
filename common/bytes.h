// SPDX-License-Identifier: GPL-2.0-or-later
// Byte buffers, secret buffers that wipe themselves, and text encodings.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace tpmma {

using Bytes = std::vector<uint8_t>;
using ByteView = std::span<const uint8_t>;

// Overwrites memory in a way the compiler cannot elide (OPENSSL_cleanse).
void Wipe(void* data, size_t size);

// Allocator that wipes memory before freeing it, for keys, seeds, tokens and codes.
template <typename T>
struct WipingAllocator {
  using value_type = T;
  WipingAllocator() = default;
  template <typename U>
  WipingAllocator(const WipingAllocator<U>&) {}  // NOLINT: allocator rebinding
  T* allocate(size_t n) { return std::allocator<T>().allocate(n); }
  void deallocate(T* p, size_t n) {
    Wipe(p, n * sizeof(T));
    std::allocator<T>().deallocate(p, n);
  }
  template <typename U>
  bool operator==(const WipingAllocator<U>&) const { return true; }
};

// A secret: never logged, wiped on destruction and on every reallocation.
using SecureBytes = std::vector<uint8_t, WipingAllocator<uint8_t>>;
using SecureString = std::basic_string<char, std::char_traits<char>, WipingAllocator<char>>;

inline ByteView View(std::string_view s) {
  return ByteView(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}
inline Bytes ToBytes(std::string_view s) { return Bytes(s.begin(), s.end()); }
inline std::string ToString(ByteView b) { return std::string(b.begin(), b.end()); }

// Lower-case hex, no separators.
std::string HexEncode(ByteView data);
Result<Bytes> HexDecode(std::string_view hex);

// RFC 4648 base64 with padding, no line breaks. Decoding ignores XML whitespace
// (space, tab, CR, LF) and refuses anything else that is not base64.
std::string Base64Encode(ByteView data);
Result<Bytes> Base64Decode(std::string_view text);

// Constant-time equality for MACs, token hashes and proofs.
bool ConstantTimeEqual(ByteView a, ByteView b);

// Cryptographically secure random bytes (OpenSSL DRBG).
Result<Bytes> RandomBytes(size_t n);

}  // namespace tpmma
