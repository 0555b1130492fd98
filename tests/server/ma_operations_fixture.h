// SPDX-License-Identifier: GPL-2.0-or-later
// What ma_operations_test.cc and ma_operations_auth_test.cc share: MaCalls straight into
// server/ma_operations.h (no SOAP), an MA over a real SQLite vault (`Service`, `MakeOps`)
// and the fixture on swtpm platforms (ma_platform_fixture.h). Test-only, one copy per test
// binary.
#pragma once

#include <openssl/evp.h>
#include <sqlite3.h>

#include <map>

#include <gtest/gtest.h>

#include "server/ma_key.h"
#include "server/ma_key_tpm.h"
#include "server/ma_operations.h"
#include "storage/sqlite_vault.h"
#include "tests/server/ma_platform_fixture.h"
#include "tests/storage/sqlite_fault_vfs.h"
#include "tests/support/tpm_cut_proxy.h"

namespace tpmma::server {
namespace {

using testing::RunCommand;
using testing::Swtpm;
using testing::TempDir;

// MaCalls straight into the operations.
class Client : public MaCalls {
 public:
  explicit Client(MaOperations* ops) : ops_(ops) {}

  Status Begin(const BeginRequest& r, BeginResult* out) override {
    call = CallContext{};
    return Take(ops_->AuthenticateBegin(r, &call), out);
  }
  Status Complete(const CompleteRequest& r, CompleteResult* out) override {
    call = CallContext{};
    return Take(ops_->AuthenticateComplete(r, &call), out);
  }
  Status Upload(const std::string& token, const Bytes& pkg, bool* already) override {
    call = CallContext{};
    UploadResult up;
    Status s = Take(ops_->Upload(UploadRequest{token, pkg}, &call), &up);
    if (s.ok() && already != nullptr) *already = up.already_stored;
    return s;
  }
  Status Query(const std::string& token, std::vector<std::string>* ids,
               std::vector<unsigned>* key_counts) override {
    call = CallContext{};
    QueryRequest q;
    q.session_token = token;
    QueryResult page;
    Status s = Take(ops_->Query(q, &call), &page);
    ids->clear();
    key_counts->clear();
    for (const QueryItem& item : page.packages) {
      ids->push_back(item.descriptor.package_id);
      key_counts->push_back(static_cast<unsigned>(item.descriptor.key_count));
      // Access says whose it is, as the vault's visibility rule decided.
      EXPECT_EQ(item.access, item.descriptor.source_platform_id == call.actor
                                 ? PackageAccess::kOwn
                                 : PackageAccess::kApproved);
    }
    return s;
  }
  Status Delete(const std::string& token, const std::string& id) override {
    call = CallContext{};
    return ops_->Delete(DeleteRequest{token, id}, &call);
  }
  Status Prepare(const DownloadPrepareRequest& r, Bytes* nonce) override {
    call = CallContext{};
    DownloadPrepared p;
    Status s = Take(ops_->DownloadPrepare(r, &call), &p);
    if (s.ok()) *nonce = p.nonce;
    return s;
  }
  Status CompleteDownload(const DownloadCompleteRequest& r, Downloaded* out) override {
    call = CallContext{};
    DownloadedPackage p;
    Status s = Take(ops_->DownloadComplete(r, &call), &p);
    if (!s.ok()) return s;
    out->document = p.document;
    out->duplicate = p.duplicate;
    out->seed = p.encrypted_seed;
    out->escrowed_inner_key.assign(p.escrowed_inner_key.begin(), p.escrowed_inner_key.end());
    out->signing_key_public = p.signing_key_public;
    return s;
  }

  CallContext call;  // of the last call

 private:
  template <typename T>
  static Status Take(Result<T> r, T* out) {
    if (!r) return r.error();
    *out = std::move(*r);
    return Status::Ok();
  }
  MaOperations* ops_;
};

// The operations with their own vault and software MA key, as MakeMaService opens them.
using Service = InProcessMa;

inline Result<Service> MakeOps(const Config& cfg, Env* env) {
  return MakeInProcessMa(cfg, env);
}

inline Result<std::unique_ptr<MaOperations>> MakeOps(const Config& cfg, Env* env,
                                                     storage::Vault* vault, MaKeyCustody* custody) {
  return MaOperations::Create(cfg, env, vault, custody);
}

class MaOperationsTest : public MaPlatformTest {
 protected:
  void SetUp() override {
    MaPlatformTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    auto ep = MakeOps(cfg_, &env_);
    ASSERT_OK(ep);
    ep_ = std::move(*ep);
  }

  // A helpdesk approval of every package `from` -> `to` for `ttl` seconds, made directly in
  // the vault (the operator side has tests of its own).
  Result<storage::Approval> Approve(storage::Vault& vault, const std::string& from,
                                    const std::string& to, int64_t ttl = 3600) {
    storage::ApprovalRequest r;
    r.old_platform_id = from;
    r.new_platform_id = to;
    r.reason = "motherboard swap";
    r.created_by = "helpdesk1";
    r.created_at = env_.NowUnixSeconds();
    r.expires_at = r.created_at + ttl;
    return vault.CreateApproval(
        r, storage::AuditEvent{r.created_at, "operator:helpdesk1", "ApproveRestore", "", "ok", ""});
  }
  // The TPM's EK and an RSA AK under it, loaded, with the AK's TPM2B_PUBLIC.
  struct Ak {
    std::optional<esys::Object> ek, ak;
    Bytes pub;
  };
  void MakeAk(Ak* out) {
    auto ek = tpm_->CreateEk();
    ASSERT_OK(ek);
    auto blob = tpm_->CreateAk(*ek, esys::KeyAlg::kRsa2048);
    ASSERT_OK(blob);
    auto ak = tpm_->Load(*ek, *blob);
    ASSERT_OK(ak);
    out->pub = *tpm::Marshal(blob->public_area);
    out->ak = std::move(*ak);
    out->ek = std::move(*ek);
  }
  Service ep_;
};

}  // namespace
}  // namespace tpmma::server
