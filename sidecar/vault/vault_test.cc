#include "sidecar/vault/vault.h"

#include <filesystem>
#include <fstream>

#include "absl/strings/escaping.h"
#include "gtest/gtest.h"
#include "sidecar/common/error_reason.h"
#include "sidecar/vault/state_file.h"
#include "tests/support/veild_process.h"

namespace veil::vault {
namespace {

VaultKey Key(absl::string_view material) {
  return VaultKey{SecretBytes::CopyOf(material), "test key"};
}

const char kHexKey[] = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

TEST(VaultTest, UnprotectedRoundTripAndReopen) {
  veil::testing::TempDir dir;
  auto vault = Vault::Open(dir.path(), std::nullopt);
  ASSERT_TRUE(vault.ok()) << vault.status();
  EXPECT_EQ((*vault)->protection(), Vault::Protection::kNone);
  std::string sealed = (*vault)->Seal(SecretBytes::CopyOf("s3cret"), "ctx");
  auto again = Vault::Open(dir.path(), std::nullopt);
  ASSERT_TRUE(again.ok());
  auto opened = (*again)->Unseal(sealed, "ctx");
  ASSERT_TRUE(opened.ok());
  EXPECT_TRUE(opened->Equals(SecretBytes::CopyOf("s3cret")));
}

TEST(VaultTest, RawKeyInHexOrBytesRoundTripsAndWrongKeyIsRefused) {
  veil::testing::TempDir dir;
  auto vault = Vault::Open(dir.path(), Key(std::string(kHexKey) + "\n"));
  ASSERT_TRUE(vault.ok()) << vault.status();
  EXPECT_EQ((*vault)->protection(), Vault::Protection::kRawKey);
  std::string sealed = (*vault)->Seal(SecretBytes::CopyOf("s3cret"), "ctx");
  EXPECT_EQ(sealed.find("s3cret"), std::string::npos);  // encrypted at rest
  // The same key as 32 raw bytes opens it.
  auto raw = Vault::Open(dir.path(), Key(absl::HexStringToBytes(kHexKey)));
  ASSERT_TRUE(raw.ok()) << raw.status();
  EXPECT_TRUE((*raw)->Unseal(sealed, "ctx").ok());
  EXPECT_FALSE((*raw)->Unseal(sealed, "other").ok());

  std::string wrong = kHexKey;
  wrong[0] = '1';
  auto refused = Vault::Open(dir.path(), Key(wrong));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ReasonOf(refused.status()), "VAULT_KEY_REJECTED");
  EXPECT_NE(refused.status().message().find("is wrong"), std::string::npos);

  auto missing = Vault::Open(dir.path(), std::nullopt);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("is encrypted"), std::string::npos);
  auto passphrase = Vault::Open(dir.path(), Key("not a raw key"));
  ASSERT_FALSE(passphrase.ok());
  EXPECT_NE(passphrase.status().message().find("holds a passphrase"), std::string::npos);
}

TEST(VaultTest, PassphraseUsesArgon2idAndWrongPassphraseIsRefused) {
  veil::testing::TempDir dir;
  auto vault = Vault::Open(dir.path(), Key("correct horse battery staple\n"));
  ASSERT_TRUE(vault.ok()) << vault.status();
  EXPECT_EQ((*vault)->protection(), Vault::Protection::kArgon2id);
  std::string sealed = (*vault)->Seal(SecretBytes::CopyOf("s3cret"), "ctx");
  auto again = Vault::Open(dir.path(), Key("correct horse battery staple"));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE((*again)->Unseal(sealed, "ctx").ok());
  auto wrong = Vault::Open(dir.path(), Key("incorrect horse"));
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(ReasonOf(wrong.status()), "VAULT_KEY_REJECTED");
}

TEST(VaultTest, KeyForAnUnprotectedVaultIsRefused) {
  veil::testing::TempDir dir;
  ASSERT_TRUE(Vault::Open(dir.path(), std::nullopt).ok());
  auto refused = Vault::Open(dir.path(), Key(kHexKey));
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("is not encrypted"), std::string::npos);
  EXPECT_FALSE(Vault::Open(dir.path(), Key("")).ok());
}

TEST(VaultTest, DamagedMetaIsAClearErrorAndNotRewritten) {
  veil::testing::TempDir dir;
  ASSERT_TRUE(Vault::Open(dir.path(), std::nullopt).ok());
  std::string path = dir.path() + "/vault.meta";
  std::filesystem::resize_file(path, 10);
  auto r = Vault::Open(dir.path(), std::nullopt);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(r.status().message().find(path), std::string::npos);
  EXPECT_EQ(std::filesystem::file_size(path), 10u);  // left as it was
}

TEST(VaultTest, MissingMetaWithIdentitiesIsRefused) {
  veil::testing::TempDir dir;
  ASSERT_TRUE(EnsurePrivateDirectory(dir.path() + "/identities").ok());
  ASSERT_TRUE(WriteFileAtomically(dir.path() + "/identities/bob.identity", "x").ok());
  auto r = Vault::Open(dir.path(), std::nullopt);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("refusing to create a new vault"), std::string::npos);
}

TEST(VaultTest, SealedFormsDoNotCrossProtection) {
  veil::testing::TempDir plain_dir, keyed_dir;
  auto plain = Vault::Open(plain_dir.path(), std::nullopt);
  auto keyed = Vault::Open(keyed_dir.path(), Key(kHexKey));
  ASSERT_TRUE(plain.ok() && keyed.ok());
  std::string clear = (*plain)->Seal(SecretBytes::CopyOf("x"), "c");
  std::string enc = (*keyed)->Seal(SecretBytes::CopyOf("x"), "c");
  EXPECT_FALSE((*keyed)->Unseal(clear, "c").ok());
  EXPECT_FALSE((*plain)->Unseal(enc, "c").ok());
  EXPECT_FALSE((*plain)->Unseal("", "c").ok());
}

}  // namespace
}  // namespace veil::vault
