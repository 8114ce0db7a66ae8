// Key rotation in secure channels, between sessions in memory: a rotated identity keeps its
// identifier for its peers' trust lists and credentials, and a peer that saw the rotation refuses
// the keys rotated away from (and forks of the history), also after its own restart.
#include <filesystem>
#include <memory>

#include "gtest/gtest.h"
#include "sidecar/channel/channel_session.h"
#include "sidecar/common/error_reason.h"
#include "sidecar/identity/identity_store.h"
#include "tests/support/veild_process.h"

namespace veil::channel {
namespace {

using Role = ChannelSession::Role;

class ChannelRotationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto v = vault::Vault::Open(bob_dir_.path(), std::nullopt);
    ASSERT_TRUE(v.ok());
    vault_ = *std::move(v);
    auto s = identity::IdentityStore::Open(bob_dir_.path(), *vault_);
    ASSERT_TRUE(s.ok());
    bob_store_ = *std::move(s);
    bob_ = *bob_store_->Create("bob");
    auto k = identity::KnownKeyHistories::Open(alice_dir_.path() + "/key_histories");
    ASSERT_TRUE(k.ok());
    alice_known_ = *std::move(k);
    bob_only_ = *TrustIdentifiers({bob_->identifier()});
  }
  SessionOptions AliceOptions() {
    SessionOptions o;
    o.key_histories = alice_known_.get();
    return o;
  }
  // Alice (initiator, trusting only Bob's identifier) to `bob`; Alice's error, OK if established.
  absl::Status Connect(std::shared_ptr<const identity::Identity> bob) {
    ChannelSession i(Role::kInitiator, alice_, *bob_only_, AliceOptions());
    ChannelSession r(Role::kResponder, std::move(bob), *everyone_);
    auto s2 = r.OnMessage(*i.Start());
    if (!s2.error.ok()) return s2.error;
    auto s3 = i.OnMessage(s2.reply);
    if (!s3.error.ok()) return s3.error;
    auto s4 = r.OnMessage(s3.reply);
    if (!s4.error.ok()) return s4.error;
    auto s5 = i.OnMessage(s4.reply);
    if (s5.error.ok()) {
      EXPECT_EQ(i.remote_identifier(), bob_->identifier());
    }
    return s5.error;
  }

  veil::testing::TempDir bob_dir_, alice_dir_;
  std::unique_ptr<vault::Vault> vault_;
  std::unique_ptr<identity::IdentityStore> bob_store_;
  std::shared_ptr<const identity::Identity> bob_;
  std::shared_ptr<const identity::Identity> alice_ = identity::Identity::Generate("alice", 0);
  std::unique_ptr<identity::KnownKeyHistories> alice_known_;
  std::unique_ptr<TrustPolicy> bob_only_;
  std::unique_ptr<TrustPolicy> everyone_ = TrustEveryone();
};

TEST_F(ChannelRotationTest, ARotatedPeerKeepsItsIdentifierAndOldKeysStopWorking) {
  ASSERT_TRUE(Connect(bob_).ok());
  // A copy of Bob as he was (a thief with his state from before the rotation).
  auto old_bob = identity::Identity::FromRecord(bob_->ToRecord(*vault_), *vault_, "old bob");
  ASSERT_TRUE(old_bob.ok());
  ASSERT_TRUE(bob_store_->Rotate("bob").ok());
  EXPECT_EQ(bob_->keys()->history().changes(), 1u);
  // Alice's trust list names the identifier: it still admits Bob, now with a new key.
  ASSERT_TRUE(Connect(bob_).ok());
  EXPECT_EQ(alice_known_->Get(bob_->identifier())->changes, 1u);
  // The old key is refused now that Alice saw the rotation...
  absl::Status old_key = Connect(*old_bob);
  EXPECT_EQ(old_key.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(ReasonOf(old_key), reason::kKeyHistoryRollback);
  // ... also after Alice's node restarts.
  alice_known_.reset();
  alice_known_ = *identity::KnownKeyHistories::Open(alice_dir_.path() + "/key_histories");
  EXPECT_EQ(ReasonOf(Connect(*old_bob)), reason::kKeyHistoryRollback);
  ASSERT_TRUE(Connect(bob_).ok());
}

TEST_F(ChannelRotationTest, AForkedHistoryIsRefused) {
  // A thief copies Bob's whole state directory (vault key and all) before Bob rotates.
  veil::testing::TempDir thief_dir;
  std::filesystem::copy(
      bob_dir_.path(), thief_dir.path(),
      std::filesystem::copy_options::recursive | std::filesystem::copy_options::overwrite_existing);
  ASSERT_TRUE(bob_store_->Rotate("bob").ok());
  ASSERT_TRUE(Connect(bob_).ok());
  // The thief rotates "Bob" to keys of its own, twice (a longer history than Bob's).
  auto thief_vault = vault::Vault::Open(thief_dir.path(), std::nullopt);
  ASSERT_TRUE(thief_vault.ok()) << thief_vault.status();
  auto thief_store = identity::IdentityStore::Open(thief_dir.path(), **thief_vault);
  ASSERT_TRUE(thief_store.ok()) << thief_store.status();
  ASSERT_TRUE((*thief_store)->Rotate("bob").ok());
  ASSERT_TRUE((*thief_store)->Rotate("bob").ok());
  auto thief = *(*thief_store)->Get("bob");
  EXPECT_EQ(thief->identifier(), bob_->identifier());
  absl::Status forked = Connect(thief);
  EXPECT_EQ(forked.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(ReasonOf(forked), reason::kKeyHistoryConflict) << forked;
  // Bob himself still gets in.
  ASSERT_TRUE(Connect(bob_).ok());
}

// A stranger's made-up rotated identities, refused by the trust policy, leave nothing behind
// (no file, no entry): only admitted peers are remembered.
TEST_F(ChannelRotationTest, ARefusedPeersHistoryIsNotRemembered) {
  auto mallory = *bob_store_->Create("mallory");
  ASSERT_TRUE(bob_store_->Rotate("mallory").ok());
  absl::Status refused = Connect(mallory);
  EXPECT_EQ(ReasonOf(refused), reason::kUntrustedIdentity) << refused;
  EXPECT_EQ(alice_known_->size(), 0u);
  EXPECT_TRUE(std::filesystem::is_empty(alice_dir_.path() + "/key_histories"));
}

}  // namespace
}  // namespace veil::channel
