#include "sidecar/channel/trust_policy.h"

#include <sys/stat.h>

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

TEST(TrustPolicyTest, FileIsReadAgainWhenItChanges) {
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

TEST(TrustPolicyTest, FileErrorsNeverQuoteTheFile) {
  veil::testing::TempDir dir;
  std::string path = dir.path() + "/secret.key";
  std::ofstream(path) << "s3cr3t-vault-passphrase-do-not-print\n";
  auto policy = TrustIdentifiersFile(path);
  ASSERT_FALSE(policy.ok());
  EXPECT_EQ(policy.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(policy.status().message().find(path + ":1:"), std::string::npos) << policy.status();
  EXPECT_EQ(policy.status().message().find("s3cr3t"), std::string::npos) << policy.status();
}

TEST(TrustPolicyTest, OnlyRegularFilesOfBoundedSize) {
  veil::testing::TempDir dir;
  for (const std::string& special : {std::string("/dev/zero"), dir.path()}) {
    auto policy = TrustIdentifiersFile(special);
    ASSERT_FALSE(policy.ok()) << special;
    EXPECT_EQ(policy.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_NE(policy.status().message().find("not a regular file"), std::string::npos)
        << policy.status();
  }
  std::string fifo = dir.path() + "/fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  auto from_fifo = TrustIdentifiersFile(fifo);  // must not block on the FIFO
  EXPECT_NE(from_fifo.status().message().find("not a regular file"), std::string::npos);
  std::string big = dir.path() + "/big";
  {
    std::ofstream out(big);
    std::string id = NewId() + "\n";
    for (size_t n = 0; n <= kMaxTrustFileBytes; n += id.size()) out << id;
  }
  auto too_big = TrustIdentifiersFile(big);
  ASSERT_FALSE(too_big.ok());
  EXPECT_NE(too_big.status().message().find("larger than"), std::string::npos) << too_big.status();
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
