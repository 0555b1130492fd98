// SPDX-License-Identifier: GPL-2.0-or-later
// Internal to tpm/esys/: what the files defining Tpm's members share (ESAPI output pointers,
// secret wiping, TPM2B filling). Not for code outside this folder.
#pragma once

#include <cstring>
#include <memory>
#include <string>

#include <tss2/tss2_esys.h>

#include "common/bytes.h"
#include "common/status.h"
#include "tpm/marshal.h"
#include "tpm/tss_error.h"

namespace tpmma::esys::internal {

using tpm::CheckRc;

// Writes an ESAPI output pointer into a unique_ptr once the call returns (std::out_ptr is
// not in g++ 12's library).
template <typename T, typename D>
class OutPtr {
 public:
  explicit OutPtr(std::unique_ptr<T, D>& owner) : owner_(owner) {}
  ~OutPtr() { owner_.reset(raw_); }
  OutPtr(const OutPtr&) = delete;
  OutPtr& operator=(const OutPtr&) = delete;
  operator T**() { return &raw_; }  // NOLINT: implicit, as std::out_ptr

 private:
  std::unique_ptr<T, D>& owner_;
  T* raw_ = nullptr;
};
template <typename T, typename D>
OutPtr<T, D> Out(std::unique_ptr<T, D>& owner) {
  return OutPtr<T, D>(owner);
}

// ESAPI outputs that carry secrets (credential secrets, unsealed data, inner keys): wiped
// before they go back to the heap.
template <typename T>
struct EsysSecretFree {
  void operator()(T* p) const {
    if (p == nullptr) return;
    Wipe(p, sizeof(T));
    Esys_Free(p);
  }
};
template <typename T>
using EsysSecretPtr = std::unique_ptr<T, EsysSecretFree<T>>;

// A TPM input structure holding a secret, wiped when it goes out of scope.
template <typename T>
struct Wiped {
  T value{};
  Wiped() = default;
  Wiped(const Wiped&) = delete;
  Wiped& operator=(const Wiped&) = delete;
  ~Wiped() { Wipe(&value, sizeof value); }
};

template <typename T2B>
Status Fill(T2B& out, ByteView data, const char* what) {
  Status s = tpm::FillTpm2b(out, data);
  if (!s.ok()) return Status(s.code(), std::string(what) + ": " + s.message());
  return s;
}

inline Status FillName(TPM2B_NAME& out, ByteView name) {
  if (name.size() > sizeof out.name) return Status(Code::kInvalidArgument, "Name too long");
  out.size = static_cast<uint16_t>(name.size());
  std::memcpy(out.name, name.data(), name.size());
  return Status::Ok();
}

template <typename T2B>
SecureBytes SecretFrom(const T2B& in) {
  return SecureBytes(in.buffer, in.buffer + in.size);
}

inline constexpr TPMT_SYM_DEF kNoSymmetric = {TPM2_ALG_NULL, {}, {}};

inline TPMT_SYM_DEF_OBJECT Aes128Cfb() {
  TPMT_SYM_DEF_OBJECT sym{};
  sym.algorithm = TPM2_ALG_AES;
  sym.keyBits.aes = 128;
  sym.mode.aes = TPM2_ALG_CFB;
  return sym;
}

inline constexpr size_t kInnerKeySize = 16;  // AES-128

}  // namespace tpmma::esys::internal
