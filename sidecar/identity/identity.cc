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

Identity::Identity(std::string name, vault::Ed25519KeyPair signing, vault::X25519KeyPair static_key,
                   int64_t created_unix_seconds)
    : name_(std::move(name)),
      signing_(std::move(signing)),
      static_(std::move(static_key)),
      identifier_(IdentifierOf(signing_.public_key)),
      static_key_signature_(
          vault::Ed25519Sign(signing_, StaticKeyBindingMessage(static_.public_key))),
      created_unix_seconds_(created_unix_seconds) {}

std::shared_ptr<const Identity> Identity::Generate(std::string name, int64_t created_unix_seconds) {
  return std::shared_ptr<const Identity>(new Identity(
      std::move(name), vault::GenerateEd25519(), vault::GenerateX25519(), created_unix_seconds));
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
  auto secret =
      vault.Unseal(record.sealed_static_secret(), SealContext(record.name(), "static key"));
  if (!secret.ok())
    return vault::DamagedStateFile(path, absl::StrCat("static key: ", secret.status().message()));
  auto static_key = vault::X25519FromSecret(*std::move(secret));
  if (!static_key.ok() || static_key->public_key != record.static_public_key()) {
    return vault::DamagedStateFile(path, "static key does not match its public key");
  }
  return std::shared_ptr<const Identity>(new Identity(
      record.name(), *std::move(signing), *std::move(static_key), record.created_unix_seconds()));
}

state::v1::IdentityRecord Identity::ToRecord(const vault::Vault& vault) const {
  state::v1::IdentityRecord record;
  record.set_name(name_);
  record.set_signing_public_key(signing_.public_key);
  record.set_sealed_signing_seed(
      vault.Seal(vault::Ed25519Seed(signing_), SealContext(name_, "signing seed")));
  record.set_static_public_key(static_.public_key);
  record.set_sealed_static_secret(vault.Seal(static_.secret, SealContext(name_, "static key")));
  record.set_created_unix_seconds(created_unix_seconds_);
  return record;
}

}  // namespace veil::identity
