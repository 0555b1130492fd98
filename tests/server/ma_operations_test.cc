// SPDX-License-Identifier: GPL-2.0-or-later
// The MA's policy decisions tested on the domain functions (server/ma_operations.h), no
// SOAP in between: Upload refusals (session, signature, platform, MRK policy, escrow binding,
// size), the digest computed once, Query visibility, Delete of own vs other's packages, and
// the Download approval decisions (none, expired, revoked, used up, reusable, same platform,
// retired escrow keys), the vault's disk full and the MA's own TPM killed mid re-wrap, with a
// real SQLite vault and real swtpm platforms. Authentication: ma_operations_auth_test.cc. The
// wire shape of each operation is ma_service_swtpm_test.cc's.
#include "tests/server/ma_operations_fixture.h"

namespace tpmma::server {
namespace {

TEST_F(MaOperationsTest, PlatformsSeeOnlyTheirOwnOrApprovedPackages) {
  std::string why;
  Swtpm* tb = testing::SharedSwtpm(1, &why);
  ASSERT_NE(tb, nullptr) << why;
  TempDir d;
  auto vault = storage::SqliteVault::Open(d.File("v.db"));
  ASSERT_OK(vault);
  auto custody = LoadSoftwareMaKey("ma-test", ma_.key, ma_.cert, &env_);
  ASSERT_OK(custody);
  Config cfg = cfg_;
  cfg.ek_roots = {t_->RootCaCertPath(), tb->RootCaCertPath()};
  auto ep = MakeOps(cfg, &env_, vault->get(), custody->get());
  ASSERT_OK(ep);
  Client c(ep->get());
  const TPM2B_PUBLIC& ma_public = (*custody)->public_area();
  const Bytes& ma_name = (*custody)->name();

  Plat a, b;
  ASSERT_NO_FATAL_FAILURE(OpenBoth(c, tb, &a, &b, false));
  ASSERT_NE(a.id, b.id);

  Made pa;
  ASSERT_NO_FATAL_FAILURE(MakePackage(a, ma_public, ma_name, &pa));
  ASSERT_TRUE(Upload(c, a.token, pa.bytes, nullptr).ok());
  // Same id, other bytes.
  {
    schema::MigrationPackage changed = pa.model;
    changed.creation_time += 1;
    auto other = schema::SignPackage(changed, a.signer.get());
    ASSERT_OK(other);
    EXPECT_CODE(Upload(c, a.token, *other, nullptr), Code::kConflict);
  }
  // An MRK whose policy does not name the MA key is refused before it is vaulted.
  {
    schema::MigrationPackage wrong = pa.model;
    wrong.package_id = *schema::NewUuid();
    auto mrk = a.tpm->CreateMrk(a.srk, a.srk_info.name, esys::KeyAlg::kRsa2048);
    ASSERT_OK(mrk);
    wrong.mrk.public_area = *tpm::Marshal(mrk->public_area);
    auto bytes = schema::SignPackage(wrong, a.signer.get());
    ASSERT_OK(bytes);
    Status s = Upload(c, a.token, *bytes, nullptr);
    EXPECT_EQ(s.code(), Code::kInvalidArgument) << s.ToString();
    EXPECT_NE(s.message().find("PolicyDuplicationSelect"), std::string::npos) << s.message();
  }

  // B has no certified signing key yet: it cannot upload at all (checked before the
  // signature, so any signer will do for the attempt).
  {
    schema::MigrationPackage mine = pa.model;
    mine.package_id = *schema::NewUuid();
    mine.source_platform_id = b.id;
    auto bytes = schema::SignPackage(mine, a.signer.get());
    ASSERT_OK(bytes);
    Status s = Upload(c, b.token, *bytes, nullptr);
    EXPECT_EQ(s.code(), Code::kPermissionDenied) << s.ToString();
    EXPECT_NE(s.message().find("no certified package-signing key"), std::string::npos)
        << s.message();
  }
  ASSERT_NO_FATAL_FAILURE(AuthenticatePlat(c, b, true));
  Made pb;
  ASSERT_NO_FATAL_FAILURE(AuthenticatePlat(c, b, true));  // DownloadTo dropped B's signer
  ASSERT_NO_FATAL_FAILURE(MakePackage(b, ma_public, ma_name, &pb));
  ASSERT_TRUE(Upload(c, b.token, pb.bytes, nullptr).ok());
  // A's package under B's session: the source platform is not the session's.
  EXPECT_CODE(Upload(c, b.token, pa.bytes, nullptr), Code::kPermissionDenied);

  std::vector<std::string> ids;
  ASSERT_TRUE(Query(c, b.token, &ids).ok());
  // KeyCount comes from the vault's count (the keys themselves are not read for a Query).
  EXPECT_EQ(last_key_counts_, std::vector<unsigned>(ids.size(), 1u));
  EXPECT_EQ(std::count(ids.begin(), ids.end(), pa.model.package_id), 0);
  EXPECT_CODE(Delete(c, b.token, pa.model.package_id), Code::kPermissionDenied);
  Downloaded got;
  {
    Bytes nonce;
    Status s = Prepare(c, b.token, pa.model.package_id, b.srk_name, &nonce);
    EXPECT_EQ(s.code(), Code::kPermissionDenied) << s.ToString();
    EXPECT_NE(s.message().find("helpdesk approval"), std::string::npos) << s.message();
  }

  // A's SRK certified by A's AK, presented in B's session: not B's TPM.
  EXPECT_CODE(DownloadTo(c, b, pb.model.package_id, &got, &a), Code::kSignatureInvalid);
  // B's SRK public sent for a nonce bound to another parent Name.
  {
    Bytes nonce;
    ASSERT_TRUE(Prepare(c, b.token, pb.model.package_id, a.srk_name, &nonce).ok());
    b.signer.reset();
    auto ek = b.tpm->CreateEk();
    ASSERT_OK(ek);
    auto ak = b.tpm->Load(*ek, b.ak_blob);
    ASSERT_OK(ak);
    auto cert = b.tpm->Certify(b.srk, *ak, nonce);
    ASSERT_OK(cert);
    ak->reset();
    ek->reset();
    EXPECT_CODE(CompleteDownload(c, b.token, pb.model.package_id, nonce, b.srk_info.marshalled,
                                 *cert, &got),
                Code::kUnauthenticated);
  }

  // A helpdesk approval (made directly in the vault until the operator flow exists) lets
  // B see and restore A's package: the motherboard swap, on two real TPMs.
  ASSERT_OK(Approve(**vault, a.id, b.id));
  ASSERT_TRUE(Query(c, b.token, &ids).ok());
  EXPECT_EQ(std::count(ids.begin(), ids.end(), pa.model.package_id), 1);
  Status s = DownloadTo(c, b, pa.model.package_id, &got);
  ASSERT_TRUE(s.ok()) << s.ToString();
  auto priv =
      b.tpm->Import(b.srk, pa.mrk.public_area, *tpm::Unmarshal<TPM2B_PRIVATE>(got.duplicate),
                    *tpm::Unmarshal<TPM2B_ENCRYPTED_SECRET>(got.seed), pa.inner_key);
  ASSERT_OK(priv);
  auto restored = b.tpm->Load(b.srk, esys::KeyBlob{pa.mrk.public_area, *priv});
  ASSERT_OK(restored);
  restored->reset();
  // Still only A may delete it.
  EXPECT_CODE(Delete(c, b.token, pa.model.package_id), Code::kPermissionDenied);
  ASSERT_TRUE(Delete(c, a.token, pa.model.package_id).ok());

  // The audit log: every call, refusals included; never a session token.
  storage::AuditFilter f;
  f.page_size = 1000;
  auto audit = (*vault)->ListAudit(f);
  ASSERT_OK(audit);
  std::map<std::string, int> seen;
  for (const auto& rec : audit->records) {
    seen[rec.event.action + "/" + rec.event.outcome]++;
    for (const std::string* tok : {&a.token, &b.token}) {
      EXPECT_EQ(rec.event.detail.find(*tok), std::string::npos);
      EXPECT_EQ(rec.event.object.find(*tok), std::string::npos);
    }
  }
  EXPECT_GE(seen["Upload/ok"], 2);
  EXPECT_GE(seen["Upload/Conflict"], 1);
  EXPECT_GE(seen["Upload/PermissionDenied"], 1);
  EXPECT_GE(seen["Delete/PermissionDenied"], 2);
  EXPECT_GE(seen["Download.Prepare/PermissionDenied"], 1);
  EXPECT_GE(seen["Download.Complete/ok"], 1);
  EXPECT_GE(seen["Authenticate.Complete/ok"], 3);
  Status chain = (*vault)->VerifyAuditChain();
  EXPECT_TRUE(chain.ok()) << chain.ToString();
}

// Escrow custody (docs/protocol.md "Inner-key custody"): the MA checks an escrow blob at Upload,
// and releases the inner key only with a Download under a helpdesk approval; expired approvals
// release nothing. Two real TPMs: A backs up, B is the new board; then A after a TPM clear.
TEST_F(MaOperationsTest, EscrowedInnerKeyIsReleasedOnlyUnderAnApproval) {
  std::string why;
  Swtpm* tb = testing::SharedSwtpm(1, &why);
  ASSERT_NE(tb, nullptr) << why;
  TempDir d;
  // The escrow key: its own file, made like the MA key (openssl CLI).
  const std::string ekey = d.File("escrow.key"), ecert = d.File("escrow.crt");
  auto made = RunCommand({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                          ekey, "-out", ecert, "-subj", "/CN=tpm-ma test escrow", "-days", "30"});
  ASSERT_EQ(made.exit_code, 0) << made.output;
  ::chmod(ekey.c_str(), 0600);
  auto vault = storage::SqliteVault::Open(d.File("v.db"));
  ASSERT_OK(vault);
  auto custody = LoadSoftwareMaKey("ma-test", ma_.key, ma_.cert, &env_);
  ASSERT_OK(custody);
  Config cfg = cfg_;
  cfg.ek_roots = {t_->RootCaCertPath(), tb->RootCaCertPath()};
  cfg.escrow.custody = "software";
  cfg.escrow.key_id = "escrow-test";
  cfg.escrow.private_key = ekey;
  cfg.escrow.certificate = ecert;
  auto ep = MakeOps(cfg, &env_, vault->get(), custody->get());
  ASSERT_OK(ep);
  Client c(ep->get());
  const TPM2B_PUBLIC& ma_public = (*custody)->public_area();
  const Bytes& ma_name = (*custody)->name();

  // GetMAKey publishes the escrow key by id; it is a plain RSA decryption key.
  TPM2B_PUBLIC escrow_public{};
  {
    CallContext call;
    auto key = (*ep)->GetMAKey(std::string("escrow-test"), &call);
    ASSERT_OK(key);
    EXPECT_EQ(key->key_id, "escrow-test");
    EXPECT_EQ(call.object, "escrow-test");
    auto pub = tpm::Unmarshal<TPM2B_PUBLIC>(key->public_area);
    ASSERT_OK(pub);
    EXPECT_TRUE(tpm::CheckEscrowKey(pub->publicArea).ok());
    escrow_public = *pub;
  }

  Plat a, b;
  ASSERT_NO_FATAL_FAILURE(OpenBoth(c, tb, &a, &b, true));

  // Refused at Upload: an escrow blob for another key id, and one made for another platform
  // (a copy of B's escrowed key re-signed into A's package would otherwise open for A).
  {
    Made wrong_id;
    ASSERT_NO_FATAL_FAILURE(MakePackage(a, ma_public, ma_name, &wrong_id, &escrow_public, "other"));
    Status s = Upload(c, a.token, wrong_id.bytes, nullptr);
    EXPECT_EQ(s.code(), Code::kInvalidArgument) << s.ToString();
    EXPECT_NE(s.message().find("escrow-test"), std::string::npos) << s.message();
    Made other;
    ASSERT_NO_FATAL_FAILURE(MakePackage(b, ma_public, ma_name, &other, &escrow_public));
    schema::MigrationPackage stolen = other.model;
    stolen.source_platform_id = a.id;
    auto bytes = schema::SignPackage(stolen, a.signer.get());
    ASSERT_OK(bytes);
    s = Upload(c, a.token, *bytes, nullptr);
    EXPECT_EQ(s.code(), Code::kIntegrityFailure) << s.ToString();
    EXPECT_NE(s.message().find("another platform or MRK"), std::string::npos) << s.message();
  }

  Made pa;
  ASSERT_NO_FATAL_FAILURE(MakePackage(a, ma_public, ma_name, &pa, &escrow_public));
  {
    // The same vault and MA key served without an escrow key: it cannot vouch for the
    // escrow blob, so it refuses the package rather than keep one it could never release.
    Config no_escrow = cfg;
    no_escrow.escrow.custody = "none";
    auto plain = MakeOps(no_escrow, &env_, vault->get(), custody->get());
    ASSERT_OK(plain);
    Client pc(plain->get());
    Status s = Upload(pc, a.token, pa.bytes, nullptr);
    EXPECT_EQ(s.code(), Code::kUnsupported) << s.ToString();
    EXPECT_NE(s.message().find("no escrow key"), std::string::npos) << s.message();
  }
  ASSERT_TRUE(Upload(c, a.token, pa.bytes, nullptr).ok());
  std::vector<std::string> ids;
  ASSERT_TRUE(Query(c, a.token, &ids).ok());
  EXPECT_EQ(std::count(ids.begin(), ids.end(), pa.model.package_id), 1);

  // A's own download, no approval: the package, but not the inner key.
  Downloaded got;
  Status s = DownloadTo(c, a, pa.model.package_id, &got);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_TRUE(got.escrowed_inner_key.empty());

  // An approval A -> B that expired before B downloads: refused, nothing released.
  auto approve = [&](const std::string& from, const std::string& to, int64_t ttl) {
    return Approve(**vault, from, to, ttl);
  };
  ASSERT_OK(approve(a.id, b.id, 60));
  env_.offset += 120;
  {
    Bytes nonce;
    Status expired = Prepare(c, b.token, pa.model.package_id, b.srk_name, &nonce);
    EXPECT_EQ(expired.code(), Code::kPermissionDenied) << expired.ToString();
    EXPECT_NE(expired.message().find("helpdesk approval"), std::string::npos) << expired.message();
  }
  // Sessions outlive the fake clock jump only if re-made.
  ASSERT_NO_FATAL_FAILURE(AuthenticatePlat(c, b, true));
  // A revoked approval releases nothing either.
  {
    auto revoked = approve(a.id, b.id, 3600);
    ASSERT_OK(revoked);
    ASSERT_TRUE(
        (*vault)
            ->RevokeApproval(revoked->id,
                             storage::AuditEvent{env_.NowUnixSeconds(), "operator:helpdesk1",
                                                 "RevokeApproval", "", "ok", "wrong ticket"})
            .ok());
    Bytes nonce;
    EXPECT_CODE(Prepare(c, b.token, pa.model.package_id, b.srk_name, &nonce),
                Code::kPermissionDenied);
  }

  // An active approval: B gets the re-wrapped MRK and the inner key, imports and loads it.
  ASSERT_OK(approve(a.id, b.id, 3600));
  s = DownloadTo(c, b, pa.model.package_id, &got);
  ASSERT_TRUE(s.ok()) << s.ToString();
  auto data = tpm::Unmarshal<TPM2B_DATA>(got.escrowed_inner_key);
  ASSERT_OK(data);
  SecureBytes inner(data->buffer, data->buffer + data->size);
  EXPECT_EQ(inner, pa.inner_key);
  auto priv =
      b.tpm->Import(b.srk, pa.mrk.public_area, *tpm::Unmarshal<TPM2B_PRIVATE>(got.duplicate),
                    *tpm::Unmarshal<TPM2B_ENCRYPTED_SECRET>(got.seed), inner);
  ASSERT_OK(priv);
  auto restored = b.tpm->Load(b.srk, esys::KeyBlob{pa.mrk.public_area, *priv});
  ASSERT_OK(restored);
  restored->reset();
  // The approval is used up: a second download is refused.
  EXPECT_CODE(DownloadTo(c, b, pa.model.package_id, &got), Code::kPermissionDenied);

  // approvals.single_use = false (a user restoring several packages, or retrying after a
  // mistyped code): the approval stays active and releases the key again, audited each time.
  {
    Config reusable = cfg;
    reusable.approvals_single_use = false;
    auto ep2 = MakeOps(reusable, &env_, vault->get(), custody->get());
    ASSERT_OK(ep2);
    Client c2(ep2->get());
    ASSERT_NO_FATAL_FAILURE(AuthenticatePlat(c2, b, true));
    auto kept = approve(a.id, b.id, 3600);
    ASSERT_OK(kept);
    for (int i = 0; i < 2; ++i) {
      Downloaded again;
      Status twice = DownloadTo(c2, b, pa.model.package_id, &again);
      ASSERT_TRUE(twice.ok()) << i << ": " << twice.ToString();
      EXPECT_FALSE(again.escrowed_inner_key.empty());
    }
    auto still = (*vault)->FindActiveApproval(b.id, pa.model.package_id, env_.NowUnixSeconds());
    ASSERT_OK(still);
    EXPECT_EQ(still->id, kept->id);
    ASSERT_TRUE((*vault)
                    ->RevokeApproval(
                        kept->id, storage::AuditEvent{env_.NowUnixSeconds(), "operator:helpdesk1",
                                                      "RevokeApproval", "", "ok", "restores done"})
                    .ok());
    ASSERT_NO_FATAL_FAILURE(AuthenticatePlat(c, b, true));
  }

  // A same-platform approval (A's TPM was cleared: its sealed copy is gone) releases the key
  // to A itself; a same-platform approval without escrow packages is refused as pointless.
  ASSERT_OK(approve(a.id, a.id, 3600));
  ASSERT_NO_FATAL_FAILURE(AuthenticatePlat(c, a, true));
  s = DownloadTo(c, a, pa.model.package_id, &got);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_FALSE(got.escrowed_inner_key.empty());
  Made pb;
  ASSERT_NO_FATAL_FAILURE(AuthenticatePlat(c, b, true));  // DownloadTo dropped B's signer
  ASSERT_NO_FATAL_FAILURE(MakePackage(b, ma_public, ma_name, &pb));
  ASSERT_TRUE(Upload(c, b.token, pb.bytes, nullptr).ok());
  auto pointless = approve(b.id, b.id, 3600);
  ASSERT_FALSE(pointless.has_value());
  EXPECT_NE(pointless.error().message().find("escrow"), std::string::npos);

  // The escrow key is rotated: new packages must be escrowed to the new key; what the
  // retired key escrowed is still released under an approval.
  {
    const std::string nkey = d.File("escrow2.key"), ncert = d.File("escrow2.crt");
    auto r2 = RunCommand({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                          nkey, "-out", ncert, "-subj", "/CN=tpm-ma test escrow 2", "-days", "30"});
    ASSERT_EQ(r2.exit_code, 0) << r2.output;
    ::chmod(nkey.c_str(), 0600);
    Config rotated = cfg;
    rotated.escrow_retired = {cfg.escrow};
    rotated.escrow.key_id = "escrow-test-2";
    rotated.escrow.private_key = nkey;
    rotated.escrow.certificate = ncert;
    auto ep3 = MakeOps(rotated, &env_, vault->get(), custody->get());
    ASSERT_OK(ep3);
    Client c3(ep3->get());
    ASSERT_NO_FATAL_FAILURE(AuthenticatePlat(c3, a, true));
    Made old_key;
    ASSERT_NO_FATAL_FAILURE(MakePackage(a, ma_public, ma_name, &old_key, &escrow_public));
    Status s3 = Upload(c3, a.token, old_key.bytes, nullptr);
    EXPECT_EQ(s3.code(), Code::kInvalidArgument) << s3.ToString();
    EXPECT_NE(s3.message().find("'escrow-test', not to this MA's escrow key 'escrow-test-2'"),
              std::string::npos)
        << s3.message();
    ASSERT_OK(approve(a.id, a.id, 3600));
    Downloaded again;
    s3 = DownloadTo(c3, a, pa.model.package_id, &again);
    ASSERT_TRUE(s3.ok()) << s3.ToString();
    auto released = tpm::Unmarshal<TPM2B_DATA>(again.escrowed_inner_key);
    ASSERT_OK(released);
    EXPECT_EQ(SecureBytes(released->buffer, released->buffer + released->size), pa.inner_key);
  }

  // The audit log says when an escrowed key left, and the chain holds.
  storage::AuditFilter f;
  f.page_size = 1000;
  auto audit = (*vault)->ListAudit(f);
  ASSERT_OK(audit);
  int released = 0;
  for (const auto& rec : audit->records) {
    if (rec.event.detail.find("escrowed inner key released") != std::string::npos) ++released;
  }
  // B under the single-use approval, B twice under the kept one, A, A by the retired key.
  EXPECT_EQ(released, 5);
  EXPECT_TRUE((*vault)->VerifyAuditChain().ok());
}

// Upload vouches only for what the session's platform signed with its certified key, and
// hashes the document once: the digest it answers with is the one the vault keeps.
TEST_F(MaOperationsTest, UploadRefusalsAndTheDigestComputedOnce) {
  Client c(ep_.get());
  const TPM2B_PUBLIC& ma_public = ep_.custody->public_area();
  const Bytes& ma_name = ep_.custody->name();
  Plat a;
  ASSERT_NO_FATAL_FAILURE(OpenPlat(t_, &a));
  ASSERT_NO_FATAL_FAILURE(AuthenticatePlat(c, a, true));
  Made pa;
  ASSERT_NO_FATAL_FAILURE(MakePackage(a, ma_public, ma_name, &pa));

  EXPECT_CODE(Upload(c, std::string(43, 'x'), pa.bytes, nullptr), Code::kUnauthenticated);
  EXPECT_EQ(c.call.op, "Upload");
  EXPECT_EQ(c.call.actor, "anonymous");
  EvpPkeyPtr soft(EVP_EC_gen("P-256"));
  auto soft_pkg = schema::SignPackage(pa.model, soft.get());
  ASSERT_OK(soft_pkg);
  EXPECT_CODE(Upload(c, a.token, *soft_pkg, nullptr), Code::kSignatureInvalid);
  EXPECT_EQ(c.call.actor, a.id);
  schema::MigrationPackage foreign = pa.model;
  foreign.package_id = *schema::NewUuid();
  foreign.source_platform_id = std::string(68, 'a');
  auto foreign_pkg = schema::SignPackage(foreign, a.signer.get());
  ASSERT_OK(foreign_pkg);
  EXPECT_CODE(Upload(c, a.token, *foreign_pkg, nullptr), Code::kPermissionDenied);
  EXPECT_EQ(c.call.object, foreign.package_id);
  {
    // Over limits.max_package_bytes: refused before the document is parsed.
    Config small = cfg_;
    small.max_package_bytes = pa.bytes.size() - 1;
    auto tight = MakeOps(small, &env_, ep_.vault.get(), ep_.custody.get());
    ASSERT_OK(tight);
    Client tc(tight->get());
    EXPECT_CODE(Upload(tc, a.token, pa.bytes, nullptr), Code::kLimitExceeded);
  }

  CallContext call;
  call.peer = "127.0.0.1:9";
  auto up = ep_.ops->Upload(UploadRequest{a.token, pa.bytes}, &call);
  ASSERT_OK(up);
  EXPECT_EQ(up->package_id, pa.model.package_id);
  EXPECT_FALSE(up->already_stored);
  EXPECT_EQ(call.actor, a.id);
  EXPECT_EQ(call.object, pa.model.package_id);
  auto digest = schema::PackageDigest(pa.bytes);
  ASSERT_OK(digest);
  EXPECT_EQ(up->digest_hex, HexEncode(*digest));
  auto stored = ep_.vault->GetPackageDescriptor(pa.model.package_id);
  ASSERT_OK(stored);
  EXPECT_EQ(stored->sha256, *digest);
  bool already = false;
  ASSERT_OK(Upload(c, a.token, pa.bytes, &already));
  EXPECT_TRUE(already);

  // Query: the platform's own package, KeyCount from the vault, Access "own".
  std::vector<std::string> ids;
  ASSERT_OK(Query(c, a.token, &ids));
  EXPECT_EQ(ids, std::vector<std::string>{pa.model.package_id});
  EXPECT_EQ(last_key_counts_, std::vector<unsigned>{1u});

  // A refusal the adapter found before the operation ran is on record like the others.
  CallContext early;
  early.op = "Upload";
  early.peer = "127.0.0.1:9";
  Status refused = ep_.ops->Refuse(early, Status(Code::kSchemaViolation, "SessionToken bad"));
  EXPECT_EQ(refused.code(), Code::kSchemaViolation);
  storage::AuditFilter f;
  f.action = "Upload";
  f.page_size = 1000;
  auto audit = ep_.vault->ListAudit(f);
  ASSERT_OK(audit);
  std::map<std::string, int> seen;
  bool digest_on_record = false;
  for (const auto& rec : audit->records) {
    seen[rec.event.outcome]++;
    if (rec.event.outcome == "ok" &&
        rec.event.detail.find("sha256 " + HexEncode(*digest)) != std::string::npos) {
      digest_on_record = true;
    }
  }
  EXPECT_TRUE(digest_on_record);
  EXPECT_EQ(seen["Unauthenticated"], 1);
  EXPECT_EQ(seen["SignatureInvalid"], 1);
  EXPECT_EQ(seen["PermissionDenied"], 1);
  EXPECT_EQ(seen["LimitExceeded"], 1);
  EXPECT_EQ(seen["SchemaViolation"], 1);
  EXPECT_GE(seen["ok"], 1);
}

// The MA key in a TPM of the MA's own, and that TPM killed in the middle of a helpdesk-
// approved re-wrap: swtpm dies after it ran TPM2_Rewrap, before the MA read the answer.
// The new board gets kUnavailable and no key material; the approval is not used up; the
// audit says what failed. While the TPM is away every Download says so; once it is back the
// same MaOperations re-wraps (it reopens its TPM and reloads the key, no restart) and the
// new board imports the MRK.
TEST_F(MaOperationsTest, MaTpmKilledMidRewrapLeavesTheApprovalUnusedAndRecovers) {
  using testing::TpmCutProxy;
  std::string why;
  Swtpm* tb = testing::SharedSwtpm(1, &why);
  ASSERT_NE(tb, nullptr) << why;
  auto hsm = Swtpm::Start(&why);
  ASSERT_NE(hsm, nullptr) << why;
  {
    auto tpm = esys::Tpm::Open(hsm->tcti());
    ASSERT_OK(tpm);
    ASSERT_OK((*tpm)->GetOrCreateSrk(esys::KeyAlg::kRsa2048));
  }
  TempDir d;
  auto imported = hsm->Tools({"tpm2_import", "-C", "0x81000001", "-G", "rsa", "-i", ma_.key, "-a",
                              "restricted|decrypt|userwithauth", "-u", d.File("ma.pub"), "-r",
                              d.File("ma.priv")});
  ASSERT_EQ(imported.exit_code, 0) << imported.output;
  auto proxy = TpmCutProxy::Start(
      hsm->port(), [&] { hsm->Kill(); }, &why);
  ASSERT_NE(proxy, nullptr) << why;
  auto custody = LoadTpmMaKey({.key_id = cfg_.ma.key_id,
                               .tcti = proxy->tcti(),
                               .parent_handle = 0x81000001,
                               .public_path = d.File("ma.pub"),
                               .private_path = d.File("ma.priv"),
                               .certificate_path = ma_.cert},
                              &env_);
  ASSERT_OK(custody);
  auto vault = storage::SqliteVault::Open(d.File("v.db"));
  ASSERT_OK(vault);
  Config cfg = cfg_;
  cfg.ek_roots = {t_->RootCaCertPath(), tb->RootCaCertPath()};
  auto ops = MakeOps(cfg, &env_, vault->get(), custody->get());
  ASSERT_OK(ops);
  Client c(ops->get());
  Plat a, b;
  ASSERT_NO_FATAL_FAILURE(OpenBoth(c, tb, &a, &b, false));
  Made pa;
  ASSERT_NO_FATAL_FAILURE(MakePackage(a, (*custody)->public_area(), (*custody)->name(), &pa));
  ASSERT_OK(Upload(c, a.token, pa.bytes, nullptr));
  ASSERT_OK(Approve(**vault, a.id, b.id));

  proxy->Arm({.skip = 0, .at_code = TPM2_CC_Rewrap, .after_execute = true});
  Downloaded got;
  Status cut = DownloadTo(c, b, pa.model.package_id, &got);
  ASSERT_TRUE(proxy->fired()) << "the re-wrap never reached the MA's TPM";
  EXPECT_EQ(cut.code(), Code::kUnavailable) << cut.ToString();
  EXPECT_EQ(cut.message().find("swtpm"), std::string::npos)
      << "names the MA's TPM: " << cut.message();
  EXPECT_TRUE(got.duplicate.empty());
  EXPECT_TRUE(
      (*vault)->FindActiveApproval(b.id, pa.model.package_id, env_.NowUnixSeconds()).has_value());
  // Still away: said at once, every time.
  EXPECT_CODE(DownloadTo(c, b, pa.model.package_id, &got), Code::kUnavailable);

  ASSERT_TRUE(hsm->Restart(&why)) << why;
  proxy->Retarget(hsm->port());
  ASSERT_OK(DownloadTo(c, b, pa.model.package_id, &got));
  auto priv =
      b.tpm->Import(b.srk, pa.mrk.public_area, *tpm::Unmarshal<TPM2B_PRIVATE>(got.duplicate),
                    *tpm::Unmarshal<TPM2B_ENCRYPTED_SECRET>(got.seed), pa.inner_key);
  ASSERT_OK(priv);
  // Used up by the Download that delivered, not by the ones that failed.
  auto used = (*vault)->FindActiveApproval(b.id, pa.model.package_id, env_.NowUnixSeconds());
  EXPECT_FALSE(used.has_value());

  storage::AuditFilter f;
  f.page_size = 1000;
  auto audit = (*vault)->ListAudit(f);
  ASSERT_OK(audit);
  std::map<std::string, int> seen;
  for (const auto& rec : audit->records) seen[rec.event.action + "/" + rec.event.outcome]++;
  EXPECT_EQ(seen["Download.Complete/Unavailable"], 2);
  EXPECT_EQ(seen["Download.Complete/ok"], 1);
}

}  // namespace
}  // namespace tpmma::server

namespace tpmma::server {
namespace {

// Upload while the vault's disk is full (then while fsync fails): the platform gets an
// error, never an acknowledgement; once the disk has room the same upload succeeds
// without a restart, and everything acknowledged before is still there.
TEST_F(MaOperationsTest, UploadOnAFullDiskIsRefusedAndSucceedsOnceThereIsRoom) {
  using storage::testing::FaultVfs;
  FaultVfs& vfs = FaultVfs::Get();
  vfs.Clear();
  storage::SqliteVaultOptions o;
  o.vfs = FaultVfs::kName;
  auto vault = storage::SqliteVault::Open(cfg_.vault_path + ".faulty", std::move(o));
  ASSERT_OK(vault);
  auto ops = MakeOps(cfg_, &env_, vault->get(), ep_.custody.get());
  ASSERT_OK(ops);
  Client c(ops->get());
  Plat a;
  ASSERT_NO_FATAL_FAILURE(OpenPlat(t_, &a));
  ASSERT_NO_FATAL_FAILURE(AuthenticatePlat(c, a, true));
  const TPM2B_PUBLIC& ma_public = ep_.custody->public_area();
  Made first, second;
  ASSERT_NO_FATAL_FAILURE(MakePackage(a, ma_public, ep_.custody->name(), &first));
  ASSERT_NO_FATAL_FAILURE(MakePackage(a, ma_public, ep_.custody->name(), &second));
  ASSERT_OK(Upload(c, a.token, first.bytes, nullptr));

  for (int fault : {SQLITE_FULL, SQLITE_IOERR_FSYNC}) {
    SCOPED_TRACE(fault);
    if (fault == SQLITE_FULL)
      vfs.FailWrites(fault);
    else
      vfs.FailSyncs(fault);
    Status refused = Upload(c, a.token, second.bytes, nullptr);
    vfs.Clear();
    EXPECT_EQ(refused.code(), Code::kIoError) << refused.ToString();
    bool already = false;
    ASSERT_OK(Upload(c, a.token, second.bytes, &already));  // the platform retries
    ASSERT_OK(Upload(c, a.token, first.bytes, &already));
    EXPECT_TRUE(already) << "an acknowledged upload went missing";
  }
  std::vector<std::string> ids;
  ASSERT_OK(Query(c, a.token, &ids));
  EXPECT_EQ(ids.size(), 2u);
  EXPECT_TRUE((*vault)->IntegrityCheck().ok());
}

}  // namespace
}  // namespace tpmma::server
