// SPDX-License-Identifier: GPL-2.0-or-later
// tests/support/tabrmd.h on real swtpm: what the resource manager is for (more than
// swtpm's three transient objects loaded at once through ESAPI, refused with the bare
// swtpm TCTI) and that two of them in one process stay apart. Each test starts its own
// swtpm: while tpm2-abrmd holds a swtpm's only connection nothing else can reach it.
#include "tests/support/tabrmd.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "tests/support/status_testing.h"
#include "tests/support/swtpm.h"
#include "tpm/esys/esys.h"
#include "tpm/esys/templates.h"

namespace tpmma::testing {
namespace {

using esys::KeyAlg;
using esys::KeyBlob;
using esys::Object;
using esys::Tpm;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr int kKeys = 5;  // more than swtpm's three object slots

// kKeys ECC signing keys under the ECC SRK (persistent, so it takes no object slot). The
// child template is the MRK's; under the fixedTPM SRK a fixedParent child must be fixedTPM.
std::vector<KeyBlob> MakeKeys(Tpm& tpm, const Object& srk) {
  TPM2B_PUBLIC tmpl =
      esys::ChildTemplate(esys::ChildType::kEccSign, /*encrypted_duplication=*/false);
  tmpl.publicArea.objectAttributes |= TPMA_OBJECT_FIXEDTPM;
  std::vector<KeyBlob> blobs;
  for (int i = 0; i < kKeys; ++i) {
    auto blob = tpm.Create(srk, tmpl);
    EXPECT_TRUE(blob.has_value()) << blob.error().ToString();
    if (blob.has_value()) blobs.push_back(*blob);
  }
  return blobs;
}

TEST(ResourceManagerTest, HoldsMoreObjectsThanBareSwtpm) {
  std::string why;
  if (!ResourceManager::Available(&why)) GTEST_SKIP() << why;
  auto sw = Swtpm::Start(&why);
  ASSERT_TRUE(sw) << why;
  std::vector<KeyBlob> blobs;
  {
    // Bare swtpm TCTI: the TPM runs out of object slots before the fifth key.
    ASSERT_OK_AND_ASSIGN(auto tpm, Tpm::Open(sw->tcti()));
    ASSERT_OK_AND_ASSIGN(Object srk, tpm->GetOrCreateSrk(KeyAlg::kEccP256));
    blobs = MakeKeys(*tpm, srk);
    ASSERT_EQ(blobs.size(), size_t{kKeys});
    std::vector<Object> loaded;
    Status refused;
    for (const KeyBlob& b : blobs) {
      auto o = tpm->Load(srk, b);
      if (!o.has_value()) {
        refused = o.error();
        break;
      }
      loaded.push_back(std::move(*o));
    }
    // At most three: swtpm has three slots, and while a command uses the persistent SRK the
    // TPM borrows one of them for it, so here the third Load is already refused.
    EXPECT_LE(loaded.size(), 3u);
    EXPECT_THAT(refused.ToString(), HasSubstr("0x00000902"));  // TPM_RC_OBJECT_MEMORY
  }  // objects flushed, connection closed: tpm2-abrmd can have swtpm now

  auto rm = ResourceManager::Start(*sw, &why);
  ASSERT_TRUE(rm) << why;
  EXPECT_EQ(rm->tcti(), "tabrmd:bus_name=" + rm->bus_name() + ",bus_type=session");
  EXPECT_THAT(rm->bus_name(), HasSubstr(std::to_string(::getpid())));
  // ESAPI in this process finds the private bus through the environment (tabrmd.h).
  ASSERT_NE(std::getenv("DBUS_SESSION_BUS_ADDRESS"), nullptr);
  EXPECT_EQ(std::string(std::getenv("DBUS_SESSION_BUS_ADDRESS")), rm->dbus_address());
  {
    ASSERT_OK_AND_ASSIGN(auto tpm, Tpm::Open(rm->tcti()));
    ASSERT_OK_AND_ASSIGN(Object srk, tpm->FromPersistent(esys::kSrkEccHandle));
    std::vector<Object> loaded;
    for (const KeyBlob& b : blobs) {
      ASSERT_OK_AND_ASSIGN(Object o, tpm->Load(srk, b));
      loaded.push_back(std::move(o));
    }
    // All five stay usable at once: tpm2-abrmd swaps them in and out of swtpm's slots.
    const Bytes digest(32, 0x5a);
    for (const Object& o : loaded) ASSERT_OK(tpm->Sign(o, digest));
  }
  // tpm2-tools through the RM too (the tool's objects go with its connection).
  CommandResult caps = rm->Tools({"tpm2_getcap", "handles-persistent"});
  EXPECT_EQ(caps.exit_code, 0) << caps.output;
  EXPECT_THAT(caps.output, HasSubstr("0x81000002"));

  const pid_t pid = rm->pid();
  rm.reset();
  // Stopped and reaped, and swtpm's connection is free for the bare TCTI again.
  EXPECT_NE(::kill(pid, 0), 0);
  CommandResult bare = sw->Tools({"tpm2_getcap", "properties-fixed"});
  EXPECT_EQ(bare.exit_code, 0) << bare.output;
}

TEST(ResourceManagerTest, TwoTpmsStaySeparate) {
  std::string why;
  if (!ResourceManager::Available(&why)) GTEST_SKIP() << why;
  auto a = Swtpm::Start(&why);
  ASSERT_TRUE(a) << why;
  auto b = Swtpm::Start(&why);
  ASSERT_TRUE(b) << why;
  auto rm_a = ResourceManager::Start(*a, &why);
  ASSERT_TRUE(rm_a) << why;
  auto rm_b = ResourceManager::Start(*b, &why);
  ASSERT_TRUE(rm_b) << why;
  EXPECT_NE(rm_a->bus_name(), rm_b->bus_name());
  EXPECT_EQ(rm_a->dbus_address(), rm_b->dbus_address());  // one bus per process

  {
    ASSERT_OK_AND_ASSIGN(auto tpm_a, Tpm::Open(rm_a->tcti()));
    ASSERT_OK_AND_ASSIGN(auto tpm_b, Tpm::Open(rm_b->tcti()));
    ASSERT_OK_AND_ASSIGN(bool b_before, tpm_b->HandleExists(esys::kSrkEccHandle));
    EXPECT_FALSE(b_before);
    ASSERT_OK(tpm_a->GetOrCreateSrk(KeyAlg::kEccP256));
    ASSERT_OK_AND_ASSIGN(bool on_a, tpm_a->HandleExists(esys::kSrkEccHandle));
    ASSERT_OK_AND_ASSIGN(bool on_b, tpm_b->HandleExists(esys::kSrkEccHandle));
    EXPECT_TRUE(on_a);
    EXPECT_FALSE(on_b);
  }
  CommandResult caps_a = rm_a->Tools({"tpm2_getcap", "handles-persistent"});
  CommandResult caps_b = rm_b->Tools({"tpm2_getcap", "handles-persistent"});
  ASSERT_EQ(caps_a.exit_code, 0) << caps_a.output;
  ASSERT_EQ(caps_b.exit_code, 0) << caps_b.output;
  EXPECT_THAT(caps_a.output, HasSubstr("0x81000002"));
  EXPECT_THAT(caps_b.output, Not(HasSubstr("0x81000002")));
}

}  // namespace
}  // namespace tpmma::testing
