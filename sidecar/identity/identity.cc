#include "sidecar/identity/identity.h"

#include "absl/strings/str_cat.h"
#include "sidecar/identity/identifier.h"
#include "sidecar/vault/state_file.h"

namespace veil::identity {
namespace {

std::string SealContext(absl::string_view name, absl::string_view which) {
  return absl::StrCat("veil/v1 identity ", name, " ", which);
}

}  // namespace

std::string StaticKeyBindingMessage(absl::string_view static_public_key) {
  return absl::StrCat(kStaticKeySignatureContext, static_public_key);
}

IdentityKeys::IdentityKeys(vault::Ed25519KeyPair signing, vault::X25519KeyPair static_key,
                           KeyHistory history)
    : signing_(std::move(signing)),
      static_(std::move(static_key)),
      static_key_signature_(
          vault::Ed25519Sign(signing_, StaticKeyBindingMessage(static_.public_key))),
      history_(std::move(history)) {}

Identity::Identity(std::string name, std::shared_ptr<const IdentityKeys> keys,
                   int64_t created_unix_seconds)
    : name_(std::move(name)),
      root_public_key_(keys->history().root_public_key),
      identifier_(keys->history().identifier),
      created_unix_seconds_(created_unix_seconds),
      keys_(std::move(keys)) {}

std::shared_ptr<const Identity> Identity::Generate(std::string name, int64_t created_unix_seconds) {
  vault::Ed25519KeyPair signing = vault::GenerateEd25519();
  KeyHistory history = RootKeyHistory(signing.public_key);
  return std::shared_ptr<const Identity>(
      new Identity(std::move(name),
                   std::make_shared<const IdentityKeys>(std::move(signing), vault::GenerateX25519(),
                                                        std::move(history)),
                   created_unix_seconds));
}

absl::StatusOr<std::shared_ptr<const IdentityKeys>> Identity::NextKeys(
    int64_t now_unix_seconds) const {
  std::shared_ptr<const IdentityKeys> now = keys();
  vault::Ed25519KeyPair next = vault::GenerateEd25519();
  auto history = ExtendKeyHistory(now->history(), now->signing_, next, now_unix_seconds);
  if (!history.ok()) return history.status();
  return std::make_shared<const IdentityKeys>(std::move(next), vault::GenerateX25519(),
                                              *std::move(history));
}

void Identity::InstallKeys(std::shared_ptr<const IdentityKeys> keys) const {
  veil::MutexLock lock(&mu_);
  keys_ = std::move(keys);
}

absl::StatusOr<std::shared_ptr<const Identity>> Identity::FromRecord(
    const state::v1::IdentityRecord& record, const vault::Vault& vault, absl::string_view path) {
  if (!ValidateIdentityName(record.name()).ok())
    return vault::DamagedStateFile(path, "invalid identity name");
  auto seed =
      vault.Unseal(record.sealed_signing_seed(), SealContext(record.name(), "signing seed"));
  if (!seed.ok()) {
    return vault::DamagedStateFile(path, absl::StrCat("signing key: ", seed.status().message()));
  }
  auto signing = vault::Ed25519FromSeed(*seed);
  if (!signing.ok() || signing->public_key != record.signing_public_key()) {
    return vault::DamagedStateFile(path, "signing key does not match its public key");
  }
  auto history = KeyHistoryOf(signing->public_key, record.key_history());
  if (!history.ok()) {
    return vault::DamagedStateFile(path, absl::StrCat("key history: ", history.status().message()));
  }
  auto secret =
      vault.Unseal(record.sealed_static_secret(), SealContext(record.name(), "static key"));
  if (!secret.ok())
    return vault::DamagedStateFile(path, absl::StrCat("static key: ", secret.status().message()));
  auto static_key = vault::X25519FromSecret(*std::move(secret));
  if (!static_key.ok() || static_key->public_key != record.static_public_key()) {
    return vault::DamagedStateFile(path, "static key does not match its public key");
  }
  return std::shared_ptr<const Identity>(
      new Identity(record.name(),
                   std::make_shared<const IdentityKeys>(*std::move(signing), *std::move(static_key),
                                                        *std::move(history)),
                   record.created_unix_seconds()));
}

state::v1::IdentityRecord Identity::ToRecord(const vault::Vault& vault,
                                             const IdentityKeys* keys) const {
  std::shared_ptr<const IdentityKeys> now;
  if (keys == nullptr) {
    now = this->keys();
    keys = now.get();
  }
  state::v1::IdentityRecord record;
  record.set_name(name_);
  record.set_signing_public_key(keys->signing_.public_key);
  record.set_sealed_signing_seed(
      vault.Seal(vault::Ed25519Seed(keys->signing_), SealContext(name_, "signing seed")));
  record.set_static_public_key(keys->static_.public_key);
  record.set_sealed_static_secret(
      vault.Seal(keys->static_.secret, SealContext(name_, "static key")));
  record.set_created_unix_seconds(created_unix_seconds_);
  record.set_key_history(keys->history().encoded);
  return record;
}

}  // namespace veil::identity
