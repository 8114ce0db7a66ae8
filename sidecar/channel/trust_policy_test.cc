#include "sidecar/channel/trust_policy.h"

#include <fstream>

#include "gtest/gtest.h"
#include "sidecar/common/error_reason.h"
#include "sidecar/identity/identity.h"
#include "tests/support/veild_process.h"

namespace veil::channel {
namespace {

std::string NewId() { return identity::Identity::Generate("x", 0)->identifier(); }

TEST(TrustPolicyTest, EveryoneAndIdentifiers) {
  std::string a = NewId(), b = NewId(), c = NewId();
  EXPECT_TRUE(TrustEveryone()->Check(a).ok());
  auto one = TrustIdentifiers({a});
  ASSERT_TRUE(one.ok());
  EXPECT_TRUE((*one)->Check(a).ok());
  absl::Status refused = (*one)->Check(b);
  EXPECT_EQ(refused.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(ReasonOf(refused), "UNTRUSTED_IDENTITY");
  EXPECT_NE(refused.message().find(b), std::string::npos);
  auto set = TrustIdentifiers({a, b});
  ASSERT_TRUE(set.ok());
  EXPECT_TRUE((*set)->Check(b).ok());
  EXPECT_FALSE((*set)->Check(c).ok());
  EXPECT_FALSE(TrustIdentifiers({}).ok());
  EXPECT_FALSE(TrustIdentifiers({"Inot-an-identifier"}).ok());
}

TEST(TrustPolicyTest, FileIsReadAtEachCheck) {
  veil::testing::TempDir dir;
  std::string path = dir.path() + "/trusted.txt";
  std::string a = NewId(), b = NewId();
  std::ofstream(path) << "# Alice\n" << a << "  # her laptop\n\n";
  auto policy = TrustIdentifiersFile(path);
  ASSERT_TRUE(policy.ok()) << policy.status();
  EXPECT_TRUE((*policy)->Check(a).ok());
  EXPECT_FALSE((*policy)->Check(b).ok());
  std::ofstream(path, std::ios::app) << b << "\n";
  EXPECT_TRUE((*policy)->Check(b).ok());
  std::ofstream(path) << "garbage\n";
  EXPECT_FALSE((*policy)->Check(a).ok());  // a broken file trusts no one
  std::ofstream(path) << "garbage\n";
  auto bad = TrustIdentifiersFile(path);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find(":1:"), std::string::npos) << bad.status();
  EXPECT_FALSE(TrustIdentifiersFile(dir.path() + "/missing").ok());
}

TEST(TrustPolicyTest, Combinations) {
  std::string a = NewId(), b = NewId(), c = NewId();
  std::vector<std::unique_ptr<TrustPolicy>> parts;
  parts.push_back(*TrustIdentifiers({a}));
  parts.push_back(*TrustIdentifiers({b}));
  auto any = AnyOf(std::move(parts));
  ASSERT_TRUE(any.ok());
  EXPECT_TRUE((*any)->Check(a).ok());
  EXPECT_TRUE((*any)->Check(b).ok());
  EXPECT_FALSE((*any)->Check(c).ok());
  std::vector<std::unique_ptr<TrustPolicy>> both;
  both.push_back(*TrustIdentifiers({a, b}));
  both.push_back(*TrustIdentifiers({b, c}));
  auto all = AllOf(std::move(both));
  ASSERT_TRUE(all.ok());
  EXPECT_TRUE((*all)->Check(b).ok());
  EXPECT_FALSE((*all)->Check(a).ok());
  EXPECT_FALSE((*all)->Check(c).ok());
  EXPECT_FALSE(AnyOf({}).ok());
}

TEST(TrustPolicyTest, ImportedIdentities) {
  veil::testing::TempDir dir;
  auto vault = vault::Vault::Open(dir.path(), std::nullopt);
  auto store = identity::IdentityStore::Open(dir.path(), **vault);
  ASSERT_TRUE(store.ok());
  auto bob = identity::Identity::Generate("bob", 0);
  auto policy = TrustImported(**store);
  EXPECT_FALSE(policy->Check(bob->identifier()).ok());
  ASSERT_TRUE((*store)->ImportTrusted(bob->identifier(), bob->public_key(), "").ok());
  EXPECT_TRUE(policy->Check(bob->identifier()).ok());
}

}  // namespace
}  // namespace veil::channel
