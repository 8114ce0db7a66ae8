#include "sidecar/identity/identity_store.h"

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "gtest/gtest.h"
#include "sidecar/common/error_reason.h"
#include "sidecar/identity/identifier.h"
#include "tests/support/veild_process.h"

namespace veil::identity {
namespace {

class IdentityStoreTest : public ::testing::Test {
 protected:
  void Open() {
    store_.reset();
    vault_.reset();
    auto v = vault::Vault::Open(dir_.path(), std::nullopt);
    ASSERT_TRUE(v.ok()) << v.status();
    vault_ = *std::move(v);
    auto s = IdentityStore::Open(dir_.path(), *vault_);
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = *std::move(s);
  }
  absl::Status OpenStatus() {
    store_.reset();
    auto s = IdentityStore::Open(dir_.path(), *vault_);
    if (s.ok()) store_ = *std::move(s);
    return s.status();
  }
  void SetUp() override { Open(); }

  veil::testing::TempDir dir_;
  std::unique_ptr<vault::Vault> vault_;
  std::unique_ptr<IdentityStore> store_;
};

TEST_F(IdentityStoreTest, CreateGetListDeleteAndSurviveReopen) {
  auto bob = store_->Create("bob");
  ASSERT_TRUE(bob.ok()) << bob.status();
  ASSERT_TRUE(store_->Create("alice").ok());
  EXPECT_EQ(store_->Create("bob").status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ((*store_->Get("bob"))->identifier(), (*bob)->identifier());
  ASSERT_EQ(store_->List().size(), 2u);
  EXPECT_EQ(store_->List()[0]->name(), "alice");

  std::string identifier = (*bob)->identifier();
  Open();
  auto again = store_->Get("bob");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->identifier(), identifier);
  EXPECT_EQ((*again)->keys()->static_public_key(), (*bob)->keys()->static_public_key());

  ASSERT_TRUE(store_->Delete("alice").ok());
  EXPECT_EQ(store_->Get("alice").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ReasonOf(store_->Delete("alice")), "IDENTITY_NOT_FOUND");
  Open();
  EXPECT_EQ(store_->List().size(), 1u);
}

TEST_F(IdentityStoreTest, FilesArePrivate) {
  ASSERT_TRUE(store_->Create("bob").ok());
  struct stat st;
  ASSERT_EQ(::stat((dir_.path() + "/identities/bob.identity").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat((dir_.path() + "/identities").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(::stat((dir_.path() + "/vault.meta").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(IdentityStoreTest, LeasedIdentityCannotBeDeleted) {
  ASSERT_TRUE(store_->Create("bob").ok());
  {
    auto lease = store_->Acquire("bob");
    ASSERT_TRUE(lease.ok());
    auto second = store_->Acquire("bob");
    ASSERT_TRUE(second.ok());
    absl::Status s = store_->Delete("bob");
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_EQ(ReasonOf(s), "IDENTITY_IN_USE");
    IdentityLease moved = *std::move(lease);
  }
  EXPECT_TRUE(store_->Delete("bob").ok());
  EXPECT_EQ(store_->Acquire("bob").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(IdentityStoreTest, ConcurrentCreates) {
  constexpr int kThreads = 8, kEach = 8;
  std::atomic<int> created{0}, exists{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        // Distinct names, plus one name every thread races for.
        auto mine = store_->Create("id-" + std::to_string(t) + "-" + std::to_string(i));
        if (mine.ok()) ++created;
        auto shared = store_->Create("contended");
        if (shared.ok()) ++created;
        if (shared.status().code() == absl::StatusCode::kAlreadyExists) ++exists;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(created.load(), kThreads * kEach + 1);
  EXPECT_EQ(exists.load(), kThreads * kEach - 1);
  Open();
  EXPECT_EQ(store_->List().size(), static_cast<size_t>(kThreads * kEach + 1));
}

TEST_F(IdentityStoreTest, CorruptedTruncatedAndUnsafeFilesFailOpenNamingTheFile) {
  ASSERT_TRUE(store_->Create("bob").ok());
  std::string path = dir_.path() + "/identities/bob.identity";
  std::string good;
  {
    std::ifstream in(path, std::ios::binary);
    good.assign(std::istreambuf_iterator<char>(in), {});
  }
  auto write = [&](const std::string& bytes, mode_t mode) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
    ::chmod(path.c_str(), mode);
  };
  // Truncated.
  write(good.substr(0, good.size() / 2), 0600);
  absl::Status s = OpenStatus();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_NE(s.message().find(path), std::string::npos) << s;
  EXPECT_EQ(std::filesystem::file_size(path), good.size() / 2);  // never overwritten
  // Corrupted.
  std::string flipped = good;
  flipped[good.size() / 2] ^= 0x01;
  write(flipped, 0600);
  s = OpenStatus();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_NE(s.message().find("checksum mismatch"), std::string::npos) << s;
  // Unsafe mode.
  write(good, 0644);
  s = OpenStatus();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("mode 0644"), std::string::npos) << s;
  // Restored: loads again.
  write(good, 0600);
  EXPECT_TRUE(OpenStatus().ok());
}

TEST_F(IdentityStoreTest, RenamedFileIsDetected) {
  ASSERT_TRUE(store_->Create("bob").ok());
  std::filesystem::rename(dir_.path() + "/identities/bob.identity",
                          dir_.path() + "/identities/alice.identity");
  absl::Status s = OpenStatus();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("holds identity \"bob\""), std::string::npos) << s;
}

TEST_F(IdentityStoreTest, TrustedIdentitiesImportCheckAndPersist) {
  auto bob = Identity::Generate("bob", 0);
  auto imported = store_->ImportTrusted(bob->identifier(), bob->public_key(), "Bob's laptop");
  ASSERT_TRUE(imported.ok()) << imported.status();
  EXPECT_EQ(imported->label, "Bob's laptop");
  auto eve = Identity::Generate("eve", 0);
  absl::Status mismatch = store_->ImportTrusted(bob->identifier(), eve->public_key(), "").status();
  EXPECT_EQ(mismatch.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReasonOf(mismatch), "IDENTIFIER_MISMATCH");
  EXPECT_EQ(store_->ImportTrusted(bob->identifier(), "short", "").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->ImportTrusted("nope", bob->public_key(), "").status().code(),
            absl::StatusCode::kInvalidArgument);
  Open();
  ASSERT_EQ(store_->ListTrusted().size(), 1u);
  EXPECT_EQ(store_->GetTrusted(bob->identifier())->public_key, bob->public_key());
  ASSERT_TRUE(store_->DeleteTrusted(bob->identifier()).ok());
  EXPECT_EQ(store_->DeleteTrusted(bob->identifier()).code(), absl::StatusCode::kNotFound);
  Open();
  EXPECT_TRUE(store_->ListTrusted().empty());
}

TEST_F(IdentityStoreTest, EncryptedVaultKeepsSecretsEncryptedAndReloads) {
  veil::testing::TempDir dir;
  vault::VaultKey key{vault::SecretBytes::CopyOf(std::string(32, 'k')), "test"};
  auto v = vault::Vault::Open(dir.path(), std::move(key));
  ASSERT_TRUE(v.ok());
  auto s = IdentityStore::Open(dir.path(), **v);
  ASSERT_TRUE(s.ok());
  auto bob = (*s)->Create("bob");
  ASSERT_TRUE(bob.ok());
  // The stored seed is not in the file in the clear.
  std::ifstream in(dir.path() + "/identities/bob.identity", std::ios::binary);
  std::string file((std::istreambuf_iterator<char>(in)), {});
  auto record = (*bob)->ToRecord(**v);
  EXPECT_NE(record.sealed_signing_seed()[0], 0);  // sealed tag
  auto reopened = IdentityStore::Open(dir.path(), **v);
  ASSERT_TRUE(reopened.ok());
  EXPECT_EQ((*(*reopened)->Get("bob"))->identifier(), (*bob)->identifier());
}

}  // namespace
}  // namespace veil::identity
