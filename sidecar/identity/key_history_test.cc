#include "sidecar/identity/key_history.h"

#include <filesystem>
#include <fstream>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "sidecar/common/error_reason.h"
#include "sidecar/identity/canonical.h"
#include "sidecar/identity/credential.h"
#include "sidecar/identity/identifier.h"
#include "sidecar/identity/identity_store.h"
#include "tests/support/veild_process.h"
#include "veil/wire/v1/credential.pb.h"
#include "veil/wire/v1/key_history.pb.h"

namespace veil::identity {
namespace {

struct Chain {
  std::vector<vault::Ed25519KeyPair> keys;
  KeyHistory history;
};

// A root key and `rotations` changes after it.
Chain MakeChain(size_t rotations) {
  Chain chain;
  chain.keys.push_back(vault::GenerateEd25519());
  chain.history = RootKeyHistory(chain.keys[0].public_key);
  for (size_t i = 0; i < rotations; ++i) {
    chain.keys.push_back(vault::GenerateEd25519());
    auto next = ExtendKeyHistory(chain.history, chain.keys[i], chain.keys[i + 1],
                                 1'700'000'000 + static_cast<int64_t>(i));
    EXPECT_TRUE(next.ok()) << next.status();
    chain.history = *std::move(next);
  }
  return chain;
}

wire::v1::KeyHistory Decode(const std::string& encoded) {
  wire::v1::KeyHistory out;
  EXPECT_TRUE(out.ParseFromString(encoded));
  return out;
}

TEST(KeyHistoryTest, RootHistoryIsTheKeysOwnIdentifier) {
  auto key = vault::GenerateEd25519();
  KeyHistory root = RootKeyHistory(key.public_key);
  EXPECT_EQ(root.identifier, IdentifierOf(key.public_key));
  EXPECT_EQ(root.public_key, key.public_key);
  EXPECT_EQ(root.changes(), 0u);
  EXPECT_TRUE(root.encoded.empty());
  // The identifier is the first 16 bytes of head(0), in hex.
  EXPECT_EQ(root.heads[0].size(), 32u);
  auto presented = KeyHistoryOf(key.public_key, "");
  ASSERT_TRUE(presented.ok());
  EXPECT_EQ(presented->identifier, root.identifier);
}

TEST(KeyHistoryTest, RotationsKeepTheIdentifierAndVerify) {
  Chain chain = MakeChain(3);
  EXPECT_EQ(chain.history.changes(), 3u);
  EXPECT_EQ(chain.history.identifier, IdentifierOf(chain.keys[0].public_key));
  EXPECT_EQ(chain.history.public_key, chain.keys[3].public_key);
  auto verified = KeyHistoryOf(chain.keys[3].public_key, chain.history.encoded);
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_EQ(verified->identifier, chain.history.identifier);
  EXPECT_EQ(verified->heads, chain.history.heads);
  EXPECT_EQ(verified->changed_at, 1'700'000'002);
  // The history must end in the key presented with it: an earlier key of the chain is not it.
  absl::Status old_key = KeyHistoryOf(chain.keys[2].public_key, chain.history.encoded).status();
  EXPECT_EQ(ReasonOf(old_key), reason::kKeyHistoryInvalid);
}

TEST(KeyHistoryTest, EveryTamperingIsRefused) {
  Chain chain = MakeChain(2);
  auto refused = [](const wire::v1::KeyHistory& h) {
    return VerifyKeyHistory(CanonicalEncoding(h)).status();
  };
  // A change the old key did not sign: someone with only a new key of their own.
  {
    wire::v1::KeyHistory h = Decode(chain.history.encoded);
    auto mallory = vault::GenerateEd25519();
    wire::v1::KeyChange change;
    change.set_version(kKeyChangeVersion);
    change.set_previous(chain.history.head());
    change.set_public_key(mallory.public_key);
    auto* forged = h.add_changes();
    forged->set_change(CanonicalEncoding(change));
    std::string message = absl::StrCat(kKeyChangeContext, forged->change());
    forged->set_new_key_signature(vault::Ed25519Sign(mallory, message));
    forged->set_previous_key_signature(vault::Ed25519Sign(mallory, message));
    absl::Status s = refused(h);
    EXPECT_EQ(s.code(), absl::StatusCode::kUnauthenticated);
    EXPECT_EQ(ReasonOf(s), reason::kKeyHistoryInvalid);
    EXPECT_NE(s.message().find("change 3"), std::string::npos) << s;
    // ... and a change whose new key did not sign (a key nobody holds).
    forged->set_previous_key_signature(vault::Ed25519Sign(chain.keys[2], message));
    forged->set_new_key_signature(std::string(64, 'x'));
    EXPECT_EQ(refused(h).code(), absl::StatusCode::kUnauthenticated);
    // With both signatures good it is a valid (further) rotation.
    forged->set_new_key_signature(vault::Ed25519Sign(mallory, message));
    EXPECT_TRUE(refused(h).ok());
  }
  // Changes out of order, one dropped from the middle, a byte flipped, a different root.
  {
    wire::v1::KeyHistory h = Decode(chain.history.encoded);
    h.mutable_changes()->SwapElements(0, 1);
    EXPECT_EQ(ReasonOf(refused(h)), reason::kKeyHistoryInvalid);
  }
  {
    wire::v1::KeyHistory h = Decode(chain.history.encoded);
    h.mutable_changes()->DeleteSubrange(0, 1);
    EXPECT_FALSE(refused(h).ok());
  }
  {
    wire::v1::KeyHistory h = Decode(chain.history.encoded);
    std::string* change = h.mutable_changes(1)->mutable_change();
    (*change)[change->size() - 1] ^= 1;
    EXPECT_FALSE(refused(h).ok());
  }
  {
    wire::v1::KeyHistory h = Decode(chain.history.encoded);
    h.set_root_public_key(vault::GenerateEd25519().public_key);
    EXPECT_FALSE(refused(h).ok());
  }
  // Structure: no change, wrong sizes, not canonical, garbage, too long.
  {
    wire::v1::KeyHistory h = Decode(chain.history.encoded);
    h.clear_changes();
    EXPECT_EQ(refused(h).code(), absl::StatusCode::kInvalidArgument);
    h.set_root_public_key("short");
    EXPECT_EQ(refused(h).code(), absl::StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(VerifyKeyHistory(chain.history.encoded + std::string("\x78\x01", 2)).status().code(),
            absl::StatusCode::kInvalidArgument);  // an unknown field 15
  EXPECT_EQ(ReasonOf(VerifyKeyHistory("\xff\xff\xff").status()), reason::kKeyHistoryInvalid);
  {
    // An unknown field inside a change, signed properly by both keys: still not canonical.
    wire::v1::KeyHistory h = Decode(chain.history.encoded);
    auto* last = h.mutable_changes(1);
    last->mutable_change()->append("\x78\x01", 2);
    std::string message = absl::StrCat(kKeyChangeContext, last->change());
    last->set_previous_key_signature(vault::Ed25519Sign(chain.keys[1], message));
    last->set_new_key_signature(vault::Ed25519Sign(chain.keys[2], message));
    absl::Status s = refused(h);
    EXPECT_NE(s.message().find("not a canonical KeyChange"), std::string::npos) << s;
  }
  EXPECT_FALSE(VerifyKeyHistory(std::string(kMaxKeyHistoryBytes + 1, '\0')).ok());
  {
    wire::v1::KeyHistory h = Decode(chain.history.encoded);
    wire::v1::KeyChange change;
    ASSERT_TRUE(change.ParseFromString(h.changes(0).change()));
    change.set_version(2);
    h.mutable_changes(0)->set_change(CanonicalEncoding(change));
    absl::Status s = refused(h);
    EXPECT_NE(s.message().find("version 2"), std::string::npos) << s;
  }
}

TEST(KeyHistoryTest, NoGoingBackToAnOldKeyAndNoEndlessHistory) {
  Chain chain = MakeChain(1);
  auto back = ExtendKeyHistory(chain.history, chain.keys[1], chain.keys[0], 1);
  EXPECT_EQ(back.status().code(), absl::StatusCode::kFailedPrecondition);
  auto not_now = ExtendKeyHistory(chain.history, chain.keys[0], vault::GenerateEd25519(), 1);
  EXPECT_EQ(not_now.status().code(), absl::StatusCode::kFailedPrecondition);
  Chain full = MakeChain(kMaxKeyChanges);
  ASSERT_EQ(full.history.changes(), kMaxKeyChanges);
  EXPECT_LE(full.history.encoded.size(), kMaxKeyHistoryBytes);
  EXPECT_TRUE(VerifyKeyHistory(full.history.encoded).ok());
  auto more = ExtendKeyHistory(full.history, full.keys.back(), vault::GenerateEd25519(), 1);
  EXPECT_EQ(ReasonOf(more.status()), reason::kKeyHistoryInvalid);
}

// The seed of key_history_fuzz was encoded and signed by another implementation (Python's
// `cryptography`, from docs/protocol.md alone): keys from seeds 0x01.., 0x02.., 0x03...
TEST(KeyHistoryVectorTest, AnIndependentlyEncodedHistoryVerifies) {
  const char* root = std::getenv("VEIL_SOURCE_DIR");
  std::ifstream file(std::string(root && *root ? root : VEIL_DEFAULT_SOURCE_DIR) +
                         "/tests/fuzz/corpus/key_history_fuzz/valid",
                     std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  ASSERT_FALSE(bytes.empty());
  auto history = VerifyKeyHistory(bytes);
  ASSERT_TRUE(history.ok()) << history.status();
  EXPECT_EQ(history->identifier, "I34750f98bd59fcfc946da45aaabe933b");
  EXPECT_EQ(history->changes(), 2u);
  EXPECT_EQ(absl::BytesToHexString(history->public_key),
            "ed4928c628d1c2c6eae90338905995612959273a5c63f93636c14614ac8737d1");
  EXPECT_EQ(history->changed_at, 1'700'000'002);
  // This side's encoder writes the same bytes for the same keys and times.
  auto seed = [](char c) { return vault::SecretBytes::CopyOf(std::string(32, c)); };
  std::vector<vault::Ed25519KeyPair> keys;
  for (char c : {'\x01', '\x02', '\x03'}) keys.push_back(*vault::Ed25519FromSeed(seed(c)));
  KeyHistory mine = RootKeyHistory(keys[0].public_key);
  mine = *ExtendKeyHistory(mine, keys[0], keys[1], 1'700'000'001);
  mine = *ExtendKeyHistory(mine, keys[1], keys[2], 1'700'000'002);
  EXPECT_EQ(mine.encoded, bytes);
}

class KnownKeyHistoriesTest : public ::testing::Test {
 protected:
  std::unique_ptr<KnownKeyHistories> Open() {
    auto known = KnownKeyHistories::Open(dir_.path() + "/key_histories");
    EXPECT_TRUE(known.ok()) << known.status();
    return known.ok() ? *std::move(known) : nullptr;
  }
  veil::testing::TempDir dir_;
};

TEST_F(KnownKeyHistoriesTest, ForwardIsRememberedBackAndForksAreRefused) {
  Chain chain = MakeChain(2);
  auto known = Open();
  // Never rotated, as far as this node knows: nothing kept.
  ASSERT_TRUE(known->Remember(RootKeyHistory(chain.keys[0].public_key), 10).ok());
  EXPECT_EQ(known->size(), 0u);
  // Checking alone (a peer not admitted yet) remembers nothing...
  ASSERT_TRUE(known->Check(chain.history).ok());
  EXPECT_EQ(known->size(), 0u);
  // ... remembering moves this node forward...
  ASSERT_TRUE(known->Remember(chain.history, 11).ok());
  auto seen = known->Get(chain.history.identifier);
  ASSERT_TRUE(seen.ok());
  EXPECT_EQ(seen->changes, 2u);
  EXPECT_EQ(seen->public_key, chain.keys[2].public_key);
  EXPECT_TRUE(known->Remember(chain.history, 12).ok());
  // ... after which the old keys speak for nobody: not the first key, not the second.
  absl::Status root = known->Remember(RootKeyHistory(chain.keys[0].public_key), 13);
  EXPECT_EQ(root.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(ReasonOf(root), reason::kKeyHistoryRollback);
  EXPECT_EQ(ReasonOf(known->Check(RootKeyHistory(chain.keys[0].public_key))),
            reason::kKeyHistoryRollback);
  auto one = KeyHistoryOf(chain.keys[1].public_key, [&] {
    wire::v1::KeyHistory h = Decode(chain.history.encoded);
    h.mutable_changes()->RemoveLast();
    return CanonicalEncoding(h);
  }());
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(ReasonOf(known->Remember(*one, 14)), reason::kKeyHistoryRollback);
  // A fork: the stolen first key signs a change of its own, then another (longer history).
  auto thief1 = vault::GenerateEd25519(), thief2 = vault::GenerateEd25519(),
       thief3 = vault::GenerateEd25519();
  KeyHistory forked = RootKeyHistory(chain.keys[0].public_key);
  forked = *ExtendKeyHistory(forked, chain.keys[0], thief1, 20);
  forked = *ExtendKeyHistory(forked, thief1, thief2, 21);
  forked = *ExtendKeyHistory(forked, thief2, thief3, 22);
  ASSERT_TRUE(VerifyKeyHistory(forked.encoded).ok());
  absl::Status fork = known->Remember(forked, 15);
  EXPECT_EQ(ReasonOf(fork), reason::kKeyHistoryConflict);
  // The real identity rotating again is taken.
  auto next = vault::GenerateEd25519();
  KeyHistory further = *ExtendKeyHistory(chain.history, chain.keys[2], next, 30);
  ASSERT_TRUE(known->Remember(further, 16).ok());
  // All of it survives a restart.
  known.reset();
  known = Open();
  EXPECT_EQ(known->Get(chain.history.identifier)->changes, 3u);
  EXPECT_EQ(ReasonOf(known->Remember(chain.history, 17)), reason::kKeyHistoryRollback);
  EXPECT_TRUE(known->Remember(further, 18).ok());
}

TEST(KnownKeyHistoriesBoundTest, PastTheBoundNewIdentitiesAreNotRemembered) {
  auto known = *KnownKeyHistories::Open("");
  for (size_t i = 0; i < kMaxKnownKeyHistories; ++i) {
    ASSERT_TRUE(known->Remember(MakeChain(1).history, 1).ok());
  }
  EXPECT_EQ(known->size(), kMaxKnownKeyHistories);
  Chain extra = MakeChain(1);
  EXPECT_TRUE(known->Remember(extra.history, 2).ok());
  EXPECT_EQ(known->size(), kMaxKnownKeyHistories);
  EXPECT_EQ(known->not_remembered(), 1u);
  EXPECT_FALSE(known->Get(extra.history.identifier).ok());
}

TEST_F(KnownKeyHistoriesTest, ADamagedFileFailsOpenNamingIt) {
  Chain chain = MakeChain(1);
  {
    auto known = Open();
    ASSERT_TRUE(known->Remember(chain.history, 1).ok());
  }
  std::string path =
      absl::StrCat(dir_.path(), "/key_histories/", chain.history.identifier, ".keys");
  ASSERT_TRUE(std::filesystem::exists(path));
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(10);
    f.put('\x55');
  }
  auto reopened = KnownKeyHistories::Open(dir_.path() + "/key_histories");
  ASSERT_FALSE(reopened.ok());
  EXPECT_EQ(reopened.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(reopened.status().message().find(path), std::string::npos) << reopened.status();
}

// Rotation through the store: new keys, same identifier, persisted, sealed, in use at once.
TEST_F(KnownKeyHistoriesTest, StoreRotatesAndReloads) {
  auto vault = vault::Vault::Open(dir_.path(), std::nullopt);
  ASSERT_TRUE(vault.ok());
  auto store = IdentityStore::Open(dir_.path(), **vault);
  ASSERT_TRUE(store.ok());
  auto bob = (*store)->Create("bob");
  ASSERT_TRUE(bob.ok());
  const std::string identifier = (*bob)->identifier();
  const std::string root = (*bob)->public_key();
  auto before = (*bob)->keys();
  auto lease = (*store)->Acquire("bob");  // in use: rotation is still allowed
  ASSERT_TRUE(lease.ok());
  auto rotated = (*store)->Rotate("bob");
  ASSERT_TRUE(rotated.ok()) << rotated.status();
  EXPECT_EQ(rotated->get(), bob->get());
  auto after = (*bob)->keys();
  EXPECT_EQ((*bob)->identifier(), identifier);
  EXPECT_EQ((*bob)->public_key(), root);
  EXPECT_NE(after->public_key(), before->public_key());
  EXPECT_NE(after->static_public_key(), before->static_public_key());
  EXPECT_EQ(after->history().changes(), 1u);
  EXPECT_TRUE(vault::Ed25519Verify(after->public_key(),
                                   StaticKeyBindingMessage(after->static_public_key()),
                                   after->static_key_signature())
                  .ok());
  // What the lease holds is the same identity, with the new keys.
  EXPECT_EQ(lease->identity()->keys()->public_key(), after->public_key());
  EXPECT_EQ(ReasonOf((*store)->Rotate("nobody").status()), reason::kIdentityNotFound);
  ASSERT_TRUE((*store)->Rotate("bob").ok());
  const std::string newest = (*bob)->keys()->public_key();
  *lease = IdentityLease();
  store->reset();
  // Reloaded: the newest keys, the whole history, the same identifier.
  auto reopened = IdentityStore::Open(dir_.path(), **vault);
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  auto loaded = (*reopened)->Get("bob");
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ((*loaded)->identifier(), identifier);
  EXPECT_EQ((*loaded)->public_key(), root);
  EXPECT_EQ((*loaded)->keys()->public_key(), newest);
  EXPECT_EQ((*loaded)->keys()->history().changes(), 2u);
  // A credential it issues after rotating carries the history and names the same issuer.
  auto credential = IssueCredential(**loaded, {.issuer = "",
                                               .subject = identifier,
                                               .attributes = {{"role", "x"}},
                                               .issued_at = 100,
                                               .expires_at = 200});
  ASSERT_TRUE(credential.ok()) << credential.status();
  const absl::flat_hash_set<std::string> trusted = {identifier};
  auto known = KnownKeyHistories::Open("");
  auto claims = VerifyCredential(*credential, {.trusted_issuers = &trusted,
                                               .subject = identifier,
                                               .now = 150,
                                               .key_histories = known->get()});
  ASSERT_TRUE(claims.ok()) << claims.status();
  EXPECT_EQ(claims->issuer, identifier);
  // Having seen that, a credential signed by the first key (kept by a thief) is refused.
  wire::v1::CredentialBody body;
  body.set_version(kCredentialVersion);
  body.set_issuer_public_key(root);
  body.set_subject(identifier);
  body.set_issued_at(100);
  body.set_expires_at(200);
  wire::v1::Credential forged;
  forged.set_body(CanonicalEncoding(body));
  forged.set_signature(before->Sign(absl::StrCat(kCredentialSignatureContext, forged.body())));
  const VerifyOptions options = {.trusted_issuers = &trusted,
                                 .subject = identifier,
                                 .now = 150,
                                 .key_histories = known->get()};
  EXPECT_EQ(ReasonOf(VerifyCredential(CanonicalEncoding(forged), options).status()),
            reason::kKeyHistoryRollback);
  // A node that never saw the rotation still takes it (it cannot know; docs/credentials.md).
  auto fresh = KnownKeyHistories::Open("");
  EXPECT_TRUE(VerifyCredential(CanonicalEncoding(forged), {.trusted_issuers = &trusted,
                                                           .subject = identifier,
                                                           .now = 150,
                                                           .key_histories = fresh->get()})
                  .ok());
}

}  // namespace
}  // namespace veil::identity
