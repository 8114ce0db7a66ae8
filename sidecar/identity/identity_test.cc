#include "sidecar/identity/identity.h"

#include "gtest/gtest.h"
#include "sidecar/common/error_reason.h"
#include "sidecar/identity/identifier.h"
#include "tests/support/veild_process.h"

namespace veil::identity {
namespace {

TEST(IdentifierTest, DerivedFromThePublicKey) {
  auto a = Identity::Generate("a", 0);
  EXPECT_EQ(a->identifier(), IdentifierOf(a->public_key()));
  EXPECT_EQ(a->identifier().size(), kIdentifierLength);
  EXPECT_EQ(a->identifier()[0], 'I');
  EXPECT_TRUE(ValidateIdentifier(a->identifier()).ok());
  EXPECT_NE(a->identifier(), Identity::Generate("a", 0)->identifier());
}

TEST(IdentifierTest, ValidateIdentifierRefusesOtherShapes) {
  for (const std::string& bad : std::vector<std::string>{
           "", "I", "i0123456789abcdef0123456789abcdef", "I0123456789ABCDEF0123456789ABCDEF",
           "I0123456789abcdef0123456789abcde"}) {
    absl::Status s = ValidateIdentifier(bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(ReasonOf(s), "INVALID_IDENTIFIER");
  }
}

TEST(IdentifierTest, NameRules) {
  for (const char* good :
       {"default", "bob", "a", "0", "bob-2_x", "abcdefghijklmnopqrstuvwxyz0123456789"}) {
    EXPECT_TRUE(ValidateIdentityName(good).ok()) << good;
  }
  for (const std::string& bad : std::vector<std::string>{"", "Bob", "-bob", "_bob", "bob/../x",
                                                         "bob.key", "bo b", std::string(65, 'a')}) {
    absl::Status s = ValidateIdentityName(bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(s.message().find("a-z, 0-9, '_' and '-'"), std::string::npos) << s;
  }
}

TEST(IdentityTest, StaticKeyIsBoundBySignature) {
  auto id = Identity::Generate("bob", 0);
  EXPECT_TRUE(vault::Ed25519Verify(id->public_key(),
                                   StaticKeyBindingMessage(id->keys()->static_public_key()),
                                   id->keys()->static_key_signature())
                  .ok());
  // Not a signature over the bare key (domain separation).
  EXPECT_FALSE(vault::Ed25519Verify(id->public_key(), id->keys()->static_public_key(),
                                    id->keys()->static_key_signature())
                   .ok());
}

TEST(IdentityTest, RecordRoundTripThroughVault) {
  veil::testing::TempDir dir;
  auto v = vault::Vault::Open(dir.path(), std::nullopt);
  ASSERT_TRUE(v.ok());
  auto id = Identity::Generate("bob", 1234);
  auto record = id->ToRecord(**v);
  auto loaded = Identity::FromRecord(record, **v, "bob.identity");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->identifier(), id->identifier());
  EXPECT_EQ((*loaded)->keys()->static_public_key(), id->keys()->static_public_key());
  EXPECT_EQ((*loaded)->created_unix_seconds(), 1234);
  // The same DH result from the loaded key.
  auto peer = vault::GenerateX25519();
  EXPECT_TRUE(
      id->keys()->StaticDh(peer.public_key)->Equals(*(*loaded)->keys()->StaticDh(peer.public_key)));
}

TEST(IdentityTest, InconsistentRecordsAreDamaged) {
  veil::testing::TempDir dir;
  auto v = vault::Vault::Open(dir.path(), std::nullopt);
  ASSERT_TRUE(v.ok());
  auto record = Identity::Generate("bob", 0)->ToRecord(**v);
  auto other = Identity::Generate("eve", 0)->ToRecord(**v);
  auto swapped = record;
  swapped.set_signing_public_key(other.signing_public_key());
  auto r = Identity::FromRecord(swapped, **v, "/s/bob.identity");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(r.status().message().find("/s/bob.identity"), std::string::npos);
}

TEST(IdentityTest, EncryptedSecretsAreBoundToTheirIdentityName) {
  veil::testing::TempDir dir;
  auto v = vault::Vault::Open(
      dir.path(), vault::VaultKey{vault::SecretBytes::CopyOf(std::string(32, 'k')), "t"});
  ASSERT_TRUE(v.ok());
  auto record = Identity::Generate("bob", 0)->ToRecord(**v);
  ASSERT_TRUE(Identity::FromRecord(record, **v, "x").ok());
  auto renamed = record;
  renamed.set_name("mallory");  // a sealed secret moved to another identity does not open
  auto r = Identity::FromRecord(renamed, **v, "x");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace veil::identity
